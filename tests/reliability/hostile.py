"""Hostile inputs shared by the ``tests/test_hostile_*.py`` suites: files, argv pieces, protobuf messages.

Everything here is generated, not recorded: files an attacker (or a tired user) would hand the CLI and
the services, hypothesis strategies that build any request message of the three services from its
descriptor (unknown enum numbers, integer and float extremes, long and odd strings, nested messages),
and the one assertion every CLI answer must meet (``assert_cli_answer``).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from reliability.helpers import QWEN3_8B_CONFIG, offline_environ

# Answers the CLI may give (README "exit codes"); 70 (a bug) is deliberately absent.
CLI_CODES = {0, 1, 2, 3}
HANG_SECONDS = 10.0

# Settings the environment of a developer may carry that would change what a command does.
_AMBIENT = ("VLLM_PLANNER_ADDRESS", "VLLM_PLANNER_TOKEN", "VLLM_PLANNER_DEBUG", "VLLM_PLANNER_CONFIG", "GPU_AGENT_CONFIG")


def offline_scratch(base: Path, cwd: Path) -> pytest.MonkeyPatch:
    """An offline environment (empty HF cache, refused Hub) without ambient settings, working in ``cwd``
    (so that nothing a generated command writes lands in the checkout). Undo it when done."""
    patch = pytest.MonkeyPatch()
    for key, value in {**offline_environ(base / "hf-home"), "HF_HUB_OFFLINE": "1"}.items():
        patch.setenv(key, value)
    for key in _AMBIENT:
        patch.delenv(key, raising=False)
    cwd.mkdir(parents=True, exist_ok=True)
    patch.chdir(cwd)
    return patch


# ---------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------

BILLION_LAUGHS = "\n".join(
    [f'l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"l{i}: &l{i} [{','.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 10)]
) + "\n"


def _write(path: Path, content: bytes | str) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def hostile_yaml_texts() -> dict[str, bytes]:
    """YAML documents no boundary may hang on, crash on, or silently accept as something else."""
    good_model = "model: {model: Qwen/Qwen3-8B}\n"
    return {
        "billion-laughs": (BILLION_LAUGHS + "model: {model: *l9}\n").encode(),
        "laughs-inside-a-section": ("x: &x " + json.dumps(["lol"] * 50) + "\n" + good_model
                                    + "hardware: {gpu: *x}\n").encode(),
        "deep-nesting": ("model: " + "[" * 5000 + "]" * 5000 + "\n").encode(),
        "too-large": (good_model + "# " + "x" * (300 << 10) + "\n").encode(),
        "unknown-keys-under-the-cap": (good_model + "hardware:\n" + "".join(f"  k{i}: 1\n" for i in range(20_000))).encode(),
        "not-utf8": b"model:\n  model: \xff\xfe\n",
        "nul-byte": b"model: {model: \"Qwen/Qwen3-8B\x00\"}\n",
        "duplicate-keys": (good_model + "hardware: {gpu: H100}\nhardware: {gpu: A100}\n").encode(),
        "python-tag": b"model: !!python/object/apply:os.system ['true']\n",
        "boolean-as-number": (good_model + "hardware: {num_gpus: true}\n").encode(),
        "empty-strings": b"model: {model: Qwen/Qwen3-8B}\nhardware: {gpu: ''}\n",
        "not-a-mapping": b"- a\n- b\n",
        "binary-garbage": bytes(range(256)) * 4,
        "unterminated": b"model: {model: [\n",
    }


def hostile_files(base: Path) -> dict[str, Path]:
    """The texts above as files, plus paths that are not regular files at all."""
    base.mkdir(parents=True, exist_ok=True)
    files = {name: _write(base / f"{name}.yaml", text) for name, text in hostile_yaml_texts().items()}
    fifo = base / "fifo.yaml"
    if not fifo.exists():
        os.mkfifo(fifo)  # opening it for reading would block forever without O_NONBLOCK
    files.update({"fifo": fifo, "dev-zero": Path("/dev/zero"), "directory": base, "missing": base / "missing.yaml"})
    return files


def hostile_deployment_texts() -> dict[str, bytes]:
    """Deployment lists: the YAML attacks above, plus deployment-shaped mistakes."""
    texts = dict(hostile_yaml_texts())
    texts.update({
        "replicas-bool": b"deployments:\n  - {model: Qwen/Qwen3-8B, replicas: true}\n",
        "replicas-huge": b"deployments:\n  - {model: Qwen/Qwen3-8B, replicas: 1000000000}\n",
        "empty-model": b"deployments:\n  - {model: ''}\n",
        "unknown-keys": ("deployments:\n  - {model: Qwen/Qwen3-8B, "
                         + ", ".join(f"k{i}: 1" for i in range(2000)) + "}\n").encode(),
        "sizing-garbage": b"deployments:\n  - {model: Qwen/Qwen3-8B, sizing: 99}\n",
    })
    return texts


def hostile_captures(base: Path, template: Path) -> dict[str, Path]:
    """Copies of a real capture folder with one recording corrupted in each."""
    out = {}
    xml = (template / "nvidia-smi-q-x.xml").read_text()
    variants: dict[str, dict[str, bytes]] = {
        "xml-not-utf8": {"nvidia-smi-q-x.xml": b"\xff\xfe garbage"},
        "xml-truncated": {"nvidia-smi-q-x.xml": xml[:5000].encode()},
        "xml-entity-bomb": {"nvidia-smi-q-x.xml": (
            '<?xml version="1.0"?>\n<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
            + "".join(f'<!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">' for i in range(8))
            + ']>\n<nvidia_smi_log><driver_version>&i;</driver_version></nvidia_smi_log>\n').encode()},
        "memory-1e23-mib": {"nvidia-smi-q-x.xml": xml.replace("<total>81559 MiB</total>",
                                                            "<total>100000000000000000000000 MiB</total>", 1).encode()},
        "memory-negative": {"nvidia-smi-q-x.xml": xml.replace("<used>0 MiB</used>", "<used>-5 MiB</used>", 1).encode()},
        "query-gpu-garbage": {"query-gpu.csv": b"index, uuid\n\xff,\x00\n"},
        "topo-garbage": {"nvidia-smi-topo-m.txt": b"GPU0\tGPU1\n\xff\xff"},
        "nvml-json-garbage": {"nvml.json": b"[1, 2, 3]"},
    }
    for name, files in variants.items():
        folder = base / name
        folder.mkdir(parents=True, exist_ok=True)
        for item in template.iterdir():
            if item.is_file():
                (folder / item.name).write_bytes(item.read_bytes())
        for file_name, content in files.items():
            (folder / file_name).write_bytes(content)
        out[name] = folder
    return out


def safetensors_file(path: Path, header: object, data: bytes = b"") -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    return _write(path, struct.pack("<Q", len(raw)) + raw + data)


def model_folder(root: Path, name: str, config: dict | bytes | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    if config is None:
        config = json.loads(QWEN3_8B_CONFIG.read_text())
    (folder / "config.json").write_bytes(config if isinstance(config, bytes) else json.dumps(config).encode())
    return folder


# ---------------------------------------------------------------------------------------------------
# The CLI's one answer
# ---------------------------------------------------------------------------------------------------


def assert_cli_answer(code: int, err: str, what: object) -> None:
    """Exit 0-3; no traceback; an error is exactly one ``error:`` line (or one JSON object)."""
    assert code in CLI_CODES, f"{what}: exit {code}: {err[-600:]}"
    assert "Traceback" not in err, f"{what}: traceback:\n{err[-2000:]}"
    if code in (2, 3):
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, f"{what}: {len(lines)} lines on stderr: {err[-600:]}"
        line = lines[0]
        if line.startswith("{"):
            assert json.loads(line)["error"]["exit_code"] == code, what
        else:
            assert line.startswith("error: "), f"{what}: {line[:300]}"
        assert len(line) <= 2000, f"{what}: a {len(line)}-character error line"


# ---------------------------------------------------------------------------------------------------
# Protobuf messages from their descriptors
# ---------------------------------------------------------------------------------------------------

_INT_RANGES = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1), FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1), FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
# Names that get a request past the first checks, so the hostile values reach the engine.
_REAL_STRINGS = ["Qwen/Qwen3-8B", "meta-llama/Llama-3.1-8B-Instruct", "H100", "A100", "auto", "fp8", "awq", "0.11.0",
                 "bfloat16", '{"num_hidden_layers": 2}', "127.0.0.1:1"]
_ODD_STRINGS = ["", " ", "\x00", "../../etc", "/etc/passwd", "~", "a" * 5000, "é" * 300, "0", "-1", "nan", "{" * 200,
                "x:99999999999", "[::1]:0"]
_TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind in _INT_RANGES:
        low, high = _INT_RANGES[kind]
        edges = [v for v in (0, 1, -1, 2, 7, 3, 64, 10**9, low, high, high - 1) if low <= v <= high]
        return st.sampled_from(edges) | st.integers(low, high)
    if kind in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        return st.sampled_from([0.0, -0.0, 0.5, 0.9, 1.0, 1.5, -1.0, 1e308, -1e308, 1e-300]) | st.floats(
            allow_nan=True, allow_infinity=True, width=64 if kind == FieldDescriptor.TYPE_DOUBLE else 32)
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_STRING:
        return st.sampled_from(_REAL_STRINGS) | st.sampled_from(_ODD_STRINGS) | _TEXT
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.binary(max_size=200)
    if kind == FieldDescriptor.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.sampled_from(known) | st.integers(-3, 200)  # open enums: unknown numbers go on the wire
    raise AssertionError(f"no strategy for {field.full_name}")


def _leaf_paths(descriptor: Descriptor, depth: int = 3, prefix: tuple = ()) -> list[tuple[FieldDescriptor, ...]]:
    paths = []
    for field in descriptor.fields:
        if field.message_type is None:
            paths.append((*prefix, field))
        elif depth > 0 and not field.message_type.full_name.startswith("google.protobuf."):
            paths += _leaf_paths(field.message_type, depth - 1, (*prefix, field))  # repeated: its first item
    return paths


def mutation_strategy(base: Any, changes: int = 2) -> st.SearchStrategy[Any]:
    """``base`` (a valid request) with up to ``changes`` leaf fields set to hostile values: most of
    these get past the first checks, so each hostile value reaches the code behind them."""
    paths = _leaf_paths(base.DESCRIPTOR)

    @st.composite
    def build(draw: Callable[..., Any]) -> Any:
        message = type(base)()
        message.CopyFrom(base)
        for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=changes)):
            target = message
            for field in path[:-1]:
                inner = getattr(target, field.name)
                target = (inner[0] if len(inner) else inner.add()) if field.is_repeated else inner
            leaf = path[-1]
            if leaf.is_repeated:
                getattr(target, leaf.name).extend(draw(st.lists(_scalar(leaf), min_size=1, max_size=3)))
            else:
                setattr(target, leaf.name, draw(_scalar(leaf)))
        return message

    return build()


def message_strategy(descriptor: Descriptor, depth: int = 3) -> st.SearchStrategy[Any]:
    """Any ``descriptor`` message: each field set or not, with hostile values, nested to ``depth``."""
    cls = GetMessageClass(descriptor)

    @st.composite
    def build(draw: Callable[..., Any]) -> Any:
        message = cls()
        for field in descriptor.fields:
            if not draw(st.booleans()):
                continue
            if field.message_type is not None:
                if depth <= 0 or field.message_type.full_name.startswith("google.protobuf."):
                    continue
                inner = message_strategy(field.message_type, depth - 1)
                if field.is_repeated:
                    for item in draw(st.lists(inner, max_size=2)):
                        getattr(message, field.name).add().CopyFrom(item)
                else:
                    getattr(message, field.name).CopyFrom(draw(inner))
            elif field.is_repeated:
                getattr(message, field.name).extend(draw(st.lists(_scalar(field), max_size=3)))
            else:
                setattr(message, field.name, draw(_scalar(field)))
        return message

    return build()
