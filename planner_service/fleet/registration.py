"""What ``RegisterAgent`` accepts: every field a client sends is validated and bounded.

RegisterAgent is the one fleet RPC that adds state on a client's word, so (besides the bearer token
every RPC needs when the planner has one) it checks:

- ``address``: the shared ``HOST:PORT`` parser (RFC 1123 name or IP literal, port 1..65535, no
  wrapping, no control characters, bounded length); a wildcard host (an agent listening on 0.0.0.0)
  is replaced by the caller's IP;
- ``host``: empty or an RFC 1123 name / IP literal (it ends up in logs and tables);
- ``agent_instance_id``: at most 64 characters of ``[A-Za-z0-9._:-]``;
- ``labels``: at most ``MAX_LABELS``, each with Kubernetes label syntax (key: optional DNS-subdomain
  prefix of at most 253 characters and a name of at most 63; value: at most 63), no duplicates.

The number of distinct registered addresses is capped by ``Registrations`` (``max_registrations``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from planner_service.engine.errors import FieldViolation, InvalidRequestError
from vllm_planner.transport.address import AddressError, HostPort, parse_host_port, validate_host

MAX_LABELS = 32
MAX_LABEL_VALUE = 63
MAX_LABEL_NAME = 63
MAX_LABEL_PREFIX = 253
_LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_INSTANCE_ID = re.compile(r"^[A-Za-z0-9._:-]{0,64}$")


@dataclass(frozen=True)
class Registration:
    address: HostPort
    host: str
    agent_instance_id: str
    labels: dict[str, str]


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if not slash:
        prefix, name = "", key
    if not name or len(name) > MAX_LABEL_NAME or not _LABEL_NAME.match(name):
        return f"name part must be 1-{MAX_LABEL_NAME} letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    if slash and (not prefix or len(prefix) > MAX_LABEL_PREFIX or not _DNS_SUBDOMAIN.match(prefix)):
        return f"prefix must be a DNS subdomain of at most {MAX_LABEL_PREFIX} characters"
    return None


def _shown(text: str) -> str:
    return repr(text[:40] + ("…" if len(text) > 40 else ""))


def validate_labels(items: list[tuple[str, str]], field: str = "labels") -> dict[str, str]:
    violations: list[FieldViolation] = []
    if len(items) > MAX_LABELS:
        violations.append(FieldViolation(field, f"at most {MAX_LABELS} labels, got {len(items)}"))
        items = items[:MAX_LABELS]
    labels: dict[str, str] = {}
    for i, (key, value) in enumerate(items):
        problem = _label_key_problem(key)
        if problem:
            violations.append(FieldViolation(f"{field}[{i}].key", f"{_shown(key)}: {problem}"))
        elif key in labels:
            violations.append(FieldViolation(f"{field}[{i}].key", f"{_shown(key)} given twice"))
        if len(value) > MAX_LABEL_VALUE or (value and not _LABEL_NAME.match(value)):
            violations.append(FieldViolation(
                f"{field}[{i}].value", f"{_shown(value)}: at most {MAX_LABEL_VALUE} letters, digits, '-', '_' or '.', "
                "starting and ending alphanumeric"))
        labels[key] = value
    if violations:
        raise InvalidRequestError("invalid registration: " + "; ".join(f"{v.field}: {v.description}" for v in violations[:5]),
                                  violations[:16])
    return labels


def validate_registration(address: str, host: str, agent_instance_id: str, labels: list[tuple[str, str]],
                          caller_ip: str | None) -> Registration:
    """The registration as the planner will keep it, or InvalidRequestError with field violations."""
    try:
        parsed = parse_host_port(address, "address", allow_wildcard=True)
        if parsed.is_wildcard:  # an agent listening on 0.0.0.0 is reachable at the caller's IP
            if caller_ip is None:
                raise AddressError("address", f"{address} is a wildcard and the caller's IP is unknown")
            parsed = HostPort(caller_ip, parsed.port)
        if host:
            validate_host(host, "host")
    except AddressError as exc:
        raise InvalidRequestError.for_field(exc.field, exc.reason) from None
    if not _INSTANCE_ID.match(agent_instance_id):
        raise InvalidRequestError.for_field("agent_instance_id", "at most 64 letters, digits, '.', '_', ':' or '-'")
    return Registration(parsed, host, agent_instance_id, validate_labels(labels))
