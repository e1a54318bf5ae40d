"""The bundled Duo player through the real mlagents_envs client: two behaviours, decision periods 1 and 2, respawns."""

from __future__ import annotations

import numpy as np
from mlagents_envs.base_env import ActionTuple

from rlrunner.envs import resolve_environment
from rlrunner.envs.duo.player import RUNNER, WALKER
from rlrunner.unity.launch import LaunchOptions, launch_unity

OPTIONS = LaunchOptions(
    base_port=7300, no_graphics=True, player_args=(), time_scale=20.0, parameters={}, timeout_s=30.0, num_areas=1, seed=0, log_dir=None
)


def test_duo_two_behaviours_decide_at_their_periods_and_respawn() -> None:
    env = launch_unity(resolve_environment("Duo"), OPTIONS)
    try:
        env.reset()
        assert sorted(env.behavior_specs) == [RUNNER, WALKER]
        walker_decisions, walker_terminals, runner_ids = [], [], set()
        for _ in range(16):
            for name in (RUNNER, WALKER):
                decision, terminal = env.get_steps(name)
                if name == WALKER:
                    walker_decisions.append(len(decision))
                    walker_terminals.append(len(terminal))
                else:
                    assert len(decision) == 2
                    runner_ids.update(decision.agent_id.tolist())
                if len(decision):  # everyone moves right: Basic's goal after 7 moves
                    env.set_actions(name, ActionTuple(discrete=np.full((len(decision), 1), 2, np.int32)))
            env.step()
        assert walker_decisions[:6] == [1, 0, 1, 0, 1, 0]  # every 2nd step
        assert sum(walker_terminals) == 1 and walker_decisions[walker_terminals.index(1)] == 0  # ends between decisions
        assert len(runner_ids) == 6  # the two runners reach the goal every 7 steps and come back under new ids
    finally:
        env.close()
