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


def format_metrics_line(values: Mapping[str, float | int | None]) -> str:
    """One line per iteration: `rlrunner-metrics iteration=3 timesteps=1500 episode_return_mean=0.52 …`."""
    fields = []
    for name in METRIC_NAMES:
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
    for name in METRIC_NAMES:
        match = re.search(metric_regex(name), line)
        if match:
            values[name] = float(match.group(1))
    return values
