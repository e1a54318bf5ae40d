"""The launcher: its environment, checkpoints, custom modules, and runs through the real player and Ray.

Launcher runs start it as SageMaker's toolkit would (a subprocess with the plan's variables) in a
new session, and every test checks by pid that nothing it started is left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rlrunner.entry import train_unity
from rlrunner.entry.checkpoints import MANIFEST, CheckpointStore, Progress, checkpoint_name
from rlrunner.entry.custom_module import CustomModuleError, load_module_class
from rlrunner.entry.metrics import format_metrics_line, metric_definitions, parse_metrics_line
from rlrunner.entry.processes import process_table, run_processes
from rlrunner.loader import load_spec
from rlrunner.runner import plan

ROOT = Path(__file__).resolve().parents[2]
BASIC_PPO = ROOT / "experiments" / "basic_ppo.yaml"
SLIDE_PLAYER = Path(__file__).with_name("continuous_player.py")
ENTRY_SCRIPT = ROOT / "rlrunner" / "entry" / "train_unity.py"
FAST = (
    "algorithm.hyperparameters.train_batch_size_per_learner=250",
    "algorithm.hyperparameters.minibatch_size=125",
    "algorithm.hyperparameters.num_epochs=2",
    "algorithm.model.fcnet_hiddens=[32]",
)


# --- helpers ---------------------------------------------------------------------------------


def launcher_env(tmp_path: Path, spec: Path = BASIC_PPO, overrides: tuple[str, ...] = (), **extra: str) -> dict[str, str]:
    """The launcher's environment: this process's, the plan's variables, and /opt/ml under tmp_path."""
    experiment_spec, document = load_spec(spec, overrides)
    job = plan(experiment_spec, spec_dir=document.base_dir, local=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "RLRUNNER_"))}
    env.update(job.environment)
    env.update({"RLRUNNER_OPT_ML": str(tmp_path / "opt_ml"), "SM_NUM_CPUS": "2", "PYTHONWARNINGS": "ignore", **extra})
    return env


def start_launcher(env: dict[str, str], sessions: list[int], *args: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "rlrunner.entry.train_unity", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    sessions.append(process.pid)
    return process


def run_launcher(env: dict[str, str], sessions: list[int], timeout: float, *args: str) -> tuple[int, str, str]:
    process = start_launcher(env, sessions, *args)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"the launcher did not finish within {timeout} s:\n{out[-2000:]}\n{err[-2000:]}")
    return process.returncode, out, err


def write_spec(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def slide_binary(folder: Path) -> Path:
    """A Linux-build-like launcher for the continuous test player."""
    path = folder / "Slide.x86_64"
    path.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{SLIDE_PLAYER}" "$@"\n')
    path.chmod(0o755)
    return path


def loopback_listeners(pids: set[int]) -> list[tuple[int, str]]:
    """(pid, local address) of every listening TCP socket the processes hold, from /proc."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes[target[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # LISTEN
                found.append((inodes[inode], _address(local, width)))
    return found


def _address(hex_address: str, width: int) -> str:
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    if width == 8:
        ip = ".".join(str(b) for b in raw[::-1])
    else:  # four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = ":".join(words[i : i + 2].hex() for i in range(0, 16, 2))
    return f"{ip}:{int(port_hex, 16)}"


def is_loopback(address: str) -> bool:
    host = address.rsplit(":", 1)[0]
    return host.startswith("127.") or host in ("0000:0000:0000:0000:0000:0000:0000:0001",) or host.startswith(
        "0000:0000:0000:0000:0000:ffff:7f"
    )


# --- the environment, read once ---------------------------------------------------------------


def test_read_container_env_defaults_to_opt_ml() -> None:
    env = train_unity.read_container_env({}, cpu_count=4)
    assert env.opt_ml == Path("/opt/ml")
    assert env.model_dir == Path("/opt/ml/model")
    assert env.output_dir == Path("/opt/ml/output")
    assert env.output_data_dir == Path("/opt/ml/output/data")
    assert env.checkpoint_dir == Path("/opt/ml/checkpoints")
    assert env.code_dir == Path("/opt/ml/code")
    assert env.failure_file == Path("/opt/ml/output/failure")
    assert (env.num_cpus, env.num_gpus, env.hosts, env.current_host) == (4, 0, ("algo-1",), "algo-1")
    assert env.channels == {} and env.experiment_vars == {}


def test_read_container_env_reads_sagemaker_variables_and_resourceconfig(tmp_path: Path) -> None:
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-2", "hosts": ["algo-1", "algo-2"]}))
    environ = {
        "RLRUNNER_OPT_ML": str(tmp_path),
        "SM_MODEL_DIR": "/elsewhere/model",
        "SM_CHANNEL_TRAIN": "/data/train",
        "SM_NUM_CPUS": "8",
        "SM_NUM_GPUS": "1",
        "RLRUNNER_EXPERIMENT": "v1:1:x",
        "RLRUNNER_EXPERIMENT_000": "0:0:y",
        "RLRUNNER_RUN_ID": "abc",
    }
    env = train_unity.read_container_env(environ)
    assert env.opt_ml == tmp_path
    assert env.model_dir == Path("/elsewhere/model")
    assert env.checkpoint_dir == tmp_path / "checkpoints"
    assert env.channels == {"train": Path("/data/train")}
    assert (env.num_cpus, env.num_gpus) == (8, 1)
    assert env.hosts == ("algo-1", "algo-2") and env.current_host == "algo-2"
    assert env.experiment_vars == {"RLRUNNER_EXPERIMENT": "v1:1:x", "RLRUNNER_EXPERIMENT_000": "0:0:y"}
    assert env.run_id == "abc"


def test_parse_args_ignores_sagemaker_hyperparameters() -> None:
    args = train_unity.parse_args(["--rlrunner_run_id", "abc", "--print-config", "--other", "1"])
    assert args.print_config is True
    assert train_unity.parse_args(["--rlrunner_run_id", "abc"]).print_config is False


def test_stop_criteria_name_the_criterion_met() -> None:
    stop = train_unity.StopCriteria(timesteps=1000, iterations=None, episode_return_mean=0.9, time_s=None)
    assert stop.reached(Progress(iteration=1, timesteps=500, time_s=1.0, episode_return_mean=0.5)) is None
    assert stop.reached(Progress(iteration=2, timesteps=1000, time_s=2.0)) == "timesteps 1000 >= 1000"
    assert stop.reached(Progress(iteration=1, timesteps=500, time_s=1.0, episode_return_mean=0.93)) == "episode_return_mean 0.93 >= 0.9"
    assert train_unity.StopCriteria(None, 3, None, 10.0).reached(Progress(3, 0, 0.0)) == "iterations 3 >= 3"
    assert train_unity.StopCriteria(None, None, None, 10.0).reached(Progress(1, 0, 12.0)) == "time_s 12 >= 10.0"


def test_metrics_line_from_result_matches_plan_regexes() -> None:
    result = {"env_runners": {"episode_return_mean": 0.91, "episode_return_max": 0.93, "episode_return_min": -0.2, "episode_len_mean": 7.5}}
    line = format_metrics_line(train_unity.iteration_metrics(result, Progress(iteration=4, timesteps=2000, time_s=12.3456)))
    values = {d["Name"]: float(re.search(d["Regex"], line).group(1)) for d in metric_definitions()}  # type: ignore[union-attr]
    assert values == {
        "iteration": 4, "timesteps": 2000, "episode_return_mean": 0.91, "episode_return_max": 0.93,
        "episode_return_min": -0.2, "episode_len_mean": 7.5, "time_s": 12.346,
    }


# --- checkpoints -----------------------------------------------------------------------------


def fake_rllib_checkpoint(folder: Path, payload: str = "state") -> None:
    (folder / "learner_group").mkdir()
    (folder / "learner_group" / "state.pkl").write_text(payload)
    (folder / "rllib_checkpoint.json").write_text("{}")


def test_checkpoint_store_writes_atomically_and_keeps_newest(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=2)
    for iteration in (1, 2, 3):
        saved = store.save(Progress(iteration, iteration * 500, float(iteration)), fake_rllib_checkpoint)
        assert saved.path.name == checkpoint_name(iteration)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000002", "checkpoint_000003"]
    newest = store.newest()
    assert newest is not None and newest.progress == Progress(3, 1500, 3.0)
    manifest = json.loads((newest.path / MANIFEST).read_text())
    assert manifest["files"] == {"learner_group/state.pkl": 5, "rllib_checkpoint.json": 2}


def test_checkpoint_store_ignores_incomplete_and_corrupt_checkpoints(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=5)
    store.save(Progress(1, 500, 1.0), fake_rllib_checkpoint)
    good = store.save(Progress(2, 1000, 2.0), fake_rllib_checkpoint)
    truncated = store.save(Progress(3, 1500, 3.0), fake_rllib_checkpoint)
    (truncated.path / "learner_group" / "state.pkl").write_text("st")  # a partial S3 sync
    no_manifest = tmp_path / checkpoint_name(4)
    no_manifest.mkdir()
    fake_rllib_checkpoint(no_manifest)  # a kill before the manifest was written
    partial = tmp_path / ".partial-checkpoint_000005-123"
    partial.mkdir()
    assert store.newest() == good
    removed = store.clean()
    assert sorted(p.name for p in removed) == [".partial-checkpoint_000005-123", "checkpoint_000003", "checkpoint_000004"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000001", "checkpoint_000002"]


def test_checkpoint_store_failed_write_leaves_previous_checkpoint(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, keep=3)
    first = store.save(Progress(1, 500, 1.0), fake_rllib_checkpoint)

    def crash(folder: Path) -> None:
        fake_rllib_checkpoint(folder)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        store.save(Progress(2, 1000, 2.0), crash)
    assert store.newest() == first
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_000001"]


# --- custom modules ----------------------------------------------------------------------------


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


# --- the launcher as a process -------------------------------------------------------------------


@pytest.mark.parametrize("as_script", [False, True], ids=["module", "script"])
def test_print_config_prints_the_decoded_experiment(tmp_path: Path, sessions: list[int], as_script: bool) -> None:
    env = launcher_env(tmp_path)
    command = [sys.executable, str(ENTRY_SCRIPT)] if as_script else [sys.executable, "-m", "rlrunner.entry.train_unity"]
    process = subprocess.run(
        [*command, "--rlrunner_run_id", "x", "--print-config"], env=env, capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert process.returncode == 0, process.stderr
    experiment_spec, document = load_spec(BASIC_PPO)
    assert json.loads(process.stdout) == plan(experiment_spec, spec_dir=document.base_dir, local=True).experiment
    assert not (tmp_path / "opt_ml" / "output" / "failure").exists()


def test_launcher_without_an_experiment_fails_with_a_reason(tmp_path: Path, sessions: list[int]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLRUNNER_")}
    env["RLRUNNER_OPT_ML"] = str(tmp_path)
    code, out, err = run_launcher(env, sessions, 60)
    assert code == train_unity.EXIT_INVALID
    reason = "the encoded experiment cannot be read: RLRUNNER_EXPERIMENT is not set: this process was not started from an rlrunner plan"
    assert (tmp_path / "output" / "failure").read_text() == reason + "\n"
    assert err == f"rlrunner: error: {reason}\n"


def bad_input_cases(tmp_path: Path) -> dict[str, tuple[Path, dict[str, str], int, str]]:
    """id -> (spec, extra env, exit code, failure regex)."""
    notexec = tmp_path / "NotExecutable.x86_64"
    notexec.write_text("#!/bin/sh\nexit 0\n")
    sleeper = tmp_path / "Sleeper.x86_64"
    sleeper.write_text("#!/bin/sh\nsleep 600\n")
    sleeper.chmod(0o755)
    slide = slide_binary(tmp_path)
    code = tmp_path / "code" / "models"
    code.mkdir(parents=True)
    (code / "broken_net.py").write_text("import torch\nclass Net(:\n    pass\n")
    (code / "plain_net.py").write_text("class Net:\n    pass\n")

    def binary_spec(name: str, binary: Path, algorithm: str = "PPO") -> Path:
        return write_spec(
            tmp_path / f"{name}.yaml",
            f"name: {name}\nenvironment:\n  binary: {binary}\n  timeout_s: 3\n  max_episode_steps: 20\n"
            f"algorithm:\n  name: {algorithm}\ntraining:\n  stop: {{iterations: 1}}\n",
        )

    def module_spec(name: str, module: str) -> Path:
        return write_spec(
            tmp_path / f"{name}.yaml",
            f"name: {name}\nsource_dir: code/models\nenvironment: {{name: Basic, max_episode_steps: 20}}\n"
            f"algorithm:\n  name: PPO\n  model: {{module: '{module}'}}\ntraining:\n  stop: {{iterations: 1}}\n",
        )

    code_dir = {"RLRUNNER_CODE_DIR": str(tmp_path / "code")}
    rejected = write_spec(
        tmp_path / "rejected.yaml",
        "name: rejected\nenvironment: {name: Basic, max_episode_steps: 20}\nalgorithm:\n  name: PPO\n"
        "  hyperparameters: {train_batch_size_per_learner: 500, minibatch_size: 1000}\ntraining:\n  stop: {iterations: 1}\n",
    )
    return {
        "hyperparameters-rejected": (rejected, {}, 3, r"^algorithm\.hyperparameters: RLlib rejected the configuration: ValueError: `minibatch_size` \(1000\) must be <= `train_batch_size_per_learner` \(500\)\. In PPO"),
        "binary-not-executable": (binary_spec("not-executable", notexec), {}, 4, rf"^environment: {re.escape(str(notexec))}: not executable \(chmod \+x it\)$"),
        "player-never-connects": (binary_spec("never-connects", sleeper), {}, 4, rf"^environment: {re.escape(str(sleeper))}: the player did not connect to 127\.0\.0\.1:\d+ within 3 s\. Check that"),
        "module-syntax-error": (module_spec("syntax-error", "broken_net:Net"), code_dir, 3, r"^algorithm\.model\.module 'broken_net:Net': .*/code/models/broken_net\.py:2:11: syntax error: invalid syntax$"),
        "module-not-rlmodule": (module_spec("not-rlmodule", "plain_net:Net"), code_dir, 3, r"^algorithm\.model\.module 'plain_net:Net': Net is not an RLModule for torch"),
        "dqn-on-continuous": (binary_spec("dqn-continuous", slide, "DQN"), {}, 3, r"^algorithm\.name: DQN does not support the environment's Box action space Box\(-1\.0, 1\.0, \(1,\), float32\); it supports Discrete"),
    }


@pytest.mark.parametrize("case_id", ["hyperparameters-rejected", "binary-not-executable", "player-never-connects", "module-syntax-error", "module-not-rlmodule", "dqn-on-continuous"])
def test_bad_input_fails_fast_with_one_paragraph(tmp_path: Path, sessions: list[int], case_id: str) -> None:
    spec, extra, exit_code, pattern = bad_input_cases(tmp_path)[case_id]
    env = launcher_env(tmp_path, spec, **extra)
    started = time.monotonic()
    code, out, err = run_launcher(env, sessions, 90)
    elapsed = time.monotonic() - started
    failure = (tmp_path / "opt_ml" / "output" / "failure").read_text()
    assert code == exit_code, err[-3000:]
    assert re.search(pattern, failure.strip()), failure
    assert failure.count("\n") == 1 and failure.endswith("\n")  # one paragraph
    assert "Traceback" not in err and "Traceback" not in out
    assert err.strip().endswith(failure.strip())
    assert elapsed < 60, f"took {elapsed:.0f} s"


def read_metrics_lines(process: subprocess.Popen[str], until_iteration: int, lines: list[str], timeout: float) -> None:
    """Read the launcher's stdout until it printed the metrics line of `until_iteration`."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        lines.append(line)
        values = parse_metrics_line(line)
        if values and values["iteration"] >= until_iteration:
            return
        if time.monotonic() > deadline:
            break
    pytest.fail(f"no metrics line for iteration {until_iteration}:\n{''.join(lines)[-3000:]}")


def test_killed_player_is_restarted_and_training_finishes(tmp_path: Path, sessions: list[int]) -> None:
    """SIGKILL a player mid-training: RLlib restarts the env runner; Ray and the players listen on loopback only."""
    env = launcher_env(tmp_path, overrides=(*FAST, "training.stop.timesteps=1750"))
    process = start_launcher(env, sessions)
    lines: list[str] = []
    try:
        read_metrics_lines(process, 1, lines, timeout=120)
        tree = run_processes(sessions=[process.pid], roots=[process.pid]) | {process.pid}
        listeners = loopback_listeners(tree)
        assert listeners and all(is_loopback(address) for _, address in listeners), listeners
        table = process_table()
        players = [
            pid for pid in tree
            if pid in table and "rlrunner.envs.basic.player" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        ]
        assert players, "no player process found under the launcher"
        for pid in players:
            os.kill(pid, signal.SIGKILL)
        out, err = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    lines += out.splitlines(keepends=True)
    assert process.returncode == 0, err[-3000:]
    assert "back into service" in err  # RLlib's FaultTolerantActorManager restored the env runner
    metrics = [v for v in (parse_metrics_line(line) for line in lines) if v]
    assert metrics[-1]["timesteps"] >= 1750
    assert "rlrunner: exported PPO policy" in "".join(lines)
    assert (tmp_path / "opt_ml" / "model" / "policy.onnx").is_file()


def test_custom_model_trains_and_exports_like_the_default_model(tmp_path: Path, sessions: list[int]) -> None:
    """experiments/custom_model.yaml: the user's TinyMLP from the source dir, trained and exported to ONNX."""
    overrides = ("algorithm.hyperparameters.train_batch_size_per_learner=250", "algorithm.hyperparameters.minibatch_size=125",
                 "algorithm.hyperparameters.num_epochs=2", "training.stop.timesteps=500")
    env = launcher_env(tmp_path, ROOT / "experiments" / "custom_model.yaml", overrides, RLRUNNER_CODE_DIR=str(ROOT / "experiments"))
    code, out, err = run_launcher(env, sessions, 180)
    assert code == 0, err[-3000:]
    model = tmp_path / "opt_ml" / "model"
    policy = json.loads((model / "policy.json").read_text())
    assert policy["module_class"] == "tiny_mlp.TinyMLP"
    assert policy["action_space"] == {"type": "discrete", "n": 3, "start": 0}
    import numpy as np
    import onnxruntime
    import torch

    from rlrunner.entry.checkpoints import CheckpointStore
    from rlrunner.entry.export import load_rl_module

    newest = CheckpointStore(tmp_path / "opt_ml" / "checkpoints", keep=3).newest()
    assert newest is not None and newest.progress.timesteps == 500
    sys.path.insert(0, str(ROOT / "experiments" / "models"))  # the checkpoint names the class by module
    try:
        module = load_rl_module(newest.path)
    finally:
        sys.path.remove(str(ROOT / "experiments" / "models"))
    obs = np.eye(20, dtype=np.float32)[np.random.default_rng(0).integers(0, 20, 1000)]
    actions = onnxruntime.InferenceSession(str(model / "policy.onnx"), providers=["CPUExecutionProvider"]).run(["actions"], {"obs": obs})[0]
    with torch.no_grad():
        logits = module.forward_inference({"obs": torch.from_numpy(obs)})["action_dist_inputs"].numpy()
    np.testing.assert_array_equal(actions, logits.argmax(axis=-1))
