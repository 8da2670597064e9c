"""The SMSC simulator as an ESME sees it on the wire: a raw SMPP client, no link logic in between."""

from __future__ import annotations

import os
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatch.simulator import OUTPUT_LIMIT, ReceivedSubmit, SMSCSimulator
from dispatch.smpp_link import (
    BIND_RECEIVER,
    BIND_TRANSCEIVER,
    BIND_TRANSMITTER,
    DELIVER_SM,
    DELIVER_SM_RESP,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESM_UDHI,
    ESME_RBINDFAIL,
    ESME_RINVBNDSTS,
    ESME_RINVCMDID,
    ESME_RINVCMDLEN,
    ESME_ROK,
    ESME_RSUBMITFAIL,
    ESME_RTHROTTLED,
    GENERIC_NACK,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_STATE,
    TAG_RECEIPTED_MESSAGE_ID,
    UNBIND,
    UNBIND_RESP,
    BindRequest,
    ShortMessagePdu,
    decode_short_message,
    encode_bind,
    encode_pdu,
    encode_short_message,
    read_cstring,
    take_pdu,
)

Pdu = tuple[int, int, int, bytes]  # command_id, status, sequence, body
RECEIPT_TEXT = re.compile(r"id:(\w+) sub:001 dlvrd:(\d{3}) submit date:\d{10} done date:\d{10} stat:(\w+) err:(\d{3}) text:(.*)")


class RawEsme:
    """A bare SMPP client: send a PDU, read the next one (blocking, with a timeout)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=3)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = bytearray()
        self.sequence = 0

    def send(self, command_id: int, body: bytes = b"", sequence: int | None = None) -> int:
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        self.sock.sendall(encode_pdu(command_id, sequence, body))
        return sequence

    def read(self) -> Pdu:
        while (pdu := take_pdu(self.buffer)) is None:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the SMSC")
            self.buffer += data
        return pdu

    def bind(self, command_id: int = BIND_TRANSCEIVER, password: str = "secret") -> int:
        self.send(command_id, encode_bind(BindRequest("backoffice", password)))
        return self.read()[1]

    def submit(self, text: bytes = b"hello", registered_delivery: int = 1, esm_class: int = 0, destination: str = "13800138000") -> int:
        sm = ShortMessagePdu("10690001", destination, text, esm_class=esm_class, registered_delivery=registered_delivery)
        return self.send(SUBMIT_SM, encode_short_message(sm))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def esme() -> Iterator[Callable[[SMSCSimulator], RawEsme]]:
    clients: list[RawEsme] = []

    def connect(simulator: SMSCSimulator) -> RawEsme:
        clients.append(RawEsme(simulator.port))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def test_bind_checks_system_id_and_password(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    simulator = smsc(password="s3cret")
    client = esme(simulator)
    assert client.bind(password="secret") == ESME_RBINDFAIL
    client.submit()
    assert client.read()[:2] == (SUBMIT_SM_RESP, ESME_RINVBNDSTS)  # still unbound
    assert client.bind(password="s3cret") == ESME_ROK
    assert (simulator.stats().binds, simulator.stats().bind_failures) == (1, 1)


def test_a_receiver_cannot_submit(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    client = esme(smsc())
    assert client.bind(BIND_RECEIVER) == ESME_ROK
    client.submit()
    assert client.read()[:2] == (SUBMIT_SM_RESP, ESME_RINVBNDSTS)


@pytest.mark.parametrize(("id_format", "pattern"), [("hex", r"[0-9a-f]+"), ("decimal", r"[0-9]+")])
def test_message_ids_are_unique_and_in_the_configured_format(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme], id_format: str, pattern: str
) -> None:
    simulator = smsc(message_id_format=id_format, message_id_start=0xFFF0)
    client = esme(simulator)
    client.bind()
    sequences = [client.submit(registered_delivery=0) for _ in range(30)]
    responses = [client.read() for _ in sequences]
    assert [(c, s, q) for c, s, q, _ in responses] == [(SUBMIT_SM_RESP, ESME_ROK, q) for q in sequences]
    ids = [read_cstring(body) for *_, body in responses]
    assert all(re.fullmatch(pattern, i) for i in ids) and len(set(ids)) == 30
    assert ids == [r.message_id for r in simulator.received]
    assert "fff0" in ids if id_format == "hex" else str(0xFFF0) in ids


@pytest.mark.parametrize("tlvs", [True, False])
def test_a_receipt_follows_when_asked_for_and_is_tracked_until_answered(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme], tlvs: bool
) -> None:
    simulator = smsc(receipt_tlvs=tlvs)
    client = esme(simulator)
    client.bind()
    client.submit(b"Your code is 4711, valid for 5 minutes")
    message_id = read_cstring(client.read()[3])
    command_id, _, sequence, body = client.read()
    receipt = decode_short_message(body)

    assert command_id == DELIVER_SM and receipt.esm_class == 0x04
    assert (receipt.source_addr, receipt.destination_addr) == ("13800138000", "10690001")
    fields = RECEIPT_TEXT.fullmatch(receipt.short_message.decode("ascii"))
    assert fields is not None and fields.groups() == (message_id, "001", "DELIVRD", "000", "Your code is 4711, v")
    if tlvs:
        assert receipt.tlvs == {TAG_RECEIPTED_MESSAGE_ID: message_id.encode() + b"\0", TAG_MESSAGE_STATE: b"\x02"}
    else:
        assert receipt.tlvs == {}
    assert simulator.stats().deliveries_unacked == 1
    client.send(DELIVER_SM_RESP, b"\0", sequence=sequence)
    client.send(ENQUIRE_LINK)  # a round trip, so the resp above has been read
    assert client.read()[0] == ENQUIRE_LINK_RESP
    assert (simulator.stats().deliveries_unacked, simulator.stats().deliveries_acked) == (0, 1)


def test_registered_delivery_decides_which_receipts_come(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    simulator = smsc(carrier_report=lambda s: ("UNDELIV", "002") if s.destination.endswith("9") else None)
    client = esme(simulator)
    client.bind()
    client.submit(registered_delivery=0, destination="13800000001")  # none
    client.submit(registered_delivery=2, destination="13800000002")  # failures only: delivered, so none
    client.submit(registered_delivery=2, destination="13800000009")  # failures only: failed
    client.submit(registered_delivery=1, destination="13800000003")  # always
    pdus = [client.read() for _ in range(6)]
    receipts = [decode_short_message(body) for command_id, _, _, body in pdus if command_id == DELIVER_SM]
    assert [(r.source_addr, r.short_message.split(b" stat:")[1][:15]) for r in receipts] == [
        ("13800000009", b"UNDELIV err:002"),
        ("13800000003", b"DELIVRD err:000"),
    ]


def test_faults_are_the_same_for_the_same_seed(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    def run() -> tuple[list[int], list[str]]:
        simulator = smsc(seed=42, reject_rate=0.3, fail_rate=0.3)
        client = esme(simulator)
        client.bind()
        for _ in range(40):
            client.submit()
        statuses, stats = [], []
        while len(statuses) < 40 or len(stats) < statuses.count(ESME_ROK):
            command_id, status, sequence, body = client.read()
            if command_id == SUBMIT_SM_RESP:
                statuses.append(status)
            else:
                stats.append(decode_short_message(body).short_message.split(b" stat:")[1][:7].decode())
                client.send(DELIVER_SM_RESP, b"\0", sequence=sequence)
        return statuses, stats

    first, second = run(), run()
    assert first == second
    statuses, stats = first
    assert set(statuses) == {ESME_ROK, ESME_RSUBMITFAIL} and 5 <= statuses.count(ESME_RSUBMITFAIL) <= 20
    assert set(stats) == {"DELIVRD", "UNDELIV"}


def test_above_max_tps_submits_are_throttled(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    simulator = smsc(max_tps=5)
    client = esme(simulator)
    client.bind()
    for _ in range(8):
        client.submit(registered_delivery=0)
    statuses = [client.read()[1] for _ in range(8)]
    assert statuses == [ESME_ROK] * 5 + [ESME_RTHROTTLED] * 3
    assert (simulator.stats().throttled, len(simulator.received)) == (3, 5)


def test_the_link_is_dropped_after_n_submits_without_an_answer_to_the_last(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    simulator = smsc(disconnect_after=3)
    client = esme(simulator)
    client.bind()
    sm = encode_short_message(ShortMessagePdu("10690001", "13800138000", b"hi"))
    client.sock.sendall(b"".join(encode_pdu(SUBMIT_SM, n, sm) for n in range(10, 15)))  # five submits in one write
    answers = []
    with pytest.raises(OSError):  # reset by peer, or end of stream
        while True:
            answers.append(client.read()[0])
    assert answers == [SUBMIT_SM_RESP, SUBMIT_SM_RESP]
    assert len(simulator.received) == 3  # the third was taken; the fourth and fifth never read
    assert simulator.stats().disconnects_injected == 1
    second = esme(simulator)  # "once": the next connection is not dropped
    second.bind()
    for _ in range(4):
        second.submit(registered_delivery=0)
    assert [second.read()[1] for _ in range(4)] == [ESME_ROK] * 4


def test_unknown_commands_get_a_generic_nack(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    client = esme(smsc())
    client.bind()
    sequence = client.send(0x00000099)
    assert client.read()[:3] == (GENERIC_NACK, ESME_RINVCMDID, sequence)


def test_enquire_link_is_answered_and_unbind_closes(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    simulator = smsc()
    client = esme(simulator)
    sequence = client.send(ENQUIRE_LINK)  # allowed before bind, too
    assert client.read()[:3] == (ENQUIRE_LINK_RESP, ESME_ROK, sequence)
    client.bind()
    sequence = client.send(UNBIND)
    assert client.read()[:3] == (UNBIND_RESP, ESME_ROK, sequence)
    assert client.sock.recv(1) == b""
    assert simulator.stats().enquire_links == 1


def test_every_part_of_a_concatenated_message_gets_its_own_id_and_receipt(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    simulator = smsc()
    client = esme(simulator)
    client.bind()
    for n in (1, 2, 3):
        client.submit(bytes((5, 0, 3, 0x42, 3, n)) + f"part {n}".encode(), esm_class=ESM_UDHI)
    pdus = [client.read() for _ in range(6)]
    ids = [read_cstring(body) for command_id, _, _, body in pdus if command_id == SUBMIT_SM_RESP]
    receipted = [
        read_cstring(decode_short_message(body).tlvs[TAG_RECEIPTED_MESSAGE_ID])
        for command_id, _, _, body in pdus
        if command_id == DELIVER_SM
    ]
    received: list[ReceivedSubmit] = simulator.received
    assert len(set(ids)) == 3 and sorted(receipted) == sorted(ids)
    assert [(r.udh, r.short_message[6:]) for r in received] == [((0x42, 3, n), f"part {n}".encode()) for n in (1, 2, 3)]


def test_receipts_wait_for_a_receiver_and_unanswered_ones_are_redelivered(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    simulator = smsc()
    transmitter = esme(simulator)
    transmitter.bind(BIND_TRANSMITTER)
    transmitter.submit()
    message_id = read_cstring(transmitter.read()[3])
    transmitter.send(ENQUIRE_LINK)
    assert transmitter.read()[0] == ENQUIRE_LINK_RESP  # nothing but that: a transmitter gets no receipts
    assert simulator.stats().deliveries_held == 1

    receiver = esme(simulator)
    receiver.bind(BIND_RECEIVER)
    command_id, _, _, body = receiver.read()
    assert command_id == DELIVER_SM and read_cstring(decode_short_message(body).tlvs[TAG_RECEIPTED_MESSAGE_ID]) == message_id
    receiver.close()  # without answering it

    again = esme(simulator)
    again.bind(BIND_RECEIVER)
    command_id, _, sequence, body = again.read()
    assert command_id == DELIVER_SM and read_cstring(decode_short_message(body).tlvs[TAG_RECEIPTED_MESSAGE_ID]) == message_id
    assert simulator.stats().receipts_sent == 2


def test_a_mobile_originated_message_is_sent_in_ucs2_when_not_ascii(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    simulator = smsc()
    client = esme(simulator)
    client.bind()
    simulator.send_mo("13800138000", "10690001", "退订")
    command_id, _, _, body = client.read()
    mo = decode_short_message(body)
    assert command_id == DELIVER_SM
    assert (mo.esm_class, mo.data_coding, mo.short_message.decode("utf-16-be")) == (0, 8, "退订")
    assert (mo.source_addr, mo.destination_addr) == ("13800138000", "10690001")


def test_drop_connections_resets_every_link(smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]) -> None:
    simulator = smsc()
    clients = [esme(simulator) for _ in range(3)]
    for client in clients:
        client.bind()
    simulator.drop_connections()
    for client in clients:
        with pytest.raises(OSError):
            client.read()
    assert simulator.stats().connections == 0


def test_stop_closes_the_listening_socket() -> None:
    with SMSCSimulator() as simulator:
        port = simulator.port
        assert simulator.running
    assert not simulator.running
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_a_third_party_client_can_bind_submit_and_get_its_receipt(smsc: Callable[..., SMSCSimulator]) -> None:
    """smpplib's own client, not our codec, on both ends of the conversation."""
    import smpplib.client

    simulator = smsc()
    receipts: list[Any] = []
    client = smpplib.client.Client("127.0.0.1", simulator.port, timeout=3, allow_unknown_opt_params=True)
    client.set_message_received_handler(lambda pdu: receipts.append(pdu))
    client.set_message_sent_handler(lambda pdu: None)
    client.connect()
    try:
        client.bind_transceiver(system_id="backoffice", password="secret")
        client.send_message(source_addr="10690001", destination_addr="13800138000", short_message=b"hello", registered_delivery=1)
        while not receipts:
            client.read_once()
        [receipt] = receipts
        assert receipt.receipted_message_id.decode() == simulator.received[0].message_id
        assert receipt.message_state == 2 and receipt.esm_class == 4
        client.unbind()
    finally:
        client.disconnect()


OUT_OF_DESCRIPTORS_SERVER = """
import resource, time
resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
from dispatch.simulator import SMSCSimulator
simulator = SMSCSimulator().start()
print(simulator.port, flush=True)
while simulator.running:
    time.sleep(0.1)
print("I/O thread ended", flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_running_out_of_descriptors_keeps_the_bound_links_and_accepts_again_later() -> None:
    """A client opening more connections than the process has descriptors for must not end the
    I/O thread (and with it every bound link); once descriptors are free, binds work again."""
    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "-c", OUT_OF_DESCRIPTORS_SERVER]
    clients: list[RawEsme] = []
    flood: list[socket.socket] = []
    with subprocess.Popen(command, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            clients.append(RawEsme(port))
            assert clients[0].bind() == ESME_ROK
            for _ in range(100):  # more than the 64 descriptors the server may open; the rest wait in the backlog
                flood.append(socket.create_connection(("127.0.0.1", port), timeout=3))
            time.sleep(0.5)
            sequence = clients[0].send(ENQUIRE_LINK)
            assert clients[0].read()[:3] == (ENQUIRE_LINK_RESP, ESME_ROK, sequence)
            for sock in flood:
                sock.close()
            clients.append(RawEsme(port))
            assert clients[1].bind() == ESME_ROK  # accepting resumed
            assert server.poll() is None
        finally:
            for closable in [*flood, *clients]:
                closable.close()
            server.kill()


def test_a_client_that_sends_without_reading_is_not_read_until_its_answers_drain(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """Back-pressure: the answers waiting for a client that does not read stay under a limit (the
    simulator stops reading its requests) instead of growing with all it sends; none is lost."""
    simulator = smsc()
    client = esme(simulator)
    client.bind()
    burst = encode_pdu(ENQUIRE_LINK, 7) * 4096  # 64 KiB; each answer is as long as its request
    client.sock.setblocking(False)
    sent = 0
    while sent < 24 << 20 and select.select([], [client.sock], [], 0.5)[1]:  # until the simulator stops taking them
        sent += client.sock.send(burst)
    time.sleep(0.3)
    assert sent > 2 * OUTPUT_LIMIT  # (enough sent to matter)
    assert simulator.stats().output_buffered < 2 * OUTPUT_LIMIT  # one read's answers may go past the limit

    client.sock.settimeout(5)
    received = 0
    while received < sent:  # reading the answers lets the simulator read the rest of the requests
        received += len(client.sock.recv(1 << 20))
    assert received == sent and simulator.stats().enquire_links == sent // 16


def test_deliveries_beyond_the_window_wait_for_answers(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """A receiver that does not answer gets `delivery_window` deliver_sm, not all there are."""
    simulator = smsc(delivery_window=3)
    client = esme(simulator)
    client.bind(BIND_RECEIVER)
    for n in range(5):
        simulator.send_mo("13800138000", "10690001", f"reply {n}")
    first = [client.read() for _ in range(3)]
    client.sock.settimeout(0.3)
    with pytest.raises(TimeoutError):
        client.read()
    stats = simulator.stats()
    assert (stats.deliveries_unacked, stats.deliveries_held) == (3, 2)

    client.sock.settimeout(3)
    for _, _, sequence, _ in first:
        client.send(DELIVER_SM_RESP, b"\0", sequence=sequence)
    rest = [client.read() for _ in range(2)]
    texts = [decode_short_message(body).short_message for _, _, _, body in first + rest]
    assert texts == [f"reply {n}".encode() for n in range(5)]
    assert simulator.stats().deliveries_held == 0


def test_receipts_held_for_a_transmitter_are_capped_and_the_dropped_ones_counted(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """Receipts nobody can receive are held up to `keep_held`; beyond it the oldest go, and say so."""
    simulator = smsc(keep_held=3)
    transmitter = esme(simulator)
    transmitter.bind(BIND_TRANSMITTER)
    for _ in range(5):
        transmitter.submit()
    ids = [read_cstring(transmitter.read()[3]) for _ in range(5)]
    transmitter.send(ENQUIRE_LINK)
    assert transmitter.read()[0] == ENQUIRE_LINK_RESP
    stats = simulator.stats()
    assert (stats.deliveries_held, stats.deliveries_dropped) == (3, 2)

    receiver = esme(simulator)
    receiver.bind(BIND_RECEIVER)
    receipts = [decode_short_message(receiver.read()[3]) for _ in range(3)]
    assert [read_cstring(r.tlvs[TAG_RECEIPTED_MESSAGE_ID]) for r in receipts] == ids[2:]  # the oldest went


def test_a_restart_with_the_same_seed_hands_out_new_message_ids(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """The seed repeats the faults, not the ids: a restarted simulator must not reuse the ids of
    messages whose receipts may still be expected."""
    ids = []
    for _ in range(2):
        client = esme(smsc(seed=42))
        client.bind()
        client.submit(registered_delivery=0)
        ids.append(read_cstring(client.read()[3]))
    assert ids[0] != ids[1]


def test_an_unknown_command_with_the_response_bit_gets_a_generic_nack(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """SMPP answers an invalid command id with generic_nack whether or not bit 31 is set; it was
    dropped without a word. A generic_nack itself is not answered (no nack loop)."""
    client = esme(smsc())
    client.bind()
    client.send(GENERIC_NACK, sequence=4)
    client.send(0x80000999, sequence=5)
    assert client.read()[:3] == (GENERIC_NACK, ESME_RINVCMDID, 5)


def test_unbind_before_bind_is_refused_and_the_connection_stays_open(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    client = esme(smsc())
    sequence = client.send(UNBIND)
    assert client.read()[:3] == (UNBIND_RESP, ESME_RINVBNDSTS, sequence)
    assert client.bind() == ESME_ROK


def test_a_bad_command_length_behind_a_good_pdu_is_answered_at_once(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """Both in one write: the garbage was answered only when the client sent something more."""
    client = esme(smsc())
    client.bind()
    client.sock.sendall(encode_pdu(ENQUIRE_LINK, 9) + bytes.fromhex("00000005 00000015 00000000 0000000a"))
    assert client.read()[:3] == (ENQUIRE_LINK_RESP, ESME_ROK, 9)
    assert client.read()[:2] == (GENERIC_NACK, ESME_RINVCMDLEN)
    assert client.sock.recv(1) == b""  # and the connection closed: it cannot be resynchronised


def test_with_response_delay_the_answers_before_an_injected_disconnect_still_go_out(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """The held answers died with the link, so the client saw none of the three accepted submits answered."""
    simulator = smsc(response_delay=0.2, disconnect_after=3)
    client = esme(simulator)
    client.bind()
    sm = encode_short_message(ShortMessagePdu("10690001", "13800138000", b"hi", registered_delivery=0))
    client.sock.sendall(b"".join(encode_pdu(SUBMIT_SM, n, sm) for n in (10, 11, 12)))
    answers = []
    with pytest.raises(OSError):  # reset by peer, or end of stream
        while True:
            answers.append(client.read()[:3])
    assert answers == [(SUBMIT_SM_RESP, ESME_ROK, 10), (SUBMIT_SM_RESP, ESME_ROK, 11)]
    assert len(simulator.received) == 3


def test_receipts_redelivered_when_a_receiver_unbinds_go_out_at_once(
    smsc: Callable[..., SMSCSimulator], esme: Callable[[SMSCSimulator], RawEsme]
) -> None:
    """The other receiver was written to while the loop flushed the unbinding one, and waited for
    the next turn: up to the one-second select timeout."""
    simulator = smsc()
    first, second = esme(simulator), esme(simulator)
    first.bind()
    first.submit()
    assert sorted(first.read()[0] for _ in range(2)) == [DELIVER_SM, SUBMIT_SM_RESP]  # the receipt, not answered
    second.bind(BIND_RECEIVER)
    first.send(UNBIND)
    started = time.monotonic()
    assert second.read()[0] == DELIVER_SM
    assert time.monotonic() - started < 0.8  # (not the 1 s select timeout; room for a loaded machine)
