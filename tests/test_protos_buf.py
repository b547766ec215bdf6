"""buf checks the protos: `buf lint` (STANDARD + COMMENTS, buf.yaml) and `buf breaking` against the
last released wire state (buf/released.binpb, the protos of commit 89d8c95), with the buf binary of
the buf-bin wheel. Adding fields, messages and RPCs passes; deleting or renumbering a released field
fails, which the mutation tests below prove on a copy of the tree.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from helpers.paths import REPO
from helpers.tools import run_tool

RELEASED_COMMIT = "89d8c95"
RELEASED_IMAGE = REPO / "buf" / "released.binpb"
AGENT_PROTO = Path("protos/vllm_planner/v1/agent.proto")


def _findings(result: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    findings = _findings(result)
    lines = [f"{f['path']}:{f['start_line']}: {f['type']}: {f['message']}" for f in findings[:40]]
    more = f"\n... and {len(findings) - 40} more" if len(findings) > 40 else ""
    return "\n".join(lines) + more + ("" if findings else result.stderr)


def test_buf_lint_passes():
    result = run_tool("buf", "lint", "--error-format=json")
    assert result.returncode == 0, "buf lint (STANDARD + COMMENTS):\n" + _explain(result)


def test_buf_lint_covers_every_project_proto():
    """The module holds every proto under protos/ (a new file cannot dodge lint by its location)."""
    result = run_tool("buf", "ls-files")
    assert result.returncode == 0, result.stderr
    listed = {line.strip() for line in result.stdout.splitlines() if line.strip()}
    ours = {p.relative_to(REPO).as_posix() for p in (REPO / "protos").rglob("*.proto")}
    assert ours <= listed and ours


def test_no_breaking_change_since_the_release():
    result = run_tool("buf", "breaking", "--against", str(RELEASED_IMAGE), "--error-format=json")
    assert result.returncode == 0, f"breaking changes since {RELEASED_COMMIT}:\n" + _explain(result)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    """buf.yaml, protos/ and the baseline, copied so the mutation tests can edit them."""
    root = tmp_path_factory.mktemp("buf-tree")
    shutil.copy(REPO / "buf.yaml", root / "buf.yaml")
    shutil.copytree(REPO / "protos", root / "protos")
    shutil.copytree(REPO / "buf", root / "buf")
    return root


def _breaking_in(root: Path, proto: Path, pattern: str, replacement: str) -> list[dict]:
    """Edit one line of a copy of the tree, run buf breaking there, restore the file."""
    path = root / proto
    original = path.read_text()
    edited, count = re.subn(pattern, replacement, original, count=1, flags=re.MULTILINE)
    assert count == 1, f"{pattern!r} no longer matches {proto}: update this test"
    path.write_text(edited)
    try:
        result = run_tool("buf", "breaking", "--against", str(root / "buf" / "released.binpb"),
                          "--error-format=json", cwd=root)
    finally:
        path.write_text(original)
    assert result.returncode in (0, 100), result.stderr  # 100: breaking changes found
    return _findings(result)


def test_deleting_a_released_field_fails(tree_copy):
    # Deleting is breaking even when the number is reserved: deprecate a field instead.
    findings = _breaking_in(tree_copy, AGENT_PROTO, r"^(\s*)string hostname = 1;", r"\1reserved 1;")
    assert [f["type"] for f in findings] == ["FIELD_NO_DELETE"], findings
    assert "hostname" in findings[0]["message"]


def test_renumbering_a_released_field_fails(tree_copy):
    findings = _breaking_in(tree_copy, AGENT_PROTO, r"^(\s*)bool stale = 7;", r"\1bool stale = 70;")
    assert "FIELD_NO_DELETE" in {f["type"] for f in findings}, findings


def test_changing_a_field_type_fails(tree_copy):
    findings = _breaking_in(tree_copy, AGENT_PROTO, r"^(\s*)string hostname = 1;", r"\1bytes hostname = 1;")
    assert "FIELD_SAME_TYPE" in {f["type"] for f in findings}, findings


def test_adding_a_field_a_message_and_an_rpc_passes(tree_copy):
    findings = _breaking_in(
        tree_copy, AGENT_PROTO, r"^(\s*)string hostname = 1;",
        r"\1string hostname = 1;\n\1// An added field (test).\n\1string added_for_test = 999;",
    )
    assert findings == []
    findings = _breaking_in(
        tree_copy, AGENT_PROTO, r"^service GpuAgentService \{",
        "// An added message (test).\nmessage AddedForTestRequest {}\n"
        "// An added message (test).\nmessage AddedForTestResponse {}\n"
        "service GpuAgentService {\n  // An added RPC (test).\n"
        "  rpc AddedForTest(AddedForTestRequest) returns (AddedForTestResponse);",
    )
    assert findings == []


def test_the_baseline_is_the_released_commit(tmp_path):
    """buf/released.binpb equals `buf build` of the protos at the released commit, where the clone has it."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    known = subprocess.run(["git", "cat-file", "-e", f"{RELEASED_COMMIT}^{{commit}}"], cwd=REPO,
                           capture_output=True, check=False)
    if known.returncode != 0:
        pytest.skip(f"commit {RELEASED_COMMIT} is not in this clone's history (shallow clone)")
    # buf clones the repository shallowly (a fixed depth when a ref is given): ask for enough history to
    # reach the released commit from HEAD, which grows with every commit.
    behind = subprocess.run(["git", "rev-list", "--count", f"{RELEASED_COMMIT}..HEAD"], cwd=REPO,
                            capture_output=True, text=True, check=True)
    depth = int(behind.stdout) + 1
    rebuilt = tmp_path / "released.binpb"
    result = run_tool("buf", "build", f".git#ref={RELEASED_COMMIT},subdir=protos,depth={depth}",
                      "--exclude-source-info", "-o", str(rebuilt))
    assert result.returncode == 0, result.stderr
    assert _descriptors(rebuilt) == _descriptors(RELEASED_IMAGE)


def _descriptors(image: Path) -> dict[str, bytes]:
    """file name -> FileDescriptorProto, from a buf image (buf's own per-file extras dropped)."""
    from google.protobuf import descriptor_pb2

    files = descriptor_pb2.FileDescriptorSet.FromString(image.read_bytes()).file
    for file in files:
        file.DiscardUnknownFields()
    return {file.name: file.SerializeToString(deterministic=True) for file in files}
