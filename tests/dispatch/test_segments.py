"""Splitting texts into SMS parts: the counts customers are charged for and what the SMSC receives."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatch.segments import (
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    ESM_CLASS_UDHI,
    Segmentation,
    TooLong,
    decode_gsm7,
    encode_segments,
    is_gsm7,
    with_udh,
)

GSM_EXTENSION_CHARS = "^{}\\[~]|€\f"
GSM_BASIC_CHARS = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCZÄÖÑÜ§¿abcxyzäöñüà"


def read_back(segmentation: Segmentation) -> str:
    if segmentation.encoding == "gsm7":
        return "".join(decode_gsm7(p) for p in segmentation.payloads)
    return b"".join(segmentation.payloads).decode("utf-16-be")


def ucs2_units(payload: bytes) -> int:
    return len(payload) // 2


@pytest.mark.parametrize(("length", "parts"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)])
def test_chinese_text_part_counts(length: int, parts: int) -> None:
    seg = encode_segments("短" * length, max_parts=10)
    assert seg.encoding == "ucs2"
    assert seg.data_coding == DATA_CODING_UCS2 == 0x08
    assert seg.parts == parts
    assert seg.length == length


def test_71_chinese_characters_are_67_plus_4() -> None:
    seg = encode_segments("短" * 71, max_parts=10)
    assert [ucs2_units(p) for p in seg.payloads] == [67, 4]
    assert seg.payloads[0] == ("短" * 67).encode("utf-16-be")


@pytest.mark.parametrize(("length", "parts"), [(160, 1), (161, 2), (306, 2), (307, 3)])
def test_plain_latin_text_part_counts(length: int, parts: int) -> None:
    seg = encode_segments("a" * length, max_parts=10)
    assert (seg.encoding, seg.data_coding, seg.parts) == ("gsm7", DATA_CODING_GSM7, parts)


def test_gsm_text_is_sent_as_unpacked_septets() -> None:
    seg = encode_segments("@ A_€", max_parts=1)
    # '@' is septet 0x00 and '_' 0x11 in GSM 03.38, unlike ASCII; '€' is the escape pair 1B 65.
    assert seg.payloads == (b"\x00\x20\x41\x11\x1b\x65",)
    assert seg.length == 6


def test_an_escape_character_counts_two_septets() -> None:
    assert encode_segments("€" * 80, max_parts=10).parts == 1
    assert encode_segments("€" * 80 + "a", max_parts=10).parts == 2


def test_an_escape_pair_on_the_153_boundary_moves_whole_to_the_next_part() -> None:
    text = "a" * 152 + "€" + "b" * 10
    seg = encode_segments(text, max_parts=10)
    assert [len(p) for p in seg.payloads] == [152, 12]
    assert seg.payloads[1].startswith(b"\x1b\x65")
    assert read_back(seg) == text


def test_an_emoji_on_the_67_boundary_moves_whole_to_the_next_part() -> None:
    text = "短" * 66 + "😀" + "信" * 10
    seg = encode_segments(text, max_parts=10)
    assert seg.encoding == "ucs2"
    assert [ucs2_units(p) for p in seg.payloads] == [66, 12]
    assert read_back(seg) == text


def test_an_emoji_counts_two_units() -> None:
    assert encode_segments("😀" * 35, max_parts=10).parts == 1
    assert encode_segments("😀" * 35 + "a", max_parts=10).parts == 2


def test_one_chinese_character_turns_the_whole_text_into_ucs2() -> None:
    assert encode_segments("Your code is 1234【学府教育】", max_parts=1).encoding == "ucs2"
    assert not is_gsm7("café `x`")
    assert is_gsm7("Code: 1234 {ok} €5")


def test_too_long_is_refused_with_the_count_never_cut() -> None:
    with pytest.raises(TooLong, match="需要拆成 4 条，超过每次最多 3 条") as caught:
        encode_segments("短" * 202, max_parts=3)
    assert (caught.value.parts, caught.value.max_parts) == (4, 3)
    assert "202 个字符" in caught.value.reason
    assert encode_segments("短" * 201, max_parts=3).parts == 3


def test_max_parts_outside_what_a_udh_can_number_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="max_parts"):
        encode_segments("a", max_parts=0)
    with pytest.raises(ValueError, match="max_parts"):
        encode_segments("a", max_parts=256)


def test_empty_text_is_one_empty_part() -> None:
    seg = encode_segments("", max_parts=1)
    assert (seg.encoding, seg.payloads, seg.parts) == ("gsm7", (b"",), 1)


def test_with_udh_prefixes_the_concatenation_header() -> None:
    assert with_udh([b"ab", b"c"], reference=0x2A) == [
        b"\x05\x00\x03\x2a\x02\x01ab",
        b"\x05\x00\x03\x2a\x02\x02c",
    ]
    with pytest.raises(ValueError, match="reference"):
        with_udh([b"a", b"b"], reference=256)


def test_short_messages_carry_a_udh_only_when_there_are_several_parts() -> None:
    single = encode_segments("短" * 70, max_parts=5)
    assert single.short_messages(reference=7) == [("短" * 70).encode("utf-16-be")]
    assert single.esm_class == 0x00
    double = encode_segments("短" * 71, max_parts=5)
    messages = double.short_messages(reference=7)
    assert [m[:6] for m in messages] == [b"\x05\x00\x03\x07\x02\x01", b"\x05\x00\x03\x07\x02\x02"]
    assert max(len(m) for m in messages) == 140  # the 140-octet user data limit of one SMS
    assert double.esm_class == ESM_CLASS_UDHI == 0x40


def test_decode_gsm7_reads_every_character_back() -> None:
    text = GSM_BASIC_CHARS + GSM_EXTENSION_CHARS
    assert decode_gsm7(b"".join(encode_segments(text, max_parts=5).payloads)) == text


def test_decode_gsm7_refuses_bytes_that_are_not_septets() -> None:
    with pytest.raises(ValueError, match="0x80"):
        decode_gsm7(b"a\x80")
    with pytest.raises(ValueError, match="escape"):
        decode_gsm7(b"a\x1b")


def test_decode_gsm7_shows_an_unknown_escape_as_the_default_character() -> None:
    assert decode_gsm7(b"\x1b\x41") == "A"


# A filler, often just short of a part boundary, pushes the interesting characters across it.
gsm_text = st.builds(
    lambda filler, tail: "a" * filler + tail,
    st.one_of(st.integers(0, 470), st.sampled_from([*range(148, 161), *range(300, 310)])),
    st.text(alphabet=GSM_BASIC_CHARS + GSM_EXTENSION_CHARS * 10, max_size=200),
)
any_text = st.builds(
    lambda filler, tail: "短" * filler + tail,
    st.one_of(st.integers(0, 210), st.sampled_from([*range(62, 71), *range(130, 137)])),
    st.text(alphabet=st.one_of(st.characters(codec="utf-8"), st.sampled_from("😀𠀀€")), max_size=100),
)


@given(st.one_of(gsm_text, any_text))
def test_parts_join_back_to_the_text_and_respect_the_limits(text: str) -> None:
    seg = encode_segments(text, max_parts=255)
    assert read_back(seg) == text
    if seg.encoding == "gsm7":
        single, part = 160, 153
        sizes = [len(p) for p in seg.payloads]
        assert not any(p.endswith(b"\x1b") for p in seg.payloads)  # no escape pair split
    else:
        single, part = 70, 67
        sizes = [ucs2_units(p) for p in seg.payloads]
        assert not any(0xD800 <= int.from_bytes(p[-2:]) <= 0xDBFF for p in seg.payloads if p)  # no surrogate pair split
    assert sum(sizes) == seg.length
    if seg.parts == 1:
        assert seg.length <= single
    else:
        assert seg.length > single
        assert max(sizes) <= part
        # Greedy packing: each full part could not take the next character.
        assert all(size >= part - 1 for size in sizes[:-1])


@given(gsm_text)
def test_each_gsm_part_decodes_on_its_own(text: str) -> None:
    seg = encode_segments(text, max_parts=255)
    assert "".join(decode_gsm7(p) for p in seg.payloads) == text
