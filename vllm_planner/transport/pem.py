"""Read and check the PEM files of TLS and mutual TLS before gRPC sees them.

gRPC's C core accepts any bytes as a certificate or key and only fails later, with log lines on
stderr and a generic "Failed to bind" (servers) or "Failed to create security handshaker" (clients).
Here each file is read bounded (``vllm_planner.bounded``) and parsed by OpenSSL through the standard
``ssl`` module: a file that is not a PEM certificate, a key that is not a key or does not match the
certificate, or an encrypted key (gRPC cannot use one) is an ``InputError`` naming the file.
"""

from __future__ import annotations

import os
import ssl

from vllm_planner.bounded import MAX_PEM_BYTES, InputError, file_label, read_bytes


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted key: a hang, not an error.
    raise InputError("the private key is encrypted; gRPC needs an unencrypted PEM key")


def read_ca(path: str | os.PathLike, *, what: str = "CA certificate file") -> bytes:
    """A bounded PEM bundle with at least one certificate OpenSSL can load."""
    label = f"{what} {file_label(path)}"
    data = read_bytes(path, max_bytes=MAX_PEM_BYTES, what=label)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cadata=data.decode("ascii"))
    except (ssl.SSLError, UnicodeDecodeError, ValueError):
        raise InputError(f"{label}: no PEM certificate in it") from None
    return data


def read_cert_and_key(cert: str | os.PathLike, key: str | os.PathLike, *, what: str = "TLS") -> tuple[bytes, bytes]:
    """The bounded certificate chain and private key, checked to be PEM and to belong together."""
    cert_label, key_label = f"{what} certificate file {file_label(cert)}", f"{what} key file {file_label(key)}"
    cert_bytes = read_bytes(cert, max_bytes=MAX_PEM_BYTES, what=cert_label)
    key_bytes = read_bytes(key, max_bytes=MAX_PEM_BYTES, what=key_label)
    if b"-----BEGIN CERTIFICATE-----" not in cert_bytes:
        raise InputError(f"{cert_label}: not a PEM certificate")
    if b"PRIVATE KEY-----" not in key_bytes:
        raise InputError(f"{key_label}: not a PEM private key")
    try:
        # Both are regular files of bounded size (just read): OpenSSL may open them by path.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(os.fspath(cert), os.fspath(key), password=_no_password)
    except InputError as exc:
        raise InputError(f"{key_label}: {exc}") from None
    except ssl.SSLError as exc:
        reason = exc.reason or exc.strerror or str(exc)
        raise InputError(f"{cert_label} / {key_label}: OpenSSL cannot use them ({reason})") from None
    except OSError as exc:
        raise InputError(f"{cert_label}: {exc.strerror or exc}") from None
    return cert_bytes, key_bytes
