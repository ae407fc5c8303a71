"""Client for the Compendium WebSocket relay, built on the Rust client (compendium-client).

- :class:`Client`: blocking, for scripts and threads.
- :mod:`compendium_wss.aio`: asyncio (``async with aio.connect(url) as client``).
- :mod:`compendium_wss.compat`: the original Compendium ``WssClient`` API.

Messages are dicts (JSON objects). Errors are subclasses of :class:`CompendiumError`.
"""

from __future__ import annotations

import atexit

from . import _native
from ._blocking import Client
from ._errors import (
    AddressNotFound,
    BadRequest,
    CompendiumError,
    ConnectError,
    ConnectionClosed,
    InvalidAddress,
    InvalidMessage,
    InvalidUrl,
    ProtocolError,
    RateLimited,
    RelayError,
    SessionLost,
    TargetBusy,
    Timeout,
    TlsError,
)
from ._events import Closed, Delivered, Error, Event, Resumed
from ._events import SessionLost as SessionLostEvent
from ._options import DEFAULT

__all__ = [
    "AddressNotFound",
    "BadRequest",
    "Client",
    "Closed",
    "CompendiumError",
    "ConnectError",
    "ConnectionClosed",
    "DEFAULT",
    "Delivered",
    "Error",
    "Event",
    "InvalidAddress",
    "InvalidMessage",
    "InvalidUrl",
    "ProtocolError",
    "RateLimited",
    "RelayError",
    "Resumed",
    "SessionLost",
    "SessionLostEvent",
    "TargetBusy",
    "Timeout",
    "TlsError",
]

# Close open clients and stop the runtime before the interpreter finalizes (a runtime
# left running at exit can hang or crash it).
atexit.register(_native.shutdown)
