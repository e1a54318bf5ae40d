"""Load a user's RLModule class (`file:Class`) from the experiment's source dir, with clear errors."""

from __future__ import annotations

import importlib
import sys
import traceback
from pathlib import Path


class CustomModuleError(ValueError):
    """`algorithm.model.module` cannot be loaded or is not a torch RLModule."""


def load_module_class(source_dir: Path, reference: str) -> type:
    """Import `<module>:<Class>` with `source_dir` on sys.path and check it is a TorchRLModule subclass.

    The source dir must also be on the PYTHONPATH of Ray's workers (the launcher sets it before
    starting Ray), because RLlib pickles the class by reference.
    """
    module_name, class_name = reference.split(":", 1)
    where = f"algorithm.model.module {reference!r}"
    top = module_name.split(".")[0]
    if top in sys.stdlib_module_names:
        raise CustomModuleError(f"{where}: the file name {top}.py shadows the standard library module {top!r}; rename it")
    path = source_dir / (module_name.replace(".", "/") + ".py")
    if not path.is_file():
        raise CustomModuleError(f"{where}: {path} does not exist")
    if str(source_dir) not in sys.path:
        sys.path.insert(0, str(source_dir))
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as error:
        raise CustomModuleError(
            f"{where}: {error.filename}:{error.lineno}:{error.offset or 0}: syntax error: {error.msg}"
        ) from None
    except Exception as error:
        frame = _user_frame(error, source_dir)
        raise CustomModuleError(f"{where}: importing {path} failed{frame}: {type(error).__name__}: {error}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        names = sorted(n for n, v in vars(module).items() if isinstance(v, type) and v.__module__ == module.__name__)
        raise CustomModuleError(f"{where}: {path} defines no {class_name!r} (classes there: {', '.join(names) or 'none'})")
    from ray.rllib.core.rl_module.torch import TorchRLModule

    if not isinstance(cls, type) or not issubclass(cls, TorchRLModule):
        kind = cls.__name__ if isinstance(cls, type) else type(cls).__name__
        bases = ", ".join(b.__name__ for b in cls.__mro__[1:-1]) if isinstance(cls, type) else "not a class"
        raise CustomModuleError(
            f"{where}: {kind} is not an RLModule for torch ({bases or 'object'}); subclass "
            "ray.rllib.core.rl_module.torch.TorchRLModule (and ValueFunctionAPI for PPO, APPO, IMPALA)"
        )
    return cls


def _user_frame(error: BaseException, source_dir: Path) -> str:
    frames = [f for f in traceback.extract_tb(error.__traceback__) if f.filename.startswith(str(source_dir))]
    if not frames:
        return ""
    return f" at {frames[-1].filename}:{frames[-1].lineno}"
