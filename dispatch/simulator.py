"""The built-in SMSC simulator: a real SMPP 3.4 server on TCP, with delivery receipts and faults on demand.

It stands in for the carrier gateway in development, tests and benchmarks. One I/O thread
runs a selectors loop over every connection (no thread per connection: with the GIL that only
adds switching) and writes each connection's responses in one send per loop turn. Its PDU
codec is the compact one in `dispatch.smpp_link` (the server side needs speed, not smpplib's
client machinery); the link itself builds and parses PDUs with smpplib, and a test runs
smpplib's own Client against this server.

Faults are drawn from one seeded random generator, in the order submits arrive, so a seed
gives the same rejects and failures on every run with the same traffic; message ids start at
an unseeded random number, so they differ from run to run all the same.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import hmac
import itertools
import logging
import random
import selectors
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from types import TracebackType
from typing import Final, Literal, NamedTuple

from dispatch.segments import encode_gsm7, is_gsm7
from dispatch.smpp_link import (
    BIND_RECEIVER,
    BIND_TRANSCEIVER,
    BIND_TRANSMITTER,
    DATA_CODING_UCS2,
    DATA_SM,
    DATA_SM_RESP,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESM_DELIVERY_RECEIPT,
    ESME_RALYBND,
    ESME_RBINDFAIL,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_ROK,
    ESME_RSUBMITFAIL,
    ESME_RSYSERR,
    ESME_RTHROTTLED,
    GENERIC_NACK,
    RESPONSE_BIT,
    STATE_OF_STAT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_PAYLOAD,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    TAG_SC_INTERFACE_VERSION,
    UNBIND,
    UNBIND_RESP,
    PduError,
    ShortMessagePdu,
    cstring,
    decode_bind,
    decode_short_message,
    decode_text,
    encode_data_sm,
    encode_pdu,
    encode_short_message,
    encode_tlv,
    parse_concatenation,
    split_pdus,
)

logger = logging.getLogger(__name__)

BEIJING_OFFSET: Final = 8 * 3600
_BIND_MODES: Final = {BIND_TRANSCEIVER: "transceiver", BIND_TRANSMITTER: "transmitter", BIND_RECEIVER: "receiver"}
_WAKE: Final = "wake"
# accept() errors that say the process or the system is out of descriptors or memory: retrying at
# once fails again and spins, so the listening socket rests this long while existing links go on.
_ACCEPT_SHORTAGES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_PAUSE: Final = 0.2
# Unsent output one connection may pile up (a client that sends but does not read) before the
# simulator stops reading from it; one read's answers can go past it (reads take up to 256 KiB).
OUTPUT_LIMIT: Final = 512 * 1024
_READ_WRITE: Final = selectors.EVENT_READ | selectors.EVENT_WRITE
# Answers with nothing to do; any other response (bit 31 set) gets generic_nack like an unknown
# request, and a generic_nack is never answered, or two peers could nack each other for ever.
_RESPONSES_TO_IGNORE: Final = frozenset({ENQUIRE_LINK_RESP, UNBIND_RESP, GENERIC_NACK})


class ReceivedSubmit(NamedTuple):
    """A submit_sm the simulator accepted, as it arrived (tests assert on these)."""

    message_id: str
    source: str
    destination: str
    esm_class: int
    data_coding: int
    short_message: bytes
    udh: tuple[int, int, int] | None  # (reference, total, sequence) of a concatenated part
    registered_delivery: int
    received_at: datetime
    connection: int


@dataclass(frozen=True)
class SimulatorConfig:
    """Credentials, receipts and the faults to inject. Rates are fractions of submits; times seconds.

    - `reject_rate`: refused at submit with ESME_RSUBMITFAIL (0x45), no receipt;
    - `fail_rate`: accepted, then a receipt `stat:UNDELIV err:001`;
    - `max_tps`: above it (token bucket, one second of burst) submit_sm_resp is ESME_RTHROTTLED;
    - `disconnect_after`: on the Nth submit (every Nth with `disconnect_repeat`) the simulator
      accepts that submit (receipt and all) and drops the TCP link with a reset before answering
      it: the client cannot know whether it was taken, as with a real link failure; the answers
      to earlier submits go out before the reset (with `response_delay`, earlier than due);
    - `response_delay`: hold each submit_sm_resp this long (to see the client's window);
    - `idle_timeout`: drop a connection that sent nothing for this long (enquire_link prevents it);
    - `carrier_report(submit) -> (stat, err) | None`: the carrier's verdict for a submit,
      overriding fail_rate (e.g. one destination always `EXPIRED`/`MK:0005`);
    - `receipts_as`: "data_sm" sends receipts as data_sm (text in message_payload), as some SMSCs do;
    - `message_id_format`: "hex" ("1a2b3c") or "decimal"; `receipt_id_format` "same" or the other
      base, to mimic SMSCs that report receipts in decimal for hex submit ids;
    - `delivery_window`: deliver_sm/data_sm sent to one connection and not answered yet, at most;
      the rest wait until answers come, as a real SMSC's window does (100 costs the benchmark's
      receipt backlog drain about a tenth of its rate, 1,000 nothing);
    - `keep_held`: receipts and MOs waiting for a receiver (none bound, or every window full) kept
      at most (oldest dropped, counted in `deliveries_dropped`): a transmitter-only client's receipts;
    - `keep_received`: how many ReceivedSubmit `received` keeps (oldest dropped).

    With these and OUTPUT_LIMIT a long run's memory stays bounded, apart from what the delays
    hold (submits per second times `receipt_delay` or `response_delay`).
    """

    system_id: str = "backoffice"
    password: str = "secret"
    receipt_delay: float = 0.5
    receipt_tlvs: bool = True
    receipts_as: Literal["deliver_sm", "data_sm"] = "deliver_sm"
    message_id_format: Literal["hex", "decimal"] = "hex"
    receipt_id_format: Literal["same", "hex", "decimal"] = "same"
    message_id_start: int | None = None
    fail_rate: float = 0.0
    reject_rate: float = 0.0
    max_tps: float | None = None
    disconnect_after: int | None = None
    disconnect_repeat: bool = False
    response_delay: float = 0.0
    idle_timeout: float | None = None
    redeliver_unacked: bool = True
    seed: int | None = None
    carrier_report: Callable[[ReceivedSubmit], tuple[str, str] | None] | None = None
    keep_received: int | None = 200_000
    delivery_window: int = 1000
    keep_held: int | None = 100_000

    def __post_init__(self) -> None:
        for name in ("fail_rate", "reject_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.receipt_delay < 0 or self.response_delay < 0:
            raise ValueError("delays cannot be negative")
        if self.max_tps is not None and self.max_tps <= 0:
            raise ValueError("max_tps must be positive (or None)")
        if self.disconnect_after is not None and self.disconnect_after < 1:
            raise ValueError("disconnect_after must be at least 1 (or None)")
        if self.delivery_window < 1:
            raise ValueError("delivery_window must be at least 1")
        if self.keep_held is not None and self.keep_held < 0:
            raise ValueError("keep_held cannot be negative (or None)")


@dataclass
class SimulatorStats:
    """Counters since start.

    `deliveries_unacked`: deliver_sm sent and not answered yet; `deliveries_held`: receipts and
    MOs waiting for a receiver to bind or for room in one's window; `deliveries_dropped`: held ones
    dropped beyond `keep_held`; `output_buffered`: bytes answered and not yet taken by the clients
    (a snapshot, all connections); `max_outstanding`: the most submit_sm one connection had
    sent that the simulator had not answered yet (the client's window, seen from this side);
    `accept_pauses`: times accepting rested because the process ran out of descriptors.
    """

    connections: int = 0
    binds: int = 0
    bind_failures: int = 0
    submits: int = 0
    accepted: int = 0
    rejected: int = 0
    throttled: int = 0
    receipts_sent: int = 0
    mo_sent: int = 0
    deliveries_acked: int = 0
    deliveries_unacked: int = 0
    deliveries_held: int = 0
    deliveries_dropped: int = 0
    output_buffered: int = 0
    receipts_scheduled: int = 0
    enquire_links: int = 0
    generic_nacks: int = 0
    disconnects_injected: int = 0
    max_outstanding: int = 0
    accept_pauses: int = 0


class _ReceiptJob(NamedTuple):
    receipt_id: str
    stat: str
    err: str
    handset: str
    sender: str
    submitted: float  # epoch seconds, for the receipt's "submit date"
    preview: str
    origin: int


class _HeldResponse(NamedTuple):
    session: _Session
    pdu: bytes


@dataclass(slots=True)
class _Delivery:
    body: bytes
    is_receipt: bool
    origin: int  # connection the submit came on; receipts go back there when it can receive
    command: int = DELIVER_SM  # or DATA_SM


class _Session:
    __slots__ = (
        "awaiting_resp",
        "closed",
        "closing",
        "events",
        "id",
        "inbuf",
        "last_rx",
        "mode",
        "outbuf",
        "peer",
        "resp_in_outbuf",
        "sequence",
        "sock",
        "unacked",
    )

    def __init__(self, number: int, sock: socket.socket, peer: str, now: float) -> None:
        self.id = number
        self.sock = sock
        self.peer = peer
        self.inbuf = bytearray()
        self.outbuf = bytearray()
        self.mode: str | None = None
        self.sequence = 0
        self.unacked: dict[int, _Delivery] = {}
        self.awaiting_resp = 0  # submit_sm received whose response has not gone out yet
        self.resp_in_outbuf = 0
        self.last_rx = now
        self.closing = False
        self.closed = False
        self.events = selectors.EVENT_READ  # as registered with the selector

    @property
    def can_receive(self) -> bool:
        return self.mode in ("transceiver", "receiver")

    def next_sequence(self) -> int:
        self.sequence = self.sequence % 0x7FFFFFFF + 1
        return self.sequence


def _beijing_stamp(epoch: float) -> str:
    """YYMMDDhhmm in Beijing time, as Chinese gateways write receipt dates."""
    return time.strftime("%y%m%d%H%M", time.gmtime(epoch + BEIJING_OFFSET))


def _receipt_text(message_id: str, stat: str, err: str, submitted: float, done: float, preview: str) -> str:
    delivered = "001" if stat == "DELIVRD" else "000"
    return (
        f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{_beijing_stamp(submitted)} "
        f"done date:{_beijing_stamp(done)} stat:{stat} err:{err} text:{preview}"
    )


class SMSCSimulator:
    """An SMPP 3.4 SMSC on `host:port` (port 0: any free port, read `.port` after `start()`).

    Thread-safe from the outside: `received`, `stats()`, `send_mo`, `send_receipt`,
    `drop_connections` and `stop` may be called from any thread while the I/O thread runs.
    """

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.config = config or SimulatorConfig()
        self.host = host
        self.port = port
        self._rng = random.Random(self.config.seed)
        start = self.config.message_id_start
        if start is None:
            # Not from the seeded generator: a restart with the same seed must not hand out the ids of
            # the last run again (the back office would match receipts to the wrong messages).
            start = random.SystemRandom().randrange(0x100000, 0x7FFFFFFF)
            self._rng.randrange(0x100000, 0x7FFFFFFF)  # the draw the id start took: a seed keeps giving the faults it gave
        self._next_id = start
        self._lock = threading.Lock()
        self._received: deque[ReceivedSubmit] = deque(maxlen=self.config.keep_received)
        self._stats = SimulatorStats()
        self._sessions: dict[int, _Session] = {}
        self._session_numbers = itertools.count(1)
        self._timers: list[tuple[float, int, _HeldResponse | _ReceiptJob | _Delivery]] = []  # (due, tie-break, what)
        self._timer_numbers = itertools.count()
        self._held: deque[_Delivery] = deque(maxlen=self.config.keep_held)
        # Bodies of replies (MO) that were unacknowledged when their connection closed, and so are
        # delivered again (SMPP delivers at least once: the ESME may have stored one already).
        self._unacked_at_close: Counter[bytes] = Counter()
        self._commands: deque[tuple[Callable[[], object], threading.Event]] = deque()
        self._dirty: set[_Session] = set()
        self._submit_count = 0
        self._tokens = float(self.config.max_tps or 0.0)
        self._tokens_at = time.monotonic()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._accept_resumes_at: float | None = None  # set while accepting rests after a shortage
        self._accept_short = False  # the last accept failed for a shortage: warn once, not every pause
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._selector: selectors.BaseSelector | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> SMSCSimulator:
        """Bind and listen (returns once connections are accepted), then serve in a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((self.host, self.port))
            listener.listen(128)
            listener.setblocking(False)
        except BaseException:
            listener.close()
            raise
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector = selectors.DefaultSelector()
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self._thread = threading.Thread(target=self._run, name=f"smsc-simulator:{self.port}", daemon=True)
        self._thread.start()
        logger.info("SMSC simulator listening on %s:%s (system_id %s)", self.host, self.port, self.config.system_id)
        return self

    def stop(self) -> None:
        """Close every connection and the listening socket; returns when the I/O thread has ended."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            self._close_all()
            return
        self._stopping = True
        self._wake()
        thread.join(timeout=10)
        if thread.is_alive():
            logger.error("SMSC simulator thread did not stop within 10 s")

    @property
    def running(self) -> bool:
        """The I/O thread is serving."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> SMSCSimulator:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    # --- what tests and operators look at -------------------------------------------------------

    @property
    def received(self) -> list[ReceivedSubmit]:
        """The accepted submits, oldest first (a copy)."""
        with self._lock:
            return list(self._received)

    def stats(self) -> SimulatorStats:
        """A snapshot of the counters."""
        with self._lock:
            snapshot = SimulatorStats(**{f.name: getattr(self._stats, f.name) for f in fields(SimulatorStats)})
        snapshot.deliveries_held = len(self._held)
        snapshot.output_buffered = sum(len(s.outbuf) for s in list(self._sessions.values()))
        return snapshot

    def send_mo(self, source: str, destination: str, text: str) -> None:
        """Deliver a mobile-originated message (a handset's reply) to a bound receiver.

        Text in the GSM 7-bit alphabet goes as data_coding 0 (unpacked septets, as submit_sm
        carries them), anything else as UCS-2 (8); over 140 bytes it travels in message_payload.
        Held until a receiver binds if none is bound.
        """
        if is_gsm7(text):
            data, coding = encode_gsm7(text), 0
        else:
            data, coding = text.encode("utf-16-be"), DATA_CODING_UCS2
        sm = ShortMessagePdu(source_addr=source, destination_addr=destination, data_coding=coding, source_addr_ton=1, source_addr_npi=1)
        if len(data) > 140:
            sm.tlvs[TAG_MESSAGE_PAYLOAD] = data
        else:
            sm.short_message = data
        delivery = _Delivery(encode_short_message(sm), is_receipt=False, origin=0)
        self._call(lambda: self._send_delivery(delivery))

    def send_receipt(self, message_id: str, stat: str = "DELIVRD", err: str = "000", source: str = "", destination: str = "") -> None:
        """Deliver a receipt for any message id (e.g. one the client never submitted)."""
        now = time.time()
        delivery = self._make_receipt(message_id, stat, err, source, destination, now, now, "", origin=0)
        self._call(lambda: self._send_delivery(delivery))

    def send_deliveries(
        self, bodies: list[bytes], *, receipts: bool = False, command: int = DELIVER_SM, spread: random.Random | None = None
    ) -> None:
        """Deliver deliver_sm (or data_sm) bodies made elsewhere, as they are, in one write (tests
        of what an odd or hostile SMSC may send: malformed headers, NULs, unknown codings …).
        With `spread`, each goes to a bound receiver drawn with it (parts of one reply on several binds)."""

        def send_all() -> None:
            receivers = [s.id for s in self._sessions.values() if s.can_receive and not s.closing]
            for body in bodies:
                origin = spread.choice(receivers) if spread is not None and receivers else 0
                self._send_delivery(_Delivery(body, is_receipt=receipts, origin=origin, command=command))

        self._call(send_all)

    def replies_unacked_at_close(self) -> Counter[bytes]:
        """Bodies of replies that were unacknowledged when their connection closed, and so were
        delivered again (SMPP delivers at least once: the ESME may have stored one already)."""
        found: list[Counter[bytes]] = []
        self._call(lambda: found.append(Counter(self._unacked_at_close)))
        return found[0]

    def deliveries_pending(self, *, receipts: bool = False) -> int:
        """Replies (or receipts) not acknowledged yet: on the wire, held for a receiver, or due to be delivered again."""
        found = [0]

        def count() -> None:
            kind = [d for s in self._sessions.values() for d in s.unacked.values()] + list(self._held)
            kind += [t[2] for t in self._timers if isinstance(t[2], _Delivery)]
            found[0] = sum(d.is_receipt == receipts for d in kind)

        self._call(count)
        return found[0]

    def drop_connections(self) -> None:
        """Reset every TCP connection at once, as a network failure would; returns when done."""

        def drop_all() -> None:
            for session in list(self._sessions.values()):
                self._close(session, "dropped on request", abrupt=True)

        self._call(drop_all)

    # --- plumbing to the I/O thread -------------------------------------------------------------

    def _wake(self) -> None:
        if self._wake_w is not None:
            with contextlib.suppress(OSError):  # a full buffer means the thread is awake already
                self._wake_w.send(b"\0")

    def _call(self, action: Callable[[], object], timeout: float = 5.0) -> None:
        if not self.running:
            raise RuntimeError("simulator is not running")
        done = threading.Event()
        self._commands.append((action, done))
        self._wake()
        if not done.wait(timeout):
            raise TimeoutError("simulator did not run the command in time")

    # --- the I/O thread ---------------------------------------------------------------------------

    def _run(self) -> None:
        selector = self._selector
        assert selector is not None
        idle_timeout = self.config.idle_timeout
        try:
            while not self._stopping:
                timeout = 1.0 if idle_timeout is None else min(1.0, idle_timeout / 4)
                if self._timers:
                    timeout = max(0.0, min(timeout, self._timers[0][0] - time.monotonic()))
                if self._accept_resumes_at is not None:
                    timeout = max(0.0, min(timeout, self._accept_resumes_at - time.monotonic()))
                for key, mask in selector.select(timeout):
                    target = key.data
                    if target is None:
                        self._accept()
                    elif target == _WAKE:
                        self._run_commands()
                    else:
                        assert isinstance(target, _Session)
                        if target.closed:
                            continue
                        if mask & selectors.EVENT_READ:
                            self._read(target)
                        if mask & selectors.EVENT_WRITE and not target.closed:
                            self._dirty.add(target)
                now = time.monotonic()
                if self._accept_resumes_at is not None and now >= self._accept_resumes_at:
                    self._resume_accepting()
                if self._timers and self._timers[0][0] <= now:
                    self._fire_timers(now)
                if idle_timeout is not None:
                    for session in [s for s in self._sessions.values() if now - s.last_rx > idle_timeout]:
                        self._close(session, f"idle for {idle_timeout} s")
                while self._dirty:  # a flush can dirty another session (an unbind redelivers its receipts)
                    self._flush(self._dirty.pop())
        except Exception:
            logger.exception("SMSC simulator I/O thread failed")
        finally:
            for _action, done in self._commands:
                done.set()
            self._close_all()

    def _close_all(self) -> None:
        for session in list(self._sessions.values()):
            self._close(session, "simulator stopped", redeliver=False)
        for sock in (self._listener, self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        if self._selector is not None:
            self._selector.close()
        self._listener = self._wake_r = self._wake_w = None
        self._selector = None

    def _run_commands(self) -> None:
        assert self._wake_r is not None
        try:
            while self._wake_r.recv(4096):
                pass
        except BlockingIOError:
            pass
        while self._commands:
            action, done = self._commands.popleft()
            try:
                action()
            except Exception:
                logger.exception("SMSC simulator command failed")
            finally:
                done.set()

    def _accept(self) -> None:
        assert self._listener is not None and self._selector is not None
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_SHORTAGES:
                    self._pause_accepting(exc)
                else:  # e.g. ECONNABORTED: that one connection is gone; select reports any other
                    logger.info("SMSC simulator: accept failed: %s", exc)
                return
            try:
                sock.setblocking(False)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                session = _Session(next(self._session_numbers), sock, f"{address[0]}:{address[1]}", time.monotonic())
                self._selector.register(sock, selectors.EVENT_READ, session)
            except OSError as exc:  # reset before we got to it, or the selector is out of memory
                logger.warning("SMSC simulator: connection from %s not set up: %s", address, exc)
                sock.close()
                continue
            if self._accept_short:
                self._accept_short = False
                logger.warning("SMSC simulator: accepting connections again")
            self._sessions[session.id] = session
            self._stats.connections += 1
            logger.info("SMSC simulator: connection %d from %s", session.id, session.peer)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors: keep serving the links we have and try accepting again shortly.

        Raising would end the I/O thread and close every link, bound clients included, because
        one client opened too many; pending connections wait in the listen backlog meanwhile."""
        assert self._listener is not None and self._selector is not None
        log = logger.debug if self._accept_short else logger.warning
        log("SMSC simulator: cannot accept connections (%s); trying again every %.1f s", exc, _ACCEPT_PAUSE)
        self._accept_short = True
        self._stats.accept_pauses += 1
        self._selector.unregister(self._listener)
        self._accept_resumes_at = time.monotonic() + _ACCEPT_PAUSE

    def _resume_accepting(self) -> None:
        self._accept_resumes_at = None
        if self._listener is not None and self._selector is not None:
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _close(self, session: _Session, reason: str, abrupt: bool = False, redeliver: bool = True) -> None:
        if session.closed:
            return
        session.closed = True
        if self._selector is not None:
            self._selector.unregister(session.sock)
        if abrupt:  # RST instead of FIN, and nothing left in our buffers goes out
            session.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        session.sock.close()
        self._sessions.pop(session.id, None)
        self._dirty.discard(session)
        with self._lock:
            self._stats.connections -= 1
            self._stats.deliveries_unacked -= len(session.unacked)
        logger.info("SMSC simulator: connection %d closed (%s)", session.id, reason)
        if redeliver and self.config.redeliver_unacked and session.unacked:
            self._unacked_at_close.update(d.body for d in session.unacked.values() if not d.is_receipt)
            for delivery in session.unacked.values():
                self._hold(delivery)
            self._drain_held()
        session.unacked.clear()

    def _read(self, session: _Session) -> None:
        try:
            data = session.sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._close(session, f"receive failed: {exc}")
            return
        if not data:
            self._close(session, "closed by the ESME")
            return
        now = time.monotonic()
        session.last_rx = now
        inbuf = session.inbuf
        inbuf += data
        while True:
            try:
                pdus = split_pdus(inbuf)
            except PduError as exc:
                self._write(session, encode_pdu(GENERIC_NACK, 0, status=ESME_RINVCMDLEN))
                inbuf.clear()
                session.closing = True
                logger.warning("SMSC simulator: connection %d sent garbage (%s)", session.id, exc)
                return
            for command_id, status, sequence, body in pdus:
                try:
                    self._handle(session, command_id, status, sequence, body, now)
                except Exception:
                    logger.exception("SMSC simulator: connection %d, PDU 0x%08X failed", session.id, command_id)
                    self._close(session, "internal error", abrupt=True)
                if session.closed or session.closing:
                    return
            # split_pdus returns the PDUs before a bad header and raises only on the next call:
            # make that call now, or the garbage waits unanswered until the client sends more.
            if not pdus or len(inbuf) < 16:
                return

    def _write(self, session: _Session, data: bytes) -> None:
        session.outbuf += data
        self._dirty.add(session)

    def _flush(self, session: _Session) -> None:
        self._dirty.discard(session)
        if session.closed:
            return
        sent = 0
        if session.outbuf:
            try:
                sent = session.sock.send(session.outbuf)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError as exc:
                self._close(session, f"send failed: {exc}")
                return
            del session.outbuf[:sent]
        unsent = len(session.outbuf)
        # Over the limit the client is not reading its answers: stop reading its requests until
        # they drain, or a client that only sends grows our buffer without end.
        events = selectors.EVENT_READ if not unsent else _READ_WRITE if unsent < OUTPUT_LIMIT else selectors.EVENT_WRITE
        if events != session.events and self._selector is not None:
            self._selector.modify(session.sock, events, session)
            session.events = events
        if not unsent:
            session.awaiting_resp -= session.resp_in_outbuf
            session.resp_in_outbuf = 0
            if session.closing:
                self._close(session, "unbound")

    def _handle(self, session: _Session, command_id: int, status: int, sequence: int, body: bytes, now: float) -> None:
        if command_id == SUBMIT_SM:
            self._submit(session, sequence, body, now)
        elif command_id in (DELIVER_SM_RESP, DATA_SM_RESP):
            delivery = session.unacked.get(sequence)
            if delivery is not None and command_id != delivery.command | RESPONSE_BIT:
                logger.warning("SMSC simulator: delivery %d answered with command 0x%08X, which does not answer it", sequence, command_id)
                delivery = None  # (a real SMSC would deliver it again)
            elif delivery is not None:
                del session.unacked[sequence]
            if delivery is not None:
                with self._lock:
                    self._stats.deliveries_unacked -= 1
                    if status == ESME_ROK:
                        self._stats.deliveries_acked += 1
                if status != ESME_ROK:  # the ESME could not take it now: try again in a second
                    self._schedule(now + 1.0, delivery)
                if self._held:  # room in this window for what waited
                    self._drain_held()
        elif command_id == ENQUIRE_LINK:
            self._stats.enquire_links += 1
            self._write(session, encode_pdu(ENQUIRE_LINK_RESP, sequence))
        elif command_id in _BIND_MODES:
            self._bind(session, command_id, sequence, body)
        elif command_id == UNBIND:
            if session.mode is None:  # nothing to unbind; the connection stays open for a bind
                self._write(session, encode_pdu(UNBIND_RESP, sequence, status=ESME_RINVBNDSTS))
                return
            self._write(session, encode_pdu(UNBIND_RESP, sequence))
            session.closing = True
        elif command_id in _RESPONSES_TO_IGNORE:
            pass
        else:  # an unknown request, or a response to nothing this SMSC sends
            self._stats.generic_nacks += 1
            self._write(session, encode_pdu(GENERIC_NACK, sequence, status=ESME_RINVCMDID))

    def _bind(self, session: _Session, command_id: int, sequence: int, body: bytes) -> None:
        response_id = command_id | RESPONSE_BIT
        if session.mode is not None:
            self._write(session, encode_pdu(response_id, sequence, status=ESME_RALYBND))
            return
        try:
            request = decode_bind(body)
        except PduError:
            self._write(session, encode_pdu(response_id, sequence, status=ESME_RSYSERR))
            return
        config = self.config
        # Compare both, always: no early exit that tells a wrong system_id from a wrong password.
        id_ok = hmac.compare_digest(request.system_id.encode(), config.system_id.encode())
        password_ok = hmac.compare_digest(request.password.encode(), config.password.encode())
        if not (id_ok and password_ok):
            self._stats.bind_failures += 1
            logger.warning("SMSC simulator: connection %d bind refused for system_id %r", session.id, request.system_id)
            self._write(session, encode_pdu(response_id, sequence, status=ESME_RBINDFAIL))
            return
        session.mode = _BIND_MODES[command_id]
        self._stats.binds += 1
        logger.info("SMSC simulator: connection %d bound as %s (%s)", session.id, request.system_id, session.mode)
        self._write(session, encode_pdu(response_id, sequence, cstring("SMSCSIM") + encode_tlv(TAG_SC_INTERFACE_VERSION, b"\x34")))
        if session.can_receive:
            self._drain_held()

    def _take_token(self, now: float) -> bool:
        rate = self.config.max_tps
        if rate is None:
            return True
        self._tokens = min(rate, self._tokens + (now - self._tokens_at) * rate)
        self._tokens_at = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

    def _submit(self, session: _Session, sequence: int, body: bytes, now: float) -> None:
        if session.mode not in ("transceiver", "transmitter"):
            self._write(session, encode_pdu(SUBMIT_SM_RESP, sequence, status=ESME_RINVBNDSTS))
            return
        session.awaiting_resp += 1
        if session.awaiting_resp > self._stats.max_outstanding:
            self._stats.max_outstanding = session.awaiting_resp
        config = self.config
        self._submit_count += 1
        self._stats.submits += 1
        try:
            sm = decode_short_message(body)
        except PduError:
            self._respond_submit(session, sequence, ESME_RSYSERR, now)
            return
        every = config.disconnect_after
        drop = every is not None and (self._submit_count == every or (config.disconnect_repeat and self._submit_count % every == 0))
        if not drop:
            if not self._take_token(now):
                self._stats.throttled += 1
                self._respond_submit(session, sequence, ESME_RTHROTTLED, now)
                return
            if config.reject_rate and self._rng.random() < config.reject_rate:
                self._stats.rejected += 1
                self._respond_submit(session, sequence, ESME_RSUBMITFAIL, now)
                return
        number = self._next_id
        self._next_id += 1
        message_id = format(number, "x") if config.message_id_format == "hex" else str(number)
        concat, text = parse_concatenation(sm.esm_class, sm.payload())
        record = ReceivedSubmit(
            message_id,
            sm.source_addr,
            sm.destination_addr,
            sm.esm_class,
            sm.data_coding,
            sm.short_message,
            concat,
            sm.registered_delivery,
            datetime.now(UTC),
            session.id,
        )
        with self._lock:
            self._received.append(record)
            self._stats.accepted += 1
        failed = bool(config.fail_rate) and self._rng.random() < config.fail_rate
        stat, err = ("UNDELIV", "001") if failed else ("DELIVRD", "000")
        if config.carrier_report is not None:
            stat, err = config.carrier_report(record) or (stat, err)
        wanted = sm.registered_delivery & 0x03
        if wanted == 1 or (wanted == 2 and stat != "DELIVRD") or (wanted == 3 and stat == "DELIVRD"):
            receipt_id = message_id
            if config.receipt_id_format == "hex":
                receipt_id = format(number, "x")
            elif config.receipt_id_format == "decimal":
                receipt_id = str(number)
            preview = decode_text(sm.data_coding, text)[:20].encode("ascii", "replace").decode("ascii")
            job = _ReceiptJob(receipt_id, stat, err, sm.destination_addr, sm.source_addr, time.time(), preview, session.id)
            self._stats.receipts_scheduled += 1
            self._schedule(now + config.receipt_delay, job)
        if drop:
            self._stats.disconnects_injected += 1
            if config.response_delay:  # answers held for the delay go out early rather than never
                held = sorted(
                    (due, n, what.pdu) for due, n, what in self._timers if isinstance(what, _HeldResponse) and what.session is session
                )
                for *_, pdu in held:
                    self._write(session, pdu)
            self._flush(session)  # the answers to earlier submits went out; this one's never does
            self._close(session, f"fault injected after submit {self._submit_count}", abrupt=True)
            return
        self._respond_submit(session, sequence, ESME_ROK, now, cstring(message_id))

    def _respond_submit(self, session: _Session, sequence: int, status: int, now: float, body: bytes = b"") -> None:
        pdu = encode_pdu(SUBMIT_SM_RESP, sequence, body, status)
        if self.config.response_delay:
            self._schedule(now + self.config.response_delay, _HeldResponse(session, pdu))
        else:
            session.resp_in_outbuf += 1
            self._write(session, pdu)

    def _schedule(self, due: float, what: _HeldResponse | _ReceiptJob | _Delivery) -> None:
        heapq.heappush(self._timers, (due, next(self._timer_numbers), what))

    def _fire_timers(self, now: float) -> None:
        timers = self._timers
        while timers and timers[0][0] <= now:
            what = heapq.heappop(timers)[2]
            if isinstance(what, _HeldResponse):
                if not what.session.closed:
                    what.session.resp_in_outbuf += 1
                    self._write(what.session, what.pdu)
            elif isinstance(what, _ReceiptJob):
                self._stats.receipts_scheduled -= 1
                receipt = self._make_receipt(
                    what.receipt_id, what.stat, what.err, what.handset, what.sender, what.submitted, time.time(), what.preview, what.origin
                )
                self._send_delivery(receipt)
            else:  # a delivery the ESME refused, once more
                self._send_delivery(what)

    def _make_receipt(
        self, message_id: str, stat: str, err: str, handset: str, sender: str, submitted: float, done: float, preview: str, origin: int
    ) -> _Delivery:
        text = _receipt_text(message_id, stat, err, submitted, done, preview).encode("ascii", "replace")
        sm = ShortMessagePdu(source_addr=handset, destination_addr=sender, esm_class=ESM_DELIVERY_RECEIPT, short_message=text)
        if self.config.receipt_tlvs:
            sm.tlvs[TAG_RECEIPTED_MESSAGE_ID] = cstring(message_id)
            sm.tlvs[TAG_MESSAGE_STATE] = bytes((STATE_OF_STAT.get(stat, 5),))
        if self.config.receipts_as == "data_sm":
            return _Delivery(encode_data_sm(sm), is_receipt=True, origin=origin, command=DATA_SM)
        return _Delivery(encode_short_message(sm), is_receipt=True, origin=origin)

    def _send_delivery(self, delivery: _Delivery) -> None:
        """Send a deliver_sm to the connection the submit came on if it can receive, else any
        receiver; hold it while none can take it (not bound, or its window full)."""
        target = self._receiver_for(delivery.origin)
        if target is None:
            self._hold(delivery)
        else:
            self._deliver(target, delivery)

    def _receiver_for(self, origin: int) -> _Session | None:
        window = self.config.delivery_window
        target = self._sessions.get(origin)
        if target is not None and target.can_receive and not target.closing and len(target.unacked) < window:
            return target
        return next((s for s in self._sessions.values() if s.can_receive and not s.closing and len(s.unacked) < window), None)

    def _deliver(self, target: _Session, delivery: _Delivery) -> None:
        sequence = target.next_sequence()
        target.unacked[sequence] = delivery
        self._write(target, encode_pdu(delivery.command, sequence, delivery.body))
        with self._lock:
            self._stats.deliveries_unacked += 1
            if delivery.is_receipt:
                self._stats.receipts_sent += 1
            else:
                self._stats.mo_sent += 1

    def _hold(self, delivery: _Delivery) -> None:
        held = self._held
        if len(held) == held.maxlen:  # the deque drops the oldest; say so in the counters
            with self._lock:
                self._stats.deliveries_dropped += 1
        held.append(delivery)

    def _drain_held(self) -> None:
        """Send held deliveries, oldest first, while a receiver has room in its window."""
        held = self._held
        while held:
            target = self._receiver_for(held[0].origin)
            if target is None:
                return
            self._deliver(target, held.popleft())


def serve_forever(
    config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 2775, stop: threading.Event | None = None
) -> None:
    """Run the simulator until Ctrl-C (or `stop` is set), logging throughput once a minute.

    For `flask smsc simulate --port 2775`; memory stays bounded on a long run as SimulatorConfig
    describes (`keep_received`, `keep_held`, `delivery_window`, OUTPUT_LIMIT).
    """
    simulator = SMSCSimulator(config or SimulatorConfig(), host, port).start()
    stop = stop or threading.Event()
    last, last_at = 0, time.monotonic()
    try:
        while simulator.running and not stop.wait(60.0):
            stats = simulator.stats()
            now = time.monotonic()
            logger.info(
                "SMSC simulator: %d connections, %.0f submits/s over the last minute, %d accepted, %d receipts sent, %d unacked",
                stats.connections,
                (stats.submits - last) / (now - last_at),
                stats.accepted,
                stats.receipts_sent,
                stats.deliveries_unacked,
            )
            last, last_at = stats.submits, now
        if not stop.is_set() and not simulator.running:  # not an exit status of 0 for a crash
            raise RuntimeError("SMSC simulator I/O thread ended unexpectedly (see the log above)")
    except KeyboardInterrupt:
        logger.info("SMSC simulator: interrupted")
    finally:
        simulator.stop()
        logger.info("SMSC simulator stopped: %s", simulator.stats())


__all__ = ["ReceivedSubmit", "SMSCSimulator", "SimulatorConfig", "SimulatorStats", "serve_forever"]
