"""The one ``HOST:PORT`` parser of the project: every flag, setting and RPC field that names an address.

Rules (the same everywhere, so an address a service accepts in a flag is accepted in a config file,
an environment variable and an RPC alike):

- at most ``MAX_ADDRESS_LENGTH`` characters, printable ASCII only (no whitespace or control
  characters: an address ends up in log lines and metrics labels, where a newline forges a line);
- ``HOST`` is an RFC 1123 host name (dot-separated labels of letters, digits and inner hyphens, each
  at most 63 characters, at most 253 in all), an IPv4 literal, or an IPv6 literal in brackets
  (``[::1]:50051``); a name made only of numeric labels must be a valid IPv4 address;
- ``PORT`` is decimal digits in 1..65535 (0 only where a caller binds "any free port"); nothing wraps
  (``70000`` is an error, never ``4464``);
- the wildcards ``0.0.0.0`` / ``[::]`` are accepted only where the caller says so (listening).

``parse_host_port`` raises ``AddressError`` (a ``ValueError``) naming the field; pydantic validators,
argparse types and RPC handlers each turn that into their own error without re-wording it.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Iterable

MAX_HOST_LENGTH = 253
# "[" + the longest IPv6 literal with a scope id + "]:65535", or a 253-character name + ":65535".
MAX_ADDRESS_LENGTH = MAX_HOST_LENGTH + 6
_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
_PORT = re.compile(r"^[0-9]{1,5}$")
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


class AddressError(ValueError):
    """An address that is not a valid ``HOST:PORT``; ``field`` names where it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.reason = message


@dataclass(frozen=True)
class HostPort:
    host: str  # without brackets
    port: int

    def __str__(self) -> str:
        return join_host_port(self.host, self.port)

    @property
    def is_wildcard(self) -> bool:
        return self.host in WILDCARD_HOSTS

    @property
    def is_ip(self) -> bool:
        return _ip(self.host) is not None


def join_host_port(host: str, port: int) -> str:
    """``HOST:PORT``, with brackets around an IPv6 literal."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _shown(text: str) -> str:
    """The offending text for an error message: bounded and with control characters escaped."""
    return repr(text[:64] + ("…" if len(text) > 64 else ""))


def check_printable(text: str, field: str, max_length: int) -> None:
    if len(text) > max_length:
        raise AddressError(field, f"longer than {max_length} characters ({len(text)})")
    bad = next((c for c in text if not (0x21 <= ord(c) <= 0x7E)), None)
    if bad is not None:
        raise AddressError(field, f"{_shown(text)} contains whitespace, a control or a non-ASCII character ({bad!r})")


def validate_host(host: str, field: str = "host") -> str:
    """``host`` if it is an RFC 1123 host name or an IP literal (IPv6 without brackets), else AddressError."""
    check_printable(host, field, MAX_HOST_LENGTH)
    if not host:
        raise AddressError(field, "empty host")
    if _ip(host) is not None:
        return host
    name = host[:-1] if host.endswith(".") else host
    labels = name.split(".")
    if not all(_LABEL.match(label) for label in labels):
        raise AddressError(
            field, f"{_shown(host)} is neither an IP address nor an RFC 1123 host name (letters, digits, inner hyphens, dots)"
        )
    if all(label.isdigit() for label in labels):
        raise AddressError(field, f"{_shown(host)} looks like an IPv4 address but is not a valid one")
    return host


def parse_host_port(text: str, field: str = "address", *, allow_wildcard: bool = False, allow_any_port: bool = False) -> HostPort:
    """Parse and validate ``HOST:PORT`` (see the module docstring for the rules).

    ``allow_wildcard``: accept 0.0.0.0 and [::] (a listening socket). ``allow_any_port``: accept port 0
    (bind any free port).
    """
    if not isinstance(text, str):
        raise AddressError(field, f"expected HOST:PORT text, got {type(text).__name__}")
    check_printable(text, field, MAX_ADDRESS_LENGTH)
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise AddressError(field, f"expected [IPV6]:PORT, got {_shown(text)}")
        host, port_text = text[1:end], text[end + 2 :]
        ip = _ip(host)
        if ip is None or ip.version != 6:
            raise AddressError(field, f"{_shown(host)} in brackets is not an IPv6 address")
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or not host:
            raise AddressError(field, f"expected HOST:PORT, got {_shown(text)}")
        if ":" in host:
            raise AddressError(field, f"an IPv6 address needs brackets, e.g. [{host}]:{port_text}")
        validate_host(host, field)
    if not _PORT.match(port_text):
        raise AddressError(field, f"port {_shown(port_text)} is not a decimal number")
    port = int(port_text)
    lowest = 0 if allow_any_port else 1
    if not lowest <= port <= 65535:
        raise AddressError(field, f"port {port} is outside {lowest}..65535")
    parsed = HostPort(host, port)
    if parsed.is_wildcard and not allow_wildcard:
        raise AddressError(field, f"{text} is a wildcard address: name the host to connect to")
    return parsed


def parse_address_list(values: Iterable[str], field: str = "address") -> list[str]:
    """``["a:1,b:2", "c:3"]`` -> sorted unique normalised addresses (repeated or comma-joined)."""
    out: set[str] = set()
    for value in values:
        for item in str(value).split(","):
            if item.strip():
                out.add(str(parse_host_port(item.strip(), field)))
    return sorted(out)


def listen_address(text: str, field: str = "listen") -> str:
    """A server's listening address, normalised (wildcards and port 0 allowed)."""
    return str(parse_host_port(text, field, allow_wildcard=True, allow_any_port=True))


def dial_address(text: str, field: str = "address") -> str:
    """An address to connect to, normalised (no wildcard, port 1..65535)."""
    return str(parse_host_port(text, field))
