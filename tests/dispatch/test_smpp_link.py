"""The ESME link over real TCP against the built-in simulator: binding, the window, throttling,
link loss with the in-flight parts reported, receipts (TLVs or text, hex or decimal ids) and MOs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from dispatch.simulator import SimulatorConfig, SMSCSimulator
from dispatch.smpp_link import (
    ESM_DELIVERY_RECEIPT,
    ESM_UDHI,
    ESME_RBINDFAIL,
    ESME_ROK,
    BindRefused,
    LinkConfig,
    MobileOriginated,
    OutgoingPart,
    Receipt,
    ShortMessagePdu,
    SmppLink,
    SubmitResult,
    message_id_keys,
    message_ids_match,
    normalise_message_id,
    parse_delivery,
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
def start_smsc() -> Iterator[Callable[..., SMSCSimulator]]:
    started: list[SMSCSimulator] = []

    def start(**config: Any) -> SMSCSimulator:
        simulator = SMSCSimulator(SimulatorConfig(**{"receipt_delay": 0.0, **config})).start()
        started.append(simulator)
        return simulator

    yield start
    for simulator in started:
        simulator.stop()


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
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(password="right")
    link, _ = open_link(simulator, password="wrong")
    with pytest.raises(BindRefused) as refused:
        link.run_once(lambda n: [sms(1)])
    assert refused.value.status == ESME_RBINDFAIL
    assert not link.bound
    assert simulator.stats().bind_failures == 1
    assert simulator.received == []


@pytest.mark.parametrize("tlvs", [True, False], ids=["tlvs", "text-only"])
def test_a_submitted_message_gets_its_id_and_then_its_receipt(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]], tlvs: bool
) -> None:
    simulator = start_smsc(receipt_tlvs=tlvs, receipt_delay=0.05)
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
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(fail_rate=1.0, receipt_tlvs=False)
    link, seen = open_link(simulator)
    link.submit([sms(1)])
    pump_until(link, lambda: len(seen.receipts) == 1)
    assert (seen.receipts[0].stat, seen.receipts[0].err, seen.receipts[0].delivered) == ("UNDELIV", "001", False)


def test_a_long_ucs2_message_goes_as_parts_numbered_1_to_n_with_one_reference(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    text = "【顺丰速运】您的快件已到达北京市朝阳区望京街道驿站，请凭取件码 8-3-1024 于今日 21:00 前领取。" * 4 + "谢谢🙂"
    simulator = start_smsc()
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
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(max_tps=40)
    link, _ = open_link(simulator)
    results, lost = link.submit([sms(n, registered_delivery=0) for n in range(80)], timeout=15)

    assert lost == []
    assert sorted(r.part.key for r in results) == list(range(80))
    assert all(r.command_status == ESME_ROK for r in results)
    assert any(r.attempts > 1 for r in results)
    assert simulator.stats().throttled == link.stats.throttled > 0
    assert len(simulator.received) == 80  # no part accepted twice


def test_the_link_paces_itself_with_max_tps(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc()
    link, _ = open_link(simulator, max_tps=100, window=10)
    link.connect()
    started = time.monotonic()
    link.submit([sms(n, registered_delivery=0) for n in range(40)])
    assert time.monotonic() - started >= 0.25  # 10 at once (the burst), then 30 at 100/s
    assert simulator.stats().throttled == 0


def test_a_link_dropped_mid_batch_reports_the_parts_in_flight_and_reconnects(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(disconnect_after=15)
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
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc()
    link, seen = open_link(simulator)
    link.connect()
    simulator.send_receipt("00NOT-OURS", stat="EXPIRED", err="MK:0005")
    pump_until(link, lambda: len(seen.receipts) == 1)
    assert (seen.receipts[0].message_id, seen.receipts[0].stat, seen.receipts[0].err) == ("00NOT-OURS", "EXPIRED", "MK:0005")
    results, _ = link.submit([sms(1)])
    assert results[0].ok and link.stats.binds == 1


def test_receipt_ids_in_the_other_base_still_match_the_submit_id(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(message_id_format="hex", receipt_id_format="decimal", receipt_tlvs=False, message_id_start=0x0A1B2C)
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


def test_an_odd_receipt_is_parsed_as_far_as_it_goes() -> None:
    text_only = ShortMessagePdu(esm_class=ESM_DELIVERY_RECEIPT, short_message=b"ID:5F3 STAT:delivrd")
    assert parse_delivery(text_only) == Receipt("5F3", "DELIVRD", "", "ID:5F3 STAT:delivrd")
    assert parse_delivery(ShortMessagePdu(esm_class=ESM_DELIVERY_RECEIPT, short_message=b"\xff garbage")) == Receipt(
        "", "", "", "\xff garbage"
    )


@pytest.mark.parametrize(("interval", "stays_up"), [(0.1, True), (30.0, False)], ids=["enquire-every-0.1s", "no-enquire"])
def test_enquire_link_keeps_an_idle_link_bound(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]], interval: float, stays_up: bool
) -> None:
    simulator = start_smsc(idle_timeout=0.35)
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
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc()
    link, seen = open_link(simulator)
    link.connect()
    simulator.send_mo("13800138000", "10690001", "退订 TD")
    simulator.send_mo("13800138001", "10690001", "STOP")
    pump_until(link, lambda: len(seen.mos) == 2)
    assert seen.mos[0] == MobileOriginated("13800138000", "10690001", "退订 TD", data_coding=8)
    assert (seen.mos[1].text, seen.mos[1].data_coding) == ("STOP", 0)
    assert seen.receipts == []


def test_the_window_is_never_exceeded(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(response_delay=0.02)
    link, _ = open_link(simulator, window=4)
    results, _ = link.submit([sms(n, registered_delivery=0) for n in range(30)])
    assert len(results) == 30
    assert simulator.stats().max_outstanding == 4  # seen from the SMSC: submits it had not answered yet
    assert link.stats.max_outstanding == 4


def test_a_receipt_the_worker_could_not_store_is_delivered_again(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc()
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


def test_close_waits_for_outstanding_responses_then_unbinds(
    start_smsc: Callable[..., SMSCSimulator], open_link: Callable[..., tuple[SmppLink, Recorder]]
) -> None:
    simulator = start_smsc(response_delay=0.1)
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
