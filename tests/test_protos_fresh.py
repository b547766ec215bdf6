"""The generated stubs are never stale, and unit-suffixed fields are signed.

Regenerates every stub from ``protos/`` with the same code the build runs (``setup.generate_protos``)
into a temporary folder and compares it byte for byte with the stubs the package imports. The buf
style rules themselves are checked by buf (tests/test_protos_buf.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
# The project's own API; vendored third-party protos (protos/vllm_planner/third_party/) generate elsewhere.
PROTOS = sorted((PROTO_ROOT / "vllm_planner" / "v1").glob("*.proto"))


def _setup_module():
    spec = importlib.util.spec_from_file_location("project_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # guarded: does not call setup()
    return module


def test_stubs_match_the_protos(tmp_path):
    _setup_module().generate_protos(tmp_path)
    installed = Path(importlib.import_module("vllm_planner.v1").__file__).parent
    fresh_files = sorted(p for p in (tmp_path / "vllm_planner" / "v1").iterdir() if p.name != "__init__.py")
    assert len(fresh_files) == 3 * len(PROTOS)  # _pb2.py, _pb2.pyi, _pb2_grpc.py per proto
    stale = [p.name for p in fresh_files if not (installed / p.name).is_file()
             or (installed / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"stale generated stubs (reinstall with `pip install -e .`): {stale}"


def _modules():
    return [importlib.import_module(f"vllm_planner.v1.{p.stem}_pb2") for p in PROTOS]


def test_unit_fields_are_signed():
    """Quantities with a unit suffix are int64/double, never unsigned (AIP-141)."""
    for module in _modules():
        for message in module.DESCRIPTOR.message_types_by_name.values():
            for field in message.fields:
                if field.name.endswith(("_bytes", "_seconds", "_milliwatts", "_celsius", "_percent")):
                    assert field.type != field.TYPE_UINT64 and field.type != field.TYPE_UINT32, (
                        f"{message.full_name}.{field.name}: unsigned (AIP-141 wants int64)")
