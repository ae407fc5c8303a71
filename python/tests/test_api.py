"""Every public name is documented, and the drop-in offers the original's surface."""

from __future__ import annotations

import inspect
from types import ModuleType

import compendium_wss
from compendium_wss import aio, compat
from compendium_wss.compat import client as compat_client
from compendium_wss.compat import message as compat_message


def public(module: ModuleType) -> list[tuple[str, object]]:
    names = getattr(module, "__all__", [n for n in vars(module) if not n.startswith("_")])
    return [(name, getattr(module, name)) for name in names]


def test_every_public_name_has_a_docstring() -> None:
    missing = []
    for module in (compendium_wss, aio, compat, compat_client, compat_message):
        assert module.__doc__, module.__name__
        for name, value in public(module):
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            if not inspect.getdoc(value):
                missing.append(f"{module.__name__}.{name}")
            if inspect.isclass(value):
                for attr, member in vars(value).items():
                    if attr.startswith("_") or not callable(member):
                        continue
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if inspect.isfunction(member) and not inspect.getdoc(member):
                        missing.append(f"{module.__name__}.{name}.{attr}")
    assert not missing, missing


def test_the_original_surface() -> None:
    for name in ("connect", "add_listener", "remove_listener", "send", "set_close_after_send", "close"):
        assert callable(getattr(compat.WssClient, name)), name
    assert inspect.isabstract(compat.WssClientListener)
    for name in (
        "get_type", "encode", "encode_as_bytes", "get_field_value", "create_init",
        "create_init_response", "create_deliver", "create_error", "create_route", "parse",
    ):
        assert callable(getattr(compat.Message, name)), name
    assert issubclass(compat.Message, dict)
    assert compat.MSG.TYPE.value == "type"
    assert compat.ROUTE.ADR.value == compat.INITRESP.ADR.value == "EpheWssAddr"
    assert compat.ROUTE.MSG.value == compat.DELIVER.MSG.value == "msg"
    assert (compat.ERROR.CODE.value, compat.ERROR.MSG.value) == ("errCode", "errMsg")
    assert [t.value for t in compat.TYPE] == ["INIT", "INITRESP", "ROUTE", "DELIVER", "ERR"]
