"""Per-behaviour episode metrics of a multi-agent run: what each Unity agent episode returned.

``UnityMultiAgentEnv`` keeps the return of every Unity agent episode that ended (whole Unity
episodes, not the RLlib pieces they are cut into); this callback drains them into the env runner's
metrics under ``env_runners/behaviors/<behaviour>/…`` and ``env_runners/agent_episodes/…`` (all
behaviours pooled), which the launcher turns into its metrics line.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

BEHAVIORS_KEY = "behaviors"
POOLED_KEY = "agent_episodes"
WINDOW = 100


def _unity_envs(env: Any) -> list[Any]:
    found = []
    for sub in getattr(env, "envs", [env]):
        unwrapped = getattr(sub, "unwrapped", sub)
        if hasattr(unwrapped, "pop_finished"):
            found.append(unwrapped)
    return found


def log_finished(metrics_logger: Any, finished: dict[str, list[tuple[float, int]]]) -> None:
    """Log (return, decisions) of finished agent episodes per behaviour and pooled."""
    for name, episodes in finished.items():
        for episode_return, length in episodes:
            for prefix in ((BEHAVIORS_KEY, name), (POOLED_KEY,)):
                metrics_logger.log_value((*prefix, "episode_return_mean"), episode_return, window=WINDOW)
                metrics_logger.log_value((*prefix, "episode_return_max"), episode_return, reduce="max", window=WINDOW)
                metrics_logger.log_value((*prefix, "episode_return_min"), episode_return, reduce="min", window=WINDOW)
                metrics_logger.log_value((*prefix, "episode_len_mean"), length, window=WINDOW)
                metrics_logger.log_value((*prefix, "episodes"), 1, reduce="sum")


class BehaviorMetrics(RLlibCallback):
    """Drains the Unity agent episodes that ended into the env runner's metrics."""

    def on_episode_step(self, *, env: Any = None, metrics_logger: Any = None, **kwargs: Any) -> None:
        """After every env step (the adapter keeps at most a bounded backlog anyway)."""
        if env is None or metrics_logger is None:
            return
        for unity in _unity_envs(env):
            finished = unity.pop_finished()
            if finished:
                log_finished(metrics_logger, finished)


__all__ = ["BEHAVIORS_KEY", "POOLED_KEY", "BehaviorMetrics", "log_finished"]
