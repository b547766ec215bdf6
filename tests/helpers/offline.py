"""An environment in which the planner can never reach the Hugging Face Hub."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REFUSED_ENDPOINT = "http://127.0.0.1:9"  # nothing listens on the discard port: connections are refused


@contextmanager
def offline_hub(hf_home: Path, endpoint: str = REFUSED_ENDPOINT) -> Iterator[pytest.MonkeyPatch]:
    """Point the Hub at ``endpoint`` and the HF cache at ``hf_home`` (an empty folder) until exit.

    For module-scoped fixtures, which cannot use the ``monkeypatch`` fixture; the patch is yielded
    so callers can change more variables that are undone with these.
    """
    patch = pytest.MonkeyPatch()
    patch.setenv("HF_ENDPOINT", endpoint)
    patch.setenv("HF_HOME", str(hf_home))
    patch.delenv("HF_HUB_OFFLINE", raising=False)
    try:
        yield patch
    finally:
        patch.undo()


@contextmanager
def offline_planner(hf_home: Path, token: str) -> Iterator[str]:
    """A real planner service on 127.0.0.1:0 with ``token`` auth and no Hub; yields its address.

    The CLI's planner env variables are cleared so that only an explicit ``--planner`` reaches it.
    """
    from planner_service.server.app import PlannerServiceSettings
    from planner_service.server.background import BackgroundPlannerServer

    with offline_hub(hf_home) as patch:
        patch.delenv("VLLM_PLANNER_ADDRESS", raising=False)
        patch.delenv("VLLM_PLANNER_TOKEN", raising=False)
        with BackgroundPlannerServer(PlannerServiceSettings(listen="127.0.0.1:0", auth_token=token)) as server:
            yield server.address


def run_cli(main, argv: list[str], capsys) -> tuple[int, str, str]:  # noqa: ANN001
    """Run ``vllm-planner argv`` in-process: (exit code, stdout, stderr)."""
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
