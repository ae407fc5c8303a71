"""The asyncio client: runs on the caller's event loop without blocking it.

The native client signals readiness through a file descriptor registered with
``loop.add_reader``; awaitables only wait for that signal and never carry data, so
cancelling any of them (``asyncio.wait_for``, a task cancelled) loses no message: what
arrived stays queued for the next call.

Example::

    async with compendium_wss.aio.connect("ws://127.0.0.1:8001") as client:
        address = await client.init()
        async for msg in client:
            print(msg)
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, AsyncIterator, Generator, Optional, Union

from . import _events, _native
from ._errors import ConnectionClosed
from ._errors import SessionLost as SessionLostError
from ._events import Closed, Event
from ._options import DEFAULT, Seconds, encode, native_kwargs

__all__ = ["AsyncClient", "connect"]


class AsyncClient:
    """An asyncio connection to a relay; made by :func:`connect`.

    Same behaviour as :class:`compendium_wss.Client`, with coroutines. Use it from the
    event loop that connected it.
    """

    def __init__(self, native: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._native = native
        self._loop = loop
        self._ready = asyncio.Event()
        self._ops: dict[int, "asyncio.Future[Any]"] = {}
        self._address: Optional[str] = None
        self._closed: Optional[Closed] = None
        self._fd = int(native.fileno())
        loop.add_reader(self._fd, self._on_wake)
        self._reading = True

    def _on_wake(self) -> None:
        self._native.drain_wake()
        self._ready.set()
        for op, future in list(self._ops.items()):
            done = self._native.take_done(op)
            if done is None:
                continue
            del self._ops[op]
            if future.done():  # cancelled: the result goes nowhere
                continue
            if done[0] == "err":
                future.set_exception(done[1])
            else:
                future.set_result(done[1])
        if self._native.exhausted():
            self._stop_reading()

    def _stop_reading(self) -> None:
        # Only when nothing more can come: no event, and no operation still running (a
        # close may finish after the connection's last event).
        if self._reading and not self._ops:
            self._reading = False
            self._loop.remove_reader(self._fd)

    async def _finish(self, op: int) -> Any:
        future = self._loop.create_future()
        self._ops[op] = future
        if not self._reading:
            self._reading = True
            self._loop.add_reader(self._fd, self._on_wake)
        # It may have finished before it was registered.
        self._on_wake()
        return await future

    @property
    def address(self) -> Optional[str]:
        """The address the last :meth:`init` got, or ``None``."""
        return self._address

    @property
    def closed(self) -> Optional[Closed]:
        """How the connection ended, once its :class:`Closed` event has been received."""
        return self._closed

    async def init(self) -> str:
        """Ask for an ephemeral address (INIT → INITRESP); see ``Client.init``."""
        address: str = await self._finish(self._native.start_init())
        self._address = address
        return address

    async def send(self, to: str, msg: dict[str, Any]) -> None:
        """Route ``msg`` (a JSON object) to ``to``; see ``Client.send``. Returns at once
        unless the client's queue is full."""
        op = self._native.start_route(to, encode(msg))
        if op is not None:
            await self._finish(op)

    async def next_event(self) -> Optional[Event]:
        """The next event; ``None`` after :class:`Closed` has been returned. Cancel-safe
        (wrap it in ``asyncio.wait_for`` for a timeout)."""
        while True:
            item = self._native.try_event()
            if item is not None:
                event = _events.from_native(item)
                if isinstance(event, Closed):
                    self._closed = event
                return event
            if self._native.exhausted():
                self._stop_reading()
                return None
            self._ready.clear()
            await self._ready.wait()

    async def recv(self) -> dict[str, Any]:
        """The next delivered message; raises as ``Client.recv``. Cancel-safe."""
        while True:
            msg = _events.message_of(await self.next_event(), self._closed)
            if msg is not None:
                return msg

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[dict[str, Any]]:
        while True:
            try:
                yield await self.recv()
            except SessionLostError:
                raise
            except ConnectionClosed:
                if self._closed is not None:
                    return
                raise

    async def events(self) -> AsyncIterator[Event]:
        """Every event (messages, ERRs, resumes, the final :class:`Closed`)."""
        while (event := await self.next_event()) is not None:
            yield event

    async def close(self) -> None:
        """Close gracefully; see ``Client.close``."""
        await self._finish(self._native.start_close())

    def is_closed(self) -> bool:
        """Whether the connection has ended."""
        return bool(self._native.is_closed())

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _Connecting:
    """What :func:`connect` returns: await it, or use it with ``async with``."""

    def __init__(self, url: str, kwargs: dict[str, Any]) -> None:
        self._url = url
        self._kwargs = kwargs
        self._client: Optional[AsyncClient] = None

    async def _connect(self) -> AsyncClient:
        loop = asyncio.get_running_loop()
        client = AsyncClient(_native.NativeClient(self._url, **self._kwargs), loop)
        try:
            await client._finish(0)
        except BaseException:
            client._ops.clear()
            client._stop_reading()
            raise
        return client

    def __await__(self) -> Generator[Any, None, AsyncClient]:
        return self._connect().__await__()

    async def __aenter__(self) -> AsyncClient:
        self._client = await self._connect()
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        if self._client is not None:
            await self._client.close()


def connect(
    url: str,
    *,
    ca_cert: Union[str, "os.PathLike[str]", None] = None,
    resumable: bool = False,
    connect_timeout: Seconds = 10.0,
    handshake_timeout: Seconds = 10.0,
    request_timeout: Seconds = 10.0,
    close_timeout: Seconds = 5.0,
    ping_interval: Optional[Seconds] = DEFAULT,
    idle_timeout: Optional[Seconds] = DEFAULT,
) -> _Connecting:
    """Connect to ``url``: ``client = await connect(url)`` or
    ``async with connect(url) as client``. Options as ``compendium_wss.Client``."""
    return _Connecting(
        url,
        native_kwargs(
            ca_cert,
            resumable,
            connect_timeout,
            handshake_timeout,
            request_timeout,
            close_timeout,
            ping_interval,
            idle_timeout,
        ),
    )
