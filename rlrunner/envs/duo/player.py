"""A Python stand-in for a Unity scene with two behaviours, built from Basic's rules (reference §1.1).

* ``Runner?team=0``: two agents (per area), each a copy of Basic, deciding on every Academy step.
* ``Walker?team=0``: one agent (per area) of Basic that decides on every 2nd step only, like an
  agent with a DecisionRequester of period 2: its move lands one step after its decision, and an
  episode that ends there sends its terminal step at once, without a decision (the next episode,
  under a new agent id, decides on the following step).

Agents that reach a goal come back under new ids. It speaks the real gRPC protocol through
``rlrunner.unity.wire`` and the Basic player's connection loop; launched as ``Duo.x86_64``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence

from rlrunner.envs.basic.player import (
    COMMUNICATION_VERSION,
    Game,
    Player,
    _configure_logging,
    apply_side_channel,
    parse_args,
    watch_parent,
)
from rlrunner.unity import wire

RUNNER = "Runner?team=0"
WALKER = "Walker?team=0"
RUNNERS_PER_AREA = 2
WALKER_IDS = 1_000_000
"""Walker agent ids start here (Unity's ids are unique across behaviours)."""

log = logging.getLogger("rlrunner.basic")


class Duo:
    """The two behaviours of every area, stepped together."""

    def __init__(self, num_areas: int) -> None:
        self.runners = Game(num_areas * RUNNERS_PER_AREA)
        self.walkers = Game(num_areas)
        self.walkers._next_id = WALKER_IDS
        self._held: list[bytes] = []  # walker decisions that wait for their step
        self._step = 0

    def reset(self) -> dict[str, list[bytes]]:
        """New episodes everywhere; every agent asks for a decision."""
        self._step = 0
        self._held = []
        return {RUNNER: self.runners.reset(), WALKER: self.walkers.reset()}

    def step(self, actions: dict[str, list[list[int]]]) -> dict[str, list[bytes]]:
        """Apply the actions of the agents that decided last; return this step's agent infos."""
        self._step += 1
        infos = {RUNNER: self.runners.step(actions.get(RUNNER, ())), WALKER: list(self._held)}
        self._held = []
        if self._step % 2:  # the walkers decided on the previous step: their move lands now
            for area_infos in _per_area(self.walkers.step(actions.get(WALKER, ()))):
                terminal, decision = area_infos[:-1], area_infos[-1]
                infos[WALKER] += terminal  # an ended episode reports at once
                self._held.append(decision)  # the next decision comes on the next step
        return infos


def _per_area(infos: list[bytes]) -> list[list[bytes]]:
    # Game.step returns [decision] or [terminal, decision] per area, in area order.
    areas: list[list[bytes]] = []
    current: list[bytes] = []
    for info in infos:
        current.append(info)
        if not _is_done(info):
            areas.append(current)
            current = []
    return areas


def _is_done(info: bytes) -> bool:
    return any(number == 8 and value for number, _, value in wire.iter_fields(info))


class DuoPlayer(Player):
    """Basic's connection loop, with the Duo scene."""

    def _handshake(self) -> bytes:
        reply = super()._handshake()
        assert self._game is not None
        self._duo = Duo(self._game.num_areas)
        return reply

    def _respond(self, request: wire.Input) -> bytes:
        if request.side_channel:
            apply_side_channel(self._game, request.side_channel)  # type: ignore[arg-type]
        infos = self._duo.reset() if request.command == wire.COMMAND_RESET else self._duo.step(request.actions)
        init = b""
        if not self._sent_brain:
            init = wire.len_field(5, wire.brain_parameters(RUNNER, [3])) + wire.len_field(5, wire.brain_parameters(WALKER, [3]))
            self._sent_brain = True
        output = b"".join(wire.rl_output(name, agents) for name, agents in infos.items() if agents)
        return wire.message(output, init)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``Duo.x86_64``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.log_file)
    if args.mlagents_port is None:
        return 0
    watch_parent(os.getppid())
    log.info("Duo player pid=%d (communication %s) connecting to 127.0.0.1:%d", os.getpid(), COMMUNICATION_VERSION, args.mlagents_port)
    return DuoPlayer(args.mlagents_port, args.connect_timeout).run()


if __name__ == "__main__":
    sys.exit(main())
