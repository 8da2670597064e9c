"""Contract rules on sending: number ranges, unsubscribe replies, the 07:00–22:30 window, signatures."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta, timezone

import pytest

from dispatch.rules import (
    MissingSignature,
    apply_signature,
    consecutive_runs,
    in_sending_window,
    is_unsubscribe,
    next_send_time,
    signature_of,
    signatures_in,
)

WINDOW_002 = (time(7, 0), time(22, 30))
RESUME_002 = time(8, 5)
BEIJING = timezone(timedelta(hours=8))


def beijing(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, 11, day, hour, minute, second, tzinfo=BEIJING)


# --- 号码段群发 -------------------------------------------------------------


def test_longest_run_of_consecutive_numbers() -> None:
    numbers = ["13800000003", "13800000001", "13800000002", "13912345678", "13800000002", "13800000005"]
    assert consecutive_runs(numbers) == 3


def test_a_member_list_has_no_run_and_an_empty_list_none() -> None:
    assert consecutive_runs(["13800138000", "13912345678", "18611112222"]) == 1
    assert consecutive_runs([]) == 0


def test_a_whole_range_is_one_long_run() -> None:
    assert consecutive_runs([f"1380000{n:04d}" for n in range(500)]) == 500


def test_consecutive_runs_wants_normalised_numbers() -> None:
    with pytest.raises(ValueError, match="normalised"):
        consecutive_runs(["+8613800138000"])


# --- 退订 -----------------------------------------------------------------


@pytest.mark.parametrize("reply", ["TD", "td", " Td\n", "退订", "退订。", "【退订】", "ＴＤ", "r", "R!", "拒收", "“退订”", "TD😊"])
def test_unsubscribe_replies(reply: str) -> None:
    assert is_unsubscribe(reply)


@pytest.mark.parametrize("reply", ["", "   ", "。", "退订了吗", "TD 123", "请勿退订", "OK", "Re", "T D", "谢谢"])
def test_replies_that_are_not_unsubscribing(reply: str) -> None:
    assert not is_unsubscribe(reply)


@pytest.mark.parametrize("reply", ["T", "t", " T。", "Ｔ", "【T】"])
def test_a_t_reply_unsubscribes(reply: str) -> None:
    """Found by a review: 回T退订 (reply T to unsubscribe) is the most common wording of Chinese
    marketing texts, and "T" was not an unsubscribe word."""
    assert is_unsubscribe(reply)


@pytest.mark.parametrize("reply", ["Thanks", "OK T", "T T", "回T", "TT", "Tue", "T1", "T退订了吗"])
def test_only_a_t_alone_unsubscribes_not_any_reply_with_a_t(reply: str) -> None:
    assert not is_unsubscribe(reply)


def test_unsubscribe_words_are_configurable() -> None:
    assert is_unsubscribe("stop", words=("STOP", "0000"))
    assert not is_unsubscribe("TD", words=("STOP",))


# --- 发送时段 (002 §3) ------------------------------------------------------


@pytest.mark.parametrize(
    ("accepted", "expected"),
    [
        (beijing(23, 10, 0), beijing(23, 10, 0)),  # inside: at once
        (beijing(23, 7, 0), beijing(23, 7, 0)),  # the window includes 07:00
        (beijing(23, 22, 30), beijing(23, 22, 30)),  # and 22:30
        (beijing(23, 22, 30, 1), beijing(24, 8, 5)),  # one second late waits for the next morning
        (beijing(23, 23, 0), beijing(24, 8, 5)),
        (beijing(23, 23, 59, 59), beijing(24, 8, 5)),
        (beijing(24, 0, 0), beijing(24, 8, 5)),  # after midnight: the same calendar day
        (beijing(24, 6, 0), beijing(24, 8, 5)),
        (beijing(24, 6, 59, 59), beijing(24, 8, 5)),
        (beijing(30, 23, 0), datetime(2026, 12, 1, 8, 5, tzinfo=BEIJING)),  # across a month end
    ],
)
def test_next_send_time_for_contract_002(accepted: datetime, expected: datetime) -> None:
    result = next_send_time(accepted.astimezone(UTC), WINDOW_002, RESUME_002)
    assert result == expected
    assert result.utcoffset() == timedelta(0)


def test_23_00_beijing_is_15_00_utc_and_goes_out_at_00_05_utc() -> None:
    accepted = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
    assert next_send_time(accepted, WINDOW_002, RESUME_002) == datetime(2026, 11, 24, 0, 5, tzinfo=UTC)


def test_no_window_sends_at_once() -> None:
    accepted = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # 02:00 in Beijing
    assert next_send_time(accepted, None, RESUME_002) == accepted


def test_a_window_over_midnight() -> None:
    night = (time(22, 0), time(6, 0))
    assert in_sending_window(beijing(23, 23, 0), night)
    assert in_sending_window(beijing(23, 5, 0), night)
    assert not in_sending_window(beijing(23, 12, 0), night)
    assert next_send_time(beijing(23, 12, 0), night, time(22, 5)) == beijing(23, 22, 5)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        next_send_time(datetime(2026, 11, 23, 15, 0), WINDOW_002, RESUME_002)


# --- 短信签名 (002 §5(6)) ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "signature"),
    [
        ("【学府教育】您的孩子已到校。", "学府教育"),
        ("您的孩子已到校。【学府教育】", "学府教育"),
        ("  【学府教育】 您好", "学府教育"),
        ("您好【学府教育】\n", "学府教育"),
        ("您好，欢迎光临", None),
        ("您好【学府教育】，欢迎光临", None),  # in the middle it is not a signature
        ("【】您好", None),
        ("【 】您好", None),
    ],
)
def test_signature_of(text: str, signature: str | None) -> None:
    assert signature_of(text) == signature


def test_leading_and_trailing_signatures_both_show() -> None:
    assert signatures_in("【甲】内容【乙】") == ["甲", "乙"]
    assert signatures_in("【甲】") == ["甲"]


def test_a_signed_text_is_left_as_it_is() -> None:
    assert apply_signature("【学府教育】明天放假。", "学府教育", add=False) == "【学府教育】明天放假。"
    assert apply_signature("明天放假。【学府教育】", "学府教育", add=True) == "明天放假。【学府教育】"


def test_the_signature_is_added_in_front_when_the_account_asks() -> None:
    assert apply_signature("明天放假。", "学府教育", add=True) == "【学府教育】明天放假。"
    assert apply_signature("明天放假。", "【学府教育】", add=True) == "【学府教育】明天放假。"


def test_an_unsigned_text_is_refused_when_adding_is_off() -> None:
    with pytest.raises(MissingSignature, match="缺少签名.*【学府教育】"):
        apply_signature("明天放假。", "学府教育", add=False)


@pytest.mark.parametrize("add", [True, False])
def test_someone_elses_signature_is_refused(add: bool) -> None:
    with pytest.raises(MissingSignature, match="内容带有【某银行】，本账户的签名是【学府教育】"):
        apply_signature("【某银行】您的账户异常", "学府教育", add=add)
    with pytest.raises(MissingSignature, match="某银行"):
        apply_signature("【学府教育】通知【某银行】", "学府教育", add=add)


def test_an_account_without_signature_cannot_apply_one() -> None:
    with pytest.raises(ValueError, match="no signature"):
        apply_signature("明天放假。", " 【】 ", add=True)
