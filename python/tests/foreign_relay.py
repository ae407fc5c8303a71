"""A version 1 relay that is not ours: Python's `websockets`, re-encoding every frame the
way `json.dumps` writes it (", " and ": " separators, non-ASCII escaped). The package must
work against any relay that follows the protocol, not only against compendium-server."""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
from typing import Any

from websockets.asyncio.server import ServerConnection, serve


class ForeignRelay:
    """Runs on its own thread and event loop; ``url`` is where it listens."""

    def __init__(self) -> None:
        self._clients: dict[str, ServerConnection] = {}
        self._ready = threading.Event()
        self._stop: "asyncio.Future[None] | None" = None
        self._loop = asyncio.new_event_loop()
        self.url = ""
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the foreign relay did not start")

    async def _main(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._connection, "127.0.0.1", 0) as server:
            port = next(iter(server.sockets)).getsockname()[1]
            self.url = f"ws://127.0.0.1:{port}"
            self._ready.set()
            await self._stop

    async def _connection(self, ws: ServerConnection) -> None:
        address = None
        try:
            async for frame in ws:
                try:
                    message: Any = json.loads(frame)
                    kind = message["type"]
                except (ValueError, KeyError, TypeError):
                    await ws.send(json.dumps({"type": "ERR", "errCode": 400, "errMsg": "invalid message"}))
                    continue
                if kind == "INIT":
                    if address:
                        self._clients.pop(address, None)
                    address = secrets.token_hex(16)
                    self._clients[address] = ws
                    await ws.send(json.dumps({"type": "INITRESP", "EpheWssAddr": address}))
                elif kind == "ROUTE" and isinstance(message.get("msg"), dict):
                    target = self._clients.get(message.get("EpheWssAddr", ""))
                    if target is None:
                        await ws.send(json.dumps({"type": "ERR", "errCode": 404, "errMsg": "address not found"}))
                    else:
                        await target.send(json.dumps({"type": "DELIVER", "msg": message["msg"]}))
                else:
                    await ws.send(json.dumps({"type": "ERR", "errCode": 400, "errMsg": "invalid message"}))
        finally:
            if address:
                self._clients.pop(address, None)

    def stop(self) -> None:
        def finish() -> None:
            if self._stop is not None and not self._stop.done():
                self._stop.set_result(None)

        self._loop.call_soon_threadsafe(finish)
        self._thread.join(10)
