"""LoopbackCommunicator: a taken port fails fast, so the launcher moves on to the next one."""

from __future__ import annotations

import socket

import pytest
from mlagents_envs.exception import UnityWorkerInUseException

from rlrunner.unity.communicator import LoopbackCommunicator
from rlrunner.unity.ports import LOOPBACK, port_is_free


def test_communicator_refuses_a_port_something_listens_on() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        with pytest.raises(UnityWorkerInUseException):
            LoopbackCommunicator(0, listener.getsockname()[1], 1)


def test_communicator_listens_on_loopback_and_frees_the_port_on_close() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    communicator = LoopbackCommunicator(0, port, 1)
    try:
        with socket.create_connection((LOOPBACK, port), timeout=5):
            pass
    finally:
        communicator.close()
    assert port_is_free(port)
