"""The one port helper: probe, reserve across processes, pick any free port."""

from __future__ import annotations

import socket

from rlrunner.unity.ports import LOOPBACK, free_port, port_is_free, reserve_port


def test_reserve_port_skips_a_listening_port_and_a_held_lease() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind((LOOPBACK, 0))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free(taken)
        first = reserve_port(taken, span=50)
        try:
            assert first.port > taken
            second = reserve_port(taken, span=50)
            try:
                assert second.port > first.port  # the first lease holds its port for other processes too
            finally:
                second.release()
        finally:
            first.release()
    again = reserve_port(first.port, span=1)  # a released lease frees the port
    assert again.port == first.port
    again.release()
    again.release()  # idempotent


def test_free_port_is_bindable_on_all_interfaces() -> None:
    port = free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("", port))
