"""Curriculum lessons, as `mlagents-learn`'s `environment_parameters` have them: after every training iteration
the launcher compares the episode return mean with the current lesson's threshold and, once it is reached
(after `min_lesson_length` episodes in the lesson), sends the next lesson's value to the players of every env
runner over ML-Agents' environment-parameters side channel (`rlrunner.unity.launch.set_lesson_values`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rlrunner.schema import CurriculumSpec, EnvironmentSpec, SamplerSpec


@dataclass
class Curriculum:
    """The lesson of every curriculum parameter, and the episodes played in it."""

    parameters: Mapping[str, CurriculumSpec]
    lessons: dict[str, int] = field(default_factory=dict)
    episodes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, environment: EnvironmentSpec) -> Curriculum | None:
        """The spec's curricula, or None when it has none."""
        parameters = {key: value for key, value in environment.parameters.items() if isinstance(value, CurriculumSpec)}
        return cls(parameters, {key: 0 for key in parameters}, {key: 0 for key in parameters}) if parameters else None

    def advance(self, return_mean: float | None, episodes: int, behavior_means: Mapping[str, float | None] | None = None) -> dict[str, str]:
        """Count an iteration's episodes and move every parameter whose lesson is done to its next lesson;
        returns {parameter: description} of the lessons changed."""
        changed: dict[str, str] = {}
        for key, spec in self.parameters.items():
            self.episodes[key] += episodes
            lesson = spec.curriculum[self.lessons[key]]
            criteria = lesson.completion_criteria
            if criteria is None:  # the last lesson
                continue
            mean = (behavior_means or {}).get(criteria.behavior, return_mean) if criteria.behavior else return_mean
            if mean is None or self.episodes[key] < criteria.min_lesson_length or mean < criteria.threshold:
                continue
            played = self.episodes[key]
            self.lessons[key] += 1
            self.episodes[key] = 0
            following = spec.curriculum[self.lessons[key]]
            changed[key] = (
                f"{key}: lesson {self.lessons[key]} ({following.name}) after {played} episodes of {lesson.name} "
                f"at return {mean:.4g} >= {criteria.threshold:g}"
            )
        return changed

    def restore(self, lessons: Mapping[str, int]) -> dict[str, str]:
        """Continue at the lessons a checkpoint recorded (`state`); returns {parameter: description} of those past the first."""
        restored: dict[str, str] = {}
        for key, index in lessons.items():
            if key in self.parameters and 0 < int(index) < len(self.parameters[key].curriculum):
                self.lessons[key] = int(index)
                restored[key] = f"{key}: lesson {index} ({self.parameters[key].curriculum[int(index)].name}), as checkpointed"
        return restored

    def state(self) -> dict[str, int]:
        """What a checkpoint records: the lesson of every parameter."""
        return dict(self.lessons)

    def values(self, keys: Any = None) -> dict[str, float | SamplerSpec]:
        """The current lesson's value of the parameters named (all by default)."""
        return {key: self.parameters[key].curriculum[self.lessons[key]].value for key in (keys or self.parameters)}


def send_lessons(algo: Any, values: Mapping[str, float | SamplerSpec]) -> int:
    """Send lesson values to the players of every env runner (the driver's own included, and those started
    later); returns how many environments were open."""

    def apply(_runner: Any) -> int:
        from rlrunner.unity.launch import set_lesson_values

        return set_lesson_values(values)

    return sum(int(count or 0) for count in algo.env_runner_group.foreach_env_runner(apply, local_env_runner=True))


__all__ = ["Curriculum", "send_lessons"]
