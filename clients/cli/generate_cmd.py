"""``vllm-planner generate``: plan, then write the deployment files (and the profile that made them)."""

from __future__ import annotations

import argparse
import errno
import os
import stat
import sys
from pathlib import Path

from clients.cli.backend import add_remote_arguments
from clients.cli.options import add_plan_arguments, profile_from_args
from clients.cli.plan_cmd import plan_from_args
from clients.cli.report import render_report
from planner_service.engine.artifacts import deployment_from_plan, render_serve_script
from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import PlanRequest, PlanResponse
from planner_service.engine.profile_yaml import ARTIFACT_KINDS, OutputOptions, dump_profile
from vllm_planner.bounded import file_label

FILE_NAMES = {
    "command": "serve_command.sh",
    "profile": "profile.yaml",
    "compose": "docker-compose.yaml",
    "k8s": "kubernetes.yaml",
    "helm": "helm-values.yaml",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="Plan and write deployment files (serve script, profile, compose, Kubernetes, Helm values).",
        description="Plan, then write the chosen artifacts into a directory.",
    )
    add_plan_arguments(parser)
    out = parser.add_argument_group("generate output")
    out.add_argument("--output-dir", "-o", default=None, metavar="DIR", help="Directory to write into (created).")
    out.add_argument("--emit", default=None, metavar="KINDS",
                     help=f"Comma-separated subset of {','.join(ARTIFACT_KINDS)} (default: all).")
    out.add_argument("--force", action="store_true", help="Overwrite existing files.")
    add_remote_arguments(parser)
    parser.set_defaults(handler=run)


def render_files(request: PlanRequest, response: PlanResponse, outputs: OutputOptions) -> dict[str, str]:
    """File name -> content for every emitted kind."""
    artifacts = response.artifacts
    if artifacts is None:  # plan_from_args always completes the plan; this guards other callers
        raise ValueError("render_files needs a completed plan (see pipeline.complete_plan)")
    contents = {
        "command": lambda: render_serve_script(deployment_from_plan(response, request)),
        "profile": lambda: dump_profile(request, outputs),
        "compose": lambda: artifacts.docker_compose,
        "k8s": lambda: artifacts.kubernetes,
        "helm": lambda: artifacts.helm_values,
    }
    return {FILE_NAMES[kind]: contents[kind]() for kind in outputs.emit}


OUTPUT_DIR_FIELD = "outputs.output_dir"


def write_files(directory: Path, files: dict[str, str], force: bool) -> list[Path]:
    """Write ``files`` into ``directory`` (created); any filesystem refusal names --output-dir."""
    label = file_label(directory)
    try:
        if directory.exists() and not directory.is_dir():
            raise InvalidRequestError.for_field(OUTPUT_DIR_FIELD, f"{label} exists and is not a directory")
        existing = [name for name in files if (directory / name).exists()]
        if existing and not force:
            raise InvalidRequestError.for_field(
                OUTPUT_DIR_FIELD, f"{label}: {', '.join(existing)} already exist(s); pass --force to overwrite")
        directory.mkdir(parents=True, exist_ok=True)
        written = []
        for name, content in files.items():
            path = directory / name
            path.write_text(content, encoding="utf-8")
            if name.endswith(".sh"):
                path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            written.append(path)
        return written
    except OSError as exc:  # not a directory, permission, read-only, name too long, disk full ...
        where = f" ({file_label(exc.filename)})" if exc.filename and os.fspath(exc.filename) != os.fspath(directory) else ""
        reason = "the file name is too long" if exc.errno == errno.ENAMETOOLONG else (exc.strerror or str(exc))
        raise InvalidRequestError.for_field(OUTPUT_DIR_FIELD, f"cannot write into {label}{where}: {reason}") from None
    except ValueError:  # a NUL byte in the name
        raise InvalidRequestError.for_field(OUTPUT_DIR_FIELD, "the directory name contains a NUL byte") from None


def run(args: argparse.Namespace) -> int:
    """Exit 0 when the plan starts; 1 when it would not (files are still written, for inspection)."""
    if not profile_from_args(args).outputs.output_dir:  # checked before any GPU detection or planning
        raise InvalidRequestError.for_field(OUTPUT_DIR_FIELD, "is required: pass --output-dir DIR (or outputs.output_dir)")
    request, response, outputs = plan_from_args(args)
    directory = Path(os.path.expanduser(outputs.output_dir))
    render_report(response, explain=outputs.explain)  # the plan the files carry out, as `plan` prints it
    for path in write_files(directory, render_files(request, response, outputs), args.force):
        sys.stdout.write(f"wrote {path}\n")
    if not response.feasibility.fits:
        sys.stderr.write(f"warning: vLLM would not start with this plan: {response.feasibility.error or 'see plan'}\n")
        return 1
    return 0
