"""The original Compendium ``WssClient`` / ``WssClientListener`` (``compendium.wss.client``)
on top of :class:`compendium_wss.Client`'s native core.

Same names, same callback-thread semantics: ``ws_received`` is called for every INITRESP,
DELIVER and ERR, on the client's own receiving thread, listener after listener in the order
they were added. Unlike the original, ``close()`` cannot race a send: one thread carries out
every command in order, and ``close()`` returns once everything sent before it was written
and the connection is closed (when called from a listener, it returns at once and the
close happens after the callback). The host in ``wss_address`` is honoured, ``ws://`` works
too, and the thread is joined.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from abc import ABC, abstractmethod
from typing import Any, Optional, Union

from .. import _native
from .._errors import CompendiumError, RelayError, Timeout
from .._options import DEFAULT, native_kwargs
from .message import MSG, ROUTE, TYPE, Message

__all__ = ["DEFAULT_ADDRESS", "WssClient", "WssClientListener"]

_log = logging.getLogger("compendium_wss.compat")

DEFAULT_ADDRESS = os.environ.get("COMPENDIUM_WSS_URL", "ws://127.0.0.1:8001")
"""The relay used when ``WssClient()`` is given none: ``$COMPENDIUM_WSS_URL``, else the
README's local relay (the original hard-coded its development server)."""


class WssClientListener(ABC):
    """Receives every message of a :class:`WssClient`."""

    @abstractmethod
    def ws_received(self, msg: Message) -> None:
        """Called on the client's receiving thread for each INITRESP, DELIVER and ERR."""


_CLOSE = object()
_CLOSE_LIMIT = 30.0


class WssClient:
    """The original client's surface; see the module docs. ``ca_cert`` (an addition)
    trusts a private CA or a development certificate for ``wss://``."""

    def __init__(
        self,
        wss_address: Optional[str] = None,
        *,
        ca_cert: Union[str, "os.PathLike[str]", None] = None,
    ) -> None:
        self.wss_address = wss_address or DEFAULT_ADDRESS
        self._ca_cert = ca_cert
        self._listeners: list[WssClientListener] = []
        self._lock = threading.Lock()
        self._commands: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._close_after_send = False
        self._native: Any = None
        self._thread: Optional[threading.Thread] = None
        self._done = threading.Event()

    def connect(self) -> None:
        """Open the connection (blocking), then start the receiving thread."""
        if self._native is not None:
            raise CompendiumError("already connected")
        kwargs = native_kwargs(self._ca_cert, False, 10.0, 10.0, 10.0, 5.0, DEFAULT, DEFAULT)
        native = _native.NativeClient(self.wss_address, **kwargs)
        native.wait(None, 0)
        done = native.take_done(0)
        if done is not None and done[0] == "err":
            raise done[1]
        self._native = native
        self._thread = threading.Thread(target=self._run, name="WssClient", daemon=True)
        self._thread.start()

    def add_listener(self, listener: WssClientListener) -> None:
        """Add a listener (called after those added before)."""
        with self._lock:
            self._listeners.append(listener)

    def remove_listener(self, listener: WssClientListener) -> None:
        """Remove a listener."""
        with self._lock:
            self._listeners.remove(listener)

    def send(self, msg: Message) -> None:
        """Queue ``msg`` (INIT or ROUTE) for sending; returns at once. The answer to an
        INIT (its INITRESP) and any ERR reach the listeners.

        Raises ``ValueError`` for a type a client cannot send (INITRESP, DELIVER, ERR), and
        :class:`CompendiumError` before :meth:`connect` or after :meth:`close`."""
        kind = msg.get_type()
        if kind not in (TYPE.INIT, TYPE.ROUTE):
            raise ValueError(f"a client sends INIT or ROUTE, not {kind.value}")
        if self._native is None or self._done.is_set():
            raise CompendiumError("not connected: call connect() first (or the client is closed)")
        self._commands.put(msg)
        if self._close_after_send:
            self._close_after_send = False
            self._commands.put(_CLOSE)
        self._native.poke()

    def set_close_after_send(self) -> None:
        """Close after sending the next message."""
        self._close_after_send = True

    def close(self) -> None:
        """Close after everything queued is sent; returns once closed (at once when called
        from a listener). Closing twice, or a client never connected, is harmless. Raises
        :class:`compendium_wss.Timeout` if that takes more than 30 s (a relay that does
        not answer the close gets 5 s)."""
        if self._native is None:
            return
        self._commands.put(_CLOSE)
        self._native.poke()
        if threading.current_thread() is not self._thread:
            # Bounded: the close handshake itself is (5 s); a thread that does not finish
            # far beyond that is reported, not waited on for ever.
            if not self._done.wait(_CLOSE_LIMIT):
                raise Timeout(
                    f"WssClient.close() did not finish within {_CLOSE_LIMIT} s",
                    what="close",
                    after=_CLOSE_LIMIT,
                )
            if self._thread is not None:
                self._thread.join()

    # The receiving thread: the only one that talks to the native client after connect().

    def _dispatch(self, msg: Message) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener.ws_received(msg)
            except Exception:  # a listener's bug must not stop the others or the client
                _log.exception("WssClientListener.ws_received raised")

    def _run(self) -> None:
        native = self._native
        inits: list[int] = []
        pending: list[int] = []
        close_op: Optional[int] = None
        try:
            while True:
                native.wait(None, None)
                while close_op is None:
                    try:
                        command = self._commands.get_nowait()
                    except queue.Empty:
                        break
                    if command is _CLOSE:
                        close_op = native.start_close()
                        continue
                    try:
                        if command.get_type() == TYPE.INIT:
                            inits.append(native.start_init())
                        else:
                            op = native.start_route(
                                command[ROUTE.ADR.value],
                                json.dumps(command[ROUTE.MSG.value], separators=(",", ":")),
                            )
                            if op is not None:
                                pending.append(op)
                    except CompendiumError as err:
                        self._report(err)
                for op in list(inits):
                    done = native.take_done(op)
                    if done is None:
                        continue
                    inits.remove(op)
                    if done[0] == "ok":
                        self._dispatch(Message.create_init_response(done[1]))
                    else:
                        self._report(done[1])
                for op in list(pending):
                    done = native.take_done(op)
                    if done is not None:
                        pending.remove(op)
                        if done[0] == "err":
                            self._report(done[1])
                while (item := native.try_event()) is not None:
                    self._event(item)
                if close_op is not None and native.take_done(close_op) is not None:
                    close_op = None
                    while (item := native.try_event()) is not None:
                        self._event(item)
                    return
                if native.exhausted() and close_op is None:
                    # The relay ended the connection; wait for close() (or exit).
                    command = self._commands.get()
                    if command is _CLOSE:
                        return
        except CompendiumError as err:  # the interpreter is exiting
            _log.debug("WssClient thread ends: %s", err)
        finally:
            self._done.set()

    def _event(self, item: tuple[Any, ...]) -> None:
        if item[0] == "deliver":
            self._dispatch(Message({MSG.TYPE.value: TYPE.DELIVER.value, "msg": json.loads(item[1])}))
        elif item[0] == "error":
            self._report(item[1])
        elif item[0] == "closed":
            _log.debug("connection closed (%s): %s", item[1], item[2])

    def _report(self, err: BaseException) -> None:
        if isinstance(err, RelayError):
            self._dispatch(Message.create_error(err.code, err.text))
        else:
            _log.warning("WssClient: %s", err)


