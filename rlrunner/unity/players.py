"""Several players behind one gymnasium ``VectorEnv``, their exchanges in flight together.

A real Unity build spends milliseconds per step in physics while the trainer waits. ``PlayersVectorEnv``
drives K single-agent players (``UnityGymEnv`` each, one process each): ``step`` sends every player
its action first (``begin_step``: the bytes go to the gRPC handler thread that answers that player)
and only then waits for the answers in turn (``end_step``), so the K step times overlap instead of
adding up. No thread of its own: the waiting happens on each player's gRPC server, which already
runs its handler in a thread.

Autoreset is NEXT_STEP, as in ``UnityVectorEnv``: a sub-environment that ended reports its reset
observation on the following ``step`` (the action given to it then is ignored). A player's next
episode usually starts in the same message as the terminal one, so that reset costs no exchange.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array

from rlrunner.unity.errors import UnityEnvError
from rlrunner.unity.gym_env import UnityGymEnv
from rlrunner.unity.spaces import Obs


class PlayersVectorEnv(VectorEnv[Obs, Any, Any]):
    """K single-agent Unity envs (one player each) as one VectorEnv whose exchanges overlap."""

    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, envs: Sequence[UnityGymEnv]) -> None:
        if not envs:
            raise UnityEnvError("unity_env: PlayersVectorEnv needs at least one player")
        first = envs[0]
        for index, env in enumerate(envs[1:], start=1):
            if env.observation_space != first.observation_space or env.action_space != first.action_space:
                raise UnityEnvError(
                    f"unity_env: player {index} has spaces {env.observation_space}, {env.action_space}; "
                    f"player 0 has {first.observation_space}, {first.action_space} (players must be the same build)"
                )
        self.envs = list(envs)
        self.num_envs = len(envs)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._closed = False

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Obs, dict[str, Any]]:
        """Reset every player (no exchange where Unity already sent the first decision)."""
        super().reset(seed=seed)
        results = [env.reset(seed=None if seed is None else seed + index) for index, env in enumerate(self.envs)]
        self._autoreset[:] = False
        return self._batch([obs for obs, _ in results]), self._infos([info for _, info in results])

    def step(self, actions: Any) -> tuple[Obs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Send every player its action, then collect the answers (resets of ended players in between)."""
        sent = []
        for index, env in enumerate(self.envs):
            if not self._autoreset[index]:
                env.begin_step(_item(actions, index))
                sent.append(index)
        observations: list[Any] = [None] * self.num_envs
        infos: list[dict[str, Any]] = [{}] * self.num_envs
        rewards = np.zeros(self.num_envs, dtype=np.float32)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        for index in np.flatnonzero(self._autoreset).tolist():
            observations[index], infos[index] = self.envs[index].reset()
        for index in sent:
            obs, reward, done, cut, info = self.envs[index].end_step()
            observations[index], infos[index] = obs, info
            rewards[index], terminated[index], truncated[index] = reward, done, cut
        self._autoreset = terminated | truncated
        return self._batch(observations), rewards, terminated, truncated, self._infos(infos)

    def _batch(self, observations: list[Any]) -> Obs:
        out = create_empty_array(self.single_observation_space, self.num_envs, fn=np.zeros)
        return concatenate(self.single_observation_space, observations, out)

    def _infos(self, infos: list[dict[str, Any]]) -> dict[str, Any]:
        masks = [info.get("action_mask") for info in infos]
        if any(mask is None for mask in masks):
            return {}
        if isinstance(masks[0], tuple):
            stacked: Any = tuple(np.stack(parts) for parts in zip(*masks, strict=True))
        else:
            stacked = np.stack(masks)  # type: ignore[arg-type]
        return {"action_mask": stacked, "_action_mask": np.ones(self.num_envs, dtype=bool)}

    def close(self, **kwargs: Any) -> None:
        """Close every player (idempotent)."""
        if not self._closed:
            self._closed = True
            for env in self.envs:
                env.close()


def _item(actions: Any, index: int) -> Any:
    if isinstance(actions, tuple):
        return tuple(part[index] for part in actions)
    return np.asarray(actions)[index]


def open_players(count: int, open_one: Callable[[int], UnityGymEnv]) -> list[UnityGymEnv]:
    """``open_one(i)`` for i < count, started side by side (each waits on its player's start); all or none."""
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(open_one, index) for index in range(count)]
    opened = [future.result() for future in futures if future.exception() is None]
    errors = [future.exception() for future in futures if future.exception() is not None]
    if errors:
        for env in opened:
            env.close()
        raise errors[0]  # type: ignore[misc]
    return opened


__all__ = ["PlayersVectorEnv", "open_players"]
