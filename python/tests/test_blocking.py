"""The blocking client against the real relay."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import compendium_wss as cw
from conftest import Proxy, Relay


def test_init_route_deliver(shared_relay: Relay) -> None:
    with cw.Client(shared_relay.url) as pc, cw.Client(shared_relay.url) as phone:
        phone_address = phone.init()
        assert len(phone_address) == 32 and phone.address == phone_address
        msg = {"hello": "phone", "n": [1, 2.5, None, True], "nested": {"ü": "✓"}}
        pc.send(phone_address, msg)
        assert phone.recv(timeout=10) == msg


def test_messages_arrive_in_order_and_iteration_ends_with_the_connection(shared_relay: Relay) -> None:
    pc = cw.Client(shared_relay.url)
    phone = cw.Client(shared_relay.url)
    address = phone.init()
    for n in range(500):
        pc.send(address, {"n": n})
    pc.close()
    received = []
    for msg in phone:
        received.append(msg["n"])
        if len(received) == 500:
            phone.close()
    assert received == list(range(500))
    assert phone.closed is not None


def test_404_for_an_address_nobody_has(shared_relay: Relay) -> None:
    with cw.Client(shared_relay.url) as pc:
        pc.send("0" * 32, {"x": 1})
        with pytest.raises(cw.AddressNotFound) as caught:
            pc.recv(timeout=10)
        assert caught.value.code == 404 and caught.value.text
        assert isinstance(caught.value, cw.RelayError)
        # The connection goes on.
        assert len(pc.init()) == 32


def test_400_for_a_message_the_relay_refuses(shared_relay: Relay) -> None:
    # A resumable session must start with INIT (docs/protocol.md section 6): a ROUTE first
    # is invalid, and the relay says so with 400 and keeps the connection.
    with cw.Client(shared_relay.url, resumable=True) as pc:
        pc.send("0" * 32, {"too": "early"})
        with pytest.raises(cw.BadRequest) as caught:
            pc.recv(timeout=10)
        assert caught.value.code == 400 and "INIT" in caught.value.text
        assert len(pc.init()) == 32


def test_a_message_over_the_relays_limit_closes_with_1009(relay: Relay) -> None:
    with cw.Client(relay.url) as pc, cw.Client(relay.url) as phone:
        address = phone.init()
        pc.send(address, {"big": "x" * 2_000_000})
        with pytest.raises(cw.ConnectionClosed) as caught:
            pc.recv(timeout=10)
        assert caught.value.code == 1009


def test_503_when_the_target_does_not_read() -> None:
    relay = Relay("--max-queue", "4", "--max-queue-bytes", "65536")
    try:
        with cw.Client(relay.url) as pc, cw.Client(relay.url) as phone:
            address = phone.init()
            blob = "y" * 8000
            for n in range(20000):
                pc.send(address, {"n": n, "blob": blob})
                try:
                    event = pc.next_event(timeout=0)
                except cw.Timeout:
                    continue
                if isinstance(event, cw.Error):
                    assert isinstance(event.error, cw.TargetBusy), event.error
                    assert event.error.code == 503
                    break
            else:
                pytest.fail("no 503 while the target did not read")
    finally:
        relay.stop()


def test_messages_that_are_not_objects_are_refused_before_sending(shared_relay: Relay) -> None:
    with cw.Client(shared_relay.url) as pc:
        with pytest.raises(cw.InvalidMessage, match="object"):
            pc.send("0" * 32, [1, 2])  # type: ignore[arg-type]
        with pytest.raises(cw.InvalidAddress, match="32 lowercase"):
            pc.send("not-an-address", {})


def test_connection_errors_are_clear() -> None:
    with pytest.raises(cw.InvalidUrl):
        cw.Client("http://127.0.0.1:1")
    with pytest.raises(cw.ConnectError) as caught:
        cw.Client("ws://127.0.0.1:1")
    assert caught.value.stage == "tcp"
    assert "127.0.0.1:1" in str(caught.value)
    with pytest.raises(ValueError):
        cw.Client("ws://127.0.0.1:1", connect_timeout=-1)


def test_tls_with_the_development_certificate(tls_relay: tuple[Relay, Path]) -> None:
    relay, ca = tls_relay
    assert relay.url.startswith("wss://")
    with cw.Client(relay.url, ca_cert=ca) as pc, cw.Client(relay.url, ca_cert=ca) as phone:
        address = phone.init()
        pc.send(address, {"secure": True})
        assert phone.recv(timeout=10) == {"secure": True}
    # Without the CA, the certificate is not trusted, and the error says what to do.
    with pytest.raises(cw.TlsError) as caught:
        cw.Client(relay.url)
    assert caught.value.tls_problem == "unknown_issuer"
    assert "ca_cert=" in str(caught.value) and "--ca-cert" not in str(caught.value)
    # ws:// to a wss:// relay.
    with pytest.raises(cw.ConnectError) as wrong_scheme:
        cw.Client(relay.url.replace("wss://", "ws://"))
    assert "wss://" in str(wrong_scheme.value)


def test_close_while_receiving_in_another_thread(shared_relay: Relay) -> None:
    for _ in range(20):
        phone = cw.Client(shared_relay.url)
        phone.init()
        outcome: list[BaseException] = []

        def receive() -> None:
            try:
                phone.recv()
            except BaseException as err:  # noqa: BLE001 - the test inspects it
                outcome.append(err)

        receiver = threading.Thread(target=receive)
        receiver.start()
        phone.close()
        receiver.join(timeout=10)
        assert not receiver.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], cw.ConnectionClosed)


def test_many_clients_in_threads(shared_relay: Relay) -> None:
    pairs = 16
    rounds = 50
    failures: list[BaseException] = []

    def pair() -> None:
        try:
            with cw.Client(shared_relay.url) as a, cw.Client(shared_relay.url) as b:
                b_address = b.init()
                a_address = a.init()
                for n in range(rounds):
                    a.send(b_address, {"n": n})
                    assert b.recv(timeout=20) == {"n": n}
                    b.send(a_address, {"echo": n})
                    assert a.recv(timeout=20) == {"echo": n}
        except BaseException as err:  # noqa: BLE001
            failures.append(err)

    threads = [threading.Thread(target=pair) for _ in range(pairs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not failures, failures
    assert not any(t.is_alive() for t in threads)


def test_timeout_on_receive(shared_relay: Relay) -> None:
    with cw.Client(shared_relay.url) as phone:
        phone.init()
        with pytest.raises(cw.Timeout):
            phone.recv(timeout=0.05)
        with pytest.raises(TimeoutError):
            phone.next_event(timeout=0)


def test_resumable_session(shared_relay: Relay) -> None:
    with cw.Client(shared_relay.url, resumable=True) as pc, cw.Client(shared_relay.url, resumable=True) as phone:
        address = phone.init()
        # A resumable session's first message is INIT (rule 6.1).
        pc.init()
        pc.send(address, {"v": 2})
        assert phone.recv(timeout=10) == {"v": 2}


def test_a_resumable_session_survives_a_dropped_connection(shared_relay: Relay) -> None:
    proxy = Proxy(shared_relay.url)
    try:
        with cw.Client(proxy.url, resumable=True) as phone, cw.Client(shared_relay.url) as pc:
            address = phone.init()
            pc.send(address, {"n": 0})
            assert phone.recv(timeout=10) == {"n": 0}
            proxy.cut()
            for n in range(1, 20):
                pc.send(address, {"n": n})
            events: list[object] = []
            got: list[int] = []
            while len(got) < 19:
                event = phone.next_event(timeout=30)
                events.append(event)
                if isinstance(event, cw.Delivered):
                    got.append(event.msg["n"])
            assert got == list(range(1, 20))
            resumed = [e for e in events if isinstance(e, cw.Resumed)]
            assert len(resumed) == 1 and resumed[0].address == address
    finally:
        proxy.close()


def test_a_lost_session_is_reported(shared_relay: Relay) -> None:
    relay = Relay("--resume-grace", "1", "--resume-hold", "0.5")
    proxy = Proxy(relay.url)
    try:
        phone = cw.Client(proxy.url, resumable=True)
        phone.init()
        proxy.close()  # cut, and refuse every reconnection: the grace runs out
        with pytest.raises(cw.SessionLost):
            while True:
                phone.recv(timeout=60)
        assert isinstance(phone.next_event(timeout=10), cw.Closed)
    finally:
        relay.stop()
