"""Play the exported ONNX policy (the model that serving loads) in the experiment's environment.

The environment is made by `rlrunner.entry.unity_env.make_unity_env`, so episodes run through the real
ML-Agents protocol; a vector env (several areas) plays its areas side by side.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlrunner.entry.policy import OnnxPolicy, read_experiment

DEFAULT_STEP_LIMIT = 1000
"""Step limit of an evaluation episode when the experiment sets none (Basic can loop forever)."""
EVALUATION_FILE = "evaluation.json"

EnvFactory = Callable[[Mapping[str, Any]], Any]
Chooser = Callable[[np.ndarray], np.ndarray]


def evaluate_policy(
    model_dir: str | Path,
    *,
    episodes: int,
    greedy: bool = True,
    seed: int | None = None,
    step_limit: int | None = None,
    env_factory: EnvFactory | None = None,
) -> dict[str, Any]:
    """Play `episodes` episodes with the model dir's policy; return episodes, mean, max, min, mean_length, returns."""
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1 (got {episodes})")
    policy = OnnxPolicy.from_dir(model_dir, threads=1)
    env_config = evaluation_env_config(read_experiment(model_dir), seed=seed, step_limit=step_limit)
    choose = make_chooser(policy, greedy=greedy, seed=seed)
    env = (env_factory or _make_unity_env)(env_config)
    try:
        if hasattr(env, "num_envs"):
            returns, lengths = play_vector(env, choose, episodes, seed=seed)
        else:
            returns, lengths = play_single(env, choose, episodes, seed=seed)
    finally:
        env.close()
    return summarize(returns, lengths) | {"greedy": greedy, "seed": seed, "model_dir": str(model_dir)}


def _make_unity_env(env_config: Mapping[str, Any]) -> Any:
    from rlrunner.entry.unity_env import make_unity_env

    return make_unity_env(env_config)


def evaluation_env_config(experiment: Mapping[str, Any], *, seed: int | None, step_limit: int | None) -> dict[str, Any]:
    """The env config for evaluation: the experiment's environment block, seeded, with a step limit."""
    config = dict(experiment["environment"])
    config["seed"] = seed
    if step_limit is not None:
        config["max_episode_steps"] = step_limit
    elif config.get("max_episode_steps") is None:
        config["max_episode_steps"] = DEFAULT_STEP_LIMIT
    return config


def make_chooser(policy: OnnxPolicy, *, greedy: bool, seed: int | None) -> Chooser:
    """Batch of observations -> batch of actions: greedy (`actions` output) or sampled."""
    if greedy:
        return policy.act
    rng = np.random.default_rng(seed)
    return lambda obs: policy.sample(obs, rng)


def _batch(obs: Any) -> np.ndarray:
    if isinstance(obs, tuple | dict):
        raise ValueError("evaluate: the policy takes one observation array; this environment returns several (allow_multiple_obs)")
    return np.asarray(obs)


def play_single(env: Any, choose: Chooser, episodes: int, *, seed: int | None = None) -> tuple[list[float], list[int]]:
    """Play episodes one after the other in a gymnasium Env; return their returns and lengths."""
    returns: list[float] = []
    lengths: list[int] = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        total, length, done = 0.0, 0, False
        while not done:
            action = choose(_batch(obs)[None])[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            length += 1
            done = bool(terminated or truncated)
        returns.append(total)
        lengths.append(length)
    return returns, lengths


def play_vector(env: Any, choose: Chooser, episodes: int, *, seed: int | None = None) -> tuple[list[float], list[int]]:
    """Play episodes in a next-step-autoreset VectorEnv, a fixed share per area (so short episodes are not favoured)."""
    n = int(env.num_envs)
    targets = np.array([(episodes + area) // n for area in range(n)])  # shares add up to `episodes`
    totals = np.zeros(n)
    lengths = np.zeros(n, dtype=np.int64)
    finished: list[list[tuple[float, int]]] = [[] for _ in range(n)]
    resetting = np.zeros(n, dtype=bool)  # an area whose episode ended: its next step is the autoreset
    obs, _ = env.reset(seed=seed)
    while any(len(done) < target for done, target in zip(finished, targets, strict=True)):
        obs, rewards, terminated, truncated, _ = env.step(choose(_batch(obs)))
        live = ~resetting
        totals[live] += rewards[live]
        lengths[live] += 1
        ended = (np.asarray(terminated) | np.asarray(truncated)) & live
        for area in np.flatnonzero(ended):
            if len(finished[area]) < targets[area]:
                finished[area].append((float(totals[area]), int(lengths[area])))
        totals[ended] = 0.0
        lengths[ended] = 0
        resetting = ended
    played = [episode for area in finished for episode in area]
    return [r for r, _ in played], [length for _, length in played]


def summarize(returns: list[float], lengths: list[int]) -> dict[str, Any]:
    """The evaluation's figures: episodes, mean, max, min, std, mean_length, returns, lengths."""
    return {
        "episodes": len(returns),
        "mean": statistics.fmean(returns),
        "max": max(returns),
        "min": min(returns),
        "std": statistics.pstdev(returns),
        "mean_length": statistics.fmean(lengths),
        "returns": returns,
        "lengths": lengths,
    }


def default_episodes(model_dir: str | Path) -> int:
    """The experiment's `training.evaluation_episodes` (20 when it does not say)."""
    training = read_experiment(model_dir).get("training") or {}
    return int(training.get("evaluation_episodes") or 20)


def write_evaluation(result: Mapping[str, Any], directory: str | Path) -> Path:
    """Write `evaluation.json` into `directory` atomically; return its path."""
    path = Path(directory) / EVALUATION_FILE
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".evaluation-", suffix=".json", delete=False) as handle:
        json.dump(result, handle, indent=2)
        handle.write("\n")
    os.replace(handle.name, path)
    return path


def locate_model_dir(path: str | Path) -> tuple[Path, Path]:
    """(model dir, dir for evaluation.json) from a run dir (`<run>/model/`) or a model dir itself."""
    path = Path(path)
    if (path / "model" / "policy.onnx").is_file():
        return path / "model", path
    if path.name == "model" and (path / "policy.onnx").is_file():
        return path, path.parent
    return path, path
