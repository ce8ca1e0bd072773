"""Test helpers for the rewards tests: records to score, and a REAL uvicorn server in a thread."""
from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn

from medmo_rl.schema import Sample

GROUNDING = Sample(
    id="g1", task="grounding", prompt="Locate the nodules.", answer="", images=("img.png",),
    boxes=((10.0, 20.0, 50.0, 60.0), (60.0, 60.0, 90.0, 120.0)), labels=("nodule", "nodule"),
    image_size=(100, 200), source="test",
)
VQA_YES = Sample(id="v1", task="vqa", prompt="Is there a fracture?", answer="yes", images=("img.png",))
MCQ = Sample(
    id="m1", task="vqa", prompt="Which finding?", answer="B", images=("img.png",),
    choices=("Effusion", "Pneumonia", "No finding"),
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """uvicorn.Server running `app` on 127.0.0.1:port in a daemon thread (real sockets, real HTTP)."""

    def __init__(self, app: Any, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, timeout_s: float = 10.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError(f"uvicorn did not start on port {self.port}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
