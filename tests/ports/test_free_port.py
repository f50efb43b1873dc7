"""The harness's port picker: a harness picks three ports before it binds any, so the picker
must not hand out one port twice (a random pick each time collided about once a CI run)."""

from __future__ import annotations

import socket
from pathlib import Path

from harness import PORTS_FROM, free_port


def test_ports_picked_before_any_is_bound_are_all_different() -> None:
    picked = [free_port() for _ in range(2_000)]
    assert len(set(picked)) == len(picked)


def test_a_picked_port_is_below_the_ephemeral_range_and_free() -> None:
    port = free_port()
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text(encoding="ascii").split()[0])
    assert PORTS_FROM <= port < low
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
