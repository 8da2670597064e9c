"""A scripted, hostile SMSC over raw TCP, for the tests of what a misbehaving SMSC may send (not a test module)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from dispatch.smpp_link import (
    BIND_TRANSCEIVER_RESP,
    DELIVER_SM,
    ENQUIRE_LINK,
    ENQUIRE_LINK_RESP,
    ESM_DELIVERY_RECEIPT,
    SUBMIT_SM,
    SUBMIT_SM_RESP,
    TAG_MESSAGE_PAYLOAD,
    UNBIND,
    UNBIND_RESP,
    ShortMessagePdu,
    cstring,
    decode_short_message,
    encode_pdu,
    encode_short_message,
    take_pdu,
)

Pdu = tuple[int, int, int, bytes]


class Closed(Exception):
    pass


@dataclass
class Conn:
    smsc: HostileSmsc
    sock: socket.socket
    index: int
    buf: bytearray = field(default_factory=bytearray)

    def read(self, timeout: float | None = 10.0) -> Pdu:
        self.sock.settimeout(timeout)
        while (pdu := take_pdu(self.buf)) is None:
            data = self.sock.recv(65536)
            if not data:
                raise Closed()
            self.buf += data
        self.smsc.seen.append((self.index, *pdu))
        return pdu

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def bind(self, body: bytes = cstring("HOSTILE"), status: int = 0, command_id: int = BIND_TRANSCEIVER_RESP) -> int:
        _, _, sequence, _ = self.read()
        self.send(encode_pdu(command_id, sequence, body if status == 0 or command_id != BIND_TRANSCEIVER_RESP else b"", status))
        return sequence

    def serve(self, answer: Callable[[Conn, int, bytes, int], bytes | None], *, idle: float = 30.0) -> None:
        """Answer submit_sm with `answer(conn, sequence, body, n)` (bytes to send, or None for
        nothing), enquire_link and unbind like a normal SMSC; everything else is recorded."""
        while True:
            command_id, _, sequence, body = self.read(timeout=idle)
            if command_id == SUBMIT_SM:
                n = len(self.smsc.submits)
                self.smsc.submits.append((self.index, sequence, decode_short_message(body)))
                out = answer(self, sequence, body, n)
                if out:
                    self.send(out)
            elif command_id == ENQUIRE_LINK:
                self.send(encode_pdu(ENQUIRE_LINK_RESP, sequence))
            elif command_id == UNBIND:
                self.send(encode_pdu(UNBIND_RESP, sequence))
                return


class HostileSmsc:
    """Accepts any number of connections; `script(conn)` runs for each in a thread of its own."""

    def __init__(self, script: Callable[[Conn], None]) -> None:
        self.script = script
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self.seen: list[tuple[int, int, int, int, bytes]] = []  # (connection, command_id, status, sequence, body)
        self.submits: list[tuple[int, int, ShortMessagePdu]] = []
        self.errors: list[BaseException] = []
        self.connections = 0
        self.stopping = threading.Event()
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self.accept, daemon=True)
        self.thread.start()

    def accept(self) -> None:
        while not self.stopping.is_set():
            try:
                sock, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            self.socks.append(sock)
            conn = Conn(self, sock, self.connections)
            threading.Thread(target=self.run, args=(conn,), daemon=True).start()

    def run(self, conn: Conn) -> None:
        try:
            self.script(conn)
        except (Closed, ConnectionError, TimeoutError, OSError):
            pass
        except BaseException as exc:  # noqa: BLE001
            self.errors.append(exc)
        finally:
            conn.sock.close()

    def stop(self) -> None:
        self.stopping.set()
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.close()
        self.listener.close()
        self.thread.join(timeout=2)


def ok(message_id: bytes) -> Callable[[Conn, int, bytes, int], bytes]:
    return lambda conn, sequence, body, n: encode_pdu(SUBMIT_SM_RESP, sequence, message_id)


def receipt(sequence: int, message_id: str, stat: str = "DELIVRD") -> bytes:
    text = f"id:{message_id} sub:001 dlvrd:001 submit date:2611231000 done date:2611231000 stat:{stat} err:000 text:".encode("latin-1")
    sm = ShortMessagePdu(source_addr="8613800138000", destination_addr="10690000", short_message=text, esm_class=ESM_DELIVERY_RECEIPT)
    if len(text) > 254:
        sm.short_message, sm.tlvs = b"", {TAG_MESSAGE_PAYLOAD: text}
    return encode_pdu(DELIVER_SM, sequence, encode_short_message(sm))


@pytest.fixture
def hostile() -> Iterator[Callable[..., HostileSmsc]]:
    """Hostile SMSCs made by a test, stopped after it."""
    made: list[HostileSmsc] = []

    def make(script: Callable[[Conn], None]) -> HostileSmsc:
        made.append(HostileSmsc(script))
        return made[-1]

    yield make
    for smsc in made:
        smsc.stop()
