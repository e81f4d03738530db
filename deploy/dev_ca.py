"""A throwaway development CA and an ECDSA P-256 server certificate for the local edge.

    .venv/bin/python -m deploy.dev_ca OUT_DIR [--days N]

writes ``OUT_DIR/ca.pem`` (the CA certificate, to trust), ``OUT_DIR/server.pem`` (the
server certificate) and ``OUT_DIR/server.key`` (its key, mode 0600). The server
certificate names ``localhost``, ``127.0.0.1`` and ``::1`` and, like the CA, is valid
for at most 90 days. The CA's private key lives only in memory and is gone when this
returns, so nothing more can ever be signed with it; and the CA is name-constrained
to localhost and loopback addresses, so even a CA certificate imported into a trust
store by hand cannot vouch for any other site. For real certificates see the README
(certbot).
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MAX_DAYS = 90
DNS_NAMES = ("localhost",)
IP_ADDRESSES = ("127.0.0.1", "::1")
# Clock skew between this machine and a client's.
BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class DevCertificates:
    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "housing-api development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _validity(days: int) -> tuple[dt.datetime, dt.datetime]:
    if not 1 <= days <= MAX_DAYS:
        raise ValueError(f"days must be between 1 and {MAX_DAYS}, not {days}")
    start = dt.datetime.now(dt.UTC) - BACKDATE
    return start, start + dt.timedelta(days=days)


def _ca(days: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"housing-api development CA {secrets.token_hex(4)}")
    not_before, not_after = _validity(days)
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        )
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[
                    *(x509.DNSName(name) for name in DNS_NAMES),
                    x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
                    x509.IPAddress(ipaddress.ip_network("::1/128")),
                ],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, certificate


def _server(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate, days: int
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    not_before, not_after = _validity(days)
    public = key.public_key()
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in DNS_NAMES]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in IP_ADDRESSES]
    ca_ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(_name(DNS_NAMES[0]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(min(not_after, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, certificate


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a key is never briefly readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def make_dev_certificates(directory: Path, *, days: int = MAX_DAYS) -> DevCertificates:
    """A fresh CA and server certificate in ``directory`` (created if needed)."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca(days)
    server_key, server = _server(ca_key, ca, days)
    result = DevCertificates(
        ca_certificate=directory / "ca.pem",
        server_certificate=directory / "server.pem",
        server_key=directory / "server.key",
    )
    _write(result.ca_certificate, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(result.server_certificate, server.public_bytes(serialization.Encoding.PEM), 0o644)
    key_pem = server_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(result.server_key, key_pem, 0o600)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description="Make a development CA and a localhost server certificate."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--days", type=int, default=MAX_DAYS, help=f"1 to {MAX_DAYS}")
    args = parser.parse_args(argv)
    made = make_dev_certificates(args.directory, days=args.days)
    print(f"CA certificate (trust this): {made.ca_certificate}")
    print(f"server certificate: {made.server_certificate}")
    print(f"server key (0600): {made.server_key}")


if __name__ == "__main__":
    main()
