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


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The offline tiny Qwen3-VL (medmo_rl/tiny_model.py), built once per session (≈ 5 s)."""
    from medmo_rl.tiny_model import resolve_model

    return resolve_model("", tmp_path_factory.mktemp("tiny-model"))
