"""The RLlib env creator: a typed ``EnvironmentSpec`` and a resolved player executable in, a Unity env out.

The launcher resolves the executable once and builds the env config with ``unity_env_config``;
RLlib hands that config (an ``EnvContext``, a dict) to ``make_unity_env`` in every env runner.
Everything Unity-side lives in ``rlrunner.unity``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlrunner.contract.unity_model import UnityBehavior, scene_behaviors
from rlrunner.schema import EnvironmentSpec
from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.gym_env import UnityGymEnv, UnityVectorEnv
from rlrunner.unity.launch import LaunchOptions, launch_unity
from rlrunner.unity.players import PlayersVectorEnv, open_players
from rlrunner.unity.spaces import ImageVectorLayout, scene_converters

MULTI_AGENT = "multi_agent"
"""The env_config key that selects ``UnityMultiAgentEnv`` (set by the launcher when the fast path does not apply)."""
ROUNDS = "rounds"
"""The env_config key of the evaluation's ``UnityMultiAgentEnv``: an RLlib episode per round of agent episodes."""


def unity_env_config(
    environment: EnvironmentSpec, executable: Path, *, seed: int | None, log_dir: str | None, players: int = 1
) -> dict[str, Any]:
    """RLlib's ``env_config`` for ``make_unity_env``: the spec itself, the executable, the seed, the log dir
    and the players per env runner (more than one: a ``PlayersVectorEnv`` whose exchanges overlap)."""
    return {"environment": environment, "executable": str(executable), "seed": seed, "log_dir": log_dir, "players": players}


def launch_options(
    environment: EnvironmentSpec, *, num_areas: int, seed: int, log_dir: str | None
) -> LaunchOptions:
    """``launch_unity``'s options: the spec's values, with the areas, seed and log dir of this env."""
    return LaunchOptions(
        base_port=environment.base_port,
        no_graphics=environment.no_graphics,
        player_args=tuple(environment.player_args),
        time_scale=environment.time_scale,
        parameters=dict(environment.parameters),
        timeout_s=environment.timeout_s,
        num_areas=num_areas,
        seed=seed,
        log_dir=log_dir,
    )


def make_unity_env(env_config: Mapping[str, Any]) -> Any:
    """RLlib env creator: launch the player(s) and wrap them (a VectorEnv when areas or players > 1, or num_envs given;
    a ``UnityMultiAgentEnv`` when ``env_config[MULTI_AGENT]``)."""
    if env_config.get(MULTI_AGENT):
        return _make_multi_agent_env(env_config)
    environment = _environment(env_config)
    vector_entry = "num_envs" in env_config  # RLlib's vector_entry_point passes num_envs
    players = int(env_config.get("players", 1))
    if vector_entry and players > 1:
        count = int(env_config["num_envs"])
        first = _worker_index(env_config) * count
        return PlayersVectorEnv(open_players(count, lambda index: _single_player(env_config, environment, first + index)))
    num_areas = int(env_config["num_envs"]) if vector_entry else environment.num_areas
    return _launch(env_config, environment, num_areas, _worker_index(env_config), vector_entry)


def _worker_index(env_config: Mapping[str, Any]) -> int:
    return int(getattr(env_config, "worker_index", 0) or 0)


def _single_player(env_config: Mapping[str, Any], environment: EnvironmentSpec, instance: int) -> UnityGymEnv:
    env = _launch(env_config, environment, 1, instance, vector_entry=False)
    assert isinstance(env, UnityGymEnv)
    return env


def _start_player(env_config: Mapping[str, Any], environment: EnvironmentSpec, num_areas: int, instance: int) -> Any:
    seed = env_config.get("seed")
    # Unity takes one int seed at start; offset it per env runner (and player) so they do not play alike.
    options = launch_options(
        environment,
        num_areas=num_areas,
        seed=int(seed) + instance if seed is not None else instance,
        log_dir=env_config.get("log_dir"),
    )
    return launch_unity(Path(env_config["executable"]), options)


def _launch(
    env_config: Mapping[str, Any], environment: EnvironmentSpec, num_areas: int, instance: int, vector_entry: bool
) -> UnityGymEnv | UnityVectorEnv:
    base = _start_player(env_config, environment, num_areas, instance)
    try:
        if vector_entry or num_areas > 1:
            return UnityVectorEnv(base, num_areas, **_adapter_options(environment))
        return UnityGymEnv(base, **_adapter_options(environment))
    except BaseException:
        base.close()
        raise


def _adapter_options(environment: EnvironmentSpec) -> dict[str, Any]:
    """The spec's observation/action options, as every Unity adapter takes them."""
    return {
        "uint8_visual": environment.uint8_visual,
        "flatten_branched": environment.flatten_branched,
        "allow_multiple_obs": environment.allow_multiple_obs,
        "max_episode_steps": environment.max_episode_steps,
    }


def _make_multi_agent_env(env_config: Mapping[str, Any]) -> Any:
    from rlrunner.unity.multi_agent import EPISODE_HORIZON, UnityMultiAgentEnv

    environment = _environment(env_config)
    base = _start_player(env_config, environment, environment.num_areas, _worker_index(env_config))
    try:
        return UnityMultiAgentEnv(
            base,
            episode_horizon=int(env_config.get("episode_horizon", EPISODE_HORIZON)),
            rounds=bool(env_config.get(ROUNDS)),
            **_adapter_options(environment),
        )
    except BaseException:
        base.close()
        raise


@dataclass(frozen=True)
class Scene:
    """What one start of the player (one area) shows: every behaviour's spaces and how many agents asked to decide."""

    spaces: dict[str, tuple[Any, Any]]
    """Fully qualified behaviour name -> (observation space, action space)."""
    agents: dict[str, int]
    """Fully qualified behaviour name -> agents in its first DecisionSteps."""
    behaviors: list[UnityBehavior]
    """Every behaviour's observation and action specs, as an ML-Agents model export needs them."""
    layouts: dict[str, ImageVectorLayout] = field(default_factory=dict)
    """Fully qualified behaviour name -> where its camera image and vector lie in its flat observation (such behaviours only)."""

    @property
    def fast_path(self) -> bool:
        """One behaviour with one agent per area: the synchronous gymnasium (vector) env drives it."""
        return len(self.spaces) == 1 and list(self.agents.values()) == [1]


def probe_scene(env_config: Mapping[str, Any]) -> Scene:
    """Start the player once (one area), read its behaviours, spaces and first decisions, and close it.

    No RLlib here: the launcher imports RLlib on another thread while this runs.
    """
    environment = _environment(env_config)
    base = _start_player(env_config, environment, 1, 0)
    try:
        base.reset()  # the specs arrive with the first message that carries agents
        specs = dict(base.behavior_specs)
        converters = scene_converters(
            specs,
            uint8_visual=environment.uint8_visual,
            flatten_branched=environment.flatten_branched,
            allow_multiple_obs=environment.allow_multiple_obs,
        )
        spaces = {name: (conv.observation_space, conv.action_space) for name, conv in converters.items()}
        agents = {name: len(base.get_steps(name)[0]) for name in converters}
        layouts = {name: conv.layout for name, conv in converters.items() if conv.layout is not None}
        return Scene(spaces=spaces, agents=agents, behaviors=scene_behaviors(specs), layouts=layouts)
    finally:
        base.close()


def _environment(env_config: Mapping[str, Any]) -> EnvironmentSpec:
    environment = env_config.get("environment")
    if not isinstance(environment, EnvironmentSpec):
        raise UnityEnvError(
            f"unity_env: env_config['environment'] must be an EnvironmentSpec (built by unity_env_config), "
            f"got {type(environment).__name__}"
        )
    return environment


__all__ = ["MULTI_AGENT", "ROUNDS", "Scene", "launch_options", "make_unity_env", "probe_scene", "unity_env_config"]
