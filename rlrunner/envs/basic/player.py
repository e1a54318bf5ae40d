"""A Python stand-in for the Unity player of ML-Agents' "Basic" example (reference §1.1, §2.8).

It is the gRPC *client* of the real ``mlagents_envs.UnityEnvironment`` and is launched like a
Linux build (``Basic.x86_64 --mlagents-port N -nographics -batchmode -logFile PATH``).

``--physics-ms MS`` (or the environment parameter ``physics_ms``) makes every Academy step wait
MS milliseconds before it answers, as a real Unity build spends time in physics and rendering
between two decisions (about 2 ms at time scale 20): benchmarks then show what overlapping the
players' step times gains. The wait is a sleep, so it holds no core, like a game waiting on its
fixed timestep; it is off by default.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import struct
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from rlrunner.unity import wire

BEHAVIOR_NAME = "Basic?team=0"
COMMUNICATION_VERSION = "1.5.0"
PACKAGE_VERSION = "2.0.0-rlrunner-basic"
EXCHANGE_METHOD = "/communicator_objects.UnityToExternalProto/Exchange"

MIN_POSITION = 0
MAX_POSITION = 20
OBSERVATION_SIZE = MAX_POSITION - MIN_POSITION
STEP_REWARD = -0.01
SMALL_REWARD = 0.1
LARGE_REWARD = 1.0
MOVES = (0, -1, 1)  # action 0 = stay, 1 = left, 2 = right (BasicActuator)

ENGINE_CHANNEL = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7").bytes_le
PARAMETERS_CHANNEL = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400").bytes_le
PARAMETER_NAMES = ("small_goal", "large_goal", "start_position", "max_steps", "physics_ms")
MAX_PHYSICS_MS = 1000.0
PARAMETER_FLOAT, SAMPLER_UNIFORM, SAMPLER_GAUSSIAN, SAMPLER_MULTIRANGE = 0, 0, 1, 2
"""The environment-parameters channel's data type FLOAT, and its sampler types (SAMPLER data carries one)."""

log = logging.getLogger("rlrunner.basic")


@dataclass
class Rules:
    """Parameters of the game, settable through the environment-parameters channel."""

    small_goal: int = 7
    large_goal: int = 17
    start_position: int = 10
    max_steps: int = 0  # Agent.MaxStep; 0 = unlimited
    physics_ms: float = 0.0  # simulated engine time per Academy step (a sleep)


@dataclass
class Sampler:
    """An environment parameter drawn anew for every episode (ML-Agents' uniform, gaussian, multi-range uniform)."""

    kind: int
    values: tuple[float, ...]
    rng: random.Random

    def draw(self) -> float:
        """One value."""
        if self.kind == SAMPLER_UNIFORM:
            return self.rng.uniform(self.values[0], self.values[1])
        if self.kind == SAMPLER_GAUSSIAN:
            return self.rng.gauss(self.values[0], self.values[1])
        intervals = list(zip(self.values[::2], self.values[1::2], strict=True))
        low, high = self.rng.choices(intervals, weights=[max(b - a, 1e-9) for a, b in intervals])[0]
        return self.rng.uniform(low, high)


class Game:
    """N independent copies (areas) of Basic, each with one agent."""

    def __init__(self, num_areas: int, seed: int = 0) -> None:
        self.rules = Rules()
        self.samplers: dict[str, Sampler] = {}
        self.seed = seed
        self.num_areas = num_areas
        self.positions = [0] * num_areas
        self.steps = [0] * num_areas
        self.ids = [0] * num_areas
        self._next_id = 0
        # One pre-encoded observation field per position: the hot loop only concatenates bytes.
        self._observations = [_observation_field(p) for p in range(MIN_POSITION, MAX_POSITION + 1)]

    def reset(self) -> list[bytes]:
        """Start a new episode in every area; return their first decision requests."""
        return [self._new_episode(area) for area in range(self.num_areas)]

    def step(self, actions: Sequence[Sequence[int]]) -> list[bytes]:
        """Apply one action per area (by position); return terminal and decision infos."""
        infos: list[bytes] = []
        for area in range(self.num_areas):
            action = actions[area][0] if area < len(actions) and actions[area] else 0
            infos.extend(self._step_area(area, action))
        return infos

    def _step_area(self, area: int, action: int) -> list[bytes]:
        rules = self.rules
        move = MOVES[action] if 0 <= action < len(MOVES) else 0
        position = min(max(self.positions[area] + move, MIN_POSITION), MAX_POSITION)
        self.positions[area] = position
        self.steps[area] += 1
        reward = STEP_REWARD
        done = False
        if position == rules.small_goal:
            reward += SMALL_REWARD
            done = True
        elif position == rules.large_goal:
            reward += LARGE_REWARD
            done = True
        max_step_reached = not done and 0 < rules.max_steps <= self.steps[area]
        if not (done or max_step_reached):
            return [wire.agent_info(self.observation(position), reward, False, False, self.ids[area])]
        # The terminal info and the next episode's first decision travel in the same message,
        # as with a DecisionRequester in Unity (reference §2.8 step 5).
        terminal = wire.agent_info(self.observation(position), reward, True, max_step_reached, self.ids[area])
        return [terminal, self._new_episode(area)]

    def _new_episode(self, area: int) -> bytes:
        for key, sampler in self.samplers.items():
            value = sampler.draw()
            setattr(self.rules, key, int(round(value if key == "max_steps" else min(max(value, MIN_POSITION), MAX_POSITION))))
        self._next_id += 1
        self.ids[area] = self._next_id
        self.positions[area] = self.rules.start_position
        self.steps[area] = 0
        return wire.agent_info(self.observation(self.rules.start_position), 0.0, False, False, self._next_id)

    def observation(self, position: int) -> bytes:
        """The pre-encoded observation field (13) of an agent at ``position``."""
        return self._observations[position]

    def set_parameter(self, key: str, value: float) -> None:
        """Apply one environment parameter; unknown keys are logged and ignored."""
        if key not in PARAMETER_NAMES:
            log.warning("environment parameter %r is not used by Basic (known: %s)", key, PARAMETER_NAMES)
            return
        if key == "physics_ms":
            if not 0.0 <= value <= MAX_PHYSICS_MS:
                log.warning("environment parameter physics_ms=%s is outside [0, %g]; ignored", value, MAX_PHYSICS_MS)
                return
            self.rules.physics_ms = float(value)
            log.info("environment parameter physics_ms = %s", value)
            return
        number = int(round(value))
        if key != "max_steps" and not MIN_POSITION <= number <= MAX_POSITION:
            log.warning("environment parameter %s=%s is outside [0, 20]; ignored", key, value)
            return
        setattr(self.rules, key, max(number, 0))
        log.info("environment parameter %s = %s", key, number)


def _observation_field(position: int) -> bytes:
    one_hot = [0.0] * OBSERVATION_SIZE
    if position < OBSERVATION_SIZE:  # position 20 would index past the end in C# too
        one_hot[position] = 1.0
    return wire.len_field(13, wire.observation("Basic", one_hot))


def apply_side_channel(game: Game, blob: bytes) -> None:
    """Apply every side-channel message in ``blob`` (reference §2.5)."""
    pos = 0
    while pos + 20 <= len(blob):
        channel = blob[pos : pos + 16]
        (size,) = struct.unpack_from("<i", blob, pos + 16)
        payload = blob[pos + 20 : pos + 20 + size]
        pos += 20 + size
        if channel == PARAMETERS_CHANNEL:
            _apply_parameter(game, payload)
        elif channel == ENGINE_CHANNEL:
            _log_engine_configuration(payload)
        else:
            log.debug("side channel %s ignored", uuid.UUID(bytes_le=bytes(channel)))


def _read_string(payload: bytes, pos: int) -> tuple[str, int]:
    (size,) = struct.unpack_from("<i", payload, pos)
    return payload[pos + 4 : pos + 4 + size].decode("ascii"), pos + 4 + size


def _apply_parameter(game: Game, payload: bytes) -> None:
    key, pos = _read_string(payload, 0)
    (kind,) = struct.unpack_from("<i", payload, pos)
    if kind == PARAMETER_FLOAT:
        (value,) = struct.unpack_from("<f", payload, pos + 4)
        game.samplers.pop(key, None)
        game.set_parameter(key, value)
        return
    seed, sampler = struct.unpack_from("<ii", payload, pos + 4)
    if key not in PARAMETER_NAMES or sampler not in (SAMPLER_UNIFORM, SAMPLER_GAUSSIAN, SAMPLER_MULTIRANGE):
        log.warning("environment parameter %r: sampler %d not used by Basic; ignored", key, sampler)
        return
    if sampler == SAMPLER_MULTIRANGE:
        (count,) = struct.unpack_from("<i", payload, pos + 12)
        values = struct.unpack_from(f"<{count}f", payload, pos + 16)
    else:
        values = struct.unpack_from("<2f", payload, pos + 12)
    rng = random.Random(seed if seed >= 0 else f"{game.seed}:{key}")  # a str seed is stable across processes
    game.samplers[key] = Sampler(sampler, tuple(values), rng)
    log.info("environment parameter %s: sampler %d %s (drawn per episode)", key, sampler, values)


def _log_engine_configuration(payload: bytes) -> None:
    # Basic has no physics or rendering to configure, so time scale and friends are only logged.
    (kind,) = struct.unpack_from("<i", payload, 0)
    if kind == 2:
        log.info("engine configuration: time_scale = %s", struct.unpack_from("<f", payload, 4)[0])
    else:
        log.info("engine configuration: setting %d ignored", kind)


class Player:
    """The gRPC client loop: handshake, then one Exchange per Academy step."""

    behavior_name = BEHAVIOR_NAME
    game_class = Game

    def __init__(self, port: int, connect_timeout_s: float, physics_ms: float = 0.0) -> None:
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        # Raw bytes in and out: serialisation is done by ``wire``.
        self._exchange = self._channel.unary_unary(EXCHANGE_METHOD)
        self._connect_timeout_s = connect_timeout_s
        self._game: Game | None = None
        self._physics_ms = physics_ms
        self._sent_brain = False

    def run(self) -> int:
        """Play until Python closes the connection; return the exit status."""
        try:
            reply = self._handshake()
            while True:
                request = wire.decode_input(reply)
                if request.status != wire.STATUS_OK:
                    log.info("trainer closed the connection (status %d)", request.status)
                    return 0
                if request.command == wire.COMMAND_QUIT:
                    log.info("QUIT received")
                    return 0
                reply = self._exchange(self._respond(request))
        except grpc.RpcError as error:
            log.info("trainer went away: %s", error.code())  # the server stopped or vanished
            return 0
        finally:
            self._channel.close()

    def _handshake(self) -> bytes:
        init = wire.init_output("AcademySingleton", COMMUNICATION_VERSION, PACKAGE_VERSION)
        reply = wire.decode_input(
            self._exchange(wire.message(init_output_bytes=init), wait_for_ready=True, timeout=self._connect_timeout_s)
        )
        num_areas = max(reply.num_areas, 1)
        log.info("connected: seed=%d num_areas=%d communication=%s", reply.seed, num_areas, reply.communication_version)
        self._game = self.game_class(num_areas, reply.seed)
        self._game.rules.physics_ms = self._physics_ms
        result: bytes = self._exchange(wire.HEADER_OK)
        return result

    def _respond(self, request: wire.Input) -> bytes:
        game = self._game
        assert game is not None
        if request.side_channel:
            apply_side_channel(game, request.side_channel)
        if request.command == wire.COMMAND_RESET:
            infos = game.reset()
        else:
            infos = game.step(request.actions.get(self.behavior_name, ()))
        if game.rules.physics_ms > 0:
            time.sleep(game.rules.physics_ms / 1000.0)
        init = b""
        if not self._sent_brain:
            # C# sends BrainParameters once, in the first message that carries an AgentInfo.
            init = wire.len_field(5, wire.brain_parameters(self.behavior_name, [3]))
            self._sent_brain = True
        return wire.message(wire.rl_output(self.behavior_name, infos), init)


def watch_parent(parent_pid: int, period_s: float = 0.5) -> None:
    """Exit the process as soon as the trainer that launched it is gone (no orphan players)."""

    def watch() -> None:
        while True:
            time.sleep(period_s)
            if os.getppid() != parent_pid:
                log.info("parent %d is gone; exiting", parent_pid)
                logging.shutdown()
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse the Unity-style command line, ignoring what a Unity player would ignore."""
    parser = argparse.ArgumentParser(prog="Basic.x86_64", add_help=False, allow_abbrev=False)
    parser.add_argument("--mlagents-port", type=int, default=None)
    parser.add_argument("-logFile", "-logfile", dest="log_file", default=None)
    parser.add_argument("-nographics", action="store_true")
    parser.add_argument("-batchmode", action="store_true")
    parser.add_argument("--connect-timeout", type=float, default=60.0)
    parser.add_argument("--physics-ms", type=float, default=0.0)
    args, _unknown = parser.parse_known_args(list(argv))
    return args


def _configure_logging(log_file: str | None) -> None:
    if log_file is None:
        handler: logging.Handler = logging.NullHandler()
    elif log_file == "-":
        handler = logging.StreamHandler(sys.stdout)
    else:
        handler = logging.FileHandler(log_file, mode="w")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``Basic.x86_64``."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(args.log_file)
    if args.mlagents_port is None:
        # A Unity player without the flag runs in inference mode; here there is nothing to do.
        log.info("no --mlagents-port: nothing to connect to")
        return 0
    watch_parent(os.getppid())
    log.info("Basic player pid=%d connecting to 127.0.0.1:%d", os.getpid(), args.mlagents_port)
    if not 0.0 <= args.physics_ms <= MAX_PHYSICS_MS:
        print(f"Basic.x86_64: --physics-ms: must be in [0, {MAX_PHYSICS_MS:g}] (got {args.physics_ms:g})", file=sys.stderr)
        return 2
    status = Player(args.mlagents_port, args.connect_timeout, args.physics_ms).run()
    log.info("exiting with status %d", status)
    return status


if __name__ == "__main__":
    sys.exit(main())
