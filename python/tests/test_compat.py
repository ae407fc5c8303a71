"""The drop-in for the original client, with the Compendium library's usage pattern."""

from __future__ import annotations

import queue
import threading

import pytest

import compendium_wss as cw
from compendium_wss.compat import TYPE, Message, WssClient, WssClientListener
from compendium_wss.compat.message import DELIVER, ERROR, INITRESP, ROUTE
from conftest import Relay


class Collect(WssClientListener):
    def __init__(self) -> None:
        self.messages: "queue.Queue[Message]" = queue.Queue()
        self.threads: set[str] = set()

    def ws_received(self, msg: Message) -> None:
        self.threads.add(threading.current_thread().name)
        self.messages.put(msg)

    def next(self) -> Message:
        return self.messages.get(timeout=10)


def test_message_shapes() -> None:
    route = Message.create_route("a" * 32, {"k": 1})
    assert route == {"type": "ROUTE", "EpheWssAddr": "a" * 32, "msg": {"k": 1}}
    assert route.EpheWssAddr == "a" * 32 and route.msg == {"k": 1}
    assert route.get_type() is TYPE.ROUTE and route.get_field_value(ROUTE.MSG) == {"k": 1}
    assert Message.parse(route.encode()) == route
    assert Message.parse(route.encode_as_bytes().decode()) == route
    assert Message.create_init() == {"type": "INIT"}
    assert Message.create_error(404, "gone").errCode == 404
    assert Message.create_error(404) == {"type": "ERR", "errCode": 404}
    assert Message.create_deliver({"x": 1})[DELIVER.MSG] == {"x": 1}
    assert Message.create_init_response("b" * 32)[INITRESP.ADR] == "b" * 32
    assert TYPE.ERROR.value == "ERR" and ERROR.CODE.value == "errCode"
    with pytest.raises(Exception, match="Missing message field:msg"):
        Message({"type": "ROUTE", "EpheWssAddr": "a" * 32})
    with pytest.raises(Exception, match="Missing message field:type"):
        Message({})


def enrol(url: str) -> None:
    """The Compendium library's enrolment: the PC connects, INITs, shows its address to
    the phone (here: a second client playing the phone), and they exchange messages."""
    phone = cw.Client(url)
    pc = WssClient(url)
    listener = Collect()
    pc.add_listener(listener)
    pc.connect()
    pc.send(Message.create_init())
    initresp = listener.next()
    assert initresp.get_type() is TYPE.INITRESP
    pc_address = initresp.EpheWssAddr
    phone_address = phone.init()
    phone.send(pc_address, {"hello": "pc", "phone": phone_address})  # the QR code's answer
    first = listener.next()
    assert first.get_type() is TYPE.DELIVER and first.msg["hello"] == "pc"
    pc.send(Message.create_route(first.msg["phone"], {"enrol": "challenge"}))
    assert phone.recv(timeout=10) == {"enrol": "challenge"}
    phone.send(pc_address, {"enrol": "response"})
    assert listener.next().msg == {"enrol": "response"}
    pc.set_close_after_send()
    pc.send(Message.create_route(phone_address, {"enrol": "done"}))
    assert phone.recv(timeout=10) == {"enrol": "done"}
    pc.close()
    assert listener.threads == {"WssClient"}
    phone.close()


def test_enrolment_pattern(shared_relay: Relay) -> None:
    enrol(shared_relay.url)


def test_enrolment_over_tls(tls_relay: tuple[Relay, object]) -> None:
    relay, ca = tls_relay
    pc = WssClient(relay.url, ca_cert=ca)  # type: ignore[arg-type]
    listener = Collect()
    pc.add_listener(listener)
    pc.connect()
    pc.send(Message.create_init())
    assert listener.next().get_type() is TYPE.INITRESP
    pc.close()


def test_errors_reach_the_listener_as_err_messages(shared_relay: Relay) -> None:
    pc = WssClient(shared_relay.url)
    listener = Collect()
    pc.add_listener(listener)
    pc.connect()
    pc.send(Message.create_route("0" * 32, {"x": 1}))
    err = listener.next()
    assert err.get_type() is TYPE.ERROR and err.errCode == 404 and err.errMsg
    with pytest.raises(ValueError):
        pc.send(Message.create_deliver({"x": 1}))
    pc.close()
    pc.close()  # twice is harmless


def test_listeners_run_in_order_and_can_be_removed(shared_relay: Relay) -> None:
    order: "queue.Queue[str]" = queue.Queue()

    class Named(WssClientListener):
        def __init__(self, name: str) -> None:
            self.name = name

        def ws_received(self, msg: Message) -> None:
            order.put(self.name)

    pc = WssClient(shared_relay.url)
    first, second, third = Named("first"), Named("second"), Named("third")
    for listener in (first, second, third):
        pc.add_listener(listener)
    pc.remove_listener(second)
    pc.connect()
    pc.send(Message.create_init())
    assert [order.get(timeout=10), order.get(timeout=10)] == ["first", "third"]
    pc.close()


def test_close_while_messages_arrive_loses_nothing_sent_before_it(shared_relay: Relay) -> None:
    """The original's close raced its sender thread. Here close() sends everything queued
    first, every time, while the peer keeps sending to us."""
    phone = cw.Client(shared_relay.url)
    phone_address = phone.init()
    for round_ in range(100):
        pc = WssClient(shared_relay.url)
        listener = Collect()
        pc.add_listener(listener)
        pc.connect()
        pc.send(Message.create_init())
        pc_address = listener.next().EpheWssAddr
        for n in range(5):
            phone.send(pc_address, {"n": n})  # arriving while we close
        for n in range(10):
            pc.send(Message.create_route(phone_address, {"round": round_, "n": n}))
        pc.close()
        got: list[dict[str, object]] = []
        while len(got) < 10:
            event = phone.next_event(timeout=10)
            if isinstance(event, cw.Delivered):
                got.append(event.msg)
            else:
                # The phone's messages that reached us after close are refused: 404.
                assert isinstance(event, cw.Error), event
                assert isinstance(event.error, cw.AddressNotFound), event
        assert got == [{"round": round_, "n": n} for n in range(10)]
    phone.close()
