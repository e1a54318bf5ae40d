"""The ``fakes`` fixture: the builders of ``unity_fakes`` (a scripted BaseEnv, real mlagents step objects) for unit tests of the adapters."""

from __future__ import annotations

import pytest
from unity_fakes import ScriptedEnv, decision_steps, spec, terminal_steps, vector_spec, visual_spec


class Fakes:
    """Builders for unit tests of the adapters (handed out by the ``fakes`` fixture)."""

    vector_spec = staticmethod(vector_spec)
    visual_spec = staticmethod(visual_spec)
    spec = staticmethod(spec)
    decision_steps = staticmethod(decision_steps)
    terminal_steps = staticmethod(terminal_steps)
    ScriptedEnv = ScriptedEnv


@pytest.fixture
def fakes() -> type[Fakes]:
    """The scripted BaseEnv and step builders."""
    return Fakes
