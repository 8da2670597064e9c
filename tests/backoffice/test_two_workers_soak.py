"""Soak: two dispatcher workers, each in its own thread, on one database and one SMSC simulator;
long (multi-part) messages, receipts, throttling, dropped links, and long concatenated replies
(parts spread over both binds, duplicated, 8-bit references reused) and TD replies flowing at once.
Then: nothing failed, everything settled, the accounts balance, no part resent unflagged, every
reply stored whole and once, no fragment left, the send log's chain intact (the app fixture
reconciles the books at teardown). Written by a testing helper; run on PostgreSQL too
(tests/postgresql), where the workers' transactions really run at once.

Knobs (environment) for longer runs: SOAK_MESSAGES (default 120), SOAK_ROUNDS (6), SOAK_SEED (11),
SOAK_TIMEOUT (s, 90), SOAK_TPS (250), SOAK_DISCONNECT (every Nth submit drops the link, 131),
SOAK_RECEIPTS_AS (deliver_sm or data_sm). The
helper's runs: 15 on PostgreSQL and 3 on SQLite of 120-600 messages and 20-40 rounds, some with
the other core kept busy, all passing."""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa
from flask import Flask

from backoffice.clock import set_clock
from backoffice.extensions import db
from backoffice.models import Message, MessagePart, MobileOriginated, ReplyFragment, Unsubscribe
from backoffice.services.dispatcher import Dispatcher, message_status_of
from backoffice.services.messaging import message_counts
from backoffice.services.send_log import verify_chain
from dispatch.simulator import SMSCSimulator
from dispatch.smpp_link import ESM_UDHI
from tests.backoffice import test_dispatcher
from tests.backoffice.test_messaging import active_sender, numbers, send
from tests.backoffice.test_odd_deliveries import deliver_sm
from tests.conftest import FIXED_NOW

smsc = test_dispatcher.smsc
worker = test_dispatcher.worker

MESSAGES = int(os.environ.get("SOAK_MESSAGES", "120"))
SEED = int(os.environ.get("SOAK_SEED", "11"))
TIMEOUT = float(os.environ.get("SOAK_TIMEOUT", "90"))
ROUNDS = int(os.environ.get("SOAK_ROUNDS", "6"))
TPS = float(os.environ.get("SOAK_TPS", "250"))
DISCONNECT = int(os.environ.get("SOAK_DISCONNECT", "131"))
RECEIPTS_AS = os.environ.get("SOAK_RECEIPTS_AS", "deliver_sm")  # or data_sm
SETTLED = {"delivered", "undeliverable", "refunded"}

SHORT = "【蓉城会员】您的验证码是 {n}，5 分钟内有效。"
TWO = "【蓉城会员】尊敬的会员{n}，您本月的积分已到账，请登录会员中心查看明细，积分可在门店抵扣现金，有效期至年底，逾期作废。本周六会员日全场八折，欢迎到店选购。"
THREE = "【蓉城会员】" + "尊敬的会员，您本月的积分已到账，请登录查看。" * 6 + "编号{n}。"


def reply_part(source: str, destination: str, reference: int, total: int, seq: int, text: str) -> bytes:
    udh = bytes((5, 0, 3, reference, total, seq))
    return deliver_sm(ESM_UDHI, udh + text.encode("utf-16-be"), source=source, coding=8).replace(b"106575000123", destination.encode())


def single(source: str, destination: str, text: str) -> bytes:
    return deliver_sm(text=text.encode("utf-16-be"), source=source, coding=8).replace(b"106575000123", destination.encode())


@pytest.mark.slow
def test_two_workers_on_one_database_lose_nothing_and_send_nothing_twice_unflagged(
    app: Flask, smsc: Callable[..., SMSCSimulator], worker: Callable[..., Dispatcher], caplog: pytest.LogCaptureFixture
) -> None:
    rng = random.Random(SEED)
    binds = random.Random(SEED + 1)  # its draws depend on how many binds are up: kept apart from the rest
    caplog.set_level(logging.WARNING)
    offset = [timedelta(0)]
    started = time.monotonic()
    set_clock(lambda: FIXED_NOW + timedelta(seconds=time.monotonic() - started) + offset[0])

    first = active_sender(app)  # no service code: source 10690000, replies by the number's last sender
    second = active_sender(app, "sms_business_service")  # service code 106575000123
    senders = [first, second]
    first.account.rate_limit_per_second = 40  # its surplus goes back to the queue, due later (both workers share the rate)
    db.session.commit()
    funded = {s.account.id: s.balance() for s in senders}
    source_of = {first.account.id: "10690000", second.account.id: second.account.service_code or "10690000"}
    recipients = {first.account.id: numbers(MESSAGES // 2, start=13800100000), second.account.id: numbers(MESSAGES // 2, start=13900100000)}
    queued: dict[int, list[str]] = {s.account.id: [] for s in senders}  # numbers already sent to (TDs come from these)

    def queue(count: int) -> None:
        """`count` messages of each account, a good share long (2 and 3 UCS-2 parts)."""
        for sender in senders:
            pool = recipients[sender.account.id]
            batch, pool[:] = pool[:count], pool[count:]
            queued[sender.account.id] += batch
            while batch:
                size = rng.randint(5, 25)
                chunk, batch = batch[:size], batch[size:]
                template = rng.choices([SHORT, TWO, THREE], weights=[4, 4, 3])[0]
                send(sender, chunk, template.format(n=rng.randint(1000, 9999)))

    queue(MESSAGES // 6)  # the rest while the workers run
    simulator = smsc(
        seed=SEED,
        receipt_delay=0.05,
        fail_rate=0.1,
        max_tps=TPS,
        disconnect_after=DISCONNECT,
        disconnect_repeat=True,
        keep_received=None,
        receipts_as=RECEIPTS_AS,
    )
    workers = [worker(simulator, "soak-a", window=16, batch=60), worker(simulator, "soak-b", window=16, batch=60)]
    stop = threading.Event()
    errors: list[tuple[str, BaseException]] = []

    def run(dispatcher: Dispatcher) -> None:
        try:
            dispatcher.run(stop)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append((dispatcher.worker, error))

    threads = [threading.Thread(target=run, args=(w,), name=w.worker) for w in workers]
    for thread in threads:
        thread.start()

    # --- replies, from the main thread, while the workers send -------------------------------------
    expected: Counter[tuple[str, str, str]] = Counter()
    reply_numbers = [f"1590000{i:04d}" for i in range(30)]  # handsets that were sent nothing
    reference_of: dict[str, int] = {}
    last_round: list[tuple[tuple[str, str, int, int], list[bytes]]] = []
    td_sent: list[tuple[str, int]] = []
    singles: dict[bytes, tuple[str, str, str]] = {}
    made = 0

    def wait_taken(timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while simulator.deliveries_pending():
            assert not errors, errors
            assert time.monotonic() < deadline, f"replies not taken: {simulator.stats()}"
            time.sleep(0.02)

    def reply_round(number: int) -> None:
        nonlocal last_round, made
        bodies: list[bytes] = []
        this_round: list[tuple[tuple[str, str, int, int], list[bytes]]] = []
        for handset in rng.sample(reply_numbers, 10):
            destination = rng.choice(["10690000", "106575000123"])
            if handset not in reference_of or rng.random() < 0.4:  # else the handset reuses its reference
                reference_of[handset] = rng.choice([0, 7, rng.randrange(256)])
            reference, total = reference_of[handset], rng.choice([2, 3])
            made += 1
            text = f"收到第{made}条回复，谢谢您的通知，我们明天下午到店办理会员积分兑换业务。" * (total - 1) + f"（{number}-{made}）"
            size = -(-len(text) // total)
            pieces = [text[i * size : (i + 1) * size] for i in range(total)]
            parts = [reply_part(handset, destination, reference, total, seq, piece) for seq, piece in enumerate(pieces, start=1)]
            this_round.append(((handset, destination, reference, total), parts))
            expected[(handset, destination, text)] += 1
            bodies += parts + [p for p in parts if rng.random() < 0.25]  # some parts delivered twice
        used = {key for key, _ in this_round}
        for key, parts in last_round:  # the last round's parts once more, where the key is not in use again
            if key not in used and rng.random() < 0.3:
                bodies.append(rng.choice(parts))
        for _ in range(2):  # TD replies from recipients of either account, and one from a stranger
            account_id = rng.choice(list(recipients))
            pool = queued[account_id]
            handset = rng.choice(pool) if pool and rng.random() < 0.8 else f"1590001{rng.randrange(10000):04d}"
            destination, word = source_of[account_id], rng.choice(["TD", "退订"])
            bodies.append(single(handset, destination, word))
            expected[(handset, destination, word)] += 1
            singles[bodies[-1]] = (handset, destination, word)
            td_sent.append((handset, account_id))
        rng.shuffle(bodies)
        simulator.send_deliveries(bodies, spread=binds)
        wait_taken()
        last_round = this_round

    def statuses() -> Counter[str]:
        found = Counter(db.session.scalars(sa.select(Message.status)))
        db.session.rollback()
        return found

    # Reply rounds until every message is settled (at least ROUNDS of them); more intake meanwhile.
    deadline = time.monotonic() + TIMEOUT
    number = 0
    while number < ROUNDS or not set(statuses()) <= SETTLED:
        assert not errors, errors
        assert time.monotonic() < deadline, f"not settled in {TIMEOUT} s: {dict(statuses())}; {[w.stats for w in workers]}"
        if number == ROUNDS - 1:
            queue(MESSAGES)  # whatever is left
        elif number % 2:
            queue(MESSAGES // 12)
        reply_round(number)
        number += 1
        time.sleep(rng.uniform(0.0, 0.3))
    settled_after = time.monotonic() - started

    # --- the fragments' sweep: two minutes later every fragment goes (nothing incomplete is left) ---
    offset[0] = timedelta(minutes=2)
    for w in workers:
        w._next_fragment_sweep = 0.0
    sweep_deadline = time.monotonic() + 20
    while db.session.scalar(sa.select(sa.func.count()).select_from(ReplyFragment)):
        db.session.rollback()
        assert time.monotonic() < sweep_deadline, "fragments left after the sweep"
        time.sleep(0.05)
    db.session.rollback()
    stop.set()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads), "a worker did not stop"

    # --- what must hold --------------------------------------------------------------------------
    assert errors == [], errors
    assert all(w._failure is None for w in workers), [w._failure for w in workers]
    bad_logs = [
        f"{r.name} {r.levelname} {r.getMessage()[:300]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR or "deadlock" in r.getMessage().lower() or r.exc_info
    ]
    assert not [line for line in bad_logs if "lost in flight" not in line], bad_logs
    assert "deadlock" not in caplog.text.lower()

    db.session.expire_all()
    messages = {m.id: m for m in db.session.scalars(sa.select(Message))}
    assert len(messages) == MESSAGES // 2 * 2
    found = Counter(m.status for m in messages.values())
    assert set(found) <= SETTLED, found
    for sender in senders:
        counts = message_counts(db.session, sender.account.id)
        assert counts.balanced, counts
        charged = sum((m.charge for m in messages.values() if m.account_id == sender.account.id), Decimal(0))
        refunded = sum((m.charge for m in messages.values() if m.account_id == sender.account.id and m.status == "refunded"), Decimal(0))
        assert sender.balance() == funded[sender.account.id] - charged + refunded

    parts: dict[tuple[int, int], MessagePart] = {(p.message_id, p.seq): p for p in db.session.scalars(sa.select(MessagePart))}
    by_message: dict[int, list[MessagePart]] = {}
    for part in parts.values():
        by_message.setdefault(part.message_id, []).append(part)
    for message in messages.values():
        mine = sorted(by_message.get(message.id, []), key=lambda p: p.seq)
        if message.status == "refunded":
            if "退订" in (message.error or ""):
                assert not any(p.submit_status == 0 for p in mine), (message.id, message.error)
            continue
        assert [p.seq for p in mine] == list(range(1, message.segments + 1)), (message.id, message.status, [p.seq for p in mine])
        assert all(p.submit_status == 0 and p.smsc_message_id for p in mine), message.id
        assert message_status_of([p.receipt_stat for p in mine]) == message.status, (message.id, message.status)

    # Each part went to the SMSC once, unless its row is flagged resent.
    by_recipient = {("86" + m.recipient): m.id for m in messages.values()}
    assert len(by_recipient) == len(messages)
    submits: Counter[tuple[int, int]] = Counter()
    for submit in simulator.received:
        message_id = by_recipient[submit.destination]
        submits[(message_id, submit.udh[2] if submit.udh else 1)] += 1
    unflagged = {key: n for key, n in submits.items() if n > 1 and not parts[key].resent}
    assert unflagged == {}, unflagged
    assert all(key in parts for key in submits)
    td_refunded_sent = [
        m.id for m in messages.values() if m.status == "refunded" and "退订" in (m.error or "") and any(k[0] == m.id for k in submits)
    ]
    assert td_refunded_sent == [], td_refunded_sent

    # Replies: each whole, once; the TDs of the service code's account on its list.
    stored = Counter((r.sender, r.destination, r.content) for r in db.session.scalars(sa.select(MobileOriginated)))
    # A one-part reply delivered again after its bind dropped before the acknowledgement is stored
    # again (SMPP delivers at least once; nothing tells the copy apart): allowed, and counted.
    dropped = simulator.replies_unacked_at_close()
    allowed = Counter({singles[body]: n for body, n in dropped.items() if body in singles})
    extra = stored - expected
    assert expected - stored == Counter(), {"missing": expected - stored}
    assert extra - allowed == Counter(), {"extra": extra, "dropped singles": allowed}
    for handset, account_id in td_sent:
        if account_id == second.account.id and handset.startswith("139"):
            assert db.session.scalar(
                sa.select(Unsubscribe.id).where(Unsubscribe.account_id == account_id, Unsubscribe.number == handset)
            ), handset
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ReplyFragment)) == 0
    assert verify_chain(db.session) == []

    stats = simulator.stats()
    print(
        f"\nSOAK seed={SEED} messages={len(messages)} rounds={number} {dict(found)} settled in {settled_after:.1f}s; "
        f"simulator: submits={stats.submits} accepted={stats.accepted} throttled={stats.throttled} "
        f"disconnects={stats.disconnects_injected} receipts={stats.receipts_sent} mo={stats.mo_sent} acked={stats.deliveries_acked}; "
        f"replies={sum(stored.values())} (one-part copies after a drop: {sum(extra.values())}, replies unacked at a drop: {sum(dropped.values())}); resent parts={sum(1 for p in parts.values() if p.resent)}; "
        + "; ".join(f"{w.worker}: {w.stats}" for w in workers)
    )
    db.session.rollback()
