"""The planner SDK and the CLI's remote flags over TLS and mutual TLS, with a bearer token.

A throw-away CA, server and client certificates are generated with ``cryptography``.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.cli.backend import add_remote_arguments, planner_client
from clients.sdk import PlannerClient, Unavailable
from planner_service.metadata.catalog import list_catalog
from planner_service.server.app import PlannerServiceSettings
from planner_service.server.background import BackgroundPlannerServer

TOKEN = "tls-token"


def _issue(subject: str, key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:  # noqa: ANN001
    now = datetime.datetime.now(datetime.timezone.utc)
    name = lambda cn: x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # noqa: E731
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(directory: Path, stem: str, key, cert: x509.Certificate) -> tuple[Path, Path]:  # noqa: ANN001
    key_path, cert_path = directory / f"{stem}.key", directory / f"{stem}.pem"
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("test-ca", ca_key, "test-ca", ca_key, ca=True)
    _, ca_path = _write(directory, "ca", ca_key, ca_cert)
    paths = {"ca": ca_path}
    for stem in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        paths[f"{stem}_key"], paths[f"{stem}_cert"] = _write(
            directory, stem, key, _issue(stem, key, "test-ca", ca_key, ca=False)
        )
    return paths


@pytest.fixture(scope="module")
def mtls_server(pki):
    settings = PlannerServiceSettings(
        listen="127.0.0.1:0",
        tls_cert_file=pki["server_cert"],
        tls_key_file=pki["server_key"],
        tls_client_ca_file=pki["ca"],
        auth_token=TOKEN,
    )
    with BackgroundPlannerServer(settings) as running:
        yield running


def test_sdk_over_mutual_tls_with_a_token(mtls_server, pki):
    with PlannerClient(
        mtls_server.address,
        tls_ca_file=pki["ca"],
        tls_cert_file=pki["client_cert"],
        tls_key_file=pki["client_key"],
        token=TOKEN,
        timeout_seconds=10,
    ) as client:
        assert client.list_catalog_models() == list_catalog()


def test_sdk_without_a_client_certificate_is_refused(mtls_server, pki):
    with PlannerClient(mtls_server.address, tls_ca_file=pki["ca"], token=TOKEN, timeout_seconds=5) as client:
        with pytest.raises(Unavailable):
            client.list_catalog_models()


def test_cli_remote_flags_reach_the_service(mtls_server, pki, tmp_path, monkeypatch):
    monkeypatch.delenv("VLLM_PLANNER_TOKEN", raising=False)
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    parser = argparse.ArgumentParser()
    add_remote_arguments(parser)
    args = parser.parse_args([
        "--planner", mtls_server.address,
        "--tls-ca-file", str(pki["ca"]),
        "--tls-cert-file", str(pki["client_cert"]),
        "--tls-key-file", str(pki["client_key"]),
        "--token-file", str(token_file),
    ])
    with planner_client(args) as client:
        assert client.list_catalog_models() == list_catalog()
