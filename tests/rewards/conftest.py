"""Fixtures of the rewards tests (helpers live in reward_testlib.py)."""
from __future__ import annotations

import pytest
from reward_testlib import ServerThread


@pytest.fixture
def run_server():
    """run_server(app) → started ServerThread; every server is stopped after the test."""
    servers: list[ServerThread] = []

    def start(app, port: int | None = None) -> ServerThread:
        servers.append(ServerThread(app, port).start())
        return servers[-1]

    yield start
    for s in servers:
        s.stop()
