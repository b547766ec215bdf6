"""Local model folders: recognising a path, confining it to the model roots, and reading it.

The gRPC server reads folders a *client* names, so every path is confined before anything is read:
its real path (symlinks resolved, ``..`` collapsed) must lie inside one of the configured model roots.
The check runs before the existence check, so a refused path reveals nothing about what exists
outside the roots; it runs again on every file opened, since config.json or a shard may itself be a
symlink that escapes.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from pathlib import Path

from planner_service.engine.errors import InvalidRequestError, ModelNotFoundError, PermissionDeniedError
from planner_service.engine.mistral_format import (
    CONSOLIDATED_GLOB,
    PARAMS_FILE,
    checkpoint_dtype,
    config_from_params,
)
from planner_service.engine.source import ModelSource
from planner_service.metadata.config_file import read_json_object
from planner_service.metadata.safetensors import summarize_folder
from vllm_planner.bounded import shown

CONFIG_FILE = "config.json"
HF_QUANT_CONFIG_FILE = "hf_quant_config.json"


def looks_like_path(name: str) -> bool:
    """True for names that can only be a filesystem path (never a Hub repo id or catalog name)."""
    return (
        name in {".", ".."}
        or name.startswith(("/", "./", "../", "~", "\\"))
        or "\\" in name
        or name.count("/") > 1
        or os.path.isabs(name)
    )


class Confinement:
    """Which directories local reads may touch. ``roots=None`` means anywhere (the local CLI)."""

    def __init__(self, roots: Sequence[Path] | None) -> None:
        self.roots: tuple[Path, ...] | None = (
            None if roots is None else tuple(Path(os.path.realpath(os.path.expanduser(r))) for r in roots)
        )

    def allows(self, path: Path) -> bool:
        if self.roots is None:
            return True
        real = Path(os.path.realpath(path))
        return any(real == root or real.is_relative_to(root) for root in self.roots)

    def check(self, path: Path) -> None:
        """Raise PermissionDeniedError unless ``path``'s real location is inside a root."""
        if not self.allows(path):
            raise PermissionDeniedError(f"model path {shown(str(path))} is outside the server's allowed model roots")

    def candidates(self, name: str) -> list[Path]:
        """Where ``name`` may live: itself when absolute, else under each root (or the working dir)."""
        path = Path(os.path.expanduser(name))
        if path.is_absolute():
            return [path]
        if self.roots is None:
            return [Path.cwd() / path]
        return [root / path for root in self.roots]


def find_local_folder(name: str, confinement: Confinement, *, allow_local_paths: bool) -> Path | None:
    """The folder ``name`` names, or None when it is not a local path (then it is a repo id).

    Raises PermissionDeniedError for a path outside the roots (or any path when local paths are
    off), ModelNotFoundError for a path-shaped name that does not exist, and InvalidRequestError
    (field ``model.model``) for a name no filesystem call can take (a NUL byte, ENAMETOOLONG).
    """
    if "\x00" in name:
        # os.* raises ValueError on an embedded NUL; no real path or repo id contains one.
        raise InvalidRequestError.for_field("model.model", "contains a NUL byte")
    path_like = looks_like_path(name)
    if not allow_local_paths:
        if path_like:
            raise PermissionDeniedError(f"local model paths are disabled here; {shown(name)} cannot be read")
        return None
    try:
        return _probe_candidates(name, confinement, path_like=path_like)
    except OSError as exc:
        # A name the filesystem cannot even look up (ENAMETOOLONG for a 100k-char id) is the
        # client's mistake, not a server fault; any other OSError is left to surface as one.
        if exc.errno == errno.ENAMETOOLONG:
            raise InvalidRequestError.for_field(
                "model.model", f"too long to be a path ({len(name)} characters)"
            ) from None
        raise


def _probe_candidates(name: str, confinement: Confinement, *, path_like: bool) -> Path | None:
    for candidate in confinement.candidates(name):
        if confinement.roots is not None and not confinement.allows(candidate):
            raise PermissionDeniedError(f"model path {shown(name)} is outside the server's allowed model roots")
        if candidate.is_dir():
            return candidate
        if path_like and candidate.exists():
            raise InvalidRequestError.for_field("model.model", f"{shown(name)} is a file; name the model folder")
    if path_like:
        raise ModelNotFoundError(f"no model folder at {shown(name)}")
    return None


def is_mistral_format(folder: Path) -> bool:
    """vLLM's ``--config-format auto`` rule: params.json and consolidated*.safetensors make it Mistral format."""
    return (folder / PARAMS_FILE).is_file() and any(p.is_file() for p in folder.glob(CONSOLIDATED_GLOB))


def load_local_folder(folder: Path, *, name: str, confinement: Confinement) -> ModelSource:
    """Read config.json (or a Mistral-format params.json) and the safetensors headers of ``folder``."""
    config_path = folder / CONFIG_FILE
    if is_mistral_format(folder):
        return load_mistral_folder(folder, name=name, check=confinement.check, source="local")
    if not config_path.is_file():
        raise ModelNotFoundError(f"{name}: the folder has no {CONFIG_FILE} (nor params.json with "
                                 "consolidated*.safetensors, the Mistral format)")
    confinement.check(config_path)
    config = with_hf_quant_config(read_json_object(config_path, what=f"{name}/{CONFIG_FILE}"), folder,
                                  confinement.check, name)
    return ModelSource(
        model=name,
        source="local",
        config=config,
        safetensors=summarize_folder(folder, check=confinement.check),
    )


def with_hf_quant_config(config: dict, folder: Path, check, name: str) -> dict:  # noqa: ANN001
    """vLLM's rule: no quantization_config in config.json -> the one in hf_quant_config.json (ModelOpt)."""
    path = folder / HF_QUANT_CONFIG_FILE
    if config.get("quantization_config") is not None or not path.is_file():
        return config
    if check is not None:
        check(path)
    return {**config, "quantization_config": read_json_object(path, what=f"{name}/{HF_QUANT_CONFIG_FILE}")}


def load_mistral_folder(folder: Path, *, name: str, check, source: str, revision: str | None = None) -> ModelSource:  # noqa: ANN001
    """A Mistral-format folder (params.json + consolidated*.safetensors) as vLLM's MistralConfigParser reads it."""
    params_path = folder / PARAMS_FILE
    if check is not None:
        check(params_path)
    params = read_json_object(params_path, what=f"{name}/{PARAMS_FILE}")
    hf_config = None
    if (folder / CONFIG_FILE).is_file():
        if check is not None:
            check(folder / CONFIG_FILE)
        hf_config = read_json_object(folder / CONFIG_FILE, what=f"{name}/{CONFIG_FILE}")
    summary = summarize_folder(folder, check=check, pattern=CONSOLIDATED_GLOB)
    shard_dtype = checkpoint_dtype(summary.parameters_by_dtype if summary else None)
    return ModelSource(model=name, source=source, config=config_from_params(params, hf_config, shard_dtype),
                       safetensors=summary, revision=revision)
