"""The blocking client: for scripts and threads."""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional, Union

from . import _events, _native
from ._errors import ConnectionClosed, Timeout
from ._errors import SessionLost as SessionLostError
from ._events import Closed, Event
from ._options import DEFAULT, Seconds, encode, native_kwargs


class Client:
    """A blocking connection to a relay.

    ``Client(url)`` connects (``ws://`` or ``wss://``; ``ca_cert`` trusts a private CA or
    the relay's development certificate instead of the public roots). Every wait releases
    the GIL and answers Ctrl-C promptly. Methods may be called from several threads (one
    thread receiving while others send is the usual shape).

    Use it as a context manager: leaving the block closes the connection gracefully
    (everything sent before is delivered to the relay first). Iterating yields delivered
    messages (dicts) until the connection ends.

    ``resumable=True`` uses a resumable session (protocol version 2): a dropped connection
    is resumed with the same address and nothing lost; :meth:`next_event` reports
    :class:`Resumed` and :class:`SessionLost`, and :meth:`recv` raises
    :class:`~compendium_wss.SessionLost` when the session cannot come back.
    """

    def __init__(
        self,
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
    ) -> None:
        self._native = _native.NativeClient(
            url,
            **native_kwargs(
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
        self._address: Optional[str] = None
        self._closed: Optional[Closed] = None
        self._finish(0)

    def _finish(self, op: int) -> Any:
        self._native.wait(None, op)
        done = self._native.take_done(op)
        assert done is not None
        if done[0] == "err":
            raise done[1]
        return done[1]

    @property
    def address(self) -> Optional[str]:
        """The address the last :meth:`init` got, or ``None``."""
        return self._address

    @property
    def closed(self) -> Optional[Closed]:
        """How the connection ended, once its :class:`Closed` event has been received."""
        return self._closed

    def init(self) -> str:
        """Ask the relay for an ephemeral address (INIT → INITRESP) and return it. A second
        call gets a new address and retires the previous one.

        Raises :class:`RelayError` (e.g. 429), :class:`Timeout`, :class:`ConnectionClosed`.
        """
        address: str = self._finish(self._native.start_init())
        self._address = address
        return address

    def send(self, to: str, msg: dict[str, Any]) -> None:
        """Route ``msg`` (a JSON object) to the client at address ``to``. Returns once
        queued, in call order; a refusal (404, 503, ...) arrives later as an ERR:
        :meth:`recv` raises it, :meth:`next_event` returns it as :class:`Error`.

        Raises :class:`InvalidAddress` or :class:`InvalidMessage` (nothing sent),
        :class:`ConnectionClosed`.
        """
        op = self._native.start_route(to, encode(msg))
        if op is not None:
            self._finish(op)

    def next_event(self, timeout: Optional[Seconds] = None) -> Optional[Event]:
        """The next event, waiting at most ``timeout`` seconds (``None``: as long as it
        takes). Returns ``None`` after the :class:`Closed` event has been returned; raises
        :class:`Timeout` when nothing arrived in time."""
        while True:
            item = self._native.try_event()
            if item is not None:
                event = _events.from_native(item)
                if isinstance(event, Closed):
                    self._closed = event
                return event
            if self._native.exhausted():
                return None
            if not self._native.wait(timeout, None):
                raise Timeout(f"no event within {timeout} s", what="receive", after=float(timeout or 0))

    def recv(self, timeout: Optional[Seconds] = None) -> dict[str, Any]:
        """The next delivered message. Raises the relay's next ERR instead, if one comes
        first (:class:`RelayError`; the connection goes on), :class:`SessionLost`,
        :class:`ConnectionClosed` once the connection has ended, or :class:`Timeout`."""
        while True:
            msg = _events.message_of(self.next_event(timeout), self._closed)
            if msg is not None:
                return msg

    def __iter__(self) -> Iterator[dict[str, Any]]:
        """Delivered messages until the connection ends (then the iteration stops; see
        :attr:`closed`). An ERR from the relay is raised (the connection goes on: iterate
        again to continue); a lost session raises :class:`SessionLost`."""
        while True:
            try:
                yield self.recv()
            except SessionLostError:
                raise
            except ConnectionClosed:
                if self._closed is not None:
                    return
                raise

    def close(self) -> None:
        """Close gracefully: everything sent before is written first, then the close
        handshake (bounded by ``close_timeout``). A resumable session ends (END) and its
        address is released at once. Closing twice is harmless.

        Raises :class:`Timeout` if the relay did not answer the close in time, or, for a
        resumable session lost before the relay confirmed the end, :class:`ConnectionClosed`.
        """
        self._finish(self._native.start_close())

    def is_closed(self) -> bool:
        """Whether the connection has ended."""
        return bool(self._native.is_closed())

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.is_closed() else "open"
        return f"<compendium_wss.Client {state} address={self._address!r}>"
