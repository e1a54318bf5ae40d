"""The launcher: its environment, checkpoints, custom modules, and runs through the real player and Ray.

Launcher runs start it as SageMaker's toolkit would (a subprocess with the plan's variables) in a
new session, and every test checks by pid that nothing it started is left.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from shared import BASIC_PPO, QUICK_TRAINING, ROOT

from rlrunner.contract.checkpoints import Progress
from rlrunner.contract.errors import EXIT_INVALID
from rlrunner.contract.metrics import format_metrics_line, metric_definitions, parse_metrics_line
from rlrunner.contract.sagemaker_container import ENTRY_POINT, ENTRY_SOURCE_DIR
from rlrunner.entry import train_unity
from rlrunner.envs import resolve_environment
from rlrunner.loader import load_spec
from rlrunner.processes import process_table, run_processes
from rlrunner.runner import plan
from rlrunner.schema import StopSpec

SLIDE_PLAYER = Path(__file__).with_name("continuous_player.py")
ENTRY_SCRIPT = ENTRY_SOURCE_DIR / ENTRY_POINT


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


# --- the launcher's pure parts ----------------------------------------------------------------


def test_parse_args_ignores_sagemaker_hyperparameters() -> None:
    args = train_unity.parse_args(["--rlrunner_run_id", "abc", "--print-config", "--other", "1"])
    assert args.print_config is True
    assert train_unity.parse_args(["--rlrunner_run_id", "abc"]).print_config is False


def test_stop_reason_names_the_criterion_met() -> None:
    stop = StopSpec(timesteps=1000, episode_return_mean=0.9)
    assert train_unity.stop_reason(stop, Progress(iteration=1, timesteps=500, time_s=1.0, episode_return_mean=0.5)) is None
    assert train_unity.stop_reason(stop, Progress(iteration=2, timesteps=1000, time_s=2.0)) == "timesteps 1000 >= 1000"
    reached = train_unity.stop_reason(stop, Progress(iteration=1, timesteps=500, time_s=1.0, episode_return_mean=0.93))
    assert reached == "episode_return_mean 0.93 >= 0.9"
    assert train_unity.stop_reason(StopSpec(iterations=3, time_s=10.0), Progress(3, 0, 0.0)) == "iterations 3 >= 3"
    assert train_unity.stop_reason(StopSpec(time_s=10.0), Progress(1, 0, 12.0)) == "time_s 12 >= 10.0"


def test_stop_on_returns_per_behaviour_and_of_the_greedy_evaluation() -> None:
    progress = Progress(iteration=3, timesteps=1500, time_s=4.0)
    multi = {"agent_episodes": {"episode_return_mean": 0.5},
             "behaviors": {"Walker?team=0": {"episode_return_mean": 0.95}, "Walker?team=1": {"episode_return_mean": 0.85},
                           "Runner?team=0": {"episode_return_mean": 0.2}}}
    trained = train_unity.Returns.of(multi)
    assert trained.mean == 0.5 and set(trained.behaviors) == {"Walker?team=0", "Walker?team=1", "Runner?team=0"}
    values = train_unity.iteration_metrics({"env_runners": multi}, progress)  # the metrics line reads the same means
    assert (values["episode_return_mean"], values["episode_return_mean.Walker_team1"], values["episode_return_mean.Runner_team0"]) == (0.5, 0.85, 0.2)
    # a name without ?team=N covers every team: both must reach the value
    assert train_unity.stop_reason(StopSpec(episode_return_mean={"Walker": 0.9}), progress, trained) is None
    reached = train_unity.stop_reason(StopSpec(episode_return_mean={"Walker": 0.8}), progress, trained)
    assert reached == "episode_return_mean Walker?team=0 0.95, Walker?team=1 0.85 >= {'Walker': 0.8}"
    assert train_unity.stop_reason(StopSpec(episode_return_mean={"Walker?team=0": 0.9}), progress, trained)
    assert train_unity.stop_reason(StopSpec(episode_return_mean={"Walker?team=0": 0.9, "Runner": 0.3}), progress, trained) is None
    assert train_unity.stop_reason(StopSpec(episode_return_mean=0.5), progress, trained) == "episode_return_mean 0.5 >= 0.5"
    # a fast-path run reports no behaviours: its one behaviour's mean is the pooled one
    single = train_unity.Returns.of({"episode_return_mean": 0.93}, "Basic?team=0")
    assert train_unity.stop_reason(StopSpec(episode_return_mean={"Basic": 0.92}), progress, single)
    # the greedy evaluation: only its own returns count (none before the first evaluation)
    stop = StopSpec(evaluation_return_mean=0.92, timesteps=10000)
    assert train_unity.stop_reason(stop, progress, single) is None
    assert train_unity.stop_reason(stop, progress, single, train_unity.Returns.of({"episode_return_mean": 0.9})) is None
    evaluated = train_unity.Returns.of({"episode_return_mean": 0.93})
    assert train_unity.stop_reason(stop, progress, single, evaluated) == "evaluation_return_mean 0.93 >= 0.92"
    assert train_unity.stop_reason(stop, Progress(iteration=20, timesteps=10000, time_s=9.0), single) == "timesteps 10000 >= 10000"


def test_stop_criterion_naming_a_behaviour_the_scene_lacks_is_a_spec_error() -> None:
    scene = ["Runner?team=0", "Walker?team=0"]
    train_unity.check_stop_behaviors(StopSpec(episode_return_mean={"Walker": 0.9}, evaluation_return_mean={"Runner?team=0": 0.5}), scene)
    with pytest.raises(train_unity.InvalidSpecError) as error:
        train_unity.check_stop_behaviors(StopSpec(timesteps=10, evaluation_return_mean={"Striker": 0.5}), scene)
    assert str(error.value) == (
        "training.stop.evaluation_return_mean.Striker: the scene has no behaviour 'Striker'; it has Runner?team=0, Walker?team=0"
    )


def test_evaluation_return_is_a_metrics_field() -> None:
    result = {"env_runners": {"episode_return_mean": 0.5}, "evaluation": {"env_runners": {"episode_return_mean": 0.93}}}
    values = train_unity.iteration_metrics(result, Progress(iteration=2, timesteps=1000, time_s=3.0))
    assert parse_metrics_line(format_metrics_line(values))["evaluation_return_mean"] == 0.93
    assert train_unity.iteration_metrics({"env_runners": {}}, Progress(1, 500, 1.0))["evaluation_return_mean"] is None


def test_metrics_line_from_result_matches_plan_regexes() -> None:
    result = {"env_runners": {"episode_return_mean": 0.91, "episode_return_max": 0.93, "episode_return_min": -0.2, "episode_len_mean": 7.5}}
    line = format_metrics_line(train_unity.iteration_metrics(result, Progress(iteration=4, timesteps=2000, time_s=12.3456)))
    found = {d["Name"]: re.search(d["Regex"], line) for d in metric_definitions()}
    values = {name: float(match.group(1)) for name, match in found.items() if match}  # statistics RLlib did not report are left out
    assert values == {
        "iteration": 4, "timesteps": 2000, "episode_return_mean": 0.91, "episode_return_max": 0.93,
        "episode_return_min": -0.2, "episode_len_mean": 7.5, "time_s": 12.346,
    }


def test_iteration_metrics_reads_rllib_learner_statistics_throughput_and_timers() -> None:
    result = {
        "env_runners": {"episode_return_mean": 0.5, "num_env_steps_sampled": 500, "num_agent_steps_sampled": {"a": 500, "b": 250},
                        "num_episodes": 12},
        "learners": {
            "__all_modules__": {"num_env_steps_trained_lifetime": 5},
            "p1": {"policy_loss": 0.1, "vf_loss": 2.0, "entropy": 1.0, "mean_kl_loss": 0.01, "default_optimizer_learning_rate": 1e-4,
                   "total_loss": 2.1, "vf_explained_var": float("nan")},
            "p2": {"policy_loss": 0.3, "vf_loss": 4.0, "entropy": 0.5, "mean_kl_loss": 0.03, "default_optimizer_learning_rate": 1e-4},
        },
        "timers": {"env_runner_sampling_timer": 1.5, "learner_update_timer": 0.5},
        "time_this_iter_s": 2.5,
    }
    values = train_unity.iteration_metrics(result, Progress(iteration=1, timesteps=500, time_s=2.5))
    assert values["policy_loss"] == pytest.approx(0.2) and values["vf_loss"] == 3.0 and values["entropy"] == 0.75
    assert values["kl"] == pytest.approx(0.02) and values["lr"] == 1e-4 and values["total_loss"] == 2.1
    assert values["vf_explained_var"] is None and values["qf_loss"] is None  # NaN and absent are left out of the line
    assert (values["env_steps_per_s"], values["agent_steps_per_s"]) == (200.0, 300.0)
    assert (values["sample_time_s"], values["learn_time_s"], values["iteration_time_s"], values["episodes"]) == (1.5, 0.5, 2.5, 12)
    assert "vf_explained_var" not in format_metrics_line(values)


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
    assert code == EXIT_INVALID
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
    code = tmp_path / "code" / "models"  # the spec's source_dir, and where SageMaker puts it in the code dir
    code.mkdir(parents=True)
    (code / "broken_net.py").write_text("import torch\nclass Net(:\n    pass\n")
    (code / "plain_net.py").write_text("class Net:\n    pass\n")
    shutil.copytree(code, tmp_path / "opt_ml" / "code" / "models")

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

    rejected = write_spec(
        tmp_path / "rejected.yaml",
        "name: rejected\nenvironment: {name: Basic, max_episode_steps: 20}\nalgorithm:\n  name: PPO\n"
        "  hyperparameters: {train_batch_size_per_learner: 500, minibatch_size: 1000}\ntraining:\n  stop: {iterations: 1}\n",
    )
    return {
        "hyperparameters-rejected": (rejected, {}, 3, r"^algorithm\.hyperparameters: RLlib rejected the configuration: ValueError: `minibatch_size` \(1000\) must be <= `train_batch_size_per_learner` \(500\)\. In PPO"),
        "binary-not-executable": (binary_spec("not-executable", notexec), {}, 4, rf"^environment: {re.escape(str(notexec))}: not executable \(chmod \+x it\)$"),
        "player-never-connects": (binary_spec("never-connects", sleeper), {}, 4, rf"^environment: {re.escape(str(sleeper))}: the player did not connect to 127\.0\.0\.1:\d+ within 3 s\. Check that"),
        "module-syntax-error": (module_spec("syntax-error", "broken_net:Net"), {}, 3, r"^algorithm\.model\.module 'broken_net:Net': .*/code/models/broken_net\.py:2:11: syntax error: invalid syntax$"),
        "module-not-rlmodule": (module_spec("not-rlmodule", "plain_net:Net"), {}, 3, r"^algorithm\.model\.module 'plain_net:Net': Net is not an RLModule for torch"),
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
    env = launcher_env(tmp_path, overrides=(*QUICK_TRAINING, "training.stop.timesteps=1750"))
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
    # A remote env runner is restored by RLlib's FaultTolerantActorManager; the driver's env is recreated in place.
    assert "back into service" in err or "Will force reset env(s)" in err
    metrics = [v for v in (parse_metrics_line(line) for line in lines) if v]
    assert metrics[-1]["timesteps"] >= 1750
    assert "rlrunner: exported PPO policy" in "".join(lines)
    assert (tmp_path / "opt_ml" / "model" / "policy.onnx").is_file()


def test_custom_model_trains_and_exports_like_the_default_model(tmp_path: Path, sessions: list[int]) -> None:
    """experiments/custom_model.yaml: the user's TinyMLP from the source dir, trained and exported to ONNX."""
    overrides = ("algorithm.hyperparameters.train_batch_size_per_learner=250", "algorithm.hyperparameters.minibatch_size=125",
                 "algorithm.hyperparameters.num_epochs=2", "training.stop.timesteps=500", "training.envs_per_env_runner=1")
    env = launcher_env(tmp_path, ROOT / "experiments" / "custom_model.yaml", overrides)
    (tmp_path / "opt_ml").mkdir()
    (tmp_path / "opt_ml" / "code").symlink_to(ROOT / "experiments")  # the code dir holds the source dir, models/
    code, out, err = run_launcher(env, sessions, 180)
    assert code == 0, err[-3000:]
    model = tmp_path / "opt_ml" / "model"
    policy = json.loads((model / "policy.json").read_text())
    assert policy["module_class"] == "tiny_mlp.TinyMLP"
    assert policy["action_space"] == {"type": "discrete", "n": 3, "start": 0}
    import numpy as np
    import onnxruntime
    import torch

    from rlrunner.contract.checkpoints import CheckpointStore
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


def test_sagemaker_shaped_job_trains_the_build_from_the_train_channel(tmp_path: Path, sessions: list[int]) -> None:
    """/opt/ml laid out as SageMaker lays it: the build in input/data/train (without its x bit, as S3 gives it),
    the entry script in code/, the plan's variables; the launcher trains, exports and evaluates into model/."""
    build = Path(resolve_environment("Basic"))
    spec = write_spec(
        tmp_path / "game.yaml",
        f"name: game\nenvironment:\n  binary: {build}\n  max_episode_steps: 100\nalgorithm:\n  name: PPO\n"
        "training:\n  stop: {timesteps: 500}\n  evaluation_episodes: 3\ncompute: {instance_type: ml.c5.xlarge}\n",
    )
    experiment_spec, document = load_spec(spec, QUICK_TRAINING)
    job = plan(experiment_spec, spec_dir=document.base_dir)
    assert job.experiment["environment"]["binary"] == f"/opt/ml/input/data/train/{build.name}"
    opt_ml = tmp_path / "opt_ml"
    channel = opt_ml / "input" / "data" / "train"
    channel.mkdir(parents=True)
    shutil.copy(build, channel / build.name)
    (channel / build.name).chmod(0o644)
    (opt_ml / "input" / "config").mkdir(parents=True)
    (opt_ml / "input" / "config" / "resourceconfig.json").write_text(json.dumps({"current_host": "algo-1", "hosts": ["algo-1"]}))
    shutil.copytree(job.estimator["source_dir"], opt_ml / "code")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "RLRUNNER_"))}
    env.update(job.environment)
    env.update({"RLRUNNER_OPT_ML": str(opt_ml), "SM_CHANNEL_TRAIN": str(channel), "SM_NUM_CPUS": "2", "PYTHONWARNINGS": "ignore"})
    process = subprocess.Popen(
        [sys.executable, job.estimator["entry_point"], "--rlrunner_run_id", job.run_id], cwd=opt_ml / "code", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    sessions.append(process.pid)
    out, err = process.communicate(timeout=300)

    assert process.returncode == 0, err[-3000:]
    assert (opt_ml / "model" / "policy.onnx").is_file()
    evaluation = json.loads((opt_ml / "model" / "evaluation.json").read_text())
    assert evaluation["episodes"] == 3 and evaluation["greedy"] is True
    assert evaluation["min"] <= evaluation["mean"] <= evaluation["max"]
    assert f"rlrunner: evaluation: mean {evaluation['mean']:.4f}" in out


@pytest.mark.parametrize("case", ["not-json", "deep-json", "decompression-bomb", "schema"])
def test_checksummed_but_invalid_payload_is_exit_3_with_one_line(tmp_path: Path, sessions: list[int], case: str) -> None:
    from contract.test_experiment_env import HOSTILE_PAYLOADS, forge

    raw = b'{"format": 1, "run_id": 7}' if case == "schema" else HOSTILE_PAYLOADS[case][0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RLRUNNER_")}
    env.update({"RLRUNNER_OPT_ML": str(tmp_path), **forge(raw)})
    code, out, err = run_launcher(env, sessions, 60, "--print-config")
    assert code == EXIT_INVALID, err
    assert "Traceback" not in err and len(err.splitlines()) == 1 and out == ""
    assert err.startswith("rlrunner: error: the encoded experiment ")
    if case == "schema":
        assert "does not match this launcher's schema (rlrunner versions differ?): " in err and "(and " in err
    else:
        assert err.endswith(HOSTILE_PAYLOADS[case][1] + "\n")


def test_describe_layout_names_what_auto_chose() -> None:
    experiment = train_unity.decode_experiment(train_unity.read_container_env(launcher_env_vars(BASIC_PPO)))
    assert train_unity.describe_layout(experiment, 0, 2, 2) == (
        "sampling in the driver, 2 players each, exchanges overlapped (env_runners and envs_per_env_runner: auto on 2 CPU(s))"
    )
    fixed = experiment.model_copy(update={"training": experiment.training.model_copy(update={"env_runners": 1, "envs_per_env_runner": 1})})
    assert train_unity.describe_layout(fixed, 1, 1, 2) == "1 remote env runner(s), 1 player each on 2 CPU(s)"


def launcher_env_vars(spec: Path) -> dict[str, str]:
    experiment_spec, document = load_spec(spec, ())
    return dict(plan(experiment_spec, spec_dir=document.base_dir, local=True).environment)


def test_limit_torch_threads_is_one_unless_omp_num_threads_says_otherwise() -> None:
    import torch

    before = torch.get_num_threads()
    try:
        assert train_unity.limit_torch_threads({}) == 1
        assert train_unity.limit_torch_threads({"OMP_NUM_THREADS": "2"}) == 2
    finally:
        torch.set_num_threads(before)


def test_ray_is_started_once_more_when_its_first_start_fails(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import types

    import ray

    calls: list[dict[str, object]] = []
    failures = [1]  # how many starts fail before one succeeds

    def init(**kwargs: object) -> None:
        calls.append(kwargs)
        if failures[0] > 0:
            failures[0] -= 1
            raise RuntimeError("The current node timed out during startup.")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(train_unity, "install_signal_handlers", lambda: None)
    env = types.SimpleNamespace(num_gpus=0)
    train_unity.start_ray(env, 2)  # type: ignore[arg-type]
    assert len(calls) == 2 and calls[1]["_node_ip_address"] == "127.0.0.1"
    assert "rlrunner: Ray did not start (RuntimeError: The current node timed out during startup.); starting it once more" in capsys.readouterr().out
    failures[0] = 2
    with pytest.raises(train_unity.InfrastructureError, match="Ray could not start on 127.0.0.1: RuntimeError: The current node timed out"):
        train_unity.start_ray(env, 2)  # type: ignore[arg-type]
