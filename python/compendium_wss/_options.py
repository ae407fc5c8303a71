"""Connection options shared by the blocking and asyncio clients."""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Union


class _Default:
    """The client's own default (30 s pings, 90 s idle limit; 5 s and 15 s resumable)."""

    def __repr__(self) -> str:
        return "DEFAULT"


DEFAULT: Any = _Default()
"""Use the client's default for ``ping_interval`` / ``idle_timeout``."""

Seconds = Union[float, int]


def native_kwargs(
    ca_cert: Union[str, "os.PathLike[str]", None],
    resumable: bool,
    connect_timeout: Seconds,
    handshake_timeout: Seconds,
    request_timeout: Seconds,
    close_timeout: Seconds,
    ping_interval: Optional[Seconds],
    idle_timeout: Optional[Seconds],
) -> dict[str, Any]:
    """Keyword arguments for the native client (None means "never" there as 0)."""

    def never_or(name: str, value: Any) -> Optional[float]:
        if value is DEFAULT:
            return None
        if value is None:
            return 0.0
        if float(value) <= 0:
            raise ValueError(f"{name} must be positive seconds, or None for never")
        return float(value)

    return {
        "ca_cert": os.fspath(ca_cert) if ca_cert is not None else None,
        "resumable": bool(resumable),
        "connect_timeout": float(connect_timeout),
        "handshake_timeout": float(handshake_timeout),
        "request_timeout": float(request_timeout),
        "close_timeout": float(close_timeout),
        "ping_interval": never_or("ping_interval", ping_interval),
        "idle_timeout": never_or("idle_timeout", idle_timeout),
    }


def encode(msg: Any) -> str:
    """The JSON text of a message to route (a dict; the relay takes only objects)."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False)
