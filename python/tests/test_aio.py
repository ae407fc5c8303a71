"""The asyncio client against the real relay."""

from __future__ import annotations

import asyncio

import pytest

import compendium_wss as cw
from compendium_wss import aio
from conftest import Relay


@pytest.mark.asyncio
async def test_init_route_deliver(shared_relay: Relay) -> None:
    async with aio.connect(shared_relay.url) as pc, aio.connect(shared_relay.url) as phone:
        address = await phone.init()
        await pc.send(address, {"hello": "async"})
        assert await asyncio.wait_for(phone.recv(), 10) == {"hello": "async"}


@pytest.mark.asyncio
async def test_the_loop_is_not_blocked_while_waiting(shared_relay: Relay) -> None:
    phone = await aio.connect(shared_relay.url)
    pc = await aio.connect(shared_relay.url)
    address = await phone.init()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    receive = asyncio.create_task(phone.recv())
    while ticks < 100:  # the loop runs other tasks while recv waits
        await asyncio.sleep(0)
    assert not receive.done()
    await pc.send(address, {"n": 1})
    assert await asyncio.wait_for(receive, 10) == {"n": 1}
    tick.cancel()
    await pc.close()
    await phone.close()


@pytest.mark.asyncio
async def test_cancelling_a_receive_loses_nothing(shared_relay: Relay) -> None:
    async with aio.connect(shared_relay.url) as pc, aio.connect(shared_relay.url) as phone:
        address = await phone.init()
        sent = 300
        for n in range(sent):
            await pc.send(address, {"n": n})
        received: list[int] = []
        timeouts = 0
        while len(received) < sent:
            try:
                # Timeouts so short that most receives are cancelled mid-wait.
                received.append((await asyncio.wait_for(phone.recv(), 0.0005))["n"])
            except asyncio.TimeoutError:
                timeouts += 1
                assert timeouts < 1_000_000
        assert received == list(range(sent))


@pytest.mark.asyncio
async def test_errors_and_the_event_stream(shared_relay: Relay) -> None:
    pc = await aio.connect(shared_relay.url)
    await pc.send("0" * 32, {"x": 1})
    with pytest.raises(cw.AddressNotFound):
        await asyncio.wait_for(pc.recv(), 10)
    await pc.close()
    kinds = [type(event) async for event in pc.events()]
    assert kinds[-1] is cw.Closed
    assert pc.is_closed()


@pytest.mark.asyncio
async def test_async_iteration_ends_with_the_connection(shared_relay: Relay) -> None:
    pc = await aio.connect(shared_relay.url)
    phone = await aio.connect(shared_relay.url)
    address = await phone.init()
    for n in range(50):
        await pc.send(address, {"n": n})
    await pc.close()
    got = []
    async for msg in phone:
        got.append(msg["n"])
        if len(got) == 50:
            await phone.close()
    assert got == list(range(50))


@pytest.mark.asyncio
async def test_connect_errors() -> None:
    with pytest.raises(cw.ConnectError):
        await aio.connect("ws://127.0.0.1:1")
    with pytest.raises(cw.InvalidUrl):
        await aio.connect("nope")


@pytest.mark.asyncio
async def test_many_clients_on_one_loop(shared_relay: Relay) -> None:
    async def pair() -> None:
        async with aio.connect(shared_relay.url) as a, aio.connect(shared_relay.url) as b:
            address = await b.init()
            for n in range(30):
                await a.send(address, {"n": n})
                assert await asyncio.wait_for(b.recv(), 20) == {"n": n}

    await asyncio.wait_for(asyncio.gather(*(pair() for _ in range(20))), 60)


@pytest.mark.asyncio
async def test_resumable(shared_relay: Relay) -> None:
    async with aio.connect(shared_relay.url, resumable=True) as pc, aio.connect(
        shared_relay.url, resumable=True
    ) as phone:
        address = await phone.init()
        await pc.init()
        await pc.send(address, {"v": 2})
        assert await asyncio.wait_for(phone.recv(), 10) == {"v": 2}


@pytest.mark.asyncio
async def test_close_after_the_relay_ended_the_connection(relay: Relay) -> None:
    client = await aio.connect(relay.url)
    relay.stop()
    events = [event async for event in client.events()]
    assert isinstance(events[-1], cw.Closed)
    # Every event taken, the loop no longer watches the client: a close still completes.
    await asyncio.wait_for(client.close(), 10)
    assert client.is_closed()
