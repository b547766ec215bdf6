"""The wheel as pip builds it: PEP 639 license metadata, the license file, the SDK's py.typed marker
and the generated stubs. Built once, offline, from a copy of the source tree with the build backend
pyproject.toml names (setuptools from the test extra, no build isolation: no network at test time).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

from helpers.paths import REPO

# What a clean checkout does not have: environments, caches, build output, generated stubs.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"
)


def _not_source(folder: str, names: list[str]) -> set[str]:
    ignored = set(_NOT_SOURCE(folder, names))
    if Path(folder) == REPO / "vllm_planner":
        ignored.add("v1")  # the stubs: the build generates them from protos/
    return ignored


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "src"
    shutil.copytree(REPO, source, ignore=_not_source)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", str(work / "dist"), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stderr
    (built,) = (work / "dist").glob("vllm_fleet_planner-*.whl")
    with zipfile.ZipFile(built) as archive:
        yield archive


def _metadata(wheel: zipfile.ZipFile):
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return Parser().parsestr(wheel.read(name).decode())


def test_license_is_a_pep_639_expression(wheel):
    metadata = _metadata(wheel)
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata.get_all("License-File") == ["LICENSE"]
    assert metadata["License"] is None, "the deprecated free-text License field is gone"
    assert not [c for c in metadata.get_all("Classifier") or [] if c.startswith("License ::")]
    (license_file,) = [n for n in wheel.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
    assert b"Apache License" in wheel.read(license_file) and b"Version 2.0" in wheel.read(license_file)


def test_sdk_is_marked_typed(wheel):
    names = set(wheel.namelist())
    assert "clients/sdk/py.typed" in names
    assert "clients/sdk/__init__.py" in names


def test_generated_stubs_ship_in_the_wheel(wheel):
    names = set(wheel.namelist())
    for proto in sorted((REPO / "protos" / "vllm_planner" / "v1").glob("*.proto")):
        for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py"):
            assert f"vllm_planner/v1/{proto.stem}{suffix}" in names
