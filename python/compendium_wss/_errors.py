"""The exceptions of compendium_wss.

Every one derives from :class:`CompendiumError`. Messages are the Rust client's: they say
what went wrong and what to do about it.
"""

from __future__ import annotations

from typing import Any, Optional


class CompendiumError(Exception):
    """Base class of every error this package raises."""


class InvalidUrl(CompendiumError, ValueError):
    """The URL is not a ``ws://`` or ``wss://`` URL with a host."""


class InvalidAddress(CompendiumError, ValueError):
    """A target address is not an address the relay hands out (nothing was sent)."""


class InvalidMessage(CompendiumError, ValueError):
    """A message to route is not a JSON object (nothing was sent)."""


class ConnectError(CompendiumError, ConnectionError):
    """The connection could not be opened.

    ``stage`` is ``"tcp"``, ``"tls"`` or ``"websocket"``; ``http_status`` the status the
    server refused the WebSocket handshake with (503: a relay at its connection limit);
    ``version_refused`` is true when the relay does not speak the resumable protocol.
    """

    def __init__(
        self,
        message: str,
        stage: Optional[str] = None,
        http_status: Optional[int] = None,
        version_refused: bool = False,
        tls_problem: Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.http_status = http_status
        self.version_refused = version_refused
        self.tls_problem = tls_problem


class TlsError(ConnectError):
    """TLS failed: an untrusted or wrong certificate, a ``ws://``/``wss://`` mix-up, or a
    CA file that cannot be used. ``tls_problem`` names the mistake (``"unknown_issuer"``,
    ``"name_mismatch"``, ``"expired"``, ``"plain_server"``, ...) when it is one a person can
    fix; the message says how."""


class Timeout(CompendiumError, TimeoutError):
    """An operation did not finish in time; ``what`` names it, ``after`` is the limit in
    seconds."""

    def __init__(self, message: str, what: str = "", after: float = 0.0) -> None:
        super().__init__(message)
        self.what = what
        self.after = after


class ProtocolError(CompendiumError):
    """The relay sent something the protocol does not allow (it is broken, or is not a
    Compendium relay). The connection goes on."""


class ConnectionClosed(CompendiumError, ConnectionError):
    """The connection is closed; ``code`` is the relay's close code (or ``None``) and
    ``reason`` the close reason or what ended the connection."""

    def __init__(self, message: str, code: Optional[int] = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class SessionLost(ConnectionClosed):
    """A resumable session is gone and will not come back (refused, revoked, taken over,
    or not resumed within its grace). The peer must be given a new address."""


class RelayError(CompendiumError):
    """The relay answered with ERR: ``code`` (its ``errCode``) and ``text`` (its
    ``errMsg``). The connection goes on. Subclasses name the codes of docs/protocol.md
    rule 2.6; other codes are plain ``RelayError``."""

    code: int
    text: str

    def __init__(self, message: str, code: int = 0, text: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.text = text

    @staticmethod
    def for_code(code: int, text: str) -> "RelayError":
        """The exception for an ERR with this code and text."""
        cls = _BY_CODE.get(code, RelayError)
        return cls(f"relay error {code}: {text}", code=code, text=text)


class BadRequest(RelayError):
    """400: the relay could not accept the message (invalid, too big, wrong type)."""


class AddressNotFound(RelayError):
    """404: no live connection has that address (the peer is gone or never existed)."""


class RateLimited(RelayError):
    """429: this connection sends faster than the relay allows; slow down."""


class TargetBusy(RelayError):
    """503: the target does not take messages fast enough (or its node is unreachable);
    retry later."""


_BY_CODE = {400: BadRequest, 404: AddressNotFound, 429: RateLimited, 503: TargetBusy}


def _from_native(kind: str, message: str, details: dict[str, Any]) -> BaseException:
    """The exception for an error of the native module (called from Rust)."""
    if kind == "relay":
        return RelayError.for_code(details["code"], details["text"])
    if kind in ("connect", "tls", "tls_config"):
        cls = ConnectError if kind == "connect" else TlsError
        # The Rust client names its own ways to pass a CA; name ours.
        message = message.replace("--ca-cert (ClientBuilder::ca_cert)", "ca_cert=")
        return cls(
            message,
            stage=details.get("stage", "tls" if kind == "tls_config" else None),
            http_status=details.get("http_status"),
            version_refused=bool(details.get("version_refused", False)),
            tls_problem=details.get("tls_problem"),
        )
    if kind == "timeout":
        return Timeout(message, what=details["what"], after=details["after"])
    if kind == "closed":
        return ConnectionClosed(message, code=details.get("code"), reason=details.get("reason", ""))
    simple: dict[str, type[CompendiumError]] = {
        "invalid_url": InvalidUrl,
        "invalid_address": InvalidAddress,
        "invalid_message": InvalidMessage,
        "protocol": ProtocolError,
    }
    return simple.get(kind, CompendiumError)(message)
