"""The ESME side of SMPP 3.4: a windowed, single-threaded transceiver link speaking through smpplib.

smpplib (the product's SMPP library) builds the PDUs the link sends and parses the PDUs it reads,
with its command classes and TLV table: bind, submit_sm_resp, deliver_sm (receipted_message_id,
message_state, message_payload), deliver_sm_resp, enquire_link, unbind, generic_nack and their
responses. One exception: submit_sm, the PDU sent once per part, is encoded by hand
(`encode_submit`, tested byte for byte against smpplib's): with smpplib's encoder the link
reached only a third to a half of the simulator's rate, against a target of 60 % (see "PDUs
through smpplib").

The link keeps what smpplib's `Client` lacks (NOTES.md, SMPP): a non-blocking socket, a send
window, batched writes, throttling with backoff, reconnects, enquire_link, its own sequence
numbers, and the framing (`split_pdus`, `take_pdu`: smpplib reads PDUs with blocking `recv` calls).

The compact hand codec under "Wire helpers" is the simulator's server side (`dispatch/simulator.py`)
and the raw-wire tests' client.

Driving the link (one thread, one socket; see `SmppLink.run_once`)::

    link = SmppLink(config, on_resp=record_resp, on_receipt=record_receipt, on_mo=record_mo,
                    on_link_down=mark_possibly_sent)
    with link:                                   # close(): drain, unbind, report what is left
        while not stopping:
            link.run_once(claim_parts, timeout=0.1)   # claim_parts(n) -> at most n OutgoingPart
"""

from __future__ import annotations

import heapq
import logging
import re
import select
import socket
import struct
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Literal

from smpplib import command as smpp_command
from smpplib import command_codes as smpp_command_codes
from smpplib import consts as smpp_consts
from smpplib import exceptions as smpp_exceptions
from smpplib import smpp
from smpplib.ptypes import ostr as smpp_ostr

from dispatch.segments import decode_gsm7

logger = logging.getLogger(__name__)

# --- command ids (SMPP 3.4, 5.1.2.1), from smpplib's table ---------------------------------------
GENERIC_NACK: Final[int] = smpp_command_codes.get_command_code("generic_nack")
BIND_RECEIVER: Final[int] = smpp_command_codes.get_command_code("bind_receiver")
BIND_RECEIVER_RESP: Final[int] = smpp_command_codes.get_command_code("bind_receiver_resp")
BIND_TRANSMITTER: Final[int] = smpp_command_codes.get_command_code("bind_transmitter")
BIND_TRANSMITTER_RESP: Final[int] = smpp_command_codes.get_command_code("bind_transmitter_resp")
SUBMIT_SM: Final[int] = smpp_command_codes.get_command_code("submit_sm")
SUBMIT_SM_RESP: Final[int] = smpp_command_codes.get_command_code("submit_sm_resp")
DELIVER_SM: Final[int] = smpp_command_codes.get_command_code("deliver_sm")
DELIVER_SM_RESP: Final[int] = smpp_command_codes.get_command_code("deliver_sm_resp")
DATA_SM: Final[int] = smpp_command_codes.get_command_code("data_sm")
DATA_SM_RESP: Final[int] = smpp_command_codes.get_command_code("data_sm_resp")
UNBIND: Final[int] = smpp_command_codes.get_command_code("unbind")
UNBIND_RESP: Final[int] = smpp_command_codes.get_command_code("unbind_resp")
BIND_TRANSCEIVER: Final[int] = smpp_command_codes.get_command_code("bind_transceiver")
BIND_TRANSCEIVER_RESP: Final[int] = smpp_command_codes.get_command_code("bind_transceiver_resp")
ENQUIRE_LINK: Final[int] = smpp_command_codes.get_command_code("enquire_link")
ENQUIRE_LINK_RESP: Final[int] = smpp_command_codes.get_command_code("enquire_link_resp")
RESPONSE_BIT: Final = 0x80000000

# --- command_status values, from smpplib so the names match its descriptions ---------------------
ESME_ROK: Final[int] = smpp_consts.SMPP_ESME_ROK
ESME_RINVCMDLEN: Final[int] = smpp_consts.SMPP_ESME_RINVCMDLEN
ESME_RINVCMDID: Final[int] = smpp_consts.SMPP_ESME_RINVCMDID
ESME_RINVBNDSTS: Final[int] = smpp_consts.SMPP_ESME_RINVBNDSTS
ESME_RALYBND: Final[int] = smpp_consts.SMPP_ESME_RALYBND
ESME_RSYSERR: Final[int] = smpp_consts.SMPP_ESME_RSYSERR
ESME_RBINDFAIL: Final[int] = smpp_consts.SMPP_ESME_RBINDFAIL
ESME_RMSGQFUL: Final[int] = smpp_consts.SMPP_ESME_RMSGQFUL
ESME_RSUBMITFAIL: Final[int] = smpp_consts.SMPP_ESME_RSUBMITFAIL
ESME_RTHROTTLED: Final[int] = smpp_consts.SMPP_ESME_RTHROTTLED
ESME_RX_T_APPN: Final[int] = smpp_consts.SMPP_ESME_RX_T_APPN

# --- optional parameters (TLV tags), from smpplib's table ----------------------------------------
TAG_RECEIPTED_MESSAGE_ID: Final[int] = smpp_consts.OPTIONAL_PARAMS["receipted_message_id"]
TAG_SC_INTERFACE_VERSION: Final[int] = smpp_consts.OPTIONAL_PARAMS["sc_interface_version"]
TAG_MESSAGE_PAYLOAD: Final[int] = smpp_consts.OPTIONAL_PARAMS["message_payload"]
TAG_MESSAGE_STATE: Final[int] = smpp_consts.OPTIONAL_PARAMS["message_state"]

ESM_UDHI: Final = 0x40
ESM_TYPE_MASK: Final = 0x3C
ESM_DELIVERY_RECEIPT: Final = 0x04
ESM_INTERMEDIATE_NOTIFICATION: Final = 0x20
DATA_CODING_DEFAULT: Final = 0
DATA_CODING_UCS2: Final = 8

#: message_state values (SMPP 3.4, 5.2.28) and the `stat:` words receipts use for them.
MESSAGE_STATES: Final[dict[int, str]] = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
STATE_OF_STAT: Final[dict[str, int]] = {stat: state for state, stat in MESSAGE_STATES.items()}

MAX_PDU_LENGTH: Final = 64 * 1024
_HEADER = struct.Struct(">IIII")
_TLV_HEADER = struct.Struct(">HH")


def describe_status(status: int) -> str:
    """Human-readable name of a command_status, for logs and the send log."""
    text: str = smpp_consts.DESCRIPTIONS.get(status, "unknown status")
    return f"0x{status:08X} {text}"


def doubling_delay(first: float, times: int, most: float) -> float:
    """The wait before try `times` + 1 of something that failed `times` (≥ 1) times in a row:
    `first`, twice as long after each further failure, at most `most`."""
    return min(most, first * 2 ** min(times - 1, 30))


#: submit_sm_resp statuses that say the SMSC did not take a part this time, for a reason that
#: passes, about that part and not the link: its own failure (ESME_RSYSERR, a database blink or a
#: failover; also what a generic_nack without a status is taken for), one destination's queue
#: full (ESME_RMSGQFUL: a handset off for days) and a temporary application error
#: (ESME_RX_T_APPN). The part goes again later rather than its message being refunded
#: (`backoffice.services.dispatcher`, DISPATCH_TEMPORARY_STATUSES). ESME_RTHROTTLED, the SMSC's
#: limit on the whole link, is the link's own business: it pauses the link (see SmppLink).
TEMPORARY_STATUSES: Final = frozenset({ESME_RSYSERR, ESME_RMSGQFUL, ESME_RX_T_APPN})


def parse_command_statuses(text: str) -> frozenset[int]:
    """Command statuses from a comma-separated list of hex (0x08), decimal (8) or names
    (ESME_RSYSERR, or RSYSERR); "none" is the empty set. ValueError (in Chinese, naming the
    entry) for anything else, and for 0 (ESME_ROK, which is no error)."""
    if text.strip().lower() == "none":
        return frozenset()
    statuses = set()
    for entry in (item.strip() for item in text.split(",")):
        if not entry:
            continue
        name = entry.upper().removeprefix("SMPP_").removeprefix("ESME_")
        try:
            if entry[:2].lower() == "0x":
                status = int(entry[2:], 16)
            elif entry.isascii() and entry.isdigit():
                status = int(entry, 10)
            else:
                status = int(getattr(smpp_consts, f"SMPP_ESME_{name}"))
        except (ValueError, AttributeError):
            raise ValueError(
                f"“{entry}” 不是 SMPP 错误码：应为十六进制（如 0x08）、十进制（如 8）或名称（如 ESME_RSYSERR），以逗号分隔"
            ) from None
        if status == ESME_ROK:
            raise ValueError(f"“{entry}” 是 ESME_ROK（提交成功），不是错误码")
        if not 0 < status <= 0xFFFFFFFF:
            raise ValueError(f"“{entry}” 超出 SMPP 错误码的范围（0x00000001–0xFFFFFFFF）")
        statuses.add(status)
    if not statuses:
        raise ValueError("没有列出任何 SMPP 错误码（不要任何临时错误码时写 none）")
    return frozenset(statuses)


# =================================================================================================
# Wire helpers: the simulator's codec (server side), the raw-wire tests' client, and the framing
# =================================================================================================


class PduError(ValueError):
    """A PDU that cannot be decoded (bad length, missing NUL, truncated body)."""


class NotADelivery(PduError):
    """A deliver_sm that is neither a receipt nor a reply (an SME acknowledgement): acknowledged and dropped."""


@dataclass(slots=True)
class ShortMessagePdu:
    """The body of submit_sm and deliver_sm, which share one layout (SMPP 3.4, 4.4.1 and 4.6.1)."""

    source_addr: str = ""
    destination_addr: str = ""
    short_message: bytes = b""
    esm_class: int = 0
    data_coding: int = 0
    registered_delivery: int = 0
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    service_type: str = ""
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    replace_if_present_flag: int = 0
    sm_default_msg_id: int = 0
    tlvs: dict[int, bytes] = field(default_factory=dict)

    def payload(self) -> bytes:
        """The message bytes, from short_message or, when that is empty, the message_payload TLV."""
        return self.short_message or self.tlvs.get(TAG_MESSAGE_PAYLOAD, b"")


@dataclass(frozen=True, slots=True)
class BindRequest:
    """A bind_transmitter / bind_receiver / bind_transceiver body."""

    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = 0x34
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""


def encode_pdu(command_id: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    """One PDU: the 16-byte header and its body."""
    return _HEADER.pack(16 + len(body), command_id, status, sequence) + body


def cstring(value: str) -> bytes:
    """A C-octet string (NUL-terminated, Latin-1: SMPP addresses and ids are ASCII)."""
    return value.encode("latin-1") + b"\0"


def _read_cstring(body: bytes, pos: int) -> tuple[str, int]:
    end = body.index(0, pos)
    return body[pos:end].decode("latin-1"), end + 1


def read_cstring(body: bytes) -> str:
    """The first C-octet string of a body, or "" when the body is empty (e.g. an error response)."""
    end = body.find(0)
    return (body if end < 0 else body[:end]).decode("latin-1")


def encode_tlv(tag: int, value: bytes) -> bytes:
    """One optional parameter."""
    return _TLV_HEADER.pack(tag, len(value)) + value


def decode_tlvs(body: bytes, pos: int = 0) -> dict[int, bytes]:
    """Optional parameters from `pos` to the end of the body; unknown tags are kept, as the spec asks."""
    tlvs: dict[int, bytes] = {}
    end = len(body)
    while pos + 4 <= end:
        tag, length = _TLV_HEADER.unpack_from(body, pos)
        pos += 4
        if pos + length > end:
            raise PduError(f"TLV 0x{tag:04X} overruns the PDU")
        tlvs[tag] = body[pos : pos + length]
        pos += length
    if pos != end:
        raise PduError("trailing bytes after the last TLV")
    return tlvs


def _addresses(sm: ShortMessagePdu) -> list[bytes]:
    """The fields submit_sm, deliver_sm and data_sm begin with: service type, source, destination."""
    return [
        cstring(sm.service_type),
        bytes((sm.source_addr_ton, sm.source_addr_npi)),
        cstring(sm.source_addr),
        bytes((sm.dest_addr_ton, sm.dest_addr_npi)),
        cstring(sm.destination_addr),
    ]


def encode_short_message(sm: ShortMessagePdu) -> bytes:
    """A submit_sm / deliver_sm body; more than 254 bytes must travel in message_payload."""
    if len(sm.short_message) > 254:
        raise ValueError("short_message longer than 254 bytes: use the message_payload TLV")
    parts = [
        *_addresses(sm),
        bytes((sm.esm_class, sm.protocol_id, sm.priority_flag)),
        cstring(sm.schedule_delivery_time),
        cstring(sm.validity_period),
        bytes((sm.registered_delivery, sm.replace_if_present_flag, sm.data_coding, sm.sm_default_msg_id, len(sm.short_message))),
        sm.short_message,
    ]
    parts += [encode_tlv(tag, value) for tag, value in sm.tlvs.items()]
    return b"".join(parts)


def encode_data_sm(sm: ShortMessagePdu) -> bytes:
    """A data_sm body with the fields of `sm`: its text (short_message or message_payload) goes in
    message_payload, data_sm having no short_message field."""
    tlvs = dict(sm.tlvs)
    if sm.short_message:
        tlvs[TAG_MESSAGE_PAYLOAD] = sm.short_message
    parts = [
        *_addresses(sm),
        bytes((sm.esm_class, sm.registered_delivery, sm.data_coding)),
    ]
    parts += [encode_tlv(tag, value) for tag, value in tlvs.items()]
    return b"".join(parts)


def decode_short_message(body: bytes) -> ShortMessagePdu:
    """Parse a submit_sm / deliver_sm body; raises PduError on a malformed one."""
    try:
        service_type, pos = _read_cstring(body, 0)
        source_ton, source_npi = body[pos], body[pos + 1]
        source, pos = _read_cstring(body, pos + 2)
        dest_ton, dest_npi = body[pos], body[pos + 1]
        destination, pos = _read_cstring(body, pos + 2)
        esm_class, protocol_id, priority = body[pos], body[pos + 1], body[pos + 2]
        schedule, pos = _read_cstring(body, pos + 3)
        validity, pos = _read_cstring(body, pos)
        registered, replace, data_coding, default_id, sm_length = body[pos : pos + 5]
        pos += 5
        short_message = body[pos : pos + sm_length]
        if len(short_message) != sm_length:
            raise PduError("short_message truncated")
        tlvs = decode_tlvs(body, pos + sm_length) if pos + sm_length < len(body) else {}
    except (IndexError, ValueError) as exc:  # ValueError covers a missing NUL and too few bytes to unpack
        raise PduError(f"malformed short message PDU: {exc}") from exc
    return ShortMessagePdu(
        source_addr=source,
        destination_addr=destination,
        short_message=short_message,
        esm_class=esm_class,
        data_coding=data_coding,
        registered_delivery=registered,
        source_addr_ton=source_ton,
        source_addr_npi=source_npi,
        dest_addr_ton=dest_ton,
        dest_addr_npi=dest_npi,
        service_type=service_type,
        protocol_id=protocol_id,
        priority_flag=priority,
        schedule_delivery_time=schedule,
        validity_period=validity,
        replace_if_present_flag=replace,
        sm_default_msg_id=default_id,
        tlvs=tlvs,
    )


def encode_bind(request: BindRequest) -> bytes:
    """A bind_* body."""
    return b"".join((
        cstring(request.system_id),
        cstring(request.password),
        cstring(request.system_type),
        bytes((request.interface_version, request.addr_ton, request.addr_npi)),
        cstring(request.address_range),
    ))  # fmt: skip


def decode_bind(body: bytes) -> BindRequest:
    """Parse a bind_* body; raises PduError on a malformed one."""
    try:
        system_id, pos = _read_cstring(body, 0)
        password, pos = _read_cstring(body, pos)
        system_type, pos = _read_cstring(body, pos)
        version, ton, npi = body[pos], body[pos + 1], body[pos + 2]
        address_range, _ = _read_cstring(body, pos + 3)
    except (IndexError, ValueError) as exc:
        raise PduError(f"malformed bind PDU: {exc}") from exc
    return BindRequest(system_id, password, system_type, version, ton, npi, address_range)


def take_pdu(buffer: bytearray) -> tuple[int, int, int, bytes] | None:
    """Take one complete PDU off the front of `buffer`, or None if it does not hold one yet."""
    if len(buffer) < 16:
        return None
    length, command_id, status, sequence = _HEADER.unpack_from(buffer, 0)
    if length < 16 or length > MAX_PDU_LENGTH:
        raise PduError(f"command_length {length} out of range")
    if len(buffer) < length:
        return None
    body = bytes(buffer[16:length])
    del buffer[:length]
    return command_id, status, sequence, body


def split_pdus(buffer: bytearray) -> list[tuple[int, int, int, bytes]]:
    """Take every complete PDU off the front of `buffer` as (command_id, status, sequence, body).

    A partial PDU stays in the buffer for the next read; a length outside 16..64 KiB raises
    PduError, after which the connection cannot be resynchronised and must be closed. The PDUs
    before such a header are returned first (acted on: a response the SMSC sent is not lost with
    the garbage after it); the next call raises.
    """
    pdus: list[tuple[int, int, int, bytes]] = []
    pos, size = 0, len(buffer)
    while size - pos >= 16:
        length, command_id, status, sequence = _HEADER.unpack_from(buffer, pos)
        if length < 16 or length > MAX_PDU_LENGTH:
            if pdus:
                break
            raise PduError(f"command_length {length} out of range")
        if size - pos < length:
            break
        pdus.append((command_id, status, sequence, bytes(buffer[pos + 16 : pos + length])))
        pos += length
    if pos:
        del buffer[:pos]
    return pdus


def parse_concatenation(esm_class: int, payload: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """((reference, total, sequence) or None, text bytes) from a message that may start with a UDH.

    Understands the 8-bit (IE 0x00) and 16-bit (IE 0x08) concatenation elements; other elements
    are skipped. Without the UDHI bit in esm_class the payload is returned untouched.
    """
    if not esm_class & ESM_UDHI or not payload:
        return None, payload
    header_length = payload[0]
    if header_length + 1 > len(payload):
        return None, payload
    header, text = payload[1 : header_length + 1], payload[header_length + 1 :]
    pos, concat = 0, None
    while pos + 2 <= len(header):
        element, length = header[pos], header[pos + 1]
        value = header[pos + 2 : pos + 2 + length]
        if len(value) < length:  # an element cut short by the header's end: no concatenation read from it
            break
        if element == 0x00 and length == 3:
            concat = (value[0], value[1], value[2])
        elif element == 0x08 and length == 4:
            concat = ((value[0] << 8) | value[1], value[2], value[3])
        pos += 2 + length
    if concat is not None and not 1 <= concat[2] <= concat[1]:  # no such part (3GPP 23.040: the element is ignored)
        concat = None
    if concat is not None and concat[1] == 1:  # a reply of one part: nothing to wait for
        concat = None
    return concat, text


# What a reply's text may not carry to the people who read it: C0 and C1 controls (but line
# breaks and tabs), and the invisible format characters that reorder or hide text (direction
# overrides and isolates, zero-width characters, the BOM). Outgoing content is refused for its
# C0 controls and direction overrides (backoffice.services.messaging), a narrower set: what a
# customer may write is checked there, what a handset sent is only made safe to show here.
_UNSHOWABLE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")


def decode_text(data_coding: int, data: bytes) -> str:
    """A reply's text from its bytes, fit to store and show (never a NUL, a control character or a
    direction override: those become U+FFFD or go).

    UCS-2 for 8, GBK for 15 (what Chinese gateways mean by it), Latin-1 for 3, ASCII for 1. The
    SMSC default alphabet (0) is read as the GSM 7-bit septets submit_sm sends in it ("@" is 0x00
    there); bytes that cannot be septets are read as UTF-8 when they are (some gateways send it so),
    else Latin-1. Other codings are read as UTF-8 or Latin-1 the same way.
    """
    data = data.rstrip(b"\0") if data_coding != DATA_CODING_UCS2 else data  # a C string's NUL (in GSM an "@": rarely last)
    if data_coding == DATA_CODING_UCS2:
        text = data.decode("utf-16-be", errors="replace")
    elif data_coding == 0x0F:
        text = data.decode("gbk", errors="replace")
    elif data_coding == 0x03:
        text = data.decode("latin-1")
    elif data_coding == 0x01:
        text = data.decode("ascii", errors="replace")
    else:
        text = _gsm7_or_utf8(data) if data_coding == DATA_CODING_DEFAULT else _utf8_or_latin1(data)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return _UNSHOWABLE.sub("\ufffd", _INVISIBLE.sub("", text))


def _gsm7_or_utf8(data: bytes) -> str:
    try:
        return decode_gsm7(data)
    except ValueError:
        return _utf8_or_latin1(data)


def _utf8_or_latin1(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


# =================================================================================================
# Message ids
# =================================================================================================

_HEX = re.compile(r"[0-9a-f]+")
MAX_MESSAGE_ID_LENGTH: Final = 64  # SMPP 3.4 allows 65 octets with the NUL; the database keeps 64


def normalise_message_id(message_id: str) -> str:
    """The form submit ids are stored and compared in: trimmed, lower case, no leading zeros, no
    control characters, at most 64 characters (the column; SMPP 3.4 allows 64 and its NUL).

    SMSCs are inconsistent about case and zero-padding between submit_sm_resp and the receipt.
    """
    text = _UNSHOWABLE.sub("", message_id).strip().lower()
    stripped = text.lstrip("0")
    return (stripped or ("0" if text else ""))[:MAX_MESSAGE_ID_LENGTH]  # longer: the same 64 on both sides


def message_id_keys(message_id: str) -> tuple[str, ...]:
    """Normalised keys under which a receipt's id may have been stored, most likely first.

    The id itself, then its other readings: decimal digits read as a number and written in hex
    ("123" -> "7b"), hex read as a number and written in decimal ("7b" -> "123"), because some
    SMSCs answer submit_sm in hex and report receipts in decimal or the other way round. Try the
    keys in order and stop at the first hit: later keys are guesses.
    """
    key = normalise_message_id(message_id)
    keys = [key]
    if key and _HEX.fullmatch(key):
        if key.isdigit():
            keys.append(format(int(key), "x"))
        keys.append(str(int(key, 16)))
    return tuple(dict.fromkeys(keys))


#: How a receipt's id relates to the submit_sm_resp id (SMSC_RECEIPT_ID_FORMAT): "auto" tries the
#: id itself first and its other-base readings only as guesses; "same" never guesses; "decimal"
#: (receipts in decimal for hex submit ids) and "hex" (the other way round) convert, never guess.
RECEIPT_ID_FORMATS: Final = ("auto", "same", "decimal", "hex")


def receipt_id_keys(message_id: str, receipt_format: str = "auto") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(sure, guessed): the keys to look a receipt's id up under, and, with "auto", the keys of
    its other readings, which are guesses: with dense numeric ids one of them can be another
    message's id (decimal "291" is hex "123"), so a caller tries them only once the receipt's own
    submit_sm_resp cannot still be on its way."""
    if receipt_format == "auto":
        keys = message_id_keys(message_id)
        return keys[:1], keys[1:]
    key = normalise_message_id(message_id)
    if receipt_format == "decimal" and key.isascii() and key.isdigit():  # (not "²": int() refuses it)
        return (format(int(key), "x"),), ()
    if receipt_format == "hex" and _HEX.fullmatch(key):
        return (str(int(key, 16)),), ()
    return (key,), ()


def message_ids_match(submit_id: str, receipt_id: str) -> bool:
    """Whether a receipt id may refer to a submit id, tolerating case, zero-padding and hex/decimal."""
    return bool(set(message_id_keys(submit_id)) & set(message_id_keys(receipt_id)))


# =================================================================================================
# What the link hands to its caller
# =================================================================================================


@dataclass(frozen=True, slots=True)
class OutgoingPart:
    """One submit_sm to send: a single SMS or one part of a concatenated one (UDH already in the bytes).

    `key` is the caller's identity for the part (e.g. (message row id, part number)); the link
    hands it back untouched with the response or in the list of parts lost in flight.
    """

    key: Hashable
    source: str
    destination: str
    short_message: bytes
    data_coding: int = DATA_CODING_DEFAULT
    esm_class: int = 0
    registered_delivery: int = 1
    source_ton: int = 5
    source_npi: int = 0
    dest_ton: int = 1
    dest_npi: int = 1
    service_type: str = ""

    def __post_init__(self) -> None:
        if len(self.short_message) > 254:
            raise ValueError("a part carries at most 254 bytes (140 for one SMS); split it first")


def encode_submit(part: OutgoingPart, sequence: int) -> bytes:
    """A submit_sm PDU for a part, by hand: the bytes smpplib's SubmitSM generates (tested), at a tenth
    of its cost; the link's hot path (see "PDUs through smpplib")."""
    body = b"".join((
        part.service_type.encode("latin-1"), b"\0", bytes((part.source_ton, part.source_npi)),
        part.source.encode("latin-1"), b"\0", bytes((part.dest_ton, part.dest_npi)),
        part.destination.encode("latin-1"), b"\0",
        # esm_class, protocol_id, priority, empty schedule and validity, registered_delivery,
        # replace_if_present, data_coding, sm_default_msg_id, sm_length
        bytes((part.esm_class, 0, 0, 0, 0, part.registered_delivery, 0, part.data_coding, 0, len(part.short_message))),
        part.short_message,
    ))  # fmt: skip
    return _HEADER.pack(16 + len(body), SUBMIT_SM, 0, sequence) + body


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """The final submit_sm_resp for a part (after any throttling retries)."""

    part: OutgoingPart
    command_status: int
    message_id: str
    attempts: int

    @property
    def ok(self) -> bool:
        """Accepted by the SMSC: it now owns the message and will send a receipt if asked."""
        return self.command_status == ESME_ROK


@dataclass(frozen=True, slots=True)
class Receipt:
    """A delivery receipt: the SMSC's message id (as sent, not normalised), its stat and err words."""

    message_id: str
    stat: str
    err: str
    raw: str

    @property
    def delivered(self) -> bool:
        """The handset got the message."""
        return self.stat == "DELIVRD"


@dataclass(frozen=True, slots=True)
class MobileOriginated:
    """A message from a handset (reply, unsubscribe); `concat` is (ref, total, seq) for a part."""

    source: str
    destination: str
    text: str
    data_coding: int = DATA_CODING_DEFAULT
    concat: tuple[int, int, int] | None = None


_RECEIPT_ID = re.compile(r"\bid:(\S+)", re.IGNORECASE)
_RECEIPT_STAT = re.compile(
    r"\bstat\s*[:=]\s*(?!(?:err|text|id|sub|dlvrd|submit|done)\s*[:=])(\S+)", re.IGNORECASE
)  # "stat: DELIVRD", "Stat=DELIVRD"
_RECEIPT_ERR = re.compile(r"\berr:(\S+)", re.IGNORECASE)


def parse_delivery(sm: ShortMessagePdu) -> Receipt | MobileOriginated:
    """A deliver_sm as a Receipt (esm_class message type 0x04, or 0x20, an intermediate
    notification) or a MobileOriginated (type 0); PduError for an SME acknowledgement (0x08,
    0x10), which is neither.

    For receipts the receipted_message_id / message_state TLVs win when present and meaningful
    (an empty id, a state SMPP 3.4 does not define, is ignored); otherwise the `id:… stat:… err:…`
    text is parsed. A field that cannot be found is "" rather than an error: an odd receipt is
    still acknowledged and passed on ("" is no final state).
    """
    tlv_id = sm.tlvs.get(TAG_RECEIPTED_MESSAGE_ID)
    tlv_state = sm.tlvs.get(TAG_MESSAGE_STATE)
    receipted_id = None if tlv_id is None else read_cstring(tlv_id)
    state = tlv_state[0] if tlv_state else None
    return _delivery(sm.esm_class, sm.payload(), sm.data_coding, sm.source_addr, sm.destination_addr, receipted_id, state)


def _delivery(
    esm_class: int, payload: bytes, data_coding: int, source: str, destination: str, receipted_id: str | None, state: int | None
) -> Receipt | MobileOriginated:
    """parse_delivery on the fields of a deliver_sm, whoever parsed it (the link: smpplib)."""
    kind = esm_class & ESM_TYPE_MASK
    if kind:
        raw = _UNSHOWABLE.sub(" ", payload.decode("latin-1"))  # a NUL or control splits fields, never enters one
        message_id = _UNSHOWABLE.sub("", receipted_id or "").strip()
        if not message_id:
            found = _RECEIPT_ID.search(raw)
            message_id = found.group(1) if found else ""
        if kind not in (ESM_DELIVERY_RECEIPT, ESM_INTERMEDIATE_NOTIFICATION) and not (message_id and _RECEIPT_STAT.search(raw)):
            # An SME acknowledgement (0x08, 0x10) that does not read as a receipt (some SMSCs send
            # receipts so, as Kannel knows): neither a receipt nor a reply.
            raise NotADelivery(f"deliver_sm of message type {kind:#04x} (an SME acknowledgement) is neither a receipt nor a reply")
        if state in MESSAGE_STATES:
            stat = MESSAGE_STATES[state]
        else:
            found = _RECEIPT_STAT.search(raw)
            stat = found.group(1).upper() if found else ""
        if kind == ESM_INTERMEDIATE_NOTIFICATION and stat not in ("ACCEPTD", "SCHEDULED"):
            stat = "ENROUTE"  # interim (a failed attempt the SMSC retries, say), never the result; its text is kept
        found = _RECEIPT_ERR.search(raw)
        return Receipt(message_id=message_id, stat=stat, err=found.group(1) if found else "", raw=raw)
    concat, text = parse_concatenation(esm_class, payload)
    return MobileOriginated(source, destination, decode_text(data_coding, text), data_coding, concat)


# =================================================================================================
# PDUs through smpplib
# =================================================================================================
#
# Every PDU the link sends but submit_sm is generated by an smpplib command object, and every PDU
# body it reads is parsed by one, with smpplib's field layouts and TLV table. The link owns the
# sequence numbers (it sets them on each PDU) and the framing. Where smpplib falls short for a
# long-running link, a subclass adjusts it, never a patch:
# - C-octet strings: smpplib drops the last character of a string that lacks its NUL (a
#   submit_sm_resp message_id, an unterminated receipted_message_id TLV) and, for a mandatory
#   field, starts over from the front of the body; here such a string ends where its field ends.
# - TLVs: smpplib's loop raises KeyError on a TLV it knows but not for that command (say
#   ussd_service_op in a deliver_sm), reads an integer TLV at its nominal size whatever its length
#   says, and logs a WARNING for every vendor TLV (gateways put one in each receipt). Here one
#   loop over smpplib's tag table and field parsers keeps such TLVs as raw bytes instead.
# - A truncated body raises PduError, not struct.error or a half-filled object.
# - Cost (`benchmarks/bench_smpp.py`, 2-core VM shared with other work, November 2026): smpplib
#   parses a receipt into a fresh DeliverSM in 36-53 µs and a submit_sm_resp in ~7 µs; reusing one
#   PDU object per link and kind (`read` resets its fields) brings that to 20-39 µs for a receipt,
#   Receipt included, and ~1.5 µs for a submit_sm_resp. The link handles 21,000-38,000 receipts/s
#   (target 1,500; the hand codec did 45,000-83,000).
# - submit_sm stays hand-encoded (~1 µs): a fresh smpplib SubmitSM costs 38-60 µs to build and
#   generate, and even one reused object generating only the mandatory fields 11-13 µs. With that,
#   the link's CPU per part went from 9-13 to 21-29 µs and its share of the simulator's ceiling
#   from a median of 78-108 % to 33-51 % (one run in five: 84 %, on a slow ceiling); target 60 %.

_TLV_NAMES: Final[dict[int, str]] = {code: name for name, code in smpp_consts.OPTIONAL_PARAMS.items()}
_PARSE_ERRORS: Final = (struct.error, IndexError, KeyError, TypeError, ValueError, smpp_exceptions.UnknownCommandError)


def _max_length(command_class: Any, name: str) -> int:
    """The longest value smpplib encodes whole for a C-octet string field (its `max` counts the NUL)."""
    limit: int = command_class.params[name].max - 1
    return limit


# smpplib silently cuts longer values to these lengths: the link refuses them instead.
MAX_SYSTEM_ID: Final = _max_length(smpp_command.BindTransmitter, "system_id")
MAX_PASSWORD: Final = _max_length(smpp_command.BindTransmitter, "password")
MAX_SYSTEM_TYPE: Final = _max_length(smpp_command.BindTransmitter, "system_type")


def build_pdu(name: str, sequence: int, status: int = ESME_ROK, **fields: object) -> bytes:
    """One PDU built and generated by smpplib (`smpplib.smpp.make_pdu`), with our sequence number."""
    pdu = smpp.make_pdu(name, sequence=sequence, status=status, allow_unknown_opt_params=True, **fields)
    pdu.sequence = sequence  # smpplib ignores a `sequence` keyword when the PDU has no client
    data: bytes = pdu.generate()
    return data


class _ReadPdu(smpp_command.Command):
    """The parsing adjustments (see above) shared by the PDUs the link reads; `read` reuses the object."""

    _blank: dict[str, None] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._blank = dict.fromkeys(cls.params)

    def read(self, body: bytes) -> None:
        """Parse a PDU body into this object, every field reset first; raises PduError."""
        self.__dict__.update(self._blank)
        self.other_tlvs: dict[int, bytes] = {}
        try:
            self.parse_params(body)
        except PduError:
            raise
        except _PARSE_ERRORS as exc:
            raise PduError(f"malformed {self.command}: {exc!r}") from exc

    def _parse_string(self, field: str, data: bytes, pos: int, length: int | None = None) -> tuple[bytes, int]:
        if length is None:  # a mandatory C-octet string: up to its NUL or, lacking one, the end of the body
            if data.find(0, pos) >= 0:
                return super()._parse_string(field, data, pos)
            setattr(self, field, data[pos:])
            return data, len(data)
        if length and data[pos + length - 1] == 0:  # a string TLV, its length counting the NUL
            return super()._parse_string(field, data, pos, length)
        setattr(self, field, data[pos : pos + length])  # a string TLV without its NUL
        return data, pos + length

    def _parse_ostring(self, field: str, data: bytes, pos: int, length: int | None = None) -> tuple[bytes, int]:
        if length is None:
            length = int(getattr(self, self.params[field].len_field))
        if pos + length > len(data):
            raise PduError(f"{field} truncated: {length} bytes announced, {len(data) - pos} there")
        return super()._parse_ostring(field, data, pos, length)

    def parse_optional_params(self, data: bytes) -> None:
        """TLVs with smpplib's tag table and field parsers; unknown or unexpected ones kept raw in `other_tlvs`."""
        params, other = self.params, self.other_tlvs
        pos, end = 0, len(data)
        while pos < end:
            if pos + 4 > end:
                raise PduError("truncated TLV header")
            tag, length = _TLV_HEADER.unpack_from(data, pos)
            pos += 4
            if pos + length > end:
                raise PduError(f"TLV 0x{tag:04X} overruns the PDU")
            name = _TLV_NAMES.get(tag)
            param = params.get(name) if name is not None else None
            if name is None or param is None or (param.type is int and length != param.size):
                other[tag] = data[pos : pos + length]
            elif param.type is int:
                self._parse_int(name, data, pos)
            elif param.type is str:
                self._parse_string(name, data, pos, length)
            elif param.type is smpp_ostr:
                self._parse_ostring(name, data, pos, length)
            else:
                other[tag] = data[pos : pos + length]
            pos += length


class _SubmitSMResp(_ReadPdu, smpp_command.SubmitSMResp):
    """submit_sm_resp: the message_id the SMSC gave the part."""

    def message_id_of(self, body: bytes) -> str:
        """The message_id in a submit_sm_resp body ("" for an empty one, as error responses often are)."""
        if not body:
            return ""
        if body.find(0) == len(body) - 1:  # the usual body, a message_id and no TLV: what smpplib would read
            return body[:-1].decode("latin-1")
        try:
            self.read(body)
        except PduError as exc:  # the message_id comes first: keep it, whatever follows
            logger.warning("SMPP submit_sm_resp with a malformed tail: %s", exc)
        message_id = self.message_id
        return message_id.decode("latin-1") if message_id else ""


class _BindResp(_ReadPdu, smpp_command.BindTransceiverResp):
    """bind_transmitter_resp / bind_receiver_resp / bind_transceiver_resp (one layout)."""


_DELIVER_TLVS: Final = tuple(
    (name, smpp_consts.OPTIONAL_PARAMS[name], param)
    for name, param in smpp_command.DeliverSM.params.items()
    if name in smpp_consts.OPTIONAL_PARAMS
)


class _DeliverSM(_ReadPdu, smpp_command.DeliverSM):
    """deliver_sm: a receipt or a mobile-originated message."""

    def read(self, body: bytes) -> None:
        super().read(body)
        if self.sm_length is None or (self.sm_length and self.short_message is None):
            raise PduError("deliver_sm truncated before its short_message")

    def delivery(self, body: bytes) -> Receipt | MobileOriginated:
        """A deliver_sm body parsed by smpplib, read as parse_delivery reads a ShortMessagePdu (its
        receipted_message_id and message_state from smpplib's TLV fields); raises PduError."""
        self.read(body)
        return _read_delivery(self, self.short_message or self.message_payload or b"")

    def decode(self, body: bytes) -> ShortMessagePdu:
        """A deliver_sm body parsed by smpplib, as a ShortMessagePdu; raises PduError on a malformed one."""
        self.read(body)
        fields = self.__dict__
        tlvs: dict[int, bytes] = {}
        for name, tag, param in _DELIVER_TLVS:
            value = fields[name]
            if value is None:
                continue
            if param.type is int:  # back to wire bytes: parse_delivery reads tags, as for any ShortMessagePdu
                value = value.to_bytes(param.size, "big")
            elif param.type is str:
                value += b"\0"
            tlvs[tag] = value
        tlvs.update(self.other_tlvs)
        return ShortMessagePdu(
            source_addr=self.source_addr.decode("latin-1"),
            destination_addr=self.destination_addr.decode("latin-1"),
            short_message=self.short_message or b"",
            esm_class=self.esm_class,
            data_coding=self.data_coding,
            registered_delivery=self.registered_delivery,
            source_addr_ton=self.source_addr_ton,
            source_addr_npi=self.source_addr_npi,
            dest_addr_ton=self.dest_addr_ton,
            dest_addr_npi=self.dest_addr_npi,
            service_type=self.service_type.decode("latin-1"),
            protocol_id=self.protocol_id,
            priority_flag=self.priority_flag,
            schedule_delivery_time=self.schedule_delivery_time.decode("latin-1"),
            validity_period=self.validity_period.decode("latin-1"),
            replace_if_present_flag=self.replace_if_present_flag,
            sm_default_msg_id=self.sm_default_msg_id,
            tlvs=tlvs,
        )


class _DataSM(_ReadPdu, smpp_command.DataSM):
    """data_sm: the other PDU an SMSC may deliver a receipt or a reply in (its text, if any, in message_payload)."""

    def delivery(self, body: bytes) -> Receipt | MobileOriginated:
        """Read as a deliver_sm is (`_DeliverSM.delivery`); raises PduError."""
        self.read(body)
        if self.data_coding is None:
            raise PduError("data_sm truncated before its data_coding")
        return _read_delivery(self, self.message_payload or b"")


def _read_delivery(pdu: _DeliverSM | _DataSM, payload: bytes) -> Receipt | MobileOriginated:
    receipted_id = pdu.receipted_message_id
    state = pdu.message_state
    if state is None and (raw_state := pdu.other_tlvs.get(TAG_MESSAGE_STATE)):  # a message_state not one octet long
        state = raw_state[0]
    try:
        return _delivery(
            pdu.esm_class,
            payload,
            pdu.data_coding,
            pdu.source_addr.decode("latin-1"),
            pdu.destination_addr.decode("latin-1"),
            None if receipted_id is None else receipted_id.split(b"\0", 1)[0].decode("latin-1"),
            state,
        )
    except PduError:
        raise
    except _PARSE_ERRORS as exc:  # whatever a malformed one trips over: it is dropped, never fails the read
        raise PduError(f"{pdu.command} unreadable: {exc!r}") from exc


def _bind_resp_system_id(body: bytes) -> str:
    """The SMSC's system_id from a bind_*_resp body, parsed by smpplib ("" if unreadable)."""
    resp = _BindResp("bind_transceiver_resp", allow_unknown_opt_params=True)
    try:
        resp.read(body)
    except PduError as exc:
        logger.warning("SMPP bind response with a malformed body: %s", exc)
    system_id = resp.system_id
    return system_id.decode("latin-1", errors="replace") if system_id else ""


def decode_deliver_sm(body: bytes) -> ShortMessagePdu:
    """A deliver_sm body parsed by smpplib, as the link reads it (a fresh PDU object); raises PduError."""
    return _DeliverSM("deliver_sm", sequence=0, allow_unknown_opt_params=True).decode(body)


# =================================================================================================
# The link
# =================================================================================================


class BindRefused(ConnectionError):
    """The SMSC answered the bind with an error (wrong credentials, too many binds).

    Not retried automatically: hammering an SMSC with a wrong password can lock the account.
    The link keeps its reconnect backoff, so calling run_once again tries again later.
    """

    def __init__(self, status: int) -> None:
        super().__init__(f"bind refused: {describe_status(status)}")
        self.status = status


@dataclass(frozen=True)
class LinkConfig:
    """Where and how to bind, and the link's pacing. Times are seconds."""

    host: str = "127.0.0.1"
    port: int = 2775
    system_id: str = "backoffice"
    password: str = "secret"
    system_type: str = ""
    bind_mode: Literal["transceiver", "transmitter", "receiver"] = "transceiver"
    window: int = 10
    max_tps: float | None = None
    enquire_link_interval: float = 30.0
    response_timeout: float = 10.0
    connect_timeout: float = 5.0
    throttle_backoff: float = 0.1
    throttle_backoff_max: float = 5.0
    throttle_retry_limit: int | None = 50
    reconnect_backoff: float = 0.5
    reconnect_backoff_max: float = 30.0
    # A session proves itself by its first accepted submit or by staying up this long (a receiver
    # sends none); only then is the reconnect backoff back at its start.
    stable_after: float = 10.0
    drain_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not 1 <= self.port <= 65535:  # a socket takes 99999 as 99999 % 65536 (found by a review)
            raise ValueError(f"port must be 1–65535, not {self.port}")
        if self.window < 1:
            raise ValueError("window must be at least 1")
        if self.max_tps is not None and self.max_tps <= 0:
            raise ValueError("max_tps must be positive (or None for no limit)")
        # SMPP 3.4 limits (smpplib would cut longer values silently and the bind would fail obscurely)
        for name, limit in (("system_id", MAX_SYSTEM_ID), ("password", MAX_PASSWORD), ("system_type", MAX_SYSTEM_TYPE)):
            if len(getattr(self, name)) > limit:
                raise ValueError(f"{name} has at most {limit} characters in SMPP 3.4")


@dataclass
class LinkStats:
    """Counters since the link was created."""

    binds: int = 0
    submits_sent: int = 0
    responses: int = 0
    throttled: int = 0
    receipts: int = 0
    mobile_originated: int = 0
    lost_in_flight: int = 0
    enquire_links_sent: int = 0
    max_outstanding: int = 0


@dataclass(slots=True)
class _InFlight:
    part: OutgoingPart
    ordinal: int
    attempts: int
    sent_at: float


class _TokenBucket:
    """Messages per second with a burst of at most `capacity` (the window, or one second's worth)."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        self.rate, self.capacity = rate, capacity
        self.tokens, self.updated = capacity, now

    def available(self, now: float) -> int:
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        return int(self.tokens)

    def take(self, count: int) -> None:
        self.tokens -= count

    def next_token_at(self, now: float) -> float:
        return now + max(0.0, 1.0 - self.tokens) / self.rate


def _ignore(_: object) -> None:
    return None


PartsProvider = Callable[[int], Iterable[OutgoingPart]]
_BIND_COMMANDS: Final = {"transceiver": "bind_transceiver", "transmitter": "bind_transmitter", "receiver": "bind_receiver"}
_BIND_RESP_IDS: Final = {mode: smpp_command_codes.get_command_code(f"{name}_resp") for mode, name in _BIND_COMMANDS.items()}
# Retried by the link after a pause of the whole link. Only the SMSC's throttling: found by a
# review, ESME_RMSGQFUL (one destination's queue full) paused everything too, and a single
# recipient whose handset was off slowed every customer's traffic to a crawl for the message's
# whole validity. It goes to the caller at once, like any other refusal (TEMPORARY_STATUSES).
_RETRYABLE: Final = frozenset({ESME_RTHROTTLED})


class SmppLink:
    """One bind to an SMSC, driven by `run_once` from a single thread (the socket is never shared).

    Callbacks, all called from inside `run_once`/`close`:
    - `on_resp(SubmitResult)`: the final submit_sm_resp of a part; throttled parts
      (ESME_RTHROTTLED, which pauses the whole link) are retried here first and reach the caller
      only when accepted, refused, or out of retries; every other status (ESME_RMSGQFUL, about one
      destination, included) goes to the caller at once;
    - `on_receipt(Receipt)` / `on_mo(MobileOriginated)`: a deliver_sm; it is acknowledged after the
      callback returns, or with ESME_RX_T_APPN (the SMSC will redeliver) if the callback raised;
    - or `on_deliveries([Receipt | MobileOriginated, ...])` instead of those two: every deliver_sm
      of one read at once, in order, after the submit_sm_resp of that read; it returns for each
      whether it was taken (acknowledged) or is to be delivered again (ESME_RX_T_APPN), and if it
      raises, none is acknowledged. A caller that stores them pays one commit per read;
    - `on_link_down(parts, reason)`: the link dropped; `parts` were sent but never answered, so
      the SMSC may or may not have them (mark them possibly-sent; resending risks a duplicate);
    - `wanted(part)`: asked before a throttled part is tried again; False gives it up (its
      caller gave its message up meanwhile): it goes to on_resp with its throttling status.
    """

    def __init__(
        self,
        config: LinkConfig,
        *,
        on_resp: Callable[[SubmitResult], object] = _ignore,
        on_receipt: Callable[[Receipt], object] = _ignore,
        on_mo: Callable[[MobileOriginated], object] = _ignore,
        on_deliveries: Callable[[list[Receipt | MobileOriginated]], Sequence[bool]] | None = None,
        on_link_down: Callable[[list[OutgoingPart], str], object] | None = None,
        wanted: Callable[[OutgoingPart], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.stats = LinkStats()
        self._on_resp = on_resp
        self._on_receipt = on_receipt
        self._on_mo = on_mo
        self._on_deliveries = on_deliveries
        self._on_link_down = on_link_down
        self._wanted = wanted
        self._clock = clock
        self._sock: socket.socket | None = None
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._sequence = 0  # ours, not smpplib's: set on every PDU, carried across reconnects
        # smpplib PDU objects reused for the per-message PDUs (one set per link: never shared between threads)
        self._submit_resp = _SubmitSMResp("submit_sm_resp", allow_unknown_opt_params=True)
        self._deliver_pdu = _DeliverSM("deliver_sm", sequence=0, allow_unknown_opt_params=True)
        self._data_pdu = _DataSM("data_sm", sequence=0, allow_unknown_opt_params=True)
        self._deliver_resp = smpp_command.DeliverSMResp("deliver_sm_resp", allow_unknown_opt_params=True)
        self._data_resp = smpp_command.DataSMResp("data_sm_resp", sequence=0, allow_unknown_opt_params=True)
        self._ordinal = 0
        self._outstanding: dict[int, _InFlight] = {}
        self._retry: list[tuple[int, int, OutgoingPart]] = []  # (ordinal, attempts, part), a heap
        self._paused_until = 0.0
        self._throttle_streak = 0
        self._bucket = _TokenBucket(config.max_tps, max(1.0, min(config.max_tps, config.window)), clock()) if config.max_tps else None
        self._reconnect_at = 0.0
        self._reconnect_delay = config.reconnect_backoff
        self._bound_at = 0.0
        self._answered = False  # the SMSC answered one of this session's requests (a submit_sm or an enquire_link)
        self._submits_answered = False  # … a submit_sm of this session
        self._cautious = False  # parts were lost in a session that answered no submit_sm: see _fill_window
        self._last_rx = 0.0
        self._enquire_sent_at: float | None = None
        self._enquire_sequence = 0
        self._unbind_sequence = -1
        self._unbound = False
        self._rebind: str | None = None  # why this session is to be bound again once its window has answered
        self._rebinds = 0  # sessions in a row the SMSC took for unbound: the wait before the next bind doubles
        self._closing = False  # close() is draining the window
        self.problem: str | None = None  # the latest thing that went wrong with the link (for the operations page)
        self.problems = 0  # how many went wrong: a caller tells a new one by this count

    # --- public --------------------------------------------------------------------------------

    @property
    def bound(self) -> bool:
        """Connected and bound."""
        return self._sock is not None

    @property
    def rebinds_in_a_row(self) -> int:
        """Sessions in a row the SMSC took for unbound (ESME_RINVBNDSTS); 0 after an accepted submit."""
        return self._rebinds

    @property
    def session_answered(self) -> bool:
        """Whether the SMSC answered any request of this session (a submit_sm, an enquire_link);
        inside `on_link_down`, of the session that was lost. Parts lost in a session that
        answered nothing tell nothing about themselves: the SMSC cut it, whatever was sent."""
        return self._answered

    @property
    def throttled_in_a_row(self) -> int:
        """Throttled pauses in a row; 0 after a submit accepted outside a pause."""
        return self._throttle_streak

    def _note_problem(self, text: str) -> None:
        self.problem = text
        self.problems += 1

    @property
    def outstanding(self) -> int:
        """submit_sm sent and not yet answered (never more than the window)."""
        return len(self._outstanding)

    @property
    def waiting_retry(self) -> int:
        """Parts refused with ESME_RTHROTTLED, waiting for the backoff to pass."""
        return len(self._retry)

    def connect(self) -> None:
        """Connect and bind now (blocking, up to connect_timeout); raises OSError or BindRefused."""
        if self._sock is not None:
            return
        config = self.config
        sock = socket.create_connection((config.host, config.port), timeout=config.connect_timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~60-400 msg/s (NOTES.md)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sequence = self._next_sequence()
            bind = build_pdu(
                _BIND_COMMANDS[config.bind_mode],
                sequence,
                system_id=config.system_id,
                password=config.password,
                system_type=config.system_type,
                addr_ton=0,
                addr_npi=0,
                address_range="",
            )
            sock.sendall(bind)
            inbuf = bytearray()
            deadline = self._clock() + config.connect_timeout
            status = None
            smsc_id = ""
            while status is None:
                while status is None and (pdu := take_pdu(inbuf)) is not None:
                    command_id, pdu_status, pdu_sequence, body = pdu
                    if command_id & RESPONSE_BIT and pdu_sequence == sequence:  # the bind response or a generic_nack
                        # Anything but the bind's own response (a generic_nack, another command's
                        # response) is no bind, whatever its status says.
                        status = pdu_status if command_id == _BIND_RESP_IDS[config.bind_mode] else (pdu_status or ESME_RBINDFAIL)
                        if status == ESME_ROK and body:
                            smsc_id = _bind_resp_system_id(body)
                if status is None:
                    if self._clock() >= deadline:  # an SMSC that keeps talking but never answers the bind
                        raise TimeoutError(f"no bind response within {config.connect_timeout} s")
                    sock.settimeout(max(0.01, deadline - self._clock()))
                    data = sock.recv(65536)
                    if not data:
                        raise ConnectionError("SMSC closed the connection during bind")
                    inbuf += data
            if status != ESME_ROK:
                raise BindRefused(status)
            self._inbuf = inbuf  # what followed the bind response in the same read is dispatched by run_once
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._outbuf.clear()
        self._last_rx = self._bound_at = self._clock()
        self._enquire_sent_at = None
        # Not the reconnect backoff back at its start: found by a review, an SMSC that accepts the
        # bind and unbinds or closes at once was bound again every 0.5 s for ever. A session that
        # proves itself resets it (`_submit_answered`, `_keep_alive`).
        self._answered = self._submits_answered = False
        if self._cautious:  # a sign of life first (see _fill_window)
            self._send_enquire_link(self._bound_at)
        self.stats.binds += 1
        logger.info("SMPP bound as %s to %s:%s (%s), SMSC %r", config.system_id, config.host, config.port, config.bind_mode, smsc_id)

    def run_once(self, next_parts: PartsProvider | None = None, timeout: float = 0.05, meanwhile: Callable[[], None] | None = None) -> None:
        """One turn of the loop: (re)connect if due, fill the window, wait up to `timeout` for the
        SMSC, dispatch what arrived, refill, keep the link alive.

        `next_parts(n)` is asked for at most n parts only when the window and the rate limit can
        send them at once, so nothing waits inside the link except throttled retries.
        `meanwhile()` is called once the window is written, while its parts are on their way and
        before waiting for the answers: the caller's work that need not wait for them (what it
        raises propagates; the link is left as it was).
        Raises BindRefused; network errors never escape (the link reconnects with backoff).
        """
        now = self._clock()
        if self._sock is None:
            if now < self._reconnect_at:
                time.sleep(min(timeout, self._reconnect_at - now))
                return
            try:
                self.connect()
            except BindRefused as refused:
                self._note_problem(str(refused))
                self._schedule_reconnect(self._clock(), self.config.reconnect_backoff_max)
                raise
            except (OSError, PduError) as exc:
                self._note_problem(f"connect to {self.config.host}:{self.config.port} failed: {exc}")
                logger.warning("SMPP connect to %s:%s failed: %s", self.config.host, self.config.port, exc)
                self._schedule_reconnect(self._clock(), self._reconnect_delay)
                return
            if self._inbuf and not self._dispatch(self._clock()):
                return
        sock = self._sock
        assert sock is not None
        wake_at = self._fill_window(next_parts, now)
        if not self._flush():
            return
        if meanwhile is not None and self._outstanding and not self._outbuf:  # (all of it with the kernel)
            meanwhile()
            spent, now = self._clock() - now, self._clock()
            timeout = max(0.0, timeout - spent)
        wait = timeout if wake_at is None else max(0.0, min(timeout, wake_at - now))
        try:
            readable, writable, _ = select.select([sock], [sock] if self._outbuf else [], [], wait)
        except (OSError, ValueError) as exc:
            self._lose_link(f"select failed: {exc}")
            return
        now = self._clock()
        if readable:
            if not self._receive() or not self._dispatch(now):
                return
            self._fill_window(next_parts, now)
        if (readable or writable) and not self._flush():
            return
        self._keep_alive(now)

    def submit(self, parts: Iterable[OutgoingPart], timeout: float = 30.0) -> tuple[list[SubmitResult], list[OutgoingPart]]:
        """Send `parts` through the window and wait for each one's outcome: (results, lost in flight).

        A convenience for tools, tests and benchmarks; the callbacks fire as usual. Parts lost in
        flight are not resent. Raises TimeoutError if the outcomes are not all in after `timeout`.
        """
        queue = list(parts)
        results: list[SubmitResult] = []
        lost: list[OutgoingPart] = []
        pending = len(queue)
        cursor = 0
        saved = self._on_resp, self._on_link_down

        def provide(count: int) -> list[OutgoingPart]:
            nonlocal cursor
            batch = queue[cursor : cursor + count]
            cursor += len(batch)
            return batch

        def collect(result: SubmitResult) -> None:
            nonlocal pending
            results.append(result)
            pending -= 1
            saved[0](result)

        def collect_lost(in_flight: list[OutgoingPart], reason: str) -> None:
            nonlocal pending
            lost.extend(in_flight)
            pending -= len(in_flight)
            if saved[1] is not None:
                saved[1](in_flight, reason)

        self._on_resp, self._on_link_down = collect, collect_lost
        deadline = self._clock() + timeout
        try:
            while pending > 0:
                if self._clock() > deadline:
                    raise TimeoutError(f"{pending} of {len(queue)} parts without an outcome after {timeout} s")
                self.run_once(provide, timeout=0.05)
        finally:
            self._on_resp, self._on_link_down = saved
        return results, lost

    def close(self) -> None:
        """Drain outstanding responses (up to drain_timeout), unbind, close the socket.

        Parts still unanswered go to on_link_down; throttled parts still waiting for a retry go to
        on_resp with their last (throttling) status, so the caller can queue them again.
        """
        self._closing = True  # nothing more goes out: not even a throttled part's retry
        if self._sock is not None:
            deadline = self._clock() + self.config.drain_timeout
            while self._sock is not None and self._outstanding and self._clock() < deadline:
                self.run_once(None, timeout=0.05)
        if self._sock is not None:
            unbind_sequence = self._next_sequence()
            self._outbuf += build_pdu("unbind", unbind_sequence)
            self._unbind_sequence = unbind_sequence
            deadline = self._clock() + 1.0
            self._unbound = False
            while self._sock is not None and not self._unbound and self._clock() < deadline:
                self.run_once(None, timeout=0.05)
        if self._sock is not None:
            self._lose_link("closed by us", reconnect=False)
        while self._retry:
            _, attempts, part = heapq.heappop(self._retry)
            self._on_resp(SubmitResult(part, ESME_RTHROTTLED, "", attempts))
        self._closing = False

    def __enter__(self) -> SmppLink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        elif self._sock is not None:
            self._lose_link(f"closed on error: {exc_type.__name__}", reconnect=False)

    # --- internals -----------------------------------------------------------------------------

    def _next_sequence(self) -> int:
        self._sequence = self._sequence % 0x7FFFFFFF + 1
        return self._sequence

    def _fill_window(self, next_parts: PartsProvider | None, now: float) -> float | None:
        """Encode as many parts as the window, the throttle pause and the rate allow.

        Returns when sending could resume if it is held back by time (pause, rate), else None.
        """
        room = self.config.window - len(self._outstanding)
        if room <= 0 or self._sock is None or self._rebind is not None or self._closing:
            return None
        if self._cautious:
            # The last session lost parts and answered no submit_sm: the SMSC cut it right after
            # the bind, or it drops the link on one of those parts. Nothing goes out before it
            # has answered this session's enquire_link, then one part at a time until a submit_sm
            # is answered: a part lost alone in a session that answered is that part's loss (the
            # caller counts it), and the parts behind it are not lost with it.
            if not self._answered or self._outstanding:
                return None
            room = 1
        if now < self._paused_until:
            return self._paused_until
        bucket = self._bucket
        if bucket is not None:
            tokens = bucket.available(now)
            if tokens <= 0:
                return bucket.next_token_at(now)
            room = min(room, tokens)
        batch: list[tuple[OutgoingPart, int, int]] = []
        while self._retry and len(batch) < room:
            ordinal, attempts, part = heapq.heappop(self._retry)
            if self._wanted is not None and not self._wanted(part):  # given up meanwhile: not sent again
                self._on_resp(SubmitResult(part, ESME_RTHROTTLED, "", attempts))
                continue
            batch.append((part, ordinal, attempts))
        if len(batch) < room and next_parts is not None:
            for part in next_parts(room - len(batch)):
                self._ordinal += 1
                if len(batch) < room:
                    batch.append((part, self._ordinal, 0))
                else:  # the provider gave more than asked: keep the extra for the next turn
                    heapq.heappush(self._retry, (self._ordinal, 0, part))
        if not batch:
            return None
        out = self._outbuf
        outstanding = self._outstanding
        # Write each half window as soon as it is encoded, so the SMSC works on the first half
        # while this thread encodes the second (about +40 % throughput on two cores).
        chunk = max(1, (self.config.window + 1) // 2)
        for index, (part, ordinal, attempts) in enumerate(batch, start=1):
            sequence = self._next_sequence()
            out += encode_submit(part, sequence)  # by hand, not smpplib: see "PDUs through smpplib"
            outstanding[sequence] = _InFlight(part, ordinal, attempts + 1, now)
            if index % chunk == 0 and index < len(batch) and not self._flush():
                for part, ordinal, attempts in batch[index:]:  # never encoded: not in flight
                    heapq.heappush(self._retry, (ordinal, attempts, part))
                return None
        if bucket is not None:
            bucket.take(len(batch))
        self.stats.submits_sent += len(batch)
        self.stats.max_outstanding = max(self.stats.max_outstanding, len(outstanding))
        return None

    def _flush(self) -> bool:
        """Write what the socket takes now; False if the link was lost."""
        if not self._outbuf or self._sock is None:
            return self._sock is not None
        try:
            sent = self._sock.send(self._outbuf)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._lose_link(f"send failed: {exc}")
            return False
        del self._outbuf[:sent]
        return True

    def _receive(self) -> bool:
        """Read what is there; False if the link was lost."""
        assert self._sock is not None
        try:
            data = self._sock.recv(262144)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            self._lose_link(f"receive failed: {exc}")
            return False
        if not data:
            self._lose_link("connection closed by the SMSC")
            return False
        self._inbuf += data
        self._last_rx = self._clock()
        return True

    def _dispatch(self, now: float) -> bool:
        """Act on every complete PDU in the input buffer; False if the link was lost."""
        try:
            pdus = split_pdus(self._inbuf)
        except PduError as exc:
            self._lose_link(f"unreadable PDU from the SMSC: {exc}")
            return False
        batch: list[tuple[int, int, Receipt | MobileOriginated | None]] | None = None if self._on_deliveries is None else []
        for command_id, status, sequence, body in pdus:
            if command_id == SUBMIT_SM_RESP:
                self._submit_answered(sequence, status, self._submit_resp.message_id_of(body), now)
            elif command_id in (DELIVER_SM, DATA_SM):
                if batch is None:
                    self._deliver(command_id, sequence, body)
                else:
                    batch.append((command_id, sequence, self._decode_delivery(command_id, body)))
            elif command_id == ENQUIRE_LINK:
                self._outbuf += build_pdu("enquire_link_resp", sequence)
            elif command_id == ENQUIRE_LINK_RESP:
                self._enquire_sent_at = None
                self._answered = True
            elif command_id == UNBIND:
                self._deliver_batch(batch)  # answered before the link goes
                self._outbuf += build_pdu("unbind_resp", sequence)
                self._flush()
                self._lose_link("unbound by the SMSC")
                return False
            elif command_id == UNBIND_RESP and sequence == self._unbind_sequence:
                self._deliver_batch(batch)
                self._flush()
                self._unbound = True
                self._lose_link("unbound", reconnect=False)
                return False
            elif command_id == GENERIC_NACK and sequence in self._outstanding:
                self._submit_answered(sequence, status or ESME_RSYSERR, "", now)
            elif command_id & RESPONSE_BIT:
                logger.debug("SMPP ignoring response 0x%08X seq %d status %s", command_id, sequence, describe_status(status))
            else:
                self._outbuf += build_pdu("generic_nack", sequence, ESME_RINVCMDID)
            if self._sock is None:  # a callback closed the link (what was collected is delivered again)
                return False
        self._deliver_batch(batch)
        if self._sock is not None and len(self._inbuf) >= 16 and not 16 <= _HEADER.unpack_from(self._inbuf)[0] <= MAX_PDU_LENGTH:
            return self._dispatch(now)  # garbage after what was read: the link goes (split_pdus raises)
        if self._sock is not None and self._rebind is not None and not self._outstanding:
            self._flush()  # (the deliveries' answers)
            self._rebinds += 1
            self._lose_link(self._rebind)
            delay = doubling_delay(self.config.reconnect_backoff, self._rebinds, self.config.reconnect_backoff_max)
            self._reconnect_at = self._clock() + delay
            logger.error("SMPP session %d in a row taken for unbound by the SMSC: binding again in %.1f s", self._rebinds, delay)
            self._note_problem(f"session {self._rebinds} in a row taken for unbound by the SMSC (ESME_RINVBNDSTS)")
        return self._sock is not None

    def _submit_answered(self, sequence: int, status: int, message_id: str, now: float) -> None:
        in_flight = self._outstanding.pop(sequence, None)
        if in_flight is None:
            logger.warning("SMPP submit_sm_resp for unknown sequence %d (%s)", sequence, describe_status(status))
            return
        self.stats.responses += 1
        if not self._submits_answered:
            self._answered = self._submits_answered = True
            self._cautious = False
        limit = self.config.throttle_retry_limit
        if status in _RETRYABLE and (limit is None or in_flight.attempts <= limit):
            self.stats.throttled += 1
            heapq.heappush(self._retry, (in_flight.ordinal, in_flight.attempts, in_flight.part))
            if now >= self._paused_until:  # one step of backoff per pause, not one per part in the window
                self._throttle_streak += 1
                delay = doubling_delay(self.config.throttle_backoff, self._throttle_streak, self.config.throttle_backoff_max)
                self._paused_until = now + delay
                logger.info("SMPP throttled (%s): pausing %.2f s", describe_status(status), delay)
            return
        if status == ESME_ROK:  # the session has proved itself
            self._rebinds = 0
            self._reconnect_delay = self.config.reconnect_backoff
        if status == ESME_ROK and in_flight.sent_at >= self._paused_until:
            self._throttle_streak = 0
        elif status == ESME_RINVBNDSTS and self._rebind is None:
            # The SMSC takes this session for unbound (it restarted, say): the part was not taken.
            # Nothing more is sent on it; once the window has answered, the link binds again.
            self._rebind = "the SMSC answered as if the session were not bound (ESME_RINVBNDSTS): binding again"
            logger.warning("SMPP submit_sm refused with ESME_RINVBNDSTS: binding again once the window has answered")
        self._on_resp(SubmitResult(in_flight.part, status, message_id, in_flight.attempts))

    def _decode_delivery(self, command_id: int, body: bytes) -> Receipt | MobileOriginated | None:
        """A deliver_sm's (or data_sm's) receipt or message, counted; None if it cannot be read (it
        is acknowledged anyway: refusing would make the SMSC deliver the same bad PDU again forever)."""
        pdu = self._deliver_pdu if command_id == DELIVER_SM else self._data_pdu
        try:
            delivery = pdu.delivery(body)
        except NotADelivery as exc:
            logger.info("SMPP %s acknowledged and dropped: %s", pdu.command, exc)
            return None
        except PduError as exc:
            logger.warning("SMPP undecodable %s acknowledged and dropped: %s", pdu.command, exc)
            return None
        if isinstance(delivery, Receipt):
            self.stats.receipts += 1
        else:
            self.stats.mobile_originated += 1
        return delivery

    def _deliver(self, command_id: int, sequence: int, body: bytes) -> None:
        status = ESME_ROK
        delivery = self._decode_delivery(command_id, body)
        if delivery is not None:
            try:
                if isinstance(delivery, Receipt):
                    self._on_receipt(delivery)
                else:
                    self._on_mo(delivery)
            except Exception:
                logger.exception("SMPP deliver_sm handler failed; asking the SMSC to redeliver")
                status = ESME_RX_T_APPN
        self._answer_delivery(command_id, sequence, status)

    def _deliver_batch(self, batch: list[tuple[int, int, Receipt | MobileOriginated | None]] | None) -> None:
        """Hand the deliveries collected from one read to `on_deliveries` and answer each."""
        if not batch or self._on_deliveries is None:
            return
        collected, batch[:] = list(batch), []
        deliveries = [delivery for _, _, delivery in collected if delivery is not None]
        try:
            taken = list(self._on_deliveries(deliveries)) if deliveries else []
            if len(taken) != len(deliveries):
                raise ValueError(f"on_deliveries answered {len(taken)} of {len(deliveries)} deliveries")
        except Exception:
            logger.exception("SMPP deliver_sm handler failed; asking the SMSC to redeliver %d", len(deliveries))
            taken = [False] * len(deliveries)
        answers = iter(taken)
        for command_id, sequence, delivery in collected:
            self._answer_delivery(command_id, sequence, ESME_ROK if delivery is None or next(answers) else ESME_RX_T_APPN)

    def _answer_delivery(self, command_id: int, sequence: int, status: int) -> None:
        resp = self._deliver_resp if command_id == DELIVER_SM else self._data_resp
        resp.sequence, resp.status = sequence, status
        self._outbuf += resp.generate()

    def _keep_alive(self, now: float) -> None:
        if self._sock is None:
            return
        config = self.config
        if self._enquire_sent_at is not None and now - self._enquire_sent_at > config.response_timeout:
            self._lose_link("no enquire_link_resp")
            return
        if self._outstanding:
            oldest = next(iter(self._outstanding.values()))
            if now - oldest.sent_at > config.response_timeout:
                self._lose_link(f"no submit_sm_resp within {config.response_timeout} s")
                return
        if now - self._bound_at >= config.stable_after:  # up long enough: it has proved itself
            self._reconnect_delay = config.reconnect_backoff
        if self._enquire_sent_at is None and now - self._last_rx >= config.enquire_link_interval:
            self._send_enquire_link(now)
            self._flush()

    def _send_enquire_link(self, now: float) -> None:
        self._enquire_sequence = self._next_sequence()
        self._enquire_sent_at = now
        self._outbuf += build_pdu("enquire_link", self._enquire_sequence)
        self.stats.enquire_links_sent += 1

    def _schedule_reconnect(self, now: float, delay: float) -> None:
        self._reconnect_at = now + delay
        self._reconnect_delay = min(self.config.reconnect_backoff_max, max(delay, self.config.reconnect_backoff) * 2)

    def _lose_link(self, reason: str, reconnect: bool = True) -> None:
        """Close the socket and report the parts whose responses never came."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._rebind = None
        self._inbuf.clear()
        self._outbuf.clear()
        self._enquire_sent_at = None
        in_flight = [entry.part for entry in self._outstanding.values()]
        self._outstanding.clear()
        self.stats.lost_in_flight += len(in_flight)
        if in_flight and not self._submits_answered and reconnect:
            self._cautious = True  # (see _fill_window)
        now = self._clock()
        if reconnect:
            self._note_problem(f"link down: {reason}")
            self._schedule_reconnect(now, self._reconnect_delay)
            logger.warning(
                "SMPP link down (%s), %d parts in flight; reconnecting in %.2f s", reason, len(in_flight), self._reconnect_at - now
            )
        else:
            logger.info("SMPP link closed (%s), %d parts in flight", reason, len(in_flight))
        if self._on_link_down is not None:
            self._on_link_down(in_flight, reason)
        elif in_flight:
            logger.error("SMPP %d parts lost in flight and no on_link_down handler", len(in_flight))


__all__: Sequence[str] = [
    "BindRefused",
    "BindRequest",
    "LinkConfig",
    "LinkStats",
    "MobileOriginated",
    "OutgoingPart",
    "PduError",
    "Receipt",
    "ShortMessagePdu",
    "SmppLink",
    "SubmitResult",
    "decode_bind",
    "build_pdu",
    "decode_deliver_sm",
    "decode_short_message",
    "decode_text",
    "describe_status",
    "encode_bind",
    "encode_data_sm",
    "encode_pdu",
    "encode_short_message",
    "encode_submit",
    "message_id_keys",
    "message_ids_match",
    "normalise_message_id",
    "parse_concatenation",
    "parse_delivery",
    "receipt_id_keys",
    "split_pdus",
    "take_pdu",
]
