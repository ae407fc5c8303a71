"""Python pingpong benchmark: compendium_wss against a websockets-based client built like
the original, on the same relay, in the same run.

    pip install ./python websockets       # a release build of the package
    cargo build --release -p compendium-server
    python python/bench/pingpong.py [--round-trips N] [--reps R] [--url ws://...]

Each arm runs the same code: a "PC" and a "phone" client in this process, each a
``WssClient``-style object with a listener; the phone echoes every message, the PC sends
the next one when the echo arrives. Reported per arm: round trips per second, and the CPU
time of the whole process (all threads, the package's Rust threads included) per message
relayed. Arms alternate within each repetition; ratios are medians of the per-repetition
ratios, so that the machine's drift affects both arms alike.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from original_style import OriginalStyleClient  # noqa: E402

import compendium_wss  # noqa: E402
from compendium_wss.compat import Message, WssClient, WssClientListener  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class Handler(WssClientListener):
    def __init__(self) -> None:
        self.on_message: Callable[[Message], None] = lambda m: None

    def ws_received(self, msg: Message) -> None:
        self.on_message(msg)


def init(client: Any, handler: Handler) -> str:
    got = threading.Event()
    box: list[str] = []

    def answer(msg: Message) -> None:
        box.append(msg["EpheWssAddr"])
        got.set()

    handler.on_message = answer
    client.send(Message.create_init())
    if not got.wait(10):
        raise RuntimeError("no INITRESP")
    return box[0]


def run_arm(make: Callable[[str], Any], url: str, round_trips: int, size: int) -> tuple[float, float]:
    """(round trips per second, CPU microseconds per message)."""
    pc, phone = make(url), make(url)
    pc_handler, phone_handler = Handler(), Handler()
    pc.add_listener(pc_handler)
    phone.add_listener(phone_handler)
    pc.connect()
    phone.connect()
    pc_address = init(pc, pc_handler)
    phone_address = init(phone, phone_handler)
    body = {"pad": "x" * size}
    done = threading.Event()
    count = [0]

    def echo(msg: Message) -> None:
        phone.send(Message.create_route(pc_address, msg["msg"]))

    def next_ping(msg: Message) -> None:
        count[0] += 1
        if count[0] >= round_trips:
            done.set()
        else:
            pc.send(Message.create_route(phone_address, {"n": count[0], **body}))

    phone_handler.on_message = echo
    pc_handler.on_message = next_ping
    wall, cpu = time.perf_counter(), time.process_time()
    pc.send(Message.create_route(phone_address, {"n": 0, **body}))
    if not done.wait(120):
        raise RuntimeError(f"stalled after {count[0]} round trips")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    pc.close()
    phone.close()
    return round_trips / wall, cpu / (2 * round_trips) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--round-trips", type=int, default=5000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--size", type=int, default=16, help="padding bytes per message")
    parser.add_argument("--url", help="a running relay (default: start target/release/compendium-server)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    relay = None
    url = args.url
    if url is None:
        binary = os.environ.get("COMPENDIUM_SERVER", str(ROOT / "target/release/compendium-server"))
        relay = subprocess.Popen([binary, "--listen", "127.0.0.1:0"], stderr=subprocess.PIPE, text=True)
        assert relay.stderr is not None
        for line in relay.stderr:
            if 'event="ready"' in line:
                url = line.split("listen=")[1].split()[0]
                break
        threading.Thread(target=lambda: [None for _ in relay.stderr or []], daemon=True).start()
    assert url
    arms: dict[str, Callable[[str], Any]] = {
        "original-style (websockets)": OriginalStyleClient,
        "compendium_wss.compat": WssClient,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in arms}
    try:
        for _ in range(args.reps):
            for name, make in arms.items():
                results[name].append(run_arm(make, url, args.round_trips, args.size))
    finally:
        if relay is not None:
            relay.terminate()
    base, ours = results["original-style (websockets)"], results["compendium_wss.compat"]
    speed = statistics.median(o[0] / b[0] for o, b in zip(ours, base))
    cpu = statistics.median(o[1] / b[1] for o, b in zip(ours, base))
    print(f"python pingpong, {args.round_trips} round trips x {args.reps}, {args.size} B padding")
    for name, rows in results.items():
        rates = [r[0] for r in rows]
        cpus = [r[1] for r in rows]
        print(f"  {name:30} {statistics.median(rates):9.0f} round trips/s ({min(rates):.0f}-{max(rates):.0f}), "
              f"{statistics.median(cpus):7.1f} us CPU/msg")
    print(f"  compendium_wss / original-style: {speed:.2f}x round trips/s, {cpu:.2f}x CPU per message "
          f"(target: >1x and <1x)")
    if args.json:
        args.json.write_text(json.dumps({"version": compendium_wss.__name__, "results": results,
                                         "speed_ratio": speed, "cpu_ratio": cpu}, indent=2))
    if not (speed > 1 and cpu < 1):
        sys.exit(1)


if __name__ == "__main__":
    main()
