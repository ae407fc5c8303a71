"""The baseline of the benchmark: a client built the way the original Compendium client is
(``../shared/reference/original-python-client.md``): the ``websockets`` library, a sender
thread fed by a queue, a receiving thread that parses each frame into a dict and calls the
listeners. Written here from that description (none of the original's code), with the same
``WssClient`` surface, so that the benchmark runs the same code against both."""

from __future__ import annotations

import json
import queue
import threading
from typing import Any, Optional

from websockets.sync.client import connect

from compendium_wss.compat.message import Message


class OriginalStyleClient:
    """``connect`` / ``add_listener`` / ``send`` / ``close`` over websockets' sync client."""

    def __init__(self, wss_address: str) -> None:
        self.wss_address = wss_address
        self._listeners: list[Any] = []
        self._outgoing: "queue.SimpleQueue[Optional[Message]]" = queue.SimpleQueue()
        self._socket: Any = None

    def connect(self) -> None:
        self._socket = connect(self.wss_address, max_size=None, compression=None)
        threading.Thread(target=self._receive, daemon=True).start()
        threading.Thread(target=self._send, daemon=True).start()

    def add_listener(self, listener: Any) -> None:
        self._listeners.append(listener)

    def send(self, msg: Message) -> None:
        self._outgoing.put(msg)

    def close(self) -> None:
        self._outgoing.put(None)

    def _send(self) -> None:
        while (msg := self._outgoing.get()) is not None:
            self._socket.send(msg.encode())
        self._socket.close()

    def _receive(self) -> None:
        try:
            for frame in self._socket:
                msg = Message(json.loads(frame))
                for listener in self._listeners:
                    listener.ws_received(msg)
        except Exception:  # noqa: BLE001 - the connection ended
            pass
