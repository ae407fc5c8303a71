"""The three APIs against a relay that is not ours (foreign_relay.py)."""

from __future__ import annotations

import asyncio
import queue
from typing import Iterator

import pytest

import compendium_wss as cw
from compendium_wss import aio
from compendium_wss.compat import TYPE, Message, WssClient, WssClientListener
from foreign_relay import ForeignRelay


@pytest.fixture(scope="module")
def foreign() -> Iterator[ForeignRelay]:
    relay = ForeignRelay()
    yield relay
    relay.stop()


def test_blocking(foreign: ForeignRelay) -> None:
    with cw.Client(foreign.url) as pc, cw.Client(foreign.url) as phone:
        address = phone.init()
        msg = {"ü": "✓", "n": [1, 2.5], "nested": {"a": None}}
        pc.send(address, msg)
        assert phone.recv(timeout=10) == msg  # JSON-equal, though re-encoded
        pc.send("f" * 32, {"x": 1})
        with pytest.raises(cw.AddressNotFound):
            pc.recv(timeout=10)


@pytest.mark.asyncio
async def test_asyncio(foreign: ForeignRelay) -> None:
    async with aio.connect(foreign.url) as pc, aio.connect(foreign.url) as phone:
        address = await phone.init()
        for n in range(20):
            await pc.send(address, {"n": n})
        assert [(await asyncio.wait_for(phone.recv(), 10))["n"] for _ in range(20)] == list(range(20))


def test_compat(foreign: ForeignRelay) -> None:
    got: "queue.Queue[Message]" = queue.Queue()

    class Listener(WssClientListener):
        def ws_received(self, msg: Message) -> None:
            got.put(msg)

    pc = WssClient(foreign.url)
    pc.add_listener(Listener())
    pc.connect()
    pc.send(Message.create_init())
    initresp = got.get(timeout=10)
    assert initresp.get_type() is TYPE.INITRESP
    pc.send(Message.create_route(initresp.EpheWssAddr, {"to": "self"}))
    assert got.get(timeout=10).msg == {"to": "self"}
    pc.close()


def test_resumable_mode_says_the_relay_does_not_speak_version_2(foreign: ForeignRelay) -> None:
    with pytest.raises(cw.ConnectError) as caught:
        cw.Client(foreign.url, resumable=True)
    assert caught.value.version_refused
