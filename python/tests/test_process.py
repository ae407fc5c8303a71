"""Ctrl-C and interpreter exit, in a child interpreter of their own."""

from __future__ import annotations

import selectors
import signal
import subprocess
import sys
import textwrap

from conftest import Relay


def child(code: str, url: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def first_line(process: subprocess.Popen[str], timeout: float = 20) -> str:
    """The child's first line of output, or a failure that shows its stderr."""
    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            process.kill()
            _, err = process.communicate()
            raise AssertionError(f"the child printed nothing in {timeout} s; stderr:\n{err}")
    return process.stdout.readline()


def test_ctrl_c_interrupts_a_blocking_receive(shared_relay: Relay) -> None:
    process = child(
        """
        import sys, compendium_wss as cw
        client = cw.Client(sys.argv[1])
        client.init()
        try:
            print("waiting", flush=True)
            client.recv()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            client.close()
            print("closed", flush=True)
        """,
        shared_relay.url,
    )
    assert first_line(process) == "waiting\n"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=20)
    assert out == "interrupted\nclosed\n", err
    assert process.returncode == 0, err


def test_ctrl_c_during_a_blocking_receive_without_a_handler(shared_relay: Relay) -> None:
    process = child(
        """
        import sys, compendium_wss as cw
        client = cw.Client(sys.argv[1])
        print("waiting", flush=True)
        for msg in client:
            pass
        """,
        shared_relay.url,
    )
    assert first_line(process) == "waiting\n"
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=20)
    assert "KeyboardInterrupt" in err
    # Python ends an unhandled Ctrl-C by re-raising SIGINT on itself.
    assert process.returncode == -signal.SIGINT


def test_interpreter_exit_with_clients_open(shared_relay: Relay) -> None:
    """No close anywhere, a thread blocked in recv, an asyncio client, a compat client:
    the interpreter exits at once and cleanly."""
    process = child(
        """
        import asyncio, sys, threading
        import compendium_wss as cw
        from compendium_wss import aio
        from compendium_wss.compat import WssClient, Message
        url = sys.argv[1]
        blocked = cw.Client(url)
        blocked.init()
        threading.Thread(target=blocked.recv, daemon=True).start()
        plain = cw.Client(url)
        plain.send(blocked.address, {"unread": True})
        compat = WssClient(url)
        compat.connect()
        compat.send(Message.create_init())
        async def main():
            return await aio.connect(url)
        kept = asyncio.run(main())
        print("exiting", flush=True)
        """,
        shared_relay.url,
    )
    out, err = process.communicate(timeout=20)
    assert out == "exiting\n"
    assert process.returncode == 0, err
    assert err == ""


def test_a_client_is_refused_after_fork_in_the_child(shared_relay: Relay) -> None:
    process = child(
        """
        import os, sys, compendium_wss as cw
        parent = cw.Client(sys.argv[1])
        pid = os.fork()
        if pid == 0:
            try:
                parent.init()
                os._exit(3)
            except cw.ConnectionClosed as err:
                assert "fork" in str(err), err
            # A new client in the child works.
            child = cw.Client(sys.argv[1])
            assert len(child.init()) == 32
            child.close()
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert parent.init()
        parent.close()
        print(os.waitstatus_to_exitcode(status), flush=True)
        """,
        shared_relay.url,
    )
    out, err = process.communicate(timeout=30)
    assert out == "0\n", err
    assert process.returncode == 0, err
