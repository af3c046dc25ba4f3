"""Helpers for the service tests: settings in a tmp dir, a live uvicorn server on loopback."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx

from server.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ADP = REPO / "data" / "alanine-dipeptide.pdb"
ADMIN = "test-admin-key-0123456789abcdef"


def settings_for(tmp: Path, **overrides) -> Settings:
    base = {
        "state_dir": tmp,
        "admin_key": ADMIN,
        "executor": "none",
        "workers": 0,
        "lease_seconds": 3.0,
        "heartbeat_seconds": 0.5,
        "poll_seconds": 0.05,
        "retry_backoff_seconds": 0.1,
        "retry_after_seconds": 1,
    }
    return Settings(**{**base, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``create_app(settings)`` under uvicorn in a thread on a free 127.0.0.1 port."""

    def __init__(self, settings: Settings) -> None:
        import uvicorn

        from server.app import create_app

        self.settings = settings
        self.app = create_app(settings)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.app.state.store.dispose()

    @property
    def store(self):
        return self.app.state.store

    def client(self, key: str = ADMIN) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )


def wait_for(predicate, timeout: float = 60.0, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value; that value, or AssertionError."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")
