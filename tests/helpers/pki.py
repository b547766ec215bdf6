"""A throw-away PKI for TLS and mutual-TLS tests, generated with ``cryptography`` (EC P-256 keys)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _cert(subject_key, subject: str, issuer_key, issuer: str, *, ca: bool, sans=(), usage=None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(subject_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate | None = None, key=None) -> Path:
    if cert is not None:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    else:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    return path


def make_pki(d: Path, *, server_ip_san: bool = True) -> dict[str, Path]:
    """Files in ``d``: a CA and a rogue CA nobody trusts, a server certificate for localhost and
    127.0.0.1 (only localhost with ``server_ip_san=False``: a client dialling 127.0.0.1 must then check
    the name), a client certificate from the CA and one from the rogue CA (each with its key)."""
    ca_key, rogue_key, server_key, client_key, rogue_client_key = (_key() for _ in range(5))
    ca = _cert(ca_key, "test-ca", ca_key, "test-ca", ca=True)
    rogue_ca = _cert(rogue_key, "rogue-ca", rogue_key, "rogue-ca", ca=True)
    sans = [x509.DNSName("localhost")] + ([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))] if server_ip_san else [])
    server = _cert(server_key, "localhost", ca_key, "test-ca", ca=False, sans=sans, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client = _cert(client_key, "planner", ca_key, "test-ca", ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    rogue_client = _cert(
        rogue_client_key, "intruder", rogue_key, "rogue-ca", ca=False, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return {
        "ca": _write(d / "ca.pem", ca),
        "rogue_ca": _write(d / "rogue-ca.pem", rogue_ca),
        "server_cert": _write(d / "server.pem", server),
        "server_key": _write(d / "server-key.pem", key=server_key),
        "client_cert": _write(d / "client.pem", client),
        "client_key": _write(d / "client-key.pem", key=client_key),
        "rogue_client_cert": _write(d / "rogue-client.pem", rogue_client),
        "rogue_client_key": _write(d / "rogue-client-key.pem", key=rogue_client_key),
    }
