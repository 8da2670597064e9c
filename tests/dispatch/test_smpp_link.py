"""The ESME link over real TCP against the built-in simulator: binding, the window, throttling,
link loss with the in-flight parts reported, receipts (TLVs or text, hex or decimal ids) and MOs."""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from smpplib import smpp

from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import (
    BIND_TRANSCEIVER,
    BIND_TRANSCEIVER_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ESM_DELIVERY_RECEIPT,
    ESM_UDHI,
    ESME_RBINDFAIL,
    ESME_RINVCMDID,
    ESME_ROK,
    GENERIC_NACK,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SC_INTERFACE_VERSION,
    UNBIND,
    UNBIND_RESP,
    BindRefused,
    BindRequest,
    LinkConfig,
    MobileOriginated,
    OutgoingPart,
    PduError,
    Receipt,
    ShortMessagePdu,
    SmppLink,
    SubmitResult,
    cstring,
    decode_bind,
    decode_deliver_sm,
    decode_short_message,
    encode_pdu,
    encode_short_message,
    encode_submit,
    encode_tlv,
    message_id_keys,
    message_ids_match,
    normalise_message_id,
    parse_delivery,
    receipt_id_keys,
    take_pdu,
)

FAST = {
    "reconnect_backoff": 0.05,
    "reconnect_backoff_max": 0.2,
    "throttle_backoff": 0.05,
    "throttle_backoff_max": 0.4,
    "drain_timeout": 2.0,
}


@dataclass
class Recorder:
    """What the worker would write to the database, kept in lists."""

    results: list[SubmitResult] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    mos: list[MobileOriginated] = field(default_factory=list)
    lost: list[OutgoingPart] = field(default_factory=list)
    downs: list[str] = field(default_factory=list)

    def link_down(self, parts: list[OutgoingPart], reason: str) -> None:
        self.lost.extend(parts)
        self.downs.append(reason)


@pytest.fixture
def open_link() -> Iterator[Callable[..., tuple[SmppLink, Recorder]]]:
    links: list[SmppLink] = []

    def open_(simulator: SMSCSimulator, **config: Any) -> tuple[SmppLink, Recorder]:
        recorder = Recorder()
        link = SmppLink(
            LinkConfig(port=simulator.port, **{**FAST, **config}),
            on_resp=recorder.results.append,
            on_receipt=recorder.receipts.append,
            on_mo=recorder.mos.append,
            on_link_down=recorder.link_down,
        )
        links.append(link)
        return link, recorder

    yield open_
    for link in links:
        link.close()


def sms(key: object, text: str = "验证码 123456", destination: str = "13800138000", registered_delivery: int = 1) -> OutgoingPart:
    return OutgoingPart(key, "10690001", destination, text.encode("utf-16-be"), data_coding=8, registered_delivery=registered_delivery)


def pump_until(link: SmppLink, done: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "condition not reached in time"
        link.run_once(None, timeout=0.02)


def ucs2_parts(text: str, reference: int, key: str) -> list[OutgoingPart]:
    """A long text as UCS-2 parts of at most 67 UTF-16 units behind an 8-bit concatenation UDH."""
    chunks: list[str] = [""]
    for char in text:
        if len((chunks[-1] + char).encode("utf-16-be")) > 134:  # never split a surrogate pair
            chunks.append("")
        chunks[-1] += char
    total = len(chunks)
    return [
        OutgoingPart(
            (key, n),
            "10690001",
            "13900139000",
            bytes((5, 0, 3, reference, total, n)) + chunk.encode("utf-16-be"),
            data_coding=8,
            esm_class=ESM_UDHI,
        )
        for n, chunk in enumerate(chunks, start=1)
    ]


def test_bind_with_a_wrong_password_is_refused(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(password="right")
    link, _ = open_link(simulator, password="wrong")
    with pytest.raises(BindRefused) as refused:
        link.run_once(lambda n: [sms(1)])
    assert refused.value.status == ESME_RBINDFAIL
    assert not link.bound
    assert simulator.stats().bind_failures == 1
    assert simulator.received == []


@pytest.mark.parametrize("tlvs", [True, False], ids=["tlvs", "text-only"])
def test_a_submitted_message_gets_its_id_and_then_its_receipt(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]], tlvs: bool
) -> None:
    simulator = smsc(receipt_tlvs=tlvs, receipt_delay=0.05)
    link, seen = open_link(simulator)
    results, lost = link.submit([sms("m1"), sms("m2", registered_delivery=0)])

    assert lost == []
    assert [(r.part.key, r.ok, r.attempts) for r in results] == [("m1", True, 1), ("m2", True, 1)]
    assert [r.message_id for r in results] == [s.message_id for s in simulator.received]
    pump_until(link, lambda: len(seen.receipts) >= 1)
    link.run_once(None, timeout=0.1)  # room for a wrong second receipt (m2 asked for none)
    [receipt] = seen.receipts
    assert (receipt.message_id, receipt.stat, receipt.err) == (results[0].message_id, "DELIVRD", "000")
    assert receipt.raw.startswith(f"id:{results[0].message_id} sub:001 dlvrd:001 submit date:")
    pump_until(link, lambda: simulator.stats().deliveries_unacked == 0)  # every deliver_sm was answered


def test_a_failed_delivery_is_reported_as_undeliv(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(fail_rate=1.0, receipt_tlvs=False)
    link, seen = open_link(simulator)
    link.submit([sms(1)])
    pump_until(link, lambda: len(seen.receipts) == 1)
    assert (seen.receipts[0].stat, seen.receipts[0].err, seen.receipts[0].delivered) == ("UNDELIV", "001", False)


def test_a_long_ucs2_message_goes_as_parts_numbered_1_to_n_with_one_reference(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    text = "【顺丰速运】您的快件已到达北京市朝阳区望京街道驿站，请凭取件码 8-3-1024 于今日 21:00 前领取。" * 4 + "谢谢🙂"
    simulator = smsc()
    link, seen = open_link(simulator)
    parts = ucs2_parts(text, reference=0xA7, key="long")
    results, _ = link.submit(parts)

    received = simulator.received
    assert len(parts) == 4 and all(r.ok for r in results)
    assert [r.udh for r in received] == [(0xA7, 4, n) for n in (1, 2, 3, 4)]
    assert b"".join(r.short_message[6:] for r in received).decode("utf-16-be") == text
    assert len({r.message_id for r in received}) == 4  # each part is a message of its own to the SMSC
    pump_until(link, lambda: len(seen.receipts) == 4)
    assert {r.message_id for r in seen.receipts} == {r.message_id for r in results}


def test_throttled_parts_are_retried_after_a_backoff_and_all_get_through(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(max_tps=40)
    link, _ = open_link(simulator)
    results, lost = link.submit([sms(n, registered_delivery=0) for n in range(80)], timeout=15)

    assert lost == []
    assert sorted(r.part.key for r in results) == list(range(80))
    assert all(r.command_status == ESME_ROK for r in results)
    assert any(r.attempts > 1 for r in results)
    assert simulator.stats().throttled == link.stats.throttled > 0
    assert len(simulator.received) == 80  # no part accepted twice


def test_the_link_paces_itself_with_max_tps(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc()
    link, _ = open_link(simulator, max_tps=100, window=10)
    link.connect()
    started = time.monotonic()
    link.submit([sms(n, registered_delivery=0) for n in range(40)])
    assert time.monotonic() - started >= 0.25  # 10 at once (the burst), then 30 at 100/s
    assert simulator.stats().throttled == 0


def test_a_link_dropped_mid_batch_reports_the_parts_in_flight_and_reconnects(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(disconnect_after=15)
    link, seen = open_link(simulator)
    parts = [sms(n, text=f"第 {n} 条") for n in range(40)]
    results, lost = link.submit(parts)

    answered = {r.part.key for r in results}
    lost_keys = {p.key for p in lost}
    assert answered | lost_keys == set(range(40)) and not answered & lost_keys
    assert 1 <= len(lost) <= 10  # never more than the window
    assert len(seen.downs) == 1
    assert link.bound and link.stats.binds == simulator.stats().binds == 2
    # The 15th submit reached the SMSC, which took it, but its answer never came: possibly sent.
    fifteenth = simulator.received[14]
    assert fifteenth.connection == 1 and simulator.received[15].connection == 2
    assert fifteenth.short_message.decode("utf-16-be") == "第 14 条" and 14 in lost_keys
    assert fifteenth.message_id not in {r.message_id for r in results}
    # Its receipt still comes, after the reconnect, for an id the caller never saw: passed on, no crash.
    pump_until(link, lambda: any(r.message_id == fifteenth.message_id for r in seen.receipts))
    assert all(r.ok for r in results)


def test_a_receipt_for_an_unknown_id_is_passed_on_and_the_link_stays_up(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc()
    link, seen = open_link(simulator)
    link.connect()
    simulator.send_receipt("00NOT-OURS", stat="EXPIRED", err="MK:0005")
    pump_until(link, lambda: len(seen.receipts) == 1)
    assert (seen.receipts[0].message_id, seen.receipts[0].stat, seen.receipts[0].err) == ("00NOT-OURS", "EXPIRED", "MK:0005")
    results, _ = link.submit([sms(1)])
    assert results[0].ok and link.stats.binds == 1


def test_receipt_ids_in_the_other_base_still_match_the_submit_id(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(message_id_format="hex", receipt_id_format="decimal", receipt_tlvs=False, message_id_start=0x0A1B2C)
    link, seen = open_link(simulator)
    results, _ = link.submit([sms(1)])
    pump_until(link, lambda: len(seen.receipts) == 1)

    submit_id, receipt_id = results[0].message_id, seen.receipts[0].message_id
    assert (submit_id, receipt_id) == ("a1b2c", str(0x0A1B2C))
    assert normalise_message_id(submit_id) in message_id_keys(receipt_id)
    assert message_ids_match(submit_id, receipt_id)


def test_message_ids_are_compared_without_case_padding_or_base() -> None:
    assert normalise_message_id(" 000A1B\0") == "a1b"
    assert normalise_message_id("000") == "0"
    assert message_id_keys("123") == ("123", "7b", "291")
    assert message_id_keys("7B") == ("7b", "123")
    assert message_id_keys("msg-01") == ("msg-01",)
    assert message_ids_match("7b", "123") and message_ids_match("0007B", "7b")
    assert not message_ids_match("7c", "123")


def test_a_receipt_ids_other_readings_are_guesses_unless_the_smscs_format_is_set() -> None:
    assert receipt_id_keys("0123") == (("123",), ("7b", "291"))
    assert receipt_id_keys("7B") == (("7b",), ("123",))
    assert receipt_id_keys("291", "same") == (("291",), ())
    assert receipt_id_keys("291", "decimal") == (("123",), ())  # receipts in decimal, submit ids in hex
    assert receipt_id_keys("7B", "hex") == (("123",), ())  # receipts in hex, submit ids in decimal
    assert receipt_id_keys("msg-01", "decimal") == (("msg-01",), ())  # not a number: as it is


def test_an_odd_receipt_is_parsed_as_far_as_it_goes() -> None:
    text_only = ShortMessagePdu(esm_class=ESM_DELIVERY_RECEIPT, short_message=b"ID:5F3 STAT:delivrd")
    assert parse_delivery(text_only) == Receipt("5F3", "DELIVRD", "", "ID:5F3 STAT:delivrd")
    assert parse_delivery(ShortMessagePdu(esm_class=ESM_DELIVERY_RECEIPT, short_message=b"\xff garbage")) == Receipt(
        "", "", "", "\xff garbage"
    )


@pytest.mark.parametrize(("interval", "stays_up"), [(0.1, True), (30.0, False)], ids=["enquire-every-0.1s", "no-enquire"])
def test_enquire_link_keeps_an_idle_link_bound(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]], interval: float, stays_up: bool
) -> None:
    simulator = smsc(idle_timeout=0.35)
    link, seen = open_link(simulator, enquire_link_interval=interval)
    link.connect()
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        link.run_once(None, timeout=0.02)
    if stays_up:
        assert (simulator.stats().binds, seen.downs) == (1, [])
        assert simulator.stats().enquire_links >= 5
    else:
        assert simulator.stats().binds >= 2 and seen.downs  # dropped as idle, then bound again


def test_a_mobile_originated_message_reaches_the_callback(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc()
    link, seen = open_link(simulator)
    link.connect()
    simulator.send_mo("13800138000", "10690001", "退订 TD")
    simulator.send_mo("13800138001", "10690001", "STOP")
    pump_until(link, lambda: len(seen.mos) == 2)
    assert seen.mos[0] == MobileOriginated("13800138000", "10690001", "退订 TD", data_coding=8)
    assert (seen.mos[1].text, seen.mos[1].data_coding) == ("STOP", 0)
    assert seen.receipts == []


def test_the_window_is_never_exceeded(smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]) -> None:
    simulator = smsc(response_delay=0.02)
    link, _ = open_link(simulator, window=4)
    results, _ = link.submit([sms(n, registered_delivery=0) for n in range(30)])
    assert len(results) == 30
    assert simulator.stats().max_outstanding == 4  # seen from the SMSC: submits it had not answered yet
    assert link.stats.max_outstanding == 4


def test_meanwhile_runs_while_the_window_is_on_its_way_and_its_error_leaves_the_link_usable(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    """The worker's `meanwhile` runs after the window is written, before the answers are read, only
    when parts are on their way; what it raises propagates and the link goes on."""
    simulator = smsc(response_delay=0.05)
    link, recorder = open_link(simulator, window=4)
    seen: list[tuple[int, int, int]] = []  # (outstanding, answered, received by the SMSC) at each call

    def meanwhile() -> None:
        seen.append((link.outstanding, len(recorder.results), len(simulator.received)))

    parts = [sms(n, registered_delivery=0) for n in range(6)]

    def provide(count: int) -> list[OutgoingPart]:
        taken = parts[:count]
        del parts[:count]
        return taken

    link.run_once(None, timeout=0.02, meanwhile=meanwhile)  # binds; nothing on its way
    assert seen == []
    link.run_once(provide, timeout=0.0, meanwhile=meanwhile)
    assert seen[0][:2] == (4, 0)  # the window written, no answer read yet
    pump_until(link, lambda: len(simulator.received) == 4)  # the SMSC has them: they were on the wire

    def fails() -> None:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="went away"):
        link.run_once(provide, timeout=0.0, meanwhile=fails)
    deadline = time.monotonic() + 5
    while len(recorder.results) < 6:
        assert time.monotonic() < deadline, "not all answered"
        link.run_once(provide, timeout=0.02)
    assert link.bound and [r.command_status for r in recorder.results] == [0] * 6 and not recorder.lost


def test_a_receipt_the_worker_could_not_store_is_delivered_again(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc()
    calls: list[Receipt] = []

    def store(receipt: Receipt) -> None:
        calls.append(receipt)
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    link = SmppLink(LinkConfig(port=simulator.port, **FAST), on_receipt=store)
    with link:
        link.submit([sms(1)])
        pump_until(link, lambda: len(calls) == 2, seconds=3)  # the SMSC retries after a second
        assert calls[0] == calls[1]
        pump_until(link, lambda: simulator.stats().deliveries_unacked == 0)


def test_the_deliveries_of_one_read_are_handed_over_together_and_each_refusal_comes_again(smsc: Callable[..., SMSCSimulator]) -> None:
    """With on_deliveries the worker stores a read's receipts and replies in one transaction: one
    it refuses is delivered again alone; if it fails, none is acknowledged and all come again."""
    simulator = smsc()
    calls: list[list[Receipt | MobileOriginated]] = []

    def store(deliveries: list[Receipt | MobileOriginated]) -> list[bool]:
        calls.append(list(deliveries))
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return [len(calls) > 2 or not (isinstance(d, Receipt) and d.message_id == "b2") for d in deliveries]

    link = SmppLink(LinkConfig(port=simulator.port, **FAST), on_deliveries=store)
    with link:
        pump_until(link, lambda: link.bound)
        for message_id in ("a1", "b2", "c3"):
            simulator.send_receipt(message_id)
        simulator.send_mo("8613800138000", "106900", "TD")
        time.sleep(0.2)  # all four wait in the socket: one read
        pump_until(link, lambda: len(calls) == 1)
        first = calls[0]
        assert [d.message_id if isinstance(d, Receipt) else d.text for d in first] == ["a1", "b2", "c3", "TD"]
        pump_until(link, lambda: simulator.stats().deliveries_acked == 4, seconds=6)  # the SMSC retries after a second
    again = [d for call in calls[1:] for d in call]
    assert sorted(d.message_id if isinstance(d, Receipt) else d.text for d in again) == ["TD", "a1", "b2", "b2", "c3"]
    assert simulator.stats().deliveries_unacked == 0 and link.stats.receipts == 7 and link.stats.mobile_originated == 2


def test_close_waits_for_outstanding_responses_then_unbinds(
    smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = smsc(response_delay=0.1)
    link, seen = open_link(simulator)
    queue = [sms(n, registered_delivery=0) for n in range(5)]
    link.run_once(lambda n: [queue.pop(0) for _ in range(min(n, len(queue)))], timeout=0)
    assert link.outstanding == 5
    link.close()
    assert [r.part.key for r in seen.results] == [0, 1, 2, 3, 4] and seen.lost == []
    assert not link.bound
    deadline = time.monotonic() + 2
    while simulator.stats().connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert simulator.stats().connections == 0


# --- the PDUs go through smpplib ------------------------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        sms("a"),
        OutgoingPart("b", "10690001", "8613800138000", b"Your code is 4711", registered_delivery=0, source_ton=0),
        OutgoingPart(
            "c", "SHOP", "13900139000", bytes((5, 0, 3, 7, 2, 1)) + "第一条".encode("utf-16-be"), data_coding=8, esm_class=ESM_UDHI
        ),
        OutgoingPart("d", "", "1", b"", service_type="CMT", dest_ton=0, dest_npi=0),
        OutgoingPart("e", "1069000123456789", "13800138000", bytes(range(254)), data_coding=4, registered_delivery=3),
    ],
    ids=["ucs2", "gsm", "udh", "empty", "254-bytes"],
)
def test_the_hand_encoded_submit_sm_is_byte_for_byte_what_smpplib_generates(part: OutgoingPart) -> None:
    """The one PDU the link encodes by hand (for speed: benchmarks/bench_smpp.py) matches smpplib's."""
    reference = smpp.make_pdu(
        "submit_sm",
        sequence=0x7FFFFFFF,
        allow_unknown_opt_params=True,
        service_type=part.service_type,
        source_addr_ton=part.source_ton,
        source_addr_npi=part.source_npi,
        source_addr=part.source,
        dest_addr_ton=part.dest_ton,
        dest_addr_npi=part.dest_npi,
        destination_addr=part.destination,
        esm_class=part.esm_class,
        registered_delivery=part.registered_delivery,
        data_coding=part.data_coding,
        short_message=part.short_message,
    )
    reference.sequence = 0x7FFFFFFF
    assert encode_submit(part, 0x7FFFFFFF) == reference.generate()


def receipt_body(tlvs: dict[int, bytes], text: bytes = b"id:0 sub:001 dlvrd:001 stat:UNDELIV err:001 text:") -> bytes:
    sm = ShortMessagePdu("13800138000", "10690001", text, esm_class=ESM_DELIVERY_RECEIPT)
    sm.tlvs = tlvs
    return encode_short_message(sm)


def test_receipt_tlvs_are_read_by_smpplib_even_from_odd_smscs(caplog: pytest.LogCaptureFixture) -> None:
    state = {TAG_MESSAGE_STATE: b"\x02"}
    cases = {
        "terminated id": ({TAG_RECEIPTED_MESSAGE_ID: b"1a2b3c\0", **state}, "1a2b3c"),
        "id without its NUL": ({TAG_RECEIPTED_MESSAGE_ID: b"1a2b3c", **state}, "1a2b3c"),  # smpplib alone says "1a2b3"
        "a vendor TLV": ({0x1403: b"(null)\0", TAG_RECEIPTED_MESSAGE_ID: b"7b\0", **state}, "7b"),
        "ussd_service_op, not a deliver_sm TLV": ({0x0501: b"\x01", TAG_RECEIPTED_MESSAGE_ID: b"7c\0", **state}, "7c"),
    }
    with caplog.at_level(logging.WARNING):
        for name, (tlvs, message_id) in cases.items():
            sm = decode_deliver_sm(receipt_body(tlvs))
            assert parse_delivery(sm) == Receipt(message_id, "DELIVRD", "001", sm.short_message.decode()), name  # TLVs beat the text
    assert sm.tlvs[0x0501] == b"\x01"  # kept, as the hand codec keeps unknown tags
    assert caplog.records == []  # smpplib alone logs a warning per vendor TLV, i.e. per receipt


def test_a_message_state_of_the_wrong_length_does_not_derail_the_tlvs() -> None:
    sm = decode_deliver_sm(receipt_body({TAG_MESSAGE_STATE: b"\x00\x05", TAG_RECEIPTED_MESSAGE_ID: b"99\0"}))
    # Its first octet (0) is no SMPP 3.4 state: the text's stat is taken instead (it was UNKNOWN, a final failure).
    assert parse_delivery(sm) == Receipt("99", "UNDELIV", "001", sm.short_message.decode())


def test_a_truncated_deliver_sm_raises_pdu_error_and_nothing_else() -> None:
    body = receipt_body({TAG_RECEIPTED_MESSAGE_ID: b"1a2b3c\0", TAG_MESSAGE_STATE: b"\x02"})
    for cut in range(len(body)):
        if cut in (len(body) - 5, len(body) - 16):  # whole TLVs cut off (4 + 1, 4 + 7 bytes): still a valid PDU
            decode_deliver_sm(body[:cut])
            continue
        with pytest.raises(PduError):
            decode_deliver_sm(body[:cut])


def test_credentials_smpplib_would_cut_short_are_refused() -> None:
    LinkConfig(system_id="x" * 15, password="p" * 8, system_type="t" * 12)
    for field_name, value in (("system_id", "x" * 16), ("password", "p" * 9), ("system_type", "t" * 13)):
        with pytest.raises(ValueError, match=field_name):
            LinkConfig(**{field_name: value})


class OddSmsc:
    """One connection, scripted: binds, then sends PDUs a strict or a naive codec would stumble on."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen: list[tuple[int, int, int, bytes]] = []
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def read(self, conn: socket.socket, buffer: bytearray) -> tuple[int, int, int, bytes]:
        while (pdu := take_pdu(buffer)) is None:
            data = conn.recv(65536)
            if not data:
                raise ConnectionError("closed by the ESME")
            buffer += data
        self.seen.append(pdu)
        return pdu

    def serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with conn:
                buffer = bytearray()
                _, _, sequence, _ = self.read(conn, buffer)
                conn.sendall(encode_pdu(BIND_TRANSCEIVER_RESP, sequence, cstring("ODD") + encode_tlv(TAG_SC_INTERFACE_VERSION, b"\x34")))
                _, _, sequence, _ = self.read(conn, buffer)
                conn.sendall(encode_pdu(SUBMIT_SM_RESP, sequence, b"00AB12"))  # message_id without its NUL
                odd = {TAG_RECEIPTED_MESSAGE_ID: b"AB12", TAG_MESSAGE_STATE: b"\x05", 0x1403: b"(null)\0", 0x1402: b"612\0"}
                conn.sendall(encode_pdu(DELIVER_SM, 41, receipt_body(odd)))
                conn.sendall(encode_pdu(DELIVER_SM, 42, b"\0\x01\x01138"))  # truncated: acknowledged and dropped
                conn.sendall(encode_pdu(0x00000099, 43))  # a command the link does not know
                while self.read(conn, buffer)[0] != UNBIND:
                    pass
                conn.sendall(encode_pdu(UNBIND_RESP, self.seen[-1][2]))
        except BaseException as exc:
            self.errors.append(exc)

    def close(self) -> None:
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.mark.parametrize(
    "body",
    [b"1a2b3c\x00", b"\x00", b"MSG-0042\x00" + encode_tlv(0x0425, b"\x01"), b"no-terminator", b"a\x00b\x00", b"\xe9\xff\x00"],
)
def test_a_submit_responses_message_id_reads_as_smpplib_reads_it(body: bytes) -> None:
    """The usual body (a message_id, nothing after it) is read without smpplib's parser: the same
    answer, whatever comes."""
    from dispatch.smpp_link import _SubmitSMResp

    reference = _SubmitSMResp("submit_sm_resp", allow_unknown_opt_params=True)
    with contextlib.suppress(PduError):  # a malformed tail: the message_id read before it stands
        reference.read(body)
    expected = reference.message_id.decode("latin-1") if reference.message_id else ""
    assert _SubmitSMResp("submit_sm_resp", allow_unknown_opt_params=True).message_id_of(body) == expected


def test_the_link_reads_odd_pdus_as_far_as_they_go(caplog: pytest.LogCaptureFixture) -> None:
    smsc = OddSmsc()
    recorder = Recorder()
    link = SmppLink(LinkConfig(port=smsc.port, **FAST), on_resp=recorder.results.append, on_receipt=recorder.receipts.append)
    try:
        queue = [sms("only")]
        link.run_once(lambda n: [queue.pop() for _ in range(min(n, len(queue)))], timeout=0.05)
        pump_until(link, lambda: len(smsc.seen) >= 5)
        link.close()
    finally:
        smsc.close()
    assert smsc.errors == []
    (bind_id, _, _, bind), (submit_id, _, _, submit) = smsc.seen[:2]
    assert bind_id == BIND_TRANSCEIVER and decode_bind(bind) == BindRequest("backoffice", "secret")
    assert submit_id == SUBMIT_SM and decode_short_message(submit).destination_addr == "13800138000"
    assert [(r.part.key, r.message_id) for r in recorder.results] == [("only", "00AB12")]  # every character of it
    assert [(r.message_id, r.stat) for r in recorder.receipts] == [("AB12", "UNDELIV")]
    assert message_ids_match(recorder.results[0].message_id, recorder.receipts[0].message_id)
    assert [pdu[:3] for pdu in smsc.seen[2:5]] == [
        (DELIVER_SM_RESP, ESME_ROK, 41),
        (DELIVER_SM_RESP, ESME_ROK, 42),
        (GENERIC_NACK, ESME_RINVCMDID, 43),
    ]
    assert smsc.seen[-1][0] == UNBIND and not link.bound
    assert [r.getMessage() for r in caplog.records if r.name.startswith("smpplib")] == []


def test_backoffs_stay_finite_however_long_the_smsc_keeps_refusing() -> None:
    """Found by a review: 2 ** n overflowed a float after ~1,024 throttled pauses or rebinds in a
    row (85 minutes of throttling), and the error escaped the link."""
    from dispatch.smpp_link import ESME_RINVBNDSTS, ESME_RTHROTTLED, _InFlight

    link = SmppLink(LinkConfig(port=1))
    part = OutgoingPart(("m", 1), "10690000", "8613800138000", b"hi")
    link._outstanding[7] = _InFlight(part, 1, 1, 0.0)
    link._throttle_streak = 5000
    link._submit_answered(7, ESME_RTHROTTLED, "", 100.0)
    assert link._paused_until == 100.0 + link.config.throttle_backoff_max
    ours, theirs = socket.socketpair()
    with ours, theirs:
        link._sock = ours
        link._outstanding[8] = _InFlight(part, 1, 1, 0.0)
        link._rebinds = 5000
        link._submit_answered(8, ESME_RINVBNDSTS, "", 100.0)
        assert link._dispatch(100.0) is False  # bound again later
        assert link._reconnect_at <= time.monotonic() + link.config.reconnect_backoff_max
