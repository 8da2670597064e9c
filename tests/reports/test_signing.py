"""PAdES signing and verification: a signed contract verifies; any later change is reported."""

from __future__ import annotations

import re
import stat
import threading
import time
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

import pypdf
import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

from reports.pdf import render_pdf
from reports.signing import SigningIdentity, ensure_signing_identity, sign_pdf, verify_pdf
from tests.reports.conftest import contract_html


@pytest.fixture(scope="module")
def unsigned_pdf() -> bytes:
    return render_pdf(contract_html(clauses=8), metadata={"title": "短信业务服务合同"})


@pytest.fixture(scope="module")
def signed_pdf(unsigned_pdf: bytes, identity: SigningIdentity) -> bytes:
    start = time.perf_counter()
    signed = sign_pdf(unsigned_pdf, identity, reason="乙方签署合同", location="北京", contact="010-12345678")
    print(f"\nsign_pdf: {time.perf_counter() - start:.3f} s")
    return signed


def byte_range(pdf: bytes) -> tuple[int, int, int, int]:
    match = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", pdf)
    assert match is not None
    a, b, c, d = (int(g) for g in match.groups())
    return a, b, c, d


def test_signed_contract_verifies_completely(signed_pdf: bytes, identity: SigningIdentity) -> None:
    start = time.perf_counter()
    result = verify_pdf(signed_pdf, trusted_certs=[identity.cert_path])
    print(f"\nverify_pdf: {(time.perf_counter() - start) * 1000:.1f} ms")
    assert (result.signed, result.intact, result.valid, result.trusted, result.covers_whole_file) == (True,) * 5
    assert result.problems == []
    assert result.signer == "测试签章"
    assert result.signed_at is not None
    assert abs(datetime.now(UTC) - result.signed_at) < timedelta(minutes=5)


def test_signature_is_pades_with_reason_and_location(signed_pdf: bytes) -> None:
    assert b"/ETSI.CAdES.detached" in signed_pdf
    assert b"/ProviderSignature" in signed_pdf or b"(ProviderSignature)" in signed_pdf


def test_one_changed_byte_in_the_signed_content_is_detected(signed_pdf: bytes, identity: SigningIdentity) -> None:
    _, first_end, _, _ = byte_range(signed_pdf)
    contents = pypdf.PdfReader(BytesIO(signed_pdf)).pages[0].raw_get("/Contents")
    start = signed_pdf.index(f"\n{contents.idnum} 0 obj".encode())
    position = signed_pdf.index(b"stream\n", start) + 40  # inside the first page's text
    assert position < first_end  # before the signature's /Contents hole, so it is covered
    tampered = bytearray(signed_pdf)
    tampered[position] ^= 0x01
    result = verify_pdf(bytes(tampered), trusted_certs=[identity.cert_path])
    assert result.signed
    assert not (result.intact and result.valid)
    assert result.problems


def test_content_added_after_signing_is_reported(signed_pdf: bytes, identity: SigningIdentity) -> None:
    writer = IncrementalPdfFileWriter(BytesIO(signed_pdf))
    cover = writer.add_object(generic.StreamObject(stream_data=b"q 1 1 1 rg 50 600 500 200 re f Q"))
    writer.add_stream_to_page(0, cover)  # a white box over the first clauses
    out = BytesIO()
    writer.write(out)
    result = verify_pdf(out.getvalue(), trusted_certs=[identity.cert_path])
    assert result.intact and result.valid and result.trusted  # the signed revision itself is fine…
    assert not result.covers_whole_file  # …but it is no longer the whole document
    assert any("增量更新" in p for p in result.problems)


def test_a_second_signature_is_not_an_unsigned_change(signed_pdf: bytes, identity: SigningIdentity) -> None:
    twice = sign_pdf(signed_pdf, identity, reason="甲方签署", location="上海", field_name="CustomerSignature")
    result = verify_pdf(twice, trusted_certs=[identity.cert_path])
    assert (result.intact, result.valid, result.trusted, result.covers_whole_file) == (True,) * 4


def test_unsigned_pdf_is_reported_as_unsigned(unsigned_pdf: bytes, identity: SigningIdentity) -> None:
    result = verify_pdf(unsigned_pdf, trusted_certs=[identity.cert_path])
    assert not result.signed and not result.intact
    assert result.problems == ["文件没有数字签名"]


@pytest.mark.parametrize("data", [b"", b"not a pdf at all", b"%PDF-1.7\n1 0 obj <<", bytes(range(256)) * 10])
def test_garbage_never_raises(data: bytes, identity: SigningIdentity) -> None:
    result = verify_pdf(data, trusted_certs=[identity.cert_path])
    assert not result.signed and not result.valid
    assert result.problems and result.problems[0].startswith("无法读取 PDF")


def test_signature_by_another_certificate_is_not_trusted(signed_pdf: bytes, tmp_path: Path) -> None:
    other = ensure_signing_identity(tmp_path, common_name="其他机构", organization="Other")
    result = verify_pdf(signed_pdf, trusted_certs=[other.cert_path])
    assert result.intact and result.valid and not result.trusted
    assert any("不受信任" in p for p in result.problems)
    assert not verify_pdf(signed_pdf).trusted  # nothing trusted unless named: no system store


def test_identity_is_generated_once_with_a_private_key_file(tmp_path: Path) -> None:
    first = ensure_signing_identity(tmp_path / "keys", common_name="讯达通信签章", organization="讯达通信")
    cert_pem = first.cert_path.read_bytes()
    again = ensure_signing_identity(tmp_path / "keys", common_name="另一个名字", organization="Other")
    assert again == first and again.cert_path.read_bytes() == cert_pem
    assert stat.S_IMODE(first.key_path.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "讯达通信签章"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "讯达通信"
    assert cert.subject.get_attributes_for_oid(NameOID.COUNTRY_NAME)[0].value == "CN"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.content_commitment
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > timedelta(days=3650)


def test_racing_first_uses_agree_on_one_certificate(tmp_path: Path) -> None:
    barrier = threading.Barrier(4)
    results: list[bytes] = []

    def first_use() -> None:
        barrier.wait()
        identity = ensure_signing_identity(tmp_path, common_name="并发", organization="Race")
        results.append(identity.cert_path.read_bytes())

    threads = [threading.Thread(target=first_use) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4 and len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["signing-cert.pem", "signing-key.pem"]
