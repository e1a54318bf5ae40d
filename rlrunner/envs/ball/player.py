"""A Python stand-in for ML-Agents' 3DBall: agents tilt a platform to keep a ball on it (reference §1.1, §2.3).

One behaviour, ``Ball?team=0``, with ``agents_per_area`` agents (12 by default, like 3DBall's 12
platforms) in each of the ``num_areas`` areas the trainer asks for. Every agent plays alone:

* State: the platform's tilt ``(tx, tz)`` in [-1, 1]², the ball's position ``(x, z)`` on the platform
  (its edge at ±1) and its velocity ``(vx, vz)``. A new episode starts the ball at rest-ish: position
  and velocity uniform in ±0.5 on both axes, the platform flat.
* Action: 2 continuous values, clipped to [-1, 1]: the platform's tilt on each axis (3DBall turns
  the platform by its action; here the action *is* the tilt, which makes the task learnable fast).
* Physics, per Academy step of ``DT`` = 0.02 s: ``v += GRAVITY * tilt * DT``, then ``position += v * DT``.
* Reward: +0.1 per Academy step with the ball on the platform; the step the ball leaves it
  (``|x| > 1`` or ``|z| > 1``) gives −1 instead and ends the episode (terminated). ``max_steps``
  Academy steps (500 by default, so the best return is 50) end it interrupted (Agent.MaxStep).
* Observation: 6 floats ``[tx, tz, x, z, vx, vz]``.

Decisions, as a DecisionRequester of period ``decision_period`` (5 by default) makes them: the
player runs Academy steps; on every ``decision_period``-th one every agent asks for a decision, and
between decisions an agent repeats its last action (rewards are summed into the next decision).
An agent whose episode ends between decision steps is reported at once, in the next Academy
step's TerminalSteps (an exchange with that agent alone, as Unity exchanges whenever an agent sent
something); its next episode, under a new agent id, waits without moving until the next decision
step, where it asks for its first decision. Measured on a fresh start: a do-nothing policy returns
about 16, random actions about 11, a linear controller 50.

Environment parameters (side channel): ``agents_per_area`` (≥ 1, from the next RESET, i.e. from the
first one when set in the spec), ``decision_period`` (≥ 1, from the next Academy step), ``max_steps`` (0 = none)
and ``physics_ms`` (a sleep per Academy step, as a real build spends time in physics; also
``--physics-ms``). Launched as ``Ball.x86_64``; it shares Basic's connection loop.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rlrunner.envs.basic.player import (
    COMMUNICATION_VERSION,
    MAX_PHYSICS_MS,
    Player,
    _configure_logging,
    apply_side_channel,
    parse_args,
    watch_parent,
)
from rlrunner.unity import wire

BEHAVIOR_NAME = "Ball?team=0"
OBSERVATION_SIZE = 6
ACTION_SIZE = 2
DT = 0.02
GRAVITY = 2.0
EDGE = 1.0
START_SPREAD = 0.5
ALIVE_REWARD = 0.1
FALL_REWARD = -1.0
PARAMETER_NAMES = ("decision_period", "agents_per_area", "max_steps", "physics_ms")
MAX_AGENTS = 10_000

log = logging.getLogger("rlrunner.basic")


@dataclass
class BallRules:
    """Parameters of the scene, settable through the environment-parameters channel."""

    decision_period: int = 5
    agents_per_area: int = 12
    max_steps: int = 500  # Academy steps per episode (Agent.MaxStep); 0 = unlimited
    physics_ms: float = 0.0  # simulated engine time per Academy step (a sleep)


@dataclass
class Ball:
    """One agent's platform and ball."""

    agent_id: int
    tilt_x: float = 0.0
    tilt_z: float = 0.0
    x: float = 0.0
    z: float = 0.0
    vx: float = 0.0
    vz: float = 0.0
    steps: int = 0
    reward: float = 0.0  # collected since the agent last sent an info
    waiting: bool = False  # a new episode that has not decided yet: it does not move

    def observation(self) -> bytes:
        """The encoded observation field (13)."""
        values = [self.tilt_x, self.tilt_z, self.x, self.z, self.vx, self.vz]
        return wire.len_field(13, wire.observation("Ball", values))


class BallScene:
    """Every agent of every area, stepped one Academy step at a time."""

    def __init__(self, num_areas: int, seed: int = 0) -> None:
        self.rules = BallRules()
        self.samplers: dict[str, object] = {}  # (Basic's side-channel reader stores samplers here; Ball uses none)
        self.seed = seed
        self.num_areas = num_areas
        self.academy_steps = 0
        self.balls: list[Ball] = []
        self._deciding: list[int] = []  # agents (by index) whose decisions the last message asked for
        self._next_id = 0
        self._rng = random.Random(seed)

    def reset(self) -> list[bytes]:
        """A new episode for every agent; all of them ask for a decision (Academy step 0 is a decision step)."""
        self.academy_steps = 0
        self.balls = [self._new_ball() for _ in range(self.num_areas * self.rules.agents_per_area)]
        return self._decisions([])

    def step(self, actions: Sequence[Sequence[float]]) -> tuple[list[bytes], int]:
        """Apply the actions of the agents that decided last; run Academy steps until some agent sends
        an info. Return those infos and the number of Academy steps run."""
        for index, action in zip(self._deciding, actions, strict=False):
            ball = self.balls[index]
            ball.tilt_x, ball.tilt_z = (
                (_clip(action[0]), _clip(action[1])) if len(action) >= ACTION_SIZE else (0.0, 0.0)
            )
        run = 0
        while True:
            terminals = [self._act(index) for index in range(len(self.balls))]
            self.academy_steps += 1
            run += 1
            infos = [info for info in terminals if info]
            if self.academy_steps % self.rules.decision_period == 0:
                return self._decisions(infos), run
            if infos:
                self._deciding = []
                return infos, run

    def _act(self, index: int) -> bytes:
        # One Academy step of one agent: move, reward; a terminal info when the episode ended.
        ball = self.balls[index]
        if ball.waiting:
            return b""
        ball.vx += GRAVITY * ball.tilt_x * DT
        ball.vz += GRAVITY * ball.tilt_z * DT
        ball.x += ball.vx * DT
        ball.z += ball.vz * DT
        ball.steps += 1
        fell = abs(ball.x) > EDGE or abs(ball.z) > EDGE
        ball.reward += FALL_REWARD if fell else ALIVE_REWARD
        max_step_reached = not fell and 0 < self.rules.max_steps <= ball.steps
        if not (fell or max_step_reached):
            return b""
        terminal = wire.agent_info(ball.observation(), ball.reward, True, max_step_reached, ball.agent_id)
        self.balls[index] = self._new_ball(waiting=True)
        return terminal

    def _decisions(self, infos: list[bytes]) -> list[bytes]:
        self._deciding = list(range(len(self.balls)))
        for ball in self.balls:
            infos.append(wire.agent_info(ball.observation(), ball.reward, False, False, ball.agent_id))
            ball.reward = 0.0
            ball.waiting = False
        return infos

    def _new_ball(self, waiting: bool = False) -> Ball:
        self._next_id += 1
        uniform = self._rng.uniform
        return Ball(
            agent_id=self._next_id,
            x=uniform(-START_SPREAD, START_SPREAD),
            z=uniform(-START_SPREAD, START_SPREAD),
            vx=uniform(-START_SPREAD, START_SPREAD),
            vz=uniform(-START_SPREAD, START_SPREAD),
            waiting=waiting,
        )

    def set_parameter(self, key: str, value: float) -> None:
        """Apply one environment parameter; unknown keys and values out of range are logged and ignored."""
        if key not in PARAMETER_NAMES:
            log.warning("environment parameter %r is not used by Ball (known: %s)", key, PARAMETER_NAMES)
            return
        if key == "physics_ms":
            if not 0.0 <= value <= MAX_PHYSICS_MS:
                log.warning("environment parameter physics_ms=%s is outside [0, %g]; ignored", value, MAX_PHYSICS_MS)
                return
            self.rules.physics_ms = float(value)
        else:
            number = int(round(value))
            low = 0 if key == "max_steps" else 1
            high = MAX_AGENTS if key == "agents_per_area" else 2**31 - 1
            if not low <= number <= high:
                log.warning("environment parameter %s=%s is outside [%d, %d]; ignored", key, value, low, high)
                return
            setattr(self.rules, key, number)
        log.info("environment parameter %s = %s", key, value)


def _clip(value: float) -> float:
    return -1.0 if value < -1.0 else 1.0 if value > 1.0 else float(value)


class BallPlayer(Player):
    """Basic's connection loop, with the Ball scene."""

    behavior_name = BEHAVIOR_NAME
    game_class = BallScene  # type: ignore[assignment]

    def _respond(self, request: wire.Input) -> bytes:
        scene: BallScene = self._game  # type: ignore[assignment]
        if request.side_channel:
            apply_side_channel(scene, request.side_channel)  # type: ignore[arg-type]
        if request.command == wire.COMMAND_RESET:
            infos, academy_steps = scene.reset(), 1
        else:
            infos, academy_steps = scene.step(request.continuous_actions.get(BEHAVIOR_NAME, ()))
        if scene.rules.physics_ms > 0:
            time.sleep(scene.rules.physics_ms * academy_steps / 1000.0)
        init = b""
        if not self._sent_brain:
            init = wire.len_field(5, wire.brain_parameters(BEHAVIOR_NAME, [], continuous_size=ACTION_SIZE))
            self._sent_brain = True
        return wire.message(wire.rl_output(BEHAVIOR_NAME, infos), init)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``Ball.x86_64``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.log_file)
    if args.mlagents_port is None:
        return 0
    if not 0.0 <= args.physics_ms <= MAX_PHYSICS_MS:
        print(
            f"Ball.x86_64: --physics-ms: must be in [0, {MAX_PHYSICS_MS:g}] (got {args.physics_ms:g})", file=sys.stderr
        )
        return 2
    watch_parent(os.getppid())
    log.info(
        "Ball player pid=%d (communication %s) connecting to 127.0.0.1:%d",
        os.getpid(),
        COMMUNICATION_VERSION,
        args.mlagents_port,
    )
    return BallPlayer(args.mlagents_port, args.connect_timeout, args.physics_ms).run()


if __name__ == "__main__":
    sys.exit(main())
