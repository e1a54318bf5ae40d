"""Custom RLModules from the experiment's source dir: located errors, no shadowing of the standard library."""

from __future__ import annotations

from pathlib import Path

import pytest
from shared import ROOT

from rlrunner.entry.custom_module import CustomModuleError, load_module_class


def test_load_module_class_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    (tmp_path / "broken_net.py").write_text("import torch\nclass Net(:\n    pass\n")
    with pytest.raises(CustomModuleError) as error:
        load_module_class(tmp_path, "broken_net:Net")
    assert str(error.value) == (
        f"algorithm.model.module 'broken_net:Net': {tmp_path / 'broken_net.py'}:2:11: syntax error: invalid syntax"
    )


def test_load_module_class_rejects_a_class_that_is_not_an_rlmodule(tmp_path: Path) -> None:
    (tmp_path / "plain_net.py").write_text("class Base:\n    pass\n\nclass Net(Base):\n    pass\n")
    with pytest.raises(CustomModuleError) as error:
        load_module_class(tmp_path, "plain_net:Net")
    assert str(error.value) == (
        "algorithm.model.module 'plain_net:Net': Net is not an RLModule for torch (Base); subclass "
        "ray.rllib.core.rl_module.torch.TorchRLModule (and ValueFunctionAPI for PPO, APPO, IMPALA)"
    )


def test_load_module_class_missing_class_lists_the_classes_there(tmp_path: Path) -> None:
    (tmp_path / "other_net.py").write_text("class Alpha:\n    pass\n")
    with pytest.raises(CustomModuleError) as error:
        load_module_class(tmp_path, "other_net:Beta")
    assert str(error.value) == f"algorithm.model.module 'other_net:Beta': {tmp_path / 'other_net.py'} defines no 'Beta' (classes there: Alpha)"


def test_load_module_class_import_error_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "failing_net.py").write_text("x = 1\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(CustomModuleError) as error:
        load_module_class(tmp_path, "failing_net:Net")
    assert str(error.value) == (
        f"algorithm.model.module 'failing_net:Net': importing {tmp_path / 'failing_net.py'} failed at "
        f"{tmp_path / 'failing_net.py'}:2: RuntimeError: no GPU here"
    )


def test_load_module_class_refuses_to_shadow_the_standard_library(tmp_path: Path) -> None:
    (tmp_path / "random.py").write_text("class Net:\n    pass\n")
    with pytest.raises(CustomModuleError, match=r"the file name random\.py shadows the standard library module 'random'"):
        load_module_class(tmp_path, "random:Net")


def test_load_module_class_loads_the_example_module() -> None:
    cls = load_module_class(ROOT / "experiments" / "models", "tiny_mlp:TinyMLP")
    from ray.rllib.core.rl_module.apis import ValueFunctionAPI
    from ray.rllib.core.rl_module.torch import TorchRLModule

    assert issubclass(cls, TorchRLModule) and issubclass(cls, ValueFunctionAPI)
