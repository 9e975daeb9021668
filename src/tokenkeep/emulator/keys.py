"""Key material: a connected app's JWT-bearer key pair, and a local CA for ``--tls``."""

from __future__ import annotations

import datetime as dt
import ipaddress
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "make_tls_files", "new_app_keypair"]

# Certificates are dated from a fixed origin far in the past to far in the future so an
# advanced emulator clock (or a skewed client) never sees them as not-yet-valid/expired,
# and so this module needs no clock.
_NOT_BEFORE = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
_NOT_AFTER = dt.datetime(2099, 1, 1, tzinfo=dt.UTC)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey,
    signer: rsa.RSAPrivateKey,
    *,
    ca: bool,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(_NOT_BEFORE)
        .not_valid_after(_NOT_AFTER)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        ).add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def new_app_keypair() -> tuple[str, str]:
    """(private key PEM, self-signed certificate PEM) for a connected app's JWT bearer flow."""
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenkeep-emulator-app")])
    cert = _cert(name, name, key.public_key(), key, ca=False)
    return _pem(key).decode(), cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class TlsFiles:
    """Paths of a generated CA certificate, and a server certificate + key signed by it."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_tls_files(hosts: list[str], directory: Path | None = None) -> TlsFiles:
    """A fresh local CA and a server certificate for ``hosts`` (+ 127.0.0.1, localhost)."""
    out = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="tokenkeep-emu-tls-"))
    out.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tokenkeep emulator local CA")])
    ca_cert = _cert(ca_name, ca_name, ca_key.public_key(), ca_key, ca=True)
    sans: list[x509.GeneralName] = [x509.DNSName("localhost")]
    seen = {"localhost"}
    for host in [*hosts, "127.0.0.1"]:
        if host in seen:
            continue
        seen.add(host)
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = _key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0] if hosts else "localhost")])
    cert = _cert(name, ca_name, key.public_key(), ca_key, ca=False, sans=sans)
    files = TlsFiles(out / "ca.pem", out / "server.pem", out / "server-key.pem")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(_pem(key))
    files.key_file.chmod(0o600)
    return files
