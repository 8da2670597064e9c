"""PAdES signatures on contract PDFs (pyHanko): the provider's identity, signing, verification."""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from pyhanko.keys import load_cert_from_pemder
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign import fields, signers
from pyhanko.sign.diff_analysis import ModificationLevel
from pyhanko.sign.validation import SignatureCoverageLevel, validate_pdf_signature
from pyhanko_certvalidator import ValidationContext

KEY_FILE = "signing-key.pem"
CERT_FILE = "signing-cert.pem"
CERT_YEARS = 10


@dataclass(frozen=True)
class SigningIdentity:
    """PEM files of the signer's private key and X.509 certificate."""

    key_path: Path
    cert_path: Path


@dataclass
class VerificationResult:
    """What a reader of a signed contract wants to know; `problems` says why not, in Chinese.

    intact: the signed bytes are unchanged; valid: the signature verifies for those bytes;
    trusted: the certificate is one of the trusted ones; covers_whole_file: nothing but
    harmless updates (another signature, validation data) follows the signature.
    """

    signed: bool = False
    intact: bool = False
    valid: bool = False
    trusted: bool = False
    covers_whole_file: bool = False
    signer: str | None = None
    signed_at: datetime | None = None
    problems: list[str] = field(default_factory=list)


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _self_signed(common_name: str, organization: str) -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COUNTRY_NAME, "CN"),
        ]
    )
    now = datetime.now(UTC)
    usage = x509.KeyUsage(
        digital_signature=True,
        content_commitment=True,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + timedelta(days=365 * CERT_YEARS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def ensure_signing_identity(key_dir: Path, *, common_name: str, organization: str) -> SigningIdentity:
    """The key and self-signed certificate in key_dir, generated on first use only.

    A lock file serialises concurrent first runs, so two processes never end up with
    different certificates (or a key that does not match its certificate).
    """
    identity = SigningIdentity(key_path=key_dir / KEY_FILE, cert_path=key_dir / CERT_FILE)
    # The certificate is written last, so its presence means the pair is complete.
    if identity.cert_path.exists() and identity.key_path.exists():
        return identity
    key_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(key_dir / ".signing.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if identity.cert_path.exists() and identity.key_path.exists():
            return identity  # another process won the race
        identity.cert_path.unlink(missing_ok=True)  # never pair an old certificate with a new key
        key_pem, cert_pem = _self_signed(common_name, organization)
        _write_atomically(identity.key_path, key_pem, 0o600)
        _write_atomically(identity.cert_path, cert_pem, 0o644)
    return identity


def sign_pdf(
    pdf: bytes,
    identity: SigningIdentity,
    *,
    reason: str,
    location: str,
    field_name: str = "ProviderSignature",
    contact: str | None = None,
) -> bytes:
    """The PDF with an invisible PAdES signature (SHA-256) appended as an incremental update."""
    signer = _load_signer(
        str(identity.key_path),
        str(identity.cert_path),
        identity.key_path.stat().st_mtime_ns,
        identity.cert_path.stat().st_mtime_ns,
    )
    meta = signers.PdfSignatureMetadata(
        field_name=field_name,
        reason=reason,
        location=location,
        contact_info=contact,
        md_algorithm="sha256",
        subfilter=fields.SigSeedSubFilter.PADES,
    )
    writer = IncrementalPdfFileWriter(BytesIO(pdf))
    # A fixed reservation skips pyHanko's dry-run signature that only measures the size.
    return signers.sign_pdf(writer, meta, signer=signer, bytes_reserved=SIGNATURE_BYTES_RESERVED).getvalue()


# Room for the CMS signature: an RSA-2048/4096 signature with a certificate chain of a few
# certificates is 2–8 KB DER; the reservation is written as hex, twice this in the file.
SIGNATURE_BYTES_RESERVED = 16384


@functools.lru_cache(maxsize=4)
def _load_signer(key_path: str, cert_path: str, key_mtime_ns: int, cert_mtime_ns: int) -> signers.SimpleSigner:
    """Parse the key once per process (RSA key checks cost ~45 ms); a replaced file reloads."""
    signer = signers.SimpleSigner.load(key_path, cert_path)
    if signer is None:
        raise ValueError(f"cannot load signing key or certificate from {Path(key_path).parent}")
    return signer


# After an earlier signature, a later one is itself a form-filling update; after the last
# signature only validation data (DSS, document timestamps) may follow.
_HARMLESS_AFTER_EARLIER = ModificationLevel.FORM_FILLING
_HARMLESS_AFTER_LAST = ModificationLevel.LTA_UPDATES


def verify_pdf(pdf: bytes, *, trusted_certs: Sequence[Path] = ()) -> VerificationResult:
    """Check every signature in the PDF: integrity, cryptography, trust, later changes.

    Offline (no fetching of certificates or revocation data). Never raises: an unreadable
    file comes back as signed=False with the reason in `problems`.
    """
    result = VerificationResult()
    try:
        roots = [load_cert_from_pemder(str(path)) for path in trusted_certs]
    except Exception as exc:
        roots = []
        result.problems.append(f"无法读取受信任证书：{exc}")
    try:
        signatures = PdfFileReader(BytesIO(pdf)).embedded_signatures
    except Exception as exc:
        result.problems.append(f"无法读取 PDF 文件：{type(exc).__name__}: {exc}")
        return result
    if not signatures:
        result.problems.append("文件没有数字签名")
        return result

    result.signed = result.intact = result.valid = result.trusted = result.covers_whole_file = True
    for position, signature in enumerate(signatures, start=1):
        label = f"签名 {position}（{signature.field_name}）" if len(signatures) > 1 else "签名"
        try:
            context = ValidationContext(trust_roots=roots, allow_fetching=False)
            status = validate_pdf_signature(signature, context)
        except Exception as exc:
            result.intact = result.valid = result.trusted = result.covers_whole_file = False
            result.problems.append(f"{label}无法校验：{type(exc).__name__}: {exc}")
            continue
        cert = status.signing_cert
        result.signer = cert.subject.native.get("common_name") or cert.subject.human_friendly
        result.signed_at = status.signer_reported_dt
        if not status.intact:
            result.intact = result.valid = False  # a signature over other bytes does not sign these
            result.problems.append(f"{label}：签署后的内容已被篡改")
        if not status.valid:
            result.valid = False
            result.problems.append(f"{label}：签名密码学校验失败")
        if not status.trusted:
            result.trusted = False
            if status.intact and status.valid:  # pyHanko skips the chain check on a broken signature
                result.problems.append(f"{label}：签名证书不受信任（{result.signer}）")
        limit = _HARMLESS_AFTER_LAST if position == len(signatures) else _HARMLESS_AFTER_EARLIER
        level = status.modification_level
        if status.coverage != SignatureCoverageLevel.ENTIRE_FILE and (level is None or level > limit):
            result.covers_whole_file = False
            result.problems.append(f"{label}：签署后文件又被追加修改（未签名的增量更新）")
    return result
