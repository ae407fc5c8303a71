"""The events a client receives, in arrival order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Optional, Union

from ._errors import CompendiumError, ConnectionClosed
from ._errors import SessionLost as SessionLostError


@dataclass(frozen=True)
class Delivered:
    """A DELIVER: ``msg`` is the JSON object another client routed to our address."""

    msg: dict[str, Any]


@dataclass(frozen=True)
class Error:
    """An ERR from the relay answering a ROUTE (``error`` is a :class:`RelayError`, e.g.
    :class:`AddressNotFound`), or a frame the relay should not have sent
    (:class:`ProtocolError`). The connection goes on."""

    error: CompendiumError


@dataclass(frozen=True)
class Resumed:
    """Resumable mode: the connection was lost and the session is back (same address,
    nothing lost); ``resent`` ROUTEs were sent again."""

    address: str
    resent: int


@dataclass(frozen=True)
class SessionLost:
    """Resumable mode: the session is gone for good; :class:`Closed` follows."""

    reason: str


@dataclass(frozen=True)
class Closed:
    """The connection ended; always the last event."""

    code: Optional[int]
    reason: str


Event = Union[Delivered, Error, Resumed, SessionLost, Closed]


def from_native(item: tuple[Any, ...]) -> Event:
    """The event for a tuple from the native module."""
    kind = item[0]
    if kind == "deliver":
        return Delivered(json.loads(item[1]))
    if kind == "error":
        return Error(item[1])
    if kind == "resumed":
        return Resumed(item[1], item[2])
    if kind == "session_lost":
        return SessionLost(item[1])
    if kind == "closed":
        return Closed(item[1], item[2])
    return Error(CompendiumError(f"an event this version does not know: {item[1]}"))


def message_of(event: Optional[Event], closed: Optional[Closed]) -> Optional[dict[str, Any]]:
    """What ``recv()`` makes of ``event``: the delivered message, ``None`` for an event to
    skip (a resume loses nothing), or the exception to raise — the relay's ERR, a lost
    session, or the end of the connection (``event`` ``None``: it ended as ``closed``)."""
    if isinstance(event, Delivered):
        return event.msg
    if isinstance(event, Resumed):
        return None
    if isinstance(event, Error):
        raise event.error
    if isinstance(event, SessionLost):
        raise SessionLostError(f"session lost: {event.reason}", reason=event.reason)
    ended = event if event is not None else closed
    raise ConnectionClosed(
        "connection closed"
        + (f" ({ended.code})" if ended and ended.code else "")
        + (f": {ended.reason}" if ended else ""),
        code=ended.code if ended else None,
        reason=ended.reason if ended else "",
    )
