"""Play the exported ONNX policy (the model that serving loads) in the experiment's environment.

The environment is made by `rlrunner.entry.unity_env.make_unity_env` from the experiment's typed
`EnvironmentSpec` and a player executable, so episodes run through the real ML-Agents protocol; a vector
env (several areas) plays its areas side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rlrunner.contract.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, RlrunnerError, UsageError
from rlrunner.contract.model_dir import DEFAULT_EVALUATION_EPISODES, POLICIES_FILE
from rlrunner.policy import OnnxPolicy, PolicySet, read_experiment
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.errors import UnityEnvError

DEFAULT_STEP_LIMIT = 1000
"""Step limit of an evaluation episode when the experiment sets none (Basic can loop forever)."""

EnvFactory = Callable[[Mapping[str, Any]], Any]
Chooser = Callable[[np.ndarray], np.ndarray]
Player = Callable[[Any, int], dict[str, Any]]
"""(env, episodes) -> the evaluation's figures: a policy's, or a `behaviors` map of them."""


def evaluate_policy(
    model_dir: str | Path,
    *,
    episodes: int,
    greedy: bool = True,
    seed: int | None = None,
    step_limit: int | None = None,
    executable: Path | None = None,
    env_factory: EnvFactory | None = None,
) -> dict[str, Any]:
    """Play `episodes` episodes with the model dir's policy; return episodes, mean, max, min, mean_length, returns.

    A multi-policy model dir (policies.json) plays until every behaviour has `episodes` agent episodes, and
    `behaviors` holds each one's figures. `executable`: the player build; by default the one the model dir's
    experiment names (see `recorded_executable`).
    """
    if episodes < 1:
        raise ValueError(f"episodes: must be >= 1 (got {episodes})")
    multi_policy = (Path(model_dir) / POLICIES_FILE).is_file()
    play = (_policies_player if multi_policy else _policy_player)(Path(model_dir), greedy=greedy, seed=seed)
    environment = EnvironmentSpec.model_validate(read_experiment(model_dir)["environment"])
    if executable is None:
        executable = recorded_executable(environment)
    env_config = evaluation_env_config(environment, executable, seed=seed, step_limit=step_limit)
    if multi_policy:
        from rlrunner.entry.unity_env import MULTI_AGENT

        env_config |= {MULTI_AGENT: True, "episode_horizon": 2**31}
    env = (env_factory or _make_unity_env)(env_config)
    try:
        figures = play(env, episodes)
    finally:
        env.close()
    return figures | {"greedy": greedy, "seed": seed, "model_dir": str(model_dir)}


def _policy_player(model_dir: Path, *, greedy: bool, seed: int | None) -> Player:
    choose = make_chooser(OnnxPolicy.from_dir(model_dir, threads=1), greedy=greedy, seed=seed)

    def play(env: Any, episodes: int) -> dict[str, Any]:
        play_episodes = play_vector if hasattr(env, "num_envs") else play_single
        figures = summarize(*play_episodes(env, choose, episodes, seed=seed))
        name = getattr(env, "behavior_name", None)
        return by_behavior({name: figures}) if isinstance(name, str) else figures

    return play


def _policies_player(model_dir: Path, *, greedy: bool, seed: int | None) -> Player:
    policies = PolicySet.from_dir(model_dir, threads=1)
    choosers = {name: make_chooser(policy, greedy=greedy, seed=seed) for name, policy in policies.policies.items()}
    policy_of = policies.policy_of()

    def play(env: Any, episodes: int) -> dict[str, Any]:
        played = sorted(play_multi_agent(env, policy_of, choosers, episodes, seed=seed).items())
        return by_behavior({name: summarize([r for r, _ in done], [n for _, n in done]) for name, done in played})

    return play


def by_behavior(figures: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The evaluation's figures: every behaviour's under `behaviors`; a single behaviour's also at the top level."""
    result: dict[str, Any] = {"behaviors": figures}
    if len(figures) == 1:
        result = next(iter(figures.values())) | result
    return result


def play_multi_agent(
    env: Any, policy_of: Mapping[str, str], choosers: Mapping[str, Chooser], episodes: int, *, seed: int | None = None
) -> dict[str, list[tuple[float, int]]]:
    """Play a `UnityMultiAgentEnv` until every behaviour finished `episodes` agent episodes; (return, length) per behaviour."""
    from rlrunner.unity.multi_agent import behavior_of

    finished: dict[str, list[tuple[float, int]]] = {name: [] for name in env.behaviors}
    totals: dict[str, float] = {}
    lengths: dict[str, int] = {}
    obs, _ = env.reset(seed=seed)
    while any(len(done) < episodes for done in finished.values()):
        groups: dict[str, list[str]] = {}
        for agent_id in env.agents:
            groups.setdefault(behavior_of(agent_id), []).append(agent_id)
        actions: dict[str, Any] = {}
        for name, agent_ids in groups.items():
            chosen = choosers[policy_of[name]](np.stack([_batch(obs[a]) for a in agent_ids]))
            actions.update(zip(agent_ids, chosen, strict=True))
            for agent_id in agent_ids:
                lengths[agent_id] = lengths.get(agent_id, 0) + 1
        obs, rewards, terminateds, truncateds, _ = env.step(actions)
        for agent_id, reward in rewards.items():
            totals[agent_id] = totals.get(agent_id, 0.0) + float(reward)
        for agent_id in obs:
            if terminateds.get(agent_id) or truncateds.get(agent_id):
                done = finished[behavior_of(agent_id)]
                if len(done) < episodes:
                    done.append((totals.pop(agent_id, 0.0), lengths.pop(agent_id, 0)))
        if terminateds["__all__"] or truncateds["__all__"]:
            totals.clear()  # agent ids start again in the next RLlib episode
            lengths.clear()
            obs, _ = env.reset()
    return finished


def recorded_executable(environment: EnvironmentSpec) -> Path:
    """The player of a recorded experiment: only the bundled or an ML-Agents registry player.

    A model dir may come from elsewhere: the program its metadata names is never started unless the
    user names it (`chosen_executable`).
    """
    from rlrunner.envs.registry import known_environment, resolve_environment

    if environment.name is not None:
        if not known_environment(environment.name):
            raise UsageError(
                f"environment.name: {environment.name!r} (from the model dir) is neither bundled nor in ML-Agents' registry; "
                "name the player with --env NAME or --binary PATH"
            )
        return resolve_environment(environment.name)
    if environment.binary_on_s3:
        raise UnityEnvError(f"environment.binary: {environment.binary} is on S3; evaluation needs a local player build")
    raise UsageError(
        f"environment.binary: the model dir names the program {environment.binary}; evaluate starts a program from a model dir "
        f"only when you name it: --binary {environment.binary} (or --env NAME for a registry player)"
    )


def chosen_executable(environment: EnvironmentSpec, *, env: str | None = None, binary: Path | None = None) -> Path:
    """The player the user named (`--binary`, `--env`), else the recorded one if it is a known player."""
    from rlrunner.envs.registry import known_environment, resolve_environment

    if binary is not None:
        if not binary.is_file():
            raise UsageError(f"--binary {binary}: not a file")
        return binary
    if env is not None:
        if not known_environment(env):
            raise UsageError(f"--env {env}: neither bundled nor in ML-Agents' registry")
        return resolve_environment(env)
    return recorded_executable(environment)


def _make_unity_env(env_config: Mapping[str, Any]) -> Any:
    from rlrunner.entry.unity_env import make_unity_env

    return make_unity_env(env_config)


def evaluation_env_config(
    environment: EnvironmentSpec, executable: Path, *, seed: int | None, step_limit: int | None
) -> dict[str, Any]:
    """The env config for evaluation: the experiment's environment, seeded, with a step limit."""
    limit = step_limit if step_limit is not None else environment.max_episode_steps or DEFAULT_STEP_LIMIT
    environment = EnvironmentSpec.model_validate(environment.model_dump() | {"max_episode_steps": limit})
    from rlrunner.entry.unity_env import unity_env_config  # mlagents_envs and gymnasium: only when playing

    return unity_env_config(environment, executable, seed=seed, log_dir=None)


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rlrunner.entry.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="A model dir (policy.onnx, policy.json, experiment.json).")
    parser.add_argument("--episodes", type=int, default=None, help="Episodes to play (default: training.evaluation_episodes).")
    parser.add_argument("--greedy", action=argparse.BooleanOptionalAction, default=True, help="Greedy actions, or sampled ones.")
    parser.add_argument("--stochastic", dest="greedy", action="store_false", help="Same as --no-greedy.")
    parser.add_argument("--seed", type=int, default=None, help="Seed of the player and of sampled actions.")
    parser.add_argument("--env", default=None, help="Play this bundled or ML-Agents registry environment.")
    parser.add_argument("--binary", type=Path, default=None, help="Play this player build (a model dir's own is never started unnamed).")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate a model dir; print the result as JSON on stdout, or one line on stderr and an exit code."""
    args = parse_args(argv)
    try:
        episodes = args.episodes
        if episodes is None:
            training = read_experiment(args.model_dir).get("training") or {}
            episodes = int(training.get("evaluation_episodes") or DEFAULT_EVALUATION_EPISODES)
        environment = EnvironmentSpec.model_validate(read_experiment(args.model_dir)["environment"])
        executable = chosen_executable(environment, env=args.env, binary=args.binary)
        result = evaluate_policy(args.model_dir, episodes=episodes, greedy=args.greedy, seed=args.seed, executable=executable)
    except RlrunnerError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except UnityEnvError as error:
        print(f"error: evaluate: {error}", file=sys.stderr)
        return EXIT_INFRA
    except (ValueError, OSError) as error:
        print(f"error: evaluate: {error}", file=sys.stderr)
        return EXIT_FAILED
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
