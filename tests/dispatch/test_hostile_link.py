"""SmppLink against a hostile SMSC (raw TCP, scripted)."""

from __future__ import annotations

import select
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from dispatch.smpp_link import (
    BIND_TRANSCEIVER_RESP,
    DATA_SM,
    DATA_SM_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ESM_DELIVERY_RECEIPT,
    ESME_RMSGQFUL,
    ESME_RTHROTTLED,
    GENERIC_NACK,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_RECEIPTED_MESSAGE_ID,
    UNBIND,
    LinkConfig,
    OutgoingPart,
    ShortMessagePdu,
    SmppLink,
    cstring,
    decode_short_message,
    encode_data_sm,
    encode_pdu,
)
from tests.backoffice import hostile_smsc
from tests.backoffice.hostile_smsc import Conn, HostileSmsc
from tests.dispatch.test_smpp_link import FAST, Recorder, sms

hostile = hostile_smsc.hostile  # its fixture: scripted SMSCs, stopped after the test


def new_link(smsc: HostileSmsc, **config: Any) -> tuple[SmppLink, Recorder]:
    recorder = Recorder()
    link = SmppLink(LinkConfig(port=smsc.port, **{**FAST, **config}), on_resp=recorder.results.append, on_link_down=recorder.link_down)
    return link, recorder


def feeder(parts: list[OutgoingPart]) -> Callable[[int], list[OutgoingPart]]:
    def give(n: int) -> list[OutgoingPart]:
        out = parts[:n]
        del parts[:n]
        return out

    return give


def test_a_good_response_followed_by_garbage_in_the_same_read(hostile: Callable[..., HostileSmsc]) -> None:
    def script(conn: Conn) -> None:
        conn.bind()
        if conn.index == 1:
            conn.serve(lambda c, seq, body, n: encode_pdu(SUBMIT_SM_RESP, seq, b"GOOD\0") + b"\xff" * 16 if n == 0 else None)
        conn.serve(lambda c, seq, body, n: encode_pdu(SUBMIT_SM_RESP, seq, b"AGAIN%d\0" % n))

    smsc = hostile(script)
    link, seen = new_link(smsc, window=1)
    give = feeder([sms("only")])
    deadline = time.monotonic() + 5
    while not seen.results and time.monotonic() < deadline:
        link.run_once(give, timeout=0.02)
    link.close()
    print(seen.results, seen.lost, seen.downs, len(smsc.submits))
    assert [r.message_id for r in seen.results] == ["GOOD"] and seen.lost == []


def _trickle(conn: Conn) -> None:
    conn.read()
    while True:  # an enquire_link every 5 ms, never the bind response
        conn.send(encode_pdu(ENQUIRE_LINK, 9))
        time.sleep(0.005)


def _slow_bytes(conn: Conn) -> None:
    _, _, seq, _ = conn.read()
    resp = encode_pdu(BIND_TRANSCEIVER_RESP, seq, cstring("SLOW"))
    for byte in resp:  # one byte every 0.4 s: 6+ s for a connect_timeout of 1 s
        conn.send(bytes((byte,)))
        time.sleep(0.4)
    conn.serve(lambda c, s, b, n: encode_pdu(SUBMIT_SM_RESP, s, b"ok\0"))


def _bind_then(body: bytes, status: int = 0, command_id: int = BIND_TRANSCEIVER_RESP, extra: bytes = b"") -> Callable[[Conn], None]:
    def script(conn: Conn) -> None:
        _, _, seq, _ = conn.read()
        conn.send(encode_pdu(command_id, seq, body, status) + extra)
        conn.serve(lambda c, s, b, n: encode_pdu(SUBMIT_SM_RESP, s, b"ok\0"))

    return script


def _never(conn: Conn) -> None:
    conn.read()
    time.sleep(30)


BINDS: dict[str, Callable[[Conn], None]] = {
    "refused-0x0d": _bind_then(b"", 0x0D),
    "refused-unknown-status": _bind_then(b"", 0x12345),
    "refused-with-body": _bind_then(cstring("X"), 0x0D),
    "system-id-non-ascii": _bind_then(b"\xe9\xff\x80\0"),
    "system-id-no-nul": _bind_then(b"NONUL"),
    "system-id-60k": _bind_then(b"S" * 60000 + b"\0"),
    "body-cut-in-tlv": _bind_then(b"X\0\x02\x10\x00"),
    "tlv-overrun": _bind_then(b"X\0\x02\x10\x00\x09\x34"),
    "second-bind-resp": _bind_then(cstring("A"), extra=encode_pdu(BIND_TRANSCEIVER_RESP, 1, cstring("B"), 0x0D)),
    "enquire-link-right-after": _bind_then(cstring("A"), extra=encode_pdu(ENQUIRE_LINK, 77)),
    "nack-status-0-as-bind-resp": _bind_then(b"", 0, GENERIC_NACK),
    "nack-status-3-as-bind-resp": _bind_then(b"", 3, GENERIC_NACK),
    "bind-receiver-resp": _bind_then(cstring("R"), 0, 0x80000001),
    "submit-sm-resp-as-bind-resp": _bind_then(b"", 0, SUBMIT_SM_RESP),
    "outbind-first": _bind_then(cstring("A"), 0, 0x0000000B),  # an outbind with the bind's sequence: no response bit
    "never-answers": _never,
    "trickle-enquire-links": _trickle,
    "slow-bytes": _slow_bytes,
}


@pytest.mark.parametrize("script", list(BINDS.values()), ids=list(BINDS))
def test_odd_binds(hostile: Callable[..., HostileSmsc], script: Callable[[Conn], None]) -> None:
    smsc = hostile(script)
    link, seen = new_link(smsc, window=1, connect_timeout=1.0)
    give = feeder([sms("only")])
    outcome: list[Any] = []

    def drive() -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < 3 and not seen.results:
                link.run_once(give, timeout=0.02)
            outcome.append(("done", round(time.monotonic() - started, 2)))
        except BaseException as exc:  # noqa: BLE001
            outcome.append((type(exc).__name__, str(exc)[:100], round(time.monotonic() - started, 2)))

    thread = threading.Thread(target=drive, daemon=True)
    thread.start()
    thread.join(timeout=10)
    hung = thread.is_alive()
    smsc.stop()
    thread.join(timeout=5)
    if link._sock is not None:
        link._sock.close()
    print(
        "\n",
        [k for k, v in BINDS.items() if v is script],
        "HUNG" if hung else "",
        outcome,
        "bound",
        link.bound,
        "results",
        [(r.command_status, r.message_id) for r in seen.results],
        "binds",
        link.stats.binds,
        "connections",
        smsc.connections,
        "seen",
        [hex(p[1]) for p in smsc.seen],
    )
    assert not hung


def test_requests_and_odd_responses_from_the_smsc(hostile: Callable[..., HostileSmsc]) -> None:
    from dispatch.smpp_link import ShortMessagePdu, encode_short_message

    data_sm_body = b"\0\x01\x01138\0\x00\x00\x0010690000\0\x04\x00\x00" + b"\x04\x1e\x00\x04AB1\0" + b"\x04\x27\x00\x01\x02"
    odd = [
        encode_pdu(ENQUIRE_LINK, 11),
        encode_pdu(ENQUIRE_LINK, 12, b"junk body"),
        encode_pdu(0x0000000B, 13, cstring("SMSC") + cstring("pw")),  # outbind
        encode_pdu(0x00000102, 14, b"\0\x01\x01138\0\x01\x01139\0"),  # alert_notification
        encode_pdu(0x00000103, 15, data_sm_body),  # data_sm (a receipt in TLVs)
        encode_pdu(0x80000003, 16, b"x\0\0\0\0"),  # query_sm_resp
        encode_pdu(0x80000008, 17),  # cancel_sm_resp
        encode_pdu(0x00000004, 18, encode_short_message(ShortMessagePdu("1", "2", b"hi"))),  # submit_sm to the ESME
        encode_pdu(0x00000009, 19, cstring("a") + cstring("b") + cstring("") + b"\x34\0\0\0"),  # bind_transceiver to the ESME
        encode_pdu(0x12345678, 20),
        encode_pdu(0x92345678, 21),
        encode_pdu(0x80000015, 22, status=5),  # enquire_link_resp nobody asked for
        encode_pdu(0x80000006, 23),  # unbind_resp nobody asked for
        encode_pdu(0x80000009, 1, cstring("AGAIN"), 0x05),  # bind_resp again, seq of the bind: "already bound"
        encode_pdu(0x80000000, 24, status=3),  # generic_nack for nothing
    ]

    def script(conn: Conn) -> None:
        conn.bind()
        conn.send(b"".join(odd))
        conn.serve(lambda c, s, b, n: encode_pdu(SUBMIT_SM_RESP, s, b"ok\0"))

    smsc = hostile(script)
    link, seen = new_link(smsc, window=1)
    give = feeder([sms("only")])
    deadline = time.monotonic() + 3
    while (not seen.results or len(smsc.seen) < 14) and time.monotonic() < deadline:
        link.run_once(give, timeout=0.02)
    link.close()
    answers = [(hex(c), st, sq) for _, c, st, sq, _ in smsc.seen]
    print("\n", answers, seen.results, seen.downs)
    assert [r.message_id for r in seen.results] == ["ok"] and seen.lost == []


@pytest.mark.parametrize("answer", ["nack", "silence", "resp-wrong-seq"])
def test_our_enquire_link_answered_oddly(hostile: Callable[..., HostileSmsc], answer: str) -> None:
    def script(conn: Conn) -> None:
        conn.bind()
        while True:
            command_id, _, seq, _ = conn.read(timeout=10)
            if command_id == ENQUIRE_LINK:
                if answer == "nack":
                    conn.send(encode_pdu(GENERIC_NACK, seq, status=3))
                elif answer == "resp-wrong-seq":
                    conn.send(encode_pdu(0x80000015, seq + 1000))

    smsc = hostile(script)
    link, seen = new_link(smsc, window=1, enquire_link_interval=0.2, response_timeout=0.5)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        link.run_once(None, timeout=0.02)
    print("\n", answer, "binds", link.stats.binds, "enquire_links", link.stats.enquire_links_sent, seen.downs)
    link.close()
    assert link.stats.enquire_links_sent >= 2
    if answer == "resp-wrong-seq":  # an enquire_link_resp is a sign of life whatever its sequence
        assert link.stats.binds == 1
    else:  # no answer to it: the link is taken for dead and bound again
        assert link.stats.binds >= 2


@pytest.mark.parametrize("batch", [False, True], ids=["one-by-one", "batched"])
def test_each_delivery_is_answered_with_its_own_response(hostile: Callable[..., HostileSmsc], batch: bool) -> None:
    """data_sm with data_sm_resp, deliver_sm with deliver_sm_resp, readable or not (a review
    found the simulator took either answer for either, so only a scripted SMSC can tell)."""
    receipt = ShortMessagePdu(source_addr="8613800138000", destination_addr="10690000", esm_class=ESM_DELIVERY_RECEIPT)
    receipt.tlvs[TAG_RECEIPTED_MESSAGE_ID] = cstring("ab12")

    def script(conn: Conn) -> None:
        conn.bind()
        bodies = encode_pdu(DATA_SM, 50, encode_data_sm(receipt)) + encode_pdu(DATA_SM, 51, b"\0\0\0")  # the second unreadable
        conn.send(bodies + encode_pdu(DELIVER_SM, 52, b"\0"))
        conn.serve(lambda conn, sequence, body, n: None)

    smsc = hostile(script)
    recorder = Recorder()
    callbacks: dict[str, Any] = (
        {"on_deliveries": lambda deliveries: [True] * len(deliveries)} if batch else {"on_receipt": recorder.receipts.append}
    )
    link = SmppLink(LinkConfig(port=smsc.port, **FAST), on_link_down=recorder.link_down, **callbacks)

    def answers() -> list[tuple[int, int, int]]:
        return [(command, status, sequence) for _, command, status, sequence, _ in smsc.seen if command in (DATA_SM_RESP, DELIVER_SM_RESP)]

    deadline = time.monotonic() + 3
    while len(answers()) < 3 and time.monotonic() < deadline:
        link.run_once(None, timeout=0.02)
    link.close()
    assert answers() == [(DATA_SM_RESP, 0, 50), (DATA_SM_RESP, 0, 51), (DELIVER_SM_RESP, 0, 52)]


def test_closing_sends_no_throttled_part_again(hostile: Callable[..., HostileSmsc]) -> None:
    """Found by a review: while close() drained the window it retried throttled parts; they now
    go to on_resp with their throttling status, as its docstring says."""

    def answer(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if n == 0:
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RTHROTTLED)
        if n == 1:
            time.sleep(0.3)  # the second answered late: close() drains meanwhile
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"ok%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(answer)))
    recorder = Recorder()
    link = SmppLink(LinkConfig(port=smsc.port, **{**FAST, "window": 2}), on_resp=recorder.results.append, on_link_down=recorder.link_down)
    give = feeder([sms("A"), sms("B")])
    deadline = time.monotonic() + 3
    while (link.waiting_retry == 0 or link.outstanding == 0) and time.monotonic() < deadline:
        link.run_once(give, timeout=0.02)
    assert link.waiting_retry == 1 and link.outstanding == 1
    link.close()
    assert len(smsc.submits) == 2
    assert sorted((r.part.key, r.command_status) for r in recorder.results) == [("A", ESME_RTHROTTLED), ("B", 0)]


def test_one_destinations_full_queue_goes_to_the_caller_and_does_not_pause_the_link(hostile: Callable[..., HostileSmsc]) -> None:
    """Found by a review: ESME_RMSGQFUL (one destination's queue full at the SMSC: a handset off
    for days) was taken for the SMSC's throttling: every answer paused the whole link, the
    refused part went first in each window so its refusal came before the others' OKs, and the
    pause doubled to 5 s and never came back down: one recipient slowed every customer to ~2
    messages a second. It goes to the caller at once, tried once; only ESME_RTHROTTLED pauses."""

    def answer(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if decode_short_message(body).destination_addr == "13900000001":
            return encode_pdu(SUBMIT_SM_RESP, sequence, b"", ESME_RMSGQFUL)
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"ok%d\0" % n)

    smsc = hostile(lambda conn: (conn.bind(), conn.serve(answer)))
    link, recorder = new_link(smsc, throttle_backoff=1.0, throttle_backoff_max=5.0)  # a pause would show
    give = feeder([sms("full", destination="13900000001"), *(sms(n, destination=f"138{n:08d}") for n in range(200))])
    started = time.monotonic()
    while len(recorder.results) < 201 and time.monotonic() - started < 5:
        link.run_once(give, timeout=0.02)
    took = time.monotonic() - started
    link.close()
    full = [r for r in recorder.results if r.part.key == "full"]
    assert [(r.command_status, r.attempts) for r in full] == [(ESME_RMSGQFUL, 1)]
    assert len(recorder.results) == 201 and took < 1.0, f"{len(recorder.results)} answers in {took:.2f} s"
    assert link.throttled_in_a_row == 0 and link.stats.throttled == 0 and len(smsc.submits) == 201


def test_an_smsc_that_unbinds_right_after_each_bind_is_not_hammered(hostile: Callable[..., HostileSmsc]) -> None:
    """Found by a review: a successful bind reset the reconnect backoff to 0.5 s, so an SMSC that
    accepts the bind and then unbinds (maintenance, a session limit) was bound again twice a
    second, for ever. The backoff goes back to its start only once a session proves itself."""

    def script(conn: Conn) -> None:
        conn.bind()
        conn.send(encode_pdu(UNBIND, 77))
        time.sleep(0.2)

    smsc = hostile(script)
    link = SmppLink(LinkConfig(port=smsc.port))  # production defaults: reconnect backoff 0.5 s .. 30 s
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        link.run_once(None, timeout=0.05)
    link.close()
    assert 3 <= link.stats.binds <= 5, f"{link.stats.binds} binds in 6 s (a doubling backoff from 0.5 s allows 4-5)"


def test_a_session_proves_itself_by_an_accepted_submit_or_by_staying_up(hostile: Callable[..., HostileSmsc]) -> None:
    """The reconnect backoff goes back to its start after a session's first accepted submit_sm,
    or once it has been up `stable_after` (a receiver sends none); not after a bare bind."""

    def script(conn: Conn) -> None:
        conn.bind()
        if conn.index in (3, 4):  # proves itself: by an accepted submit (3), by staying up (4)
            conn.serve(lambda c, seq, body, n: encode_pdu(SUBMIT_SM_RESP, seq, b"ok\0"), idle=0.5)
        conn.send(encode_pdu(UNBIND, 77))
        time.sleep(0.1)

    smsc = hostile(script)
    waits: list[float] = []
    link = SmppLink(
        LinkConfig(port=smsc.port, **{**FAST, "reconnect_backoff": 0.1, "reconnect_backoff_max": 10.0, "stable_after": 0.3}),
        on_link_down=lambda parts, reason: waits.append(round(link._reconnect_at - time.monotonic(), 2)),
    )
    give = feeder([sms("proof")])
    deadline = time.monotonic() + 5
    while len(waits) < 5 and time.monotonic() < deadline:
        link.run_once(give if smsc.connections == 3 else None, timeout=0.01)
    link.close()
    # Cut at once: 0.1, 0.2, 0.4 s ...; after 3 (accepted a submit) and 4 (up 0.5 s): 0.1 s again.
    assert waits[:4] == [0.1, 0.2, 0.1, 0.1] and waits[4] == 0.2, waits


def test_after_a_session_that_answered_nothing_parts_go_one_at_a_time_after_a_sign_of_life(hostile: Callable[..., HostileSmsc]) -> None:
    """Parts lost in a session that answered nothing say nothing about themselves: the SMSC cut
    the session (the caller does not count such a loss against the part). So that a part the SMSC
    drops the link on is still found out, the next session sends nothing before its enquire_link
    is answered, then one part at a time until a submit_sm is answered; then the whole window."""
    alone: list[bool] = []

    def answer(conn: Conn, sequence: int, body: bytes, n: int) -> bytes:
        if not alone:  # the probe: does another part come while it waits for its answer?
            time.sleep(0.3)
            alone.append(not conn.buf and not select.select([conn.sock], [], [], 0)[0])
        return encode_pdu(SUBMIT_SM_RESP, sequence, b"ok%d\0" % n)

    def script(conn: Conn) -> None:
        conn.bind()
        if conn.index == 1:
            conn.read()  # the first submit, and the session is cut: nothing answered
            return
        conn.serve(answer)

    smsc = hostile(script)
    downs: list[bool] = []
    recorder = Recorder()
    link = SmppLink(
        LinkConfig(port=smsc.port, **{**FAST, "window": 5}),
        on_resp=recorder.results.append,
        on_link_down=lambda parts, reason: (downs.append(link.session_answered), recorder.link_down(parts, reason)),
    )
    give = feeder([sms(n) for n in range(12)])
    deadline = time.monotonic() + 5
    while len(recorder.results) < 7 and time.monotonic() < deadline:
        link.run_once(give, timeout=0.01)
    cautious = link._cautious
    link.close()
    assert not cautious  # (a submit answered: the whole window again)
    assert downs[0] is False and len(recorder.lost) == 5  # (the caller does not count these losses)
    assert len(recorder.results) == 7 and smsc.connections == 2 and alone == [True]
    second = [command_id for index, command_id, _, _, _ in smsc.seen if index == 2]
    assert second[1:3] == [ENQUIRE_LINK, SUBMIT_SM]  # (after the bind)
