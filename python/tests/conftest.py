"""Fixtures: the real compendium-server binary on a free loopback port.

The binary is ``$COMPENDIUM_SERVER``, else the workspace's ``target/debug`` (or
``target/release``) build; without one the tests fail, saying how to build it.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Optional

import pytest

ROOT = Path(__file__).resolve().parents[2]


def server_binary() -> str:
    explicit = os.environ.get("COMPENDIUM_SERVER")
    if explicit:
        return explicit
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    for profile in ("debug", "release"):
        candidate = target / profile / "compendium-server"
        if candidate.exists():
            return str(candidate)
    raise RuntimeError(
        "no compendium-server binary: run `cargo build -p compendium-server` (or "
        "`cargo xtask test`, which does), or set COMPENDIUM_SERVER=/path/to/it"
    )


class Relay:
    """A running compendium-server; ``url`` is where it listens."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [server_binary(), "--listen", "127.0.0.1:0", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": "info", "NO_COLOR": "1"},
        )
        self.log: list[str] = []
        assert self.process.stderr is not None
        url: Optional[str] = None
        for line in self.process.stderr:
            self.log.append(line)
            found = re.search(r'event="?ready"?.*?listen=((?:ws|wss)://\S+)', line)
            if found:
                url = found.group(1)
                break
        if url is None:
            self.process.kill()
            raise RuntimeError("compendium-server did not start:\n" + "".join(self.log))
        self.url = url
        # Keep reading its log so that it never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def relay() -> Iterator[Relay]:
    """A plain ws:// relay of its own for one test."""
    running = Relay()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def shared_relay() -> Iterator[Relay]:
    """One ws:// relay for the tests that do not care what else uses it."""
    running = Relay()
    yield running
    running.stop()


@pytest.fixture(scope="session")
def tls_relay() -> Iterator[tuple[Relay, Path]]:
    """A wss:// relay with a development certificate, and the CA file to trust."""
    with tempfile.TemporaryDirectory() as directory:
        running = Relay("--tls-self-signed", directory)
        yield running, Path(directory) / "ca.pem"
        running.stop()


PYTHON = sys.executable


class Proxy:
    """A TCP forwarder in front of a relay whose connections a test can cut (the phone's
    network blip), while it goes on accepting new ones."""

    def __init__(self, target_url: str) -> None:
        found = re.match(r"wss?://([^:/]+):(\d+)", target_url)
        assert found, target_url
        self._target = (found.group(1), int(found.group(2)))
        self._listener = socket.create_server(("127.0.0.1", 0))
        port = self._listener.getsockname()[1]
        self.url = re.sub(r":\d+", f":{port}", target_url, count=1)
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self._target)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """Reset every connection open now (RST, as a dropped link looks to the relay)."""
        with self._lock:
            cutting, self._open = self._open, []
        for s in cutting:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()

    def close(self) -> None:
        """Cut every connection and refuse new ones."""
        # shutdown() wakes the accepting thread; close() alone would leave it accepting.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        self.cut()
