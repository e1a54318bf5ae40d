"""A Python stand-in for a Unity scene like Basic whose agent observes through a camera (reference §1.1).

Basic's game and connection loop, with one difference: the observation is a 1x21 RGB camera image of
the corridor (red: the agent, green: the small goal, blue: the large goal), one pixel per position.
As a Unity CameraSensor does by default, the image travels PNG-compressed (``compression_type`` PNG,
``compressed_data``); ``--uncompressed`` sends it as float data instead. mlagents_envs decodes it to
a (1, 21, 3) float array in [0, 1]. ``--vector`` adds Basic's 20-float one-hot position as a second
observation beside the camera (a behaviour with visual and vector observations, in the order Unity
sorts its sensors: ``CameraSensor`` then ``VectorSensor``). Launched as ``VisualBasic.x86_64``.
"""

from __future__ import annotations

import argparse
import logging
import os
import struct
import sys
import zlib
from collections.abc import Sequence

from rlrunner.envs.basic.player import (
    COMMUNICATION_VERSION,
    MAX_POSITION,
    MIN_POSITION,
    Game,
    Player,
    _configure_logging,
    _observation_field,
    parse_args,
    watch_parent,
)
from rlrunner.unity import wire

BEHAVIOR_NAME = "VisualBasic?team=0"
HEIGHT = 1
WIDTH = MAX_POSITION - MIN_POSITION + 1
CHANNELS = 3  # red: agent, green: small goal, blue: large goal
SENSOR_NAME = "CameraSensor"
COMPRESSION_PNG = 1
TRANSLATIONAL_EQUIVARIANCE, NO_PROPERTY = 2, 1
"""ML-Agents' DimensionProperty values a CameraSensor reports for (height, width, channels)."""

log = logging.getLogger("rlrunner.basic")


def render(position: int, small_goal: int, large_goal: int) -> list[list[list[int]]]:
    """The camera image as rows of RGB pixels (0..255); a goal under the agent is still drawn."""
    image = [[[0, 0, 0] for _ in range(WIDTH)] for _ in range(HEIGHT)]
    for channel, x in ((1, small_goal), (2, large_goal), (0, position)):
        if MIN_POSITION <= x <= MAX_POSITION:
            image[0][x - MIN_POSITION][channel] = 255
    return image


def png(image: list[list[list[int]]]) -> bytes:
    """Encode an RGB image (rows of [r, g, b], 0..255) as an 8-bit PNG, as Unity's Texture2D.EncodeToPNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    height, width = len(image), len(image[0])
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8 bits, truecolour, no interlace
    rows = b"".join(b"\x00" + bytes(value for pixel in row for value in pixel) for row in image)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def camera_observation(image: list[list[list[int]]], compressed: bool = True) -> bytes:
    """Encode one visual ``ObservationProto`` (shape height, width, channels), PNG or float data."""
    shape = [len(image), len(image[0]), len(image[0][0])]
    if compressed:
        data = wire.int_field(2, COMPRESSION_PNG) + wire.len_field(3, png(image))
    else:
        floats = [value / 255.0 for row in image for pixel in row for value in pixel]
        data = wire.len_field(4, wire.packed_floats(1, floats) or b"")
    properties = [TRANSLATIONAL_EQUIVARIANCE, TRANSLATIONAL_EQUIVARIANCE, NO_PROPERTY]
    return b"".join((wire.packed_ints(1, shape), data, wire.packed_ints(6, properties), wire.str_field(8, SENSOR_NAME)))


class VisualGame(Game):
    """Basic's areas, observed through the camera (and Basic's vector with ``with_vector``); cached per (position, goals)."""

    compressed = True
    with_vector = False

    def __init__(self, num_areas: int, seed: int = 0) -> None:
        super().__init__(num_areas, seed)
        self._images: dict[tuple[int, int, int], bytes] = {}

    def observation(self, position: int) -> bytes:
        """The camera image of an agent at ``position`` with the current goals, as field 13."""
        key = (position, self.rules.small_goal, self.rules.large_goal)
        field = self._images.get(key)
        if field is None:
            field = wire.len_field(13, camera_observation(render(*key), self.compressed))
            if self.with_vector:
                field += _observation_field(position)  # Basic's one-hot position, a second observation
            self._images[key] = field
        return field


class UncompressedVisualGame(VisualGame):
    """The same scene sending float data (a trainer without PNG support, or ``--uncompressed``)."""

    compressed = False


class VectorVisualGame(VisualGame):
    """The camera and Basic's one-hot vector (``--vector``): visual and vector observations together."""

    with_vector = True


class UncompressedVectorVisualGame(VectorVisualGame):
    """``--vector --uncompressed``."""

    compressed = False


class VisualPlayer(Player):
    """Basic's connection loop, with the camera scene."""

    behavior_name = BEHAVIOR_NAME
    game_class: type[Game] = VisualGame


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``VisualBasic.x86_64``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    extra = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    extra.add_argument("--uncompressed", action="store_true")
    extra.add_argument("--vector", action="store_true")
    options = extra.parse_known_args(argv)[0]
    uncompressed = options.uncompressed
    _configure_logging(args.log_file)
    if args.mlagents_port is None:
        return 0
    watch_parent(os.getppid())
    log.info(
        "VisualBasic player pid=%d (communication %s, %s images%s) connecting to 127.0.0.1:%d",
        os.getpid(), COMMUNICATION_VERSION, "float" if uncompressed else "PNG", " and a vector" if options.vector else "",
        args.mlagents_port,
    )
    player = VisualPlayer(args.mlagents_port, args.connect_timeout, args.physics_ms)
    if options.vector:
        player.game_class = UncompressedVectorVisualGame if uncompressed else VectorVisualGame
    elif uncompressed:
        player.game_class = UncompressedVisualGame
    return player.run()


if __name__ == "__main__":
    sys.exit(main())
