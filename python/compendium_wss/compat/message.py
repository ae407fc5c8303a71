"""The original Compendium ``Message`` (``compendium.wss.message``), same names and shapes.

A message is a dict of its JSON members, validated on construction; each member is also an
attribute (``m.EpheWssAddr``, ``m.msg``, ``m.errCode``).
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Optional

__all__ = ["DELIVER", "ERROR", "INIT", "INITRESP", "MSG", "Message", "ROUTE", "TYPE"]


class TYPE(str, Enum):
    """The wire names of the message types."""

    INIT = "INIT"
    INITRESP = "INITRESP"
    ROUTE = "ROUTE"
    DELIVER = "DELIVER"
    ERROR = "ERR"


class MSG(str, Enum):
    """The member every message has."""

    TYPE = "type"


class INIT(str, Enum):
    """INIT has no member besides ``type``."""

    TYPE = "type"


class INITRESP(str, Enum):
    """INITRESP's members."""

    ADR = "EpheWssAddr"


class ROUTE(str, Enum):
    """ROUTE's members."""

    ADR = "EpheWssAddr"
    MSG = "msg"


class DELIVER(str, Enum):
    """DELIVER's members."""

    MSG = "msg"


class ERROR(str, Enum):
    """ERR's members."""

    CODE = "errCode"
    MSG = "errMsg"


_REQUIRED: dict[str, tuple[str, ...]] = {
    TYPE.INIT.value: (),
    TYPE.INITRESP.value: (INITRESP.ADR.value,),
    TYPE.ROUTE.value: (ROUTE.ADR.value, ROUTE.MSG.value),
    TYPE.DELIVER.value: (DELIVER.MSG.value,),
    TYPE.ERROR.value: (ERROR.CODE.value,),
}


class Message(dict):  # type: ignore[type-arg]
    """A relay message: a dict of its members, each also an attribute."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        kind = self.get(MSG.TYPE.value)
        if kind is None:
            raise Exception("Missing message field:" + MSG.TYPE.value)
        if kind not in _REQUIRED:
            raise Exception(f"Unknown message type:{kind}")
        for field in _REQUIRED[kind]:
            if field not in self:
                raise Exception("Missing message field:" + field)
        for key, value in self.items():
            setattr(self, key, value)

    def __getattr__(self, name: str) -> Any:
        # Members are set as attributes in __init__; this only answers for the others (and
        # tells type checkers that members are attributes).
        raise AttributeError(f"this {self.get(MSG.TYPE.value)} message has no member {name!r}")

    def get_type(self) -> TYPE:
        """The message's type."""
        return TYPE(self[MSG.TYPE.value])

    def encode(self) -> str:
        """The JSON text."""
        return json.dumps(self)

    def encode_as_bytes(self) -> bytes:
        """The JSON text, UTF-8."""
        return self.encode().encode("utf-8")

    def get_field_value(self, field: str) -> Any:
        """The member named ``field``."""
        return self[field]

    @staticmethod
    def create_init() -> "Message":
        """An INIT."""
        return Message({MSG.TYPE.value: TYPE.INIT.value})

    @staticmethod
    def create_init_response(EpheWssAddr: str) -> "Message":  # noqa: N803 (original name)
        """An INITRESP carrying an address."""
        return Message({MSG.TYPE.value: TYPE.INITRESP.value, INITRESP.ADR.value: EpheWssAddr})

    @staticmethod
    def create_deliver(msg: dict[str, Any]) -> "Message":
        """A DELIVER of ``msg``."""
        return Message({MSG.TYPE.value: TYPE.DELIVER.value, DELIVER.MSG.value: msg})

    @staticmethod
    def create_error(errCode: int, errMsg: Optional[str] = None) -> "Message":  # noqa: N803
        """An ERR."""
        fields: dict[str, Any] = {MSG.TYPE.value: TYPE.ERROR.value, ERROR.CODE.value: errCode}
        if errMsg is not None:
            fields[ERROR.MSG.value] = errMsg
        return Message(fields)

    @staticmethod
    def create_route(EpheWssAddr: str, msg: dict[str, Any]) -> "Message":  # noqa: N803
        """A ROUTE of ``msg`` to an address."""
        return Message(
            {MSG.TYPE.value: TYPE.ROUTE.value, ROUTE.ADR.value: EpheWssAddr, ROUTE.MSG.value: msg}
        )

    @staticmethod
    def parse(message_str: str) -> "Message":
        """A message from its JSON text."""
        return Message(json.loads(message_str))
