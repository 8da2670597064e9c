"""SMPP throughput on loopback (issue #5), the simulator in its own process as in production:

a. the simulator's ceiling: a bare windowed client (window 10, TCP_NODELAY, PDUs encoded
   beforehand) sending submit_sm and counting submit_sm_resp;
b. the link (`dispatch.smpp_link.SmppLink`, window 10, one bind): parts to submit_sm_resp
   (target >= 1,500 msg/s and >= 60 % of a);
c. receipts processed by the link (parsed, handed to a callback, deliver_sm_resp sent), receipt
   delay 0: c1 while submitting (each submit asks for a receipt, both directions busy),
   c2 a backlog of receipts drained by a receiver bind (target >= 1,500/s).

The loopback figures on a shared 2-core VM swing by up to 2x from run to run, hence a warm-up
round, several rounds, medians, and the link's share of the ceiling taken round by round.

Run: .venv/bin/python benchmarks/bench_smpp.py [--messages 20000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import time
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dispatch.simulator import SimulatorConfig, SMSCSimulator  # noqa: E402
from dispatch.smpp_link import (  # noqa: E402
    BIND_TRANSCEIVER,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    BindRequest,
    LinkConfig,
    OutgoingPart,
    Receipt,
    ShortMessagePdu,
    SmppLink,
    encode_bind,
    encode_pdu,
    encode_short_message,
    split_pdus,
    take_pdu,
)

WINDOW = 10
TEXT = "【测试】您的验证码是 482913，5 分钟内有效。".encode("utf-16-be")


def environment() -> dict[str, str]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    return {
        "python": platform.python_version(),
        "cpus": str(os.cpu_count()),
        "platform": platform.platform(),
        "commit": commit or "?",
        "loadavg_1m_at_start": f"{os.getloadavg()[0]:.2f}",
    }


def serve(port_out: Any, stop: EventType) -> None:
    """The simulator process: receipts at once, no faults, keeps nothing it does not need."""
    simulator = SMSCSimulator(SimulatorConfig(receipt_delay=0.0, keep_received=1000)).start()
    port_out.put(simulator.port)
    stop.wait()
    simulator.stop()


def raw_ceiling(port: int, messages: int, chunk: int = WINDOW) -> float:
    """Submits per second from a client that does nothing but write pre-encoded PDUs and count answers.

    `chunk`: PDUs per write. A whole window per write leaves the two processes taking turns; half
    a window lets the simulator work on one half while the client writes the other, as the link does.
    """
    sock = socket.create_connection(("127.0.0.1", port))
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(encode_pdu(BIND_TRANSCEIVER, 1, encode_bind(BindRequest("backoffice", "secret"))))
        buffer = bytearray()
        while take_pdu(buffer) is None:
            buffer += sock.recv(65536)
        body = encode_short_message(ShortMessagePdu("10690001", "13800138000", TEXT, data_coding=8, registered_delivery=0))
        pdus = [encode_pdu(SUBMIT_SM, n, body) for n in range(2, messages + 2)]
        sock.setblocking(False)
        sent = answered = 0
        started = time.perf_counter()
        while answered < messages:
            room = min(WINDOW - (sent - answered), messages - sent)
            while room > 0:
                step = min(chunk, room)
                sock.sendall(b"".join(pdus[sent : sent + step]))
                sent += step
                room -= step
            select.select([sock], [], [], 1.0)
            try:
                buffer += sock.recv(262144)
            except BlockingIOError:
                continue
            for command_id, status, _, _ in split_pdus(buffer):
                assert command_id == SUBMIT_SM_RESP and status == 0, (hex(command_id), status)
                answered += 1
        return messages / (time.perf_counter() - started)
    finally:
        sock.close()


def parts(messages: int, registered_delivery: int) -> list[OutgoingPart]:
    return [
        OutgoingPart(n, "10690001", f"138{n:08d}", TEXT, data_coding=8, registered_delivery=registered_delivery) for n in range(messages)
    ]


def link_submits(port: int, messages: int) -> float:
    """Parts per second through SmppLink.submit to their submit_sm_resp (no receipts asked for)."""
    batch = parts(messages, registered_delivery=0)
    with SmppLink(LinkConfig(port=port, window=WINDOW)) as link:
        link.connect()
        started = time.perf_counter()
        results, lost = link.submit(batch, timeout=120)
        elapsed = time.perf_counter() - started
    assert len(results) == messages and not lost and all(r.ok for r in results)
    return messages / elapsed


def link_receipts_while_submitting(port: int, messages: int) -> float:
    """Receipts per second, each submit asking for one: from the first submit to the last receipt."""
    receipts: list[Receipt] = []
    batch = parts(messages, registered_delivery=1)
    cursor = 0

    def provide(count: int) -> list[OutgoingPart]:
        nonlocal cursor
        chunk = batch[cursor : cursor + count]
        cursor += len(chunk)
        return chunk

    with SmppLink(LinkConfig(port=port, window=WINDOW), on_receipt=receipts.append) as link:
        link.connect()
        started = time.perf_counter()
        deadline = started + 120
        while len(receipts) < messages and time.perf_counter() < deadline:
            link.run_once(provide, timeout=0.05)
        elapsed = time.perf_counter() - started
    assert len(receipts) == messages, f"{len(receipts)} receipts of {messages}"
    return messages / elapsed


def link_receipt_backlog(port: int, messages: int) -> float:
    """Receipts per second drained by a receiver bind from a backlog the SMSC held for it."""
    with SmppLink(LinkConfig(port=port, window=WINDOW, bind_mode="transmitter")) as sender:
        results, _ = sender.submit(parts(messages, registered_delivery=1), timeout=120)
        assert len(results) == messages
    count = 0

    def count_receipt(_: Receipt) -> None:
        nonlocal count
        count += 1

    with SmppLink(LinkConfig(port=port, bind_mode="receiver"), on_receipt=count_receipt) as receiver:
        started = time.perf_counter()
        deadline = started + 120
        while count < messages and time.perf_counter() < deadline:
            receiver.run_once(None, timeout=0.05)
        elapsed = time.perf_counter() - started
    assert count == messages, f"{count} receipts of {messages}"
    return messages / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    env = environment()
    context = multiprocessing.get_context("spawn")
    port_out = context.Queue()
    stop = context.Event()
    server = context.Process(target=serve, args=(port_out, stop), daemon=True)
    server.start()
    port = port_out.get(timeout=30)
    figures: dict[str, list[float]] = {
        "a_ceiling_raw_client": [],
        "a_raw_client_whole_window_writes": [],
        "b_link_submits": [],
        "c1_link_receipts_while_submitting": [],
        "c2_link_receipt_backlog": [],
    }
    try:
        # One round to warm both processes up (allocator arenas, first-touch pages); not counted.
        raw_ceiling(port, args.messages)
        link_submits(port, args.messages)
        for _ in range(args.runs):
            figures["a_ceiling_raw_client"].append(raw_ceiling(port, args.messages, chunk=(WINDOW + 1) // 2))
            figures["a_raw_client_whole_window_writes"].append(raw_ceiling(port, args.messages, chunk=WINDOW))
            figures["b_link_submits"].append(link_submits(port, args.messages))
            figures["c1_link_receipts_while_submitting"].append(link_receipts_while_submitting(port, args.messages))
            figures["c2_link_receipt_backlog"].append(link_receipt_backlog(port, args.messages))
    finally:
        stop.set()
        server.join(10)
        port_out.close()
        port_out.join_thread()

    report: dict[str, Any] = {"environment": env, "messages_per_run": args.messages, "runs": args.runs, "window": WINDOW, "per_second": {}}
    for name, values in figures.items():
        report["per_second"][name] = {
            "median": round(statistics.median(values)),
            "best": round(max(values)),
            "all": [round(v) for v in values],
        }
    # Link against ceiling round by round (same moment, same machine load), then the median.
    shares = [link / raw for link, raw in zip(figures["b_link_submits"], figures["a_ceiling_raw_client"], strict=True)]
    report["link_share_of_ceiling"] = {"median": f"{statistics.median(shares):.0%}", "all": [f"{x:.0%}" for x in shares]}
    print(json.dumps(report, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
