"""Where a CLI command's plan is computed: in-process (the embedded default) or on a planner
service (``--planner HOST:PORT`` or ``VLLM_PLANNER_ADDRESS``). Commands call ``execute_plan`` and
never care which; both paths return the same ``PlanResponse``, so the output is identical.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import PlanRequest, PlanResponse

ADDRESS_ENV = "VLLM_PLANNER_ADDRESS"
TOKEN_ENV = "VLLM_PLANNER_TOKEN"


def add_remote_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags selecting a remote planner service (embedded when neither --planner nor the env is set)."""
    group = parser.add_argument_group("remote planner (default: embedded engine)")
    group.add_argument(
        "--planner",
        metavar="HOST:PORT",
        default=None,
        help=f"Call this planner service instead of planning in-process [env {ADDRESS_ENV}].",
    )
    group.add_argument("--tls", action="store_true", default=False, help="Use TLS (system roots unless --tls-ca-file).")
    group.add_argument("--tls-ca-file", type=Path, default=None, metavar="PEM", help="CA that signed the service's certificate (implies --tls).")
    group.add_argument("--tls-cert-file", type=Path, default=None, metavar="PEM", help="Client certificate for mutual TLS.")
    group.add_argument("--tls-key-file", type=Path, default=None, metavar="PEM", help="Client private key for mutual TLS.")
    token = group.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, help=f"Bearer token of the service (prefer --token-file) [env {TOKEN_ENV}].")
    token.add_argument("--token-file", type=Path, default=None, metavar="PATH", help="File holding the bearer token.")


def planner_address(args: argparse.Namespace) -> str | None:
    """The remote planner to use, or None for the embedded engine."""
    return getattr(args, "planner", None) or os.environ.get(ADDRESS_ENV) or None


def _token(args: argparse.Namespace) -> str | None:
    token_file = getattr(args, "token_file", None)
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as exc:
            raise InvalidRequestError(f"cannot read --token-file {token_file}: {exc.strerror}") from None
        if not token:
            raise InvalidRequestError(f"--token-file {token_file} is empty")
        return token
    return getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None


def planner_client(args: argparse.Namespace):  # noqa: ANN201  (clients.sdk.PlannerClient)
    """A ``PlannerClient`` for the remote planner the flags/env name (the caller closes it)."""
    from clients.sdk.planner_client import PlannerClient

    address = planner_address(args)
    if address is None:
        raise InvalidRequestError("no planner service named: pass --planner HOST:PORT or set " + ADDRESS_ENV)
    return PlannerClient(
        address,
        tls=bool(getattr(args, "tls", False)),
        tls_ca_file=getattr(args, "tls_ca_file", None),
        tls_cert_file=getattr(args, "tls_cert_file", None),
        tls_key_file=getattr(args, "tls_key_file", None),
        token=_token(args),
    )


def execute_plan(request: PlanRequest, args: argparse.Namespace) -> PlanResponse:
    """``run_plan(request)`` in-process, or the same call on the planner service."""
    if planner_address(args):
        with planner_client(args) as client:
            return client.plan(request)
    from planner_service.api import run_plan

    return run_plan(request)
