"""Pick the inventory backend: ``--replay DIR``, or nvml | nvidia-smi | none | auto.

auto: NVML if the library and driver load; else nvidia-smi if it is on PATH; else none (zero GPUs,
with both reasons). Replay: the capture's nvidia-smi recordings by default (``replay_source``
"auto" or "nvidia-smi"), or its ``nvml.json`` through the NVML conversion ("nvml"; also what "auto"
picks when a folder has only nvml.json).
"""

from __future__ import annotations

from pathlib import Path

import pynvml

from gpu_agent.backends import BackendUnavailable, InventoryBackend, NoneBackend
from gpu_agent.inventory import CollectionSource
from gpu_agent.nvml_backend import NvmlBackend, nvml_init
from gpu_agent.nvml_replay import NVML_FILE, RecordedNvml
from gpu_agent.smi_backend import RecordedRunner, SmiBackend, SubprocessRunner
from gpu_agent.smi_parse import SmiParseError
from gpu_agent.watchdog import CallGuard, CallTimeout
from vllm_planner.bounded import InputError

# What replaying a corrupted or hostile capture can raise: bounded-read refusals, parse errors, and the
# lookups of a recording whose structure is not what NVML or nvidia-smi would produce.
CAPTURE_ERRORS: tuple[type[BaseException], ...] = (
    InputError, SmiParseError, OSError, ValueError, KeyError, TypeError, IndexError, AttributeError, pynvml.NVMLError,
)

BACKENDS = ("auto", "nvml", "nvidia-smi", "none")
REPLAY_SOURCES = ("auto", "nvidia-smi", "nvml")


def replay_backend(directory: Path, variant: str = "idle", source: str = "auto",
                   hostname: str | None = None) -> InventoryBackend:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"replay folder {directory} does not exist")
    if source not in REPLAY_SOURCES:
        raise ValueError(f"replay source must be one of {', '.join(REPLAY_SOURCES)}")
    has_smi = (directory / "nvidia-smi-q-x.xml").is_file()
    if source == "nvml" or (source == "auto" and not has_smi and (directory / NVML_FILE).is_file()):
        return NvmlBackend(RecordedNvml.from_dir(directory, variant), CollectionSource.REPLAY_NVML, hostname)
    return SmiBackend(RecordedRunner(directory, variant), CollectionSource.REPLAY_NVIDIA_SMI, hostname)


def live_backend(kind: str = "auto", *, hostname: str | None = None, call_timeout_seconds: float = 5.0) -> InventoryBackend:
    if kind not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}")
    if kind == "none":
        return NoneBackend()
    if kind == "nvml":
        return NvmlBackend(hostname=hostname)
    if kind == "nvidia-smi":
        return SmiBackend(SubprocessRunner(timeout_seconds=call_timeout_seconds), hostname=hostname)
    reasons = []
    backend = NvmlBackend(hostname=hostname)
    try:
        nvml_init(backend.nvml, CallGuard(call_timeout_seconds))
        backend._initialised = True
        return backend
    except (BackendUnavailable, CallTimeout, OSError) as exc:
        reasons.append(str(exc))
    except Exception as exc:  # any other NVML init error: try the fallback, remember why
        reasons.append(f"NVML init failed: {exc}")
    try:
        return SmiBackend(SubprocessRunner(timeout_seconds=call_timeout_seconds), hostname=hostname)
    except BackendUnavailable as exc:
        reasons.append(str(exc))
    return NoneBackend("no NVIDIA GPU inventory: " + "; ".join(reasons))
