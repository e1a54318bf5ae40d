"""The launcher's metrics lines and the regexes that SageMaker (and the local backend) read them with."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

LINE_PREFIX = "rlrunner-metrics"
TENSORBOARD_TAGS = {
    "episode_return_mean": "episode/return_mean",
    "episode_return_max": "episode/return_max",
    "episode_return_min": "episode/return_min",
    "episode_len_mean": "episode/length_mean",
    "episodes": "episode/count",
    "policy_loss": "learner/policy_loss",
    "vf_loss": "learner/value_loss",
    "qf_loss": "learner/q_loss",
    "total_loss": "learner/total_loss",
    "entropy": "learner/entropy",
    "kl": "learner/kl",
    "vf_explained_var": "learner/value_explained_variance",
    "lr": "learner/learning_rate",
    "env_steps_per_s": "throughput/env_steps_per_s",
    "agent_steps_per_s": "throughput/agent_steps_per_s",
    "sample_time_s": "time/sampling_s",
    "learn_time_s": "time/learning_s",
    "iteration_time_s": "time/iteration_s",
}
"""Each statistic's TensorBoard tag (the x axis is `timesteps`, environment steps)."""
METRIC_NAMES = ("iteration", "timesteps", *TENSORBOARD_TAGS, "time_s")
"""What a metrics line, metrics.csv and the SageMaker metric definitions hold (SageMaker allows 40 definitions)."""
FLOAT_REGEX = r"[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?"
BEHAVIOR_PREFIX = "episode_return_mean."
"""Per-behaviour fields of a multi-agent run: `episode_return_mean.<Name>_team<N>=…` (after the fixed ones)."""
EXTRA_NAMES = ("agent_timesteps", "evaluation_return_mean")
"""Optional fields: agent steps sampled (multi-agent runs; `timesteps` stays environment steps) and the greedy
policy's mean return (runs that stop on `training.stop.evaluation_return_mean`)."""
BEHAVIORS_KEY = "behaviors"
POOLED_KEY = "agent_episodes"
"""Where the launcher's callback logs per-behaviour and pooled agent-episode metrics under `env_runners/`."""
_BEHAVIOR_FIELD = re.compile(rf"\b({re.escape(BEHAVIOR_PREFIX)}[A-Za-z0-9_\-.]+)=({FLOAT_REGEX})")


def behavior_metric(behavior: str) -> str:
    """The metrics-line field of a behaviour's mean return: `Striker?team=0` -> `episode_return_mean.Striker_team0`."""
    name, _, team = behavior.partition("?team=")
    label = re.sub(r"[^A-Za-z0-9_\-.]", "_", name) + (f"_team{team}" if team else "")
    return BEHAVIOR_PREFIX + label


def format_metrics_line(values: Mapping[str, float | int | None]) -> str:
    """One line per iteration: `rlrunner-metrics iteration=3 timesteps=1500 episode_return_mean=0.52 …`."""
    fields = []
    extra = sorted(name for name in values if name.startswith(BEHAVIOR_PREFIX))
    for name in (*METRIC_NAMES, *EXTRA_NAMES, *extra):
        value = values.get(name)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        fields.append(f"{name}={value:.6g}" if isinstance(value, float) else f"{name}={value}")
    return " ".join([LINE_PREFIX, *fields])


def metric_regex(name: str) -> str:
    """The regex that captures one metric from a metrics line (first group = the value)."""
    return rf"{LINE_PREFIX}.*\b{name}=({FLOAT_REGEX})"


def metric_definitions() -> list[dict[str, str]]:
    """SageMaker `metric_definitions` for every metric the launcher prints."""
    return [{"Name": name, "Regex": metric_regex(name)} for name in METRIC_NAMES]


def parse_metrics_line(line: str) -> dict[str, float] | None:
    """The metrics in a launcher output line, or None if it is not a metrics line."""
    if not line.startswith(LINE_PREFIX):
        return None
    values = {}
    for name in (*METRIC_NAMES, *EXTRA_NAMES):
        match = re.search(metric_regex(name), line)
        if match:
            values[name] = float(match.group(1))
    for match in _BEHAVIOR_FIELD.finditer(line):
        values[match.group(1)] = float(match.group(2))
    return values
