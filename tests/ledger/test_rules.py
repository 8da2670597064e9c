"""Each posting rule gives one balanced transaction on the accounts finance expects.

Ledger input (the payloads) lives in the parametrisation; the expected postings are written as
finance would read them: account, amount (debit +, credit -)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from ledger import Event, PostingRuleError, transaction_for

D = Decimal
DAY = date(2026, 11, 23)
CUSTOMER = {"account_code": "E000001", "customer_name": "北京创联致信科技有限公司"}

CASES = [
    ("contract_credit", {**CUSTOMER, "contract_no": "HT-2026-000001", "initial_amount": "1750.00", "opening_fee": "300.00"},
     {"Assets:Receivable:E000001": D("2050.00"), "Liabilities:Contracted:E000001": D("-1750.00"), "Income:OpeningFee": D("-300.00")}),
    ("receipt", {**CUSTOMER, "amount": "2050.00", "bank": "CMB", "bank_ref": "B1", "settles_receivable": "2050.00", "releases_contracted": "1750.00"},
     {"Assets:Bank:CMB": D("2050.00"), "Assets:Receivable:E000001": D("-2050.00"), "Liabilities:Contracted:E000001": D("1750.00"), "Liabilities:Prepaid:E000001": D("-1750.00")}),
    ("receipt", {**CUSTOMER, "amount": "500.00", "bank": "ICBC", "bank_ref": "B2"},
     {"Assets:Bank:ICBC": D("500.00"), "Liabilities:Prepaid:E000001": D("-500.00")}),
    ("usage", {"lines": [{"account_code": "E000001", "carrier": "CMCC", "messages": 100, "amount": "3.50"},
                         {"account_code": "E000002", "carrier": "CUCC", "messages": 10, "amount": "0.355"}]},
     {"Liabilities:Prepaid:E000001": D("3.50"), "Liabilities:Prepaid:E000002": D("0.355"), "Income:SMS:CMCC": D("-3.50"), "Income:SMS:CUCC": D("-0.355")}),
    ("refused_content_fee", {"lines": [{"account_code": "E000001", "carrier": "CTCC", "messages": 2, "amount": "0.07"}]},
     {"Liabilities:Prepaid:E000001": D("0.07"), "Income:SMS:CTCC": D("-0.07")}),
    ("refund", {"lines": [{"account_code": "E000001", "carrier": "CMCC", "messages": 1, "amount": "0.035"}]},
     {"Liabilities:Prepaid:E000001": D("-0.035"), "Income:SMS:CMCC": D("0.035")}),
    ("penalty", {**CUSTOMER, "messages": 20, "rate": "0.5", "amount": "10.00"},
     {"Liabilities:Prepaid:E000001": D("10.00"), "Income:Penalty": D("-10.00")}),
    ("forfeit", {**CUSTOMER, "amount": "123.45", "reason": "投诉导致通道关停"},
     {"Liabilities:Prepaid:E000001": D("123.45"), "Income:Forfeited": D("-123.45")}),
    ("carrier_cost", {"lines": [{"carrier": "CMCC", "amount": "2.10"}, {"carrier": "CBN", "amount": "0.20"}]},
     {"Expenses:Carrier:CMCC": D("2.10"), "Liabilities:Payable:Carrier:CMCC": D("-2.10"), "Expenses:Carrier:CBN": D("0.20"), "Liabilities:Payable:Carrier:CBN": D("-0.20")}),
    ("tariff_absorbed", {"carrier": "CUCC", "amount": "15.00", "reason": "未提前通知调价"},
     {"Expenses:TariffAbsorbed": D("15.00"), "Liabilities:Payable:Carrier:CUCC": D("-15.00")}),
]  # fmt: skip


@pytest.mark.parametrize("kind, payload, expected", CASES, ids=[c[0] for c in CASES])
def test_rule_posts_a_balanced_transaction(kind: str, payload: dict, expected: dict) -> None:
    txn = transaction_for(Event("ev", kind, DAY, payload))
    postings = {p.account: p.units.number for p in txn.postings}
    assert postings == expected
    assert sum(postings.values()) == 0
    assert txn.meta["event_id"] == "ev" and txn.meta["kind"] == kind


@pytest.mark.parametrize("kind, payload, expected", CASES, ids=[c[0] for c in CASES])
def test_a_reversal_negates_every_posting(kind: str, payload: dict, expected: dict) -> None:
    txn = transaction_for(
        Event("rev", "reversal", DAY, {"reverses": "ev", "reason": "录错", "original": {"kind": kind, "payload": payload}})
    )
    assert {p.account: p.units.number for p in txn.postings} == {a: -x for a, x in expected.items()}
    assert "冲销 ev（录错）" in txn.narration


@pytest.mark.parametrize(
    "kind, payload, message",
    [
        ("receipt", {**CUSTOMER, "amount": "100", "bank": "CMB", "bank_ref": "x", "settles_receivable": "200"}, "inconsistent"),
        ("receipt", {**CUSTOMER, "amount": "-5", "bank": "CMB", "bank_ref": "x"}, "positive"),
        ("usage", {"lines": []}, "lines"),
        ("usage", {"lines": [{"account_code": "E000001", "carrier": "XXXX", "amount": "1"}]}, "unknown carrier"),
        ("usage", {"lines": [{"account_code": "E000001", "carrier": "CMCC", "amount": "-1"}]}, "negative"),
        ("penalty", {**CUSTOMER, "amount": "0"}, "positive"),
        ("reversal", {"reverses": "x", "original": {"kind": "reversal", "payload": {}}}, "original"),
        ("receipt", {**CUSTOMER, "amount": "10", "bank": "cmb lower", "bank_ref": "x"}, "account component"),
    ],
)
def test_bad_events_are_refused_with_a_reason(kind: str, payload: dict, message: str) -> None:
    with pytest.raises(PostingRuleError, match=message):
        transaction_for(Event("bad", kind, DAY, payload))
