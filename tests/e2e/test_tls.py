"""TLS at the edge, checked with real clients: Python's ssl (OpenSSL) and sslyze.

Refusals prove something only if the client really offered the old version or the weak
suite, so each refused handshake is first made to succeed against a permissive control
server (Python's ssl, same certificate) with the very same client settings.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from deploy.processes import free_port
from tests.e2e.support import Edge

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
# Mozilla intermediate: the ECDHE-ECDSA AEAD suites an ECDSA certificate can use.
TLS12_ECDSA_SUITES = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
)
TLS13_SUITES = {"TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"}
# Usable with an ECDSA certificate, but outside the profile: CBC with SHA-1 or SHA-2
# MACs, no encryption at all, truncated-tag CCM, Camellia and ARIA.
WEAK_SUITES = (
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
    "ECDHE-ECDSA-NULL-SHA",
    "ECDHE-ECDSA-AES128-CCM8",
    "ECDHE-ECDSA-CAMELLIA128-SHA256",
    "ECDHE-ECDSA-ARIA128-GCM-SHA256",
)


def handshake(
    context: ssl.SSLContext, port: int, server_hostname: str = "localhost"
) -> tuple[str, str]:
    """(protocol version, cipher name) of a completed handshake with 127.0.0.1:port."""
    with socket.create_connection((HOST, port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as tls:
            version = tls.version()
            cipher = tls.cipher()
            assert version is not None
            assert cipher is not None
            return version, cipher[0]


@contextlib.contextmanager
def legacy_protocols() -> Iterator[None]:
    """Python deprecates TLS 1.0/1.1 with a warning (an error under this suite's
    filterwarnings); offering them on purpose is the point of the refusal tests."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"ssl\.TLSVersion\.TLSv1(_1)? is deprecated", DeprecationWarning
        )
        yield


def client_context(
    edge: Edge,
    version: ssl.TLSVersion,
    ciphers: str | None = None,
) -> ssl.SSLContext:
    """A verifying client pinned to one TLS version (and, for <= 1.2, one cipher list).
    Security level 0 lets OpenSSL offer what its defaults would hold back."""
    context = edge.tls_context()
    with legacy_protocols():
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers(f"{ciphers or 'ALL:COMPLEMENTOFALL'}:@SECLEVEL=0")
    return context


@contextlib.contextmanager
def permissive_server(certificate: Path, key: Path) -> Iterator[int]:
    """A TLS server that accepts anything OpenSSL can do (TLS 1.0 up, every suite)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with legacy_protocols():
        context.minimum_version = ssl.TLSVersion.TLSv1
    context.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    context.load_cert_chain(certificate, key)
    listener = socket.create_server((HOST, free_port()))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                with context.wrap_socket(conn, server_side=True):
                    pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


@pytest.fixture(scope="module")
def control_port(edge: Edge) -> Iterator[int]:
    tls = edge.stack.root / "tls"
    with permissive_server(tls / "server.pem", tls / "server.key") as port:
        yield port


def test_certificate_verifies_against_the_development_ca_only(edge: Edge) -> None:
    port = edge.stack.https_port
    for name in ("localhost", "127.0.0.1"):
        version, _ = handshake(edge.tls_context(), port, server_hostname=name)
        assert version in {"TLSv1.2", "TLSv1.3"}

    with socket.create_connection((HOST, port), timeout=10) as raw:
        with edge.tls_context().wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    certificate = x509.load_der_x509_certificate(der)
    key = certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    lifetime = certificate.not_valid_after_utc - certificate.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=90)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert ipaddress.ip_address("127.0.0.1") in names.get_values_for_type(x509.IPAddress)

    # The name the certificate does not carry, and the public trust store, both fail.
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(edge.tls_context(), port, server_hostname="example.com")
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(ssl.create_default_context(), port)


def test_tls13_and_tls12_connect_with_the_intermediate_suites(edge: Edge) -> None:
    port = edge.stack.https_port
    version, cipher = handshake(client_context(edge, ssl.TLSVersion.TLSv1_3), port)
    assert (version, cipher in TLS13_SUITES) == ("TLSv1.3", True), cipher

    for suite in TLS12_ECDSA_SUITES:
        context = client_context(edge, ssl.TLSVersion.TLSv1_2, suite)
        assert handshake(context, port) == ("TLSv1.2", suite)


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLSv1.0", "TLSv1.1"]
)
def test_tls10_and_tls11_are_refused(
    edge: Edge, control_port: int, version: ssl.TLSVersion
) -> None:
    context = client_context(edge, version)
    offered, _ = handshake(context, control_port)  # the client can speak it...
    assert offered == {ssl.TLSVersion.TLSv1: "TLSv1", ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version]
    with pytest.raises(ssl.SSLError):  # ...and the edge refuses it
        handshake(context, edge.stack.https_port)


@pytest.mark.parametrize("suite", WEAK_SUITES)
def test_weak_cipher_suites_are_refused(edge: Edge, control_port: int, suite: str) -> None:
    context = client_context(edge, ssl.TLSVersion.TLSv1_2, suite)
    assert handshake(context, control_port) == ("TLSv1.2", suite)
    with pytest.raises(ssl.SSLError):
        handshake(context, edge.stack.https_port)


# sslyze's bundled public trust stores hold a certificate with a negative serial number,
# which cryptography warns about while sslyze loads them.
@pytest.mark.filterwarnings(
    "ignore:Parsed a serial number which wasn't positive"
    ":cryptography.utils.CryptographyDeprecationWarning"
)
def test_sslyze_finds_nothing_against_mozilla_intermediate(edge: Edge) -> None:
    """sslyze's own Mozilla "intermediate" check passes once the development CA is
    supplied; against the public trust stores only certificate path validation fails,
    as it must for a development CA."""
    from sslyze import (
        ScanCommandsExtraArguments,
        Scanner,
        ServerNetworkConfiguration,
        ServerNetworkLocation,
        ServerScanRequest,
        ServerScanStatusEnum,
    )
    from sslyze.mozilla_tls_profile.tls_config_checker import (
        MozillaTlsConfiguration,
        ServerNotCompliantWithTlsConfiguration,
        TlsConfigurationEnum,
        check_server_against_tls_configuration,
    )
    from sslyze.plugins.certificate_info.implementation import CertificateInfoExtraArgument

    location = ServerNetworkLocation("localhost", edge.stack.https_port, ip_address=HOST)
    request = ServerScanRequest(
        server_location=location,
        network_configuration=ServerNetworkConfiguration("localhost"),
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=edge.stack.ca_certificate)
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    [result] = list(scanner.get_results())
    assert result.scan_status == ServerScanStatusEnum.COMPLETED, result.connectivity_error_trace

    profile = MozillaTlsConfiguration.get(TlsConfigurationEnum.MOZILLA_INTERMEDIATE)
    try:
        check_server_against_tls_configuration(result, profile)
    except ServerNotCompliantWithTlsConfiguration as exc:  # pragma: no cover - the failure
        pytest.fail(f"sslyze: {exc.issues}")

    assert result.scan_result is not None
    certificate_info = result.scan_result.certificate_info.result
    assert certificate_info is not None
    [deployment] = certificate_info.certificate_deployments
    outcomes = {
        path.trust_store.name: path.was_validation_successful
        for path in deployment.path_validation_results
    }
    public = {name: ok for name, ok in outcomes.items() if name != "Supplied CA file"}
    assert outcomes["Supplied CA file"] is True
    assert public
    assert not any(public.values()), outcomes

    # sslyze leaves its HSTS check off; the header it read must still be Mozilla's.
    headers = result.scan_result.http_headers.result
    assert headers is not None
    assert headers.strict_transport_security_header is not None
    assert headers.strict_transport_security_header.max_age == profile.hsts_min_age
    assert headers.strict_transport_security_header.include_subdomains is True
