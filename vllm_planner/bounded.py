"""Bounded reads of the files and texts users hand us, shared by the CLI, both services and the agent.

Every file a user names (profiles, deployment lists, service configs, token and PEM files, replay
captures, config.json, safetensors headers) is read through ``read_bytes``/``read_text``: opened
without blocking (a FIFO cannot hang the open), refused unless it is a regular file (``/dev/zero``,
a directory or a socket is an error, not an endless read), and never read past its cap, which the
error message states. YAML goes through ``load_yaml``, which refuses aliases (the "billion laughs"
expansion), duplicate keys (YAML keeps the last one silently), more than ``max_nodes`` nodes and
nesting deeper than ``max_depth`` before anything is constructed.

Errors are ``InputError`` (a ``ValueError``): one line, naming what was read (``what``), never
echoing more of the input than ``shown`` allows. Each boundary turns it into its own answer (the
CLI's ``error:`` line, a gRPC INVALID_ARGUMENT, a service's start-up line).
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Any, BinaryIO

import yaml

KIB, MIB = 1 << 10, 1 << 20

# Caps by kind of file; each is far above any real file of its kind.
MAX_PROFILE_BYTES = 256 * KIB  # a real plan profile is under 2 KiB
MAX_DEPLOYMENTS_BYTES = 1 * MIB  # ~5,000 deployments
MAX_SETTINGS_BYTES = 256 * KIB  # a service's YAML config
MAX_TOKEN_BYTES = 64 * KIB
MAX_PEM_BYTES = 1 * MIB  # a long certificate chain is a few KiB
MAX_CAPTURE_FILE_BYTES = 16 * MIB  # nvidia-smi -q -x of 8 GPUs is ~100 KiB
MAX_LIST_FILE_BYTES = 1 * MIB  # one address per line

MAX_YAML_NODES = 200_000
MAX_YAML_DEPTH = 64
SHOWN_CHARS = 64


class InputError(ValueError):
    """A file or text given to us cannot be used; the message is one line and names it."""

    def __init__(self, message: str, *, subject: str | None = None) -> None:
        super().__init__(" ".join(message.split()))
        self.subject = subject


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """``repr`` of at most ``limit`` characters of ``value``: what an error may echo of an input."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


def file_label(path: str | os.PathLike) -> str:
    """How an error names a user's file: the path, or a bounded prefix of a very long one."""
    name = os.fspath(path)
    name = name if isinstance(name, str) else os.fsdecode(name)
    return name if len(name) <= 200 and name.isprintable() else shown(name, 200)


def _size(n: int) -> str:
    return f"{n // MIB} MiB" if n >= MIB and n % MIB == 0 else f"{n // KIB} KiB" if n % KIB == 0 else f"{n} bytes"


def open_regular(path: str | os.PathLike, *, what: str | None = None) -> BinaryIO:
    """A binary file object for the regular file ``path``, opened without blocking; ``InputError``
    when the name is unusable, the file cannot be opened, or it is not a regular file."""
    label = what or file_label(path)
    try:
        name = os.path.expanduser(os.fspath(path))
    except (TypeError, ValueError):
        raise InputError(f"{label}: not a file name") from None
    if "\x00" in name:
        raise InputError(f"{label}: the file name contains a NUL byte")
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not block; regular files ignore the flag.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise InputError(f"{label}: {_os_reason(exc)}") from None
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        os.close(fd)
        raise InputError(f"{label}: {_os_reason(exc)}") from None
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory, not a file" if stat.S_ISDIR(mode) else "not a regular file (a device, FIFO or socket)"
        raise InputError(f"{label}: {kind}")
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, *, max_bytes: int, what: str | None = None) -> bytes:
    """The bytes of the regular file ``path`` (at most ``max_bytes``), or ``InputError`` saying why not."""
    label = what or file_label(path)
    with open_regular(path, what=label) as handle:
        try:
            data = handle.read(max_bytes + 1)
        except OSError as exc:
            raise InputError(f"{label}: {_os_reason(exc)}") from None
    if len(data) > max_bytes:
        raise InputError(f"{label}: too large (the limit for this file is {_size(max_bytes)})")
    return data


def decode_utf8(data: bytes, *, what: str) -> str:
    """Strict UTF-8 (a BOM is dropped); an invalid byte is an error that says where it is."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None


def read_text(path: str | os.PathLike, *, max_bytes: int, what: str | None = None) -> str:
    """``read_bytes`` decoded as strict UTF-8."""
    label = what or file_label(path)
    return decode_utf8(read_bytes(path, max_bytes=max_bytes, what=label), what=label)


def read_token(path: str | os.PathLike, *, what: str) -> str:
    """A bearer-token file: bounded, UTF-8, stripped, not empty."""
    token = read_text(path, max_bytes=MAX_TOKEN_BYTES, what=what).strip()
    if not token:
        raise InputError(f"{what}: the file is empty")
    return token


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ENAMETOOLONG:
        return "the file name is too long"
    return exc.strerror or type(exc).__name__


# --------------------------------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------------------------------

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _mark(event: Any) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""


def _check_events(text: str, *, what: str, max_nodes: int, max_depth: int) -> None:
    """One pass over the parser's events: refuse aliases, duplicate keys, too many nodes or levels."""
    # Each open collection: [is_mapping, expecting_key, keys_seen]
    stack: list[list[Any]] = []
    nodes = 0

    def take_node(event: Any, key: str | None) -> None:
        nonlocal nodes
        nodes += 1
        if nodes > max_nodes:
            raise InputError(f"{what}: more than {max_nodes} YAML nodes{_mark(event)}")
        if stack and stack[-1][0]:
            frame = stack[-1]
            if frame[1] and key is not None:
                if key in frame[2]:
                    raise InputError(f"{what}: duplicate key {shown(key)}{_mark(event)}")
                frame[2].add(key)
            frame[1] = not frame[1]

    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            raise InputError(f"{what}: YAML aliases (*name) are not allowed{_mark(event)}")
        if isinstance(event, yaml.ScalarEvent):
            take_node(event, event.value)
        elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            take_node(event, None)
            stack.append([isinstance(event, yaml.MappingStartEvent), True, set()])
            if len(stack) > max_depth:
                raise InputError(f"{what}: nested deeper than {max_depth} levels{_mark(event)}")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            stack.pop()


def load_yaml(text: str, *, what: str, max_nodes: int = MAX_YAML_NODES, max_depth: int = MAX_YAML_DEPTH) -> Any:
    """Safe YAML with the checks above; syntax errors name the line and column."""
    try:
        _check_events(text, what=what, max_nodes=max_nodes, max_depth=max_depth)
        return yaml.load(text, Loader=_Loader)  # noqa: S506  (a safe loader, checked above)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError(f"{what}: {problem}{where}") from None
    except (RecursionError, MemoryError):
        raise InputError(f"{what}: too large or too deeply nested to parse") from None


def read_yaml(path: str | os.PathLike, *, max_bytes: int, what: str | None = None) -> Any:
    """``read_text`` + ``load_yaml``."""
    label = what or file_label(path)
    return load_yaml(read_text(path, max_bytes=max_bytes, what=label), what=label)


