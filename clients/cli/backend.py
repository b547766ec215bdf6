"""Where a CLI command's plan is computed: in-process (the embedded default) or on a planner
service (``--planner HOST:PORT`` or ``VLLM_PLANNER_ADDRESS``). Commands call ``execute_plan`` and
never care which; both paths return the same ``PlanResponse``, so the output is identical.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, TypeVar

from planner_service.engine.errors import InvalidRequestError
from planner_service.engine.models import PlanRequest, PlanResponse
from vllm_planner.bounded import InputError, file_label, read_token
from vllm_planner.transport.channel import check_token

ADDRESS_ENV = "VLLM_PLANNER_ADDRESS"
TOKEN_ENV = "VLLM_PLANNER_TOKEN"

T = TypeVar("T")


def add_remote_arguments(
    parser: argparse.ArgumentParser,
    *,
    title: str = "remote planner (default: embedded engine)",
    planner_help: str = "Call this planner service instead of planning in-process",
) -> None:
    """Flags selecting a remote planner service (embedded when neither --planner nor the env is set)."""
    group = parser.add_argument_group(title)
    group.add_argument("--planner", metavar="HOST:PORT", default=None, help=f"{planner_help} [env {ADDRESS_ENV}].")
    add_connection_arguments(group, token_env=TOKEN_ENV)


def add_connection_arguments(group: argparse._ActionsContainer, *, service: str = "service", token_env: str | None = None) -> None:
    """TLS, mutual TLS and bearer-token flags of a connection (read back by ``connection_kwargs``)."""
    env = f" [env {token_env}]" if token_env else ""
    group.add_argument("--tls", action="store_true", default=False, help="Use TLS (system roots unless --tls-ca-file).")
    group.add_argument("--tls-ca-file", type=Path, default=None, metavar="PEM", help=f"CA that signed the {service}'s certificate (implies --tls).")
    group.add_argument("--tls-cert-file", type=Path, default=None, metavar="PEM", help="Client certificate for mutual TLS.")
    group.add_argument("--tls-key-file", type=Path, default=None, metavar="PEM", help="Client private key for mutual TLS.")
    token = group.add_mutually_exclusive_group()
    token.add_argument("--token", default=None, help=f"Bearer token of the {service} (prefer --token-file){env}.")
    token.add_argument("--token-file", type=Path, default=None, metavar="PATH", help=f"File holding the {service}'s bearer token.")


def planner_address(args: argparse.Namespace) -> str | None:
    """The remote planner to use (validated HOST:PORT), or None for the embedded engine."""
    flag = getattr(args, "planner", None)
    address = flag or os.environ.get(ADDRESS_ENV) or None
    return None if address is None else checked_address(address, "--planner" if flag else ADDRESS_ENV)


def checked_address(text: str, field: str) -> str:
    """A HOST:PORT the CLI will dial, validated by the shared parser (InvalidRequestError naming ``field``)."""
    from vllm_planner.transport.address import AddressError, dial_address

    try:
        return dial_address(text, field)
    except AddressError as exc:
        raise InvalidRequestError.for_field(exc.field, exc.reason) from None


def _token(args: argparse.Namespace, token_env: str | None) -> str | None:
    token_file = getattr(args, "token_file", None)
    if token_file is not None:
        try:
            return read_token(token_file, what=f"--token-file {file_label(token_file)}")
        except InputError as exc:
            raise InvalidRequestError(str(exc)) from None
    return getattr(args, "token", None) or (os.environ.get(token_env) if token_env else None) or None


def connection_kwargs(args: argparse.Namespace, *, token_env: str | None = TOKEN_ENV) -> dict[str, Any]:
    """The SDK clients' connection keywords from the ``add_connection_arguments`` flags.

    ``token_env`` is the variable a missing token falls back to (the planner's by default; None for
    services with their own token, such as the agents).
    """
    token = _token(args, token_env)
    try:
        check_token(token)
    except InputError as exc:
        source = "--token-file" if getattr(args, "token_file", None) else "--token"
        raise InvalidRequestError(f"{source}: {exc}") from None
    return {
        "tls": bool(getattr(args, "tls", False)),
        "tls_ca_file": getattr(args, "tls_ca_file", None),
        "tls_cert_file": getattr(args, "tls_cert_file", None),
        "tls_key_file": getattr(args, "tls_key_file", None),
        "token": token,
    }


def remote_client(client_class: type[T], args: argparse.Namespace, *, missing: InvalidRequestError | None = None) -> T:
    """A client of the planner service the flags/env name (the caller closes it); ``missing`` is
    raised when none is named."""
    address = planner_address(args)
    if address is None:
        raise missing or InvalidRequestError("no planner service named: pass --planner HOST:PORT or set " + ADDRESS_ENV)
    return client_class(address, **connection_kwargs(args))


def planner_client(args: argparse.Namespace):  # noqa: ANN201  (clients.sdk.PlannerClient)
    """A ``PlannerClient`` for the remote planner the flags/env name (the caller closes it)."""
    from clients.sdk.planner_client import PlannerClient

    return remote_client(PlannerClient, args)


def execute_plan(request: PlanRequest, args: argparse.Namespace) -> PlanResponse:
    """``run_plan(request)`` in-process, or the same call on the planner service."""
    return execute(request, args, "plan")


def execute(request: Any, args: argparse.Namespace, method: str) -> Any:
    """``planner_service.api.run_<method>(request)`` in-process, or ``PlannerClient.<method>`` on the
    service the flags/env name: both return the same pydantic answer (plan, simulate, plan_capacity)."""
    if planner_address(args):
        with planner_client(args) as client:
            return getattr(client, method)(request)
    from planner_service import api

    return getattr(api, _EMBEDDED[method])(request)


# SDK method -> embedded function of planner_service.api
_EMBEDDED = {"plan": "run_plan", "simulate": "run_bench", "plan_capacity": "run_capacity"}
