"""The Hugging Face Hub, through huggingface_hub's own functions (no hand-written HTTP).

Failing fast matters more than anything here: the planner must answer in seconds on a machine with
no route to the Hub. ``hf_hub_download`` retries network errors with back-off (about 20 s against a
refused port), so we first ask for the file's metadata with ``get_hf_file_metadata``, which does not
retry: it tells us at once whether the Hub is reachable, whether the repo and file exist and how big
the file is. Only then is config.json downloaded (into the HF cache, so a
later offline run finds it; the HEAD has just shown the Hub reachable, so the download's own retries
only cover a genuinely flaky connection). Exact parameter counts come from
``get_safetensors_metadata``, which reads only the shard headers; if that fails the plan still
proceeds with counts computed from the config.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from huggingface_hub import HfApi, constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    NotASafetensorsRepoError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
    SafetensorsParsingError,
)

from planner_service.engine.errors import (
    MetadataUnavailableError,
    ModelNotFoundError,
    PermissionDeniedError,
    PlannerError,
)
from planner_service.engine.source import ModelSource, SafetensorsSummary, TensorInfo
from planner_service.metadata.config_file import MAX_CONFIG_BYTES, read_json_object
from planner_service.metadata.safetensors import checked_tensor, summarize_tensors
from vllm_planner.bounded import shown

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
DEFAULT_ENDPOINT = "https://huggingface.co"


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's network errors; huggingface_hub has used requests, httpx and httpx2."""
    errors: list[type[BaseException]] = [OSError, TimeoutError]
    candidates = (("httpx2", "TransportError"), ("httpx", "TransportError"), ("requests", "RequestException"))
    for module_name, attr in candidates:
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.append(getattr(module, attr))
    return tuple(errors)


_TRANSPORT_ERRORS = _transport_errors()


TELEMETRY_ENV_VARS = ("HF_HUB_DISABLE_TELEMETRY", "DISABLE_TELEMETRY")


def disable_agent_registry_fetch() -> None:
    """Stop huggingface_hub's one-off ``GET {HF_ENDPOINT}/api/agent-harnesses`` (fixed 3 s timeout).

    huggingface_hub builds its user-agent on the first request of a process and, unless telemetry
    is disabled, detects "AI agent" callers by fetching that registry first: against an unreachable
    Hub the first failure then takes 3 s plus ``hub_timeout_seconds``. ``HF_HUB_DISABLE_TELEMETRY``
    is the supported switch (read per request as ``constants.HF_HUB_DISABLE_TELEMETRY``; the env var
    itself is only read at import, which may already have happened). A service has no use for
    telemetry in its user-agent; an operator who sets either variable explicitly keeps their choice.
    """
    if any(name in os.environ for name in TELEMETRY_ENV_VARS):
        return
    constants.HF_HUB_DISABLE_TELEMETRY = True


def hub_endpoint() -> str:
    """``HF_ENDPOINT`` read at call time (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def translate_hub_error(exc: BaseException, repo_id: str, revision: str | None) -> PlannerError:
    """Map a huggingface_hub failure onto the planner's domain errors (one place, one wording)."""
    at = f" at revision {shown(revision)}" if revision else ""
    if isinstance(exc, GatedRepoError):
        return PermissionDeniedError(
            f"{repo_id} is gated on the Hugging Face Hub: accept its license and set HF_TOKEN, or pass config_json"
        )
    if isinstance(exc, RepositoryNotFoundError):
        return ModelNotFoundError(
            f"{repo_id}: no such model on the Hugging Face Hub (or it is private; set HF_TOKEN)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return ModelNotFoundError(f"{shown(repo_id)}: revision {shown(revision)} not found on the Hugging Face Hub")
    if isinstance(exc, RemoteEntryNotFoundError):
        return ModelNotFoundError(f"{repo_id}{at}: the repository has no {CONFIG_FILE}")
    if isinstance(exc, HFValidationError):
        return ModelNotFoundError(f"{shown(repo_id)} is not a local folder, a catalog model or a valid Hub repo id")
    if isinstance(exc, OfflineModeIsEnabled):
        return MetadataUnavailableError(f"{repo_id}: not in the catalog or the HF cache, and Hub access is offline")
    if isinstance(exc, HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return MetadataUnavailableError(f"{repo_id}: the Hugging Face Hub answered HTTP {status}")
    if isinstance(exc, LocalEntryNotFoundError):
        return MetadataUnavailableError(f"{repo_id}: the Hugging Face Hub is unreachable and nothing is cached")
    return MetadataUnavailableError(f"{repo_id}: the Hugging Face Hub is unreachable ({type(exc).__name__}: {exc})")


def fetch_from_hub(
    repo_id: str,
    *,
    revision: str | None,
    token: str | None,
    timeout_seconds: float,
    cache_dir: Path,
    endpoint: str | None = None,
) -> ModelSource:
    """config.json and the safetensors header counts of ``repo_id`` from the Hub."""
    endpoint = endpoint or hub_endpoint()
    disable_agent_registry_fetch()  # before the first request builds the user-agent
    try:
        url = hf_hub_url(repo_id, CONFIG_FILE, revision=revision, endpoint=endpoint)
        head = get_hf_file_metadata(url, token=token, timeout=timeout_seconds, endpoint=endpoint)
        if head.size is not None and head.size > MAX_CONFIG_BYTES:
            raise MetadataUnavailableError(
                f"{repo_id}: {CONFIG_FILE} is {head.size} bytes on the Hub; the limit is {MAX_CONFIG_BYTES} bytes"
            )
        # Download by the requested revision (not the commit) so huggingface_hub records the
        # ref (refs/main -> commit) and a later offline lookup by branch name finds the file.
        path = hf_hub_download(
            repo_id,
            CONFIG_FILE,
            revision=revision,
            cache_dir=str(cache_dir),
            endpoint=endpoint,
            token=token,
            etag_timeout=timeout_seconds,
        )
    except PlannerError:
        raise
    except (HfHubHTTPError, HFValidationError, OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        raise translate_hub_error(exc, repo_id, revision) from None
    except _TRANSPORT_ERRORS as exc:
        raise translate_hub_error(exc, repo_id, revision) from None
    config_path = Path(path)
    commit = config_path.parent.name or head.commit_hash  # the snapshot folder is named by the commit
    config = read_json_object(config_path, what=f"{repo_id}/{CONFIG_FILE} (Hub)")
    api = HfApi(endpoint=endpoint, token=token)
    return ModelSource(
        model=repo_id,
        source="hub",
        config=config,
        safetensors=_safetensors_summary(api, repo_id, commit, timeout_seconds),
        revision=commit,
    )


def _safetensors_summary(
    api: HfApi, repo_id: str, revision: str | None, timeout_seconds: float
) -> SafetensorsSummary | None:
    try:
        meta = api.get_safetensors_metadata(repo_id, revision=revision, timeout=timeout_seconds)
    except NotASafetensorsRepoError:
        return None  # .bin-only checkpoints: the engine computes counts from the config
    except (SafetensorsParsingError, HfHubHTTPError, *_TRANSPORT_ERRORS) as exc:
        logger.warning("safetensors headers of %s unavailable (%s); counts will be computed", repo_id, exc)
        return None
    # The Hub's headers get the same checks as a local file's (shape vs data_offsets, int64 bounds).
    tensors: dict[str, TensorInfo] = {}
    data_bytes = 0
    for file_name, file_meta in meta.files_metadata.items():
        for name, info in file_meta.tensors.items():
            tensor, start, end = checked_tensor(f"{shown(repo_id)}/{file_name}", name, info.dtype, list(info.shape),
                                                list(info.data_offsets))
            tensors[name] = tensor
            data_bytes += end - start
    return summarize_tensors(tensors, total_size_bytes=data_bytes or None)
