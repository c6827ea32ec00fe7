"""A real uvicorn server in a thread of the test process, on a free port of 127.0.0.1."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(proc, port: int, timeout: float = 300) -> None:
    """Wait until a `crossrec-peft serve` subprocess answers /readyz on `port`; the test fails with its
    stderr if it exits first, or once `timeout` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "not ready in time"
        time.sleep(0.2)


class LiveServer:
    def __init__(self, app):
        import uvicorn

        self.app = app
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, ready_timeout: float = 600) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + ready_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.05)
        while httpx.get(f"{self.url}/readyz").status_code != 200:  # the catalog indexes are built
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not get ready")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        self.server.should_exit = True  # what SIGTERM sets: stop accepting, finish in-flight requests
        self.thread.join(timeout=60)


@contextmanager
def serving(app):
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()
