"""Service configuration with one documented precedence, for both servers:

    command-line flags  >  environment variables  >  YAML file (--config)  >  built-in defaults

Each service subclasses ``ServerSettings`` (adding its own fields) and calls::

    parser = argparse.ArgumentParser(...)
    add_settings_arguments(parser, MySettings)          # one --flag per field, default None
    args = parser.parse_args(argv)
    settings = load_settings(MySettings, args)          # flags > env (PREFIX_FIELD) > YAML > defaults

Environment variables are named ``<env_prefix><FIELD>`` in upper case, e.g. ``GPU_AGENT_LISTEN`` or
``VLLM_PLANNER_AUTH_TOKEN_FILE``; list fields take JSON (``'["a:1","b:2"]'``) in the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from pathlib import Path
from types import UnionType
from typing import Any, Awaitable, Callable, TypeVar, Union, get_args, get_origin

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from vllm_planner.argparsing import fail
from vllm_planner.bounded import MAX_SETTINGS_BYTES, InputError, file_label, read_bytes, read_token, read_yaml
from vllm_planner.transport.server import ServerOptions, server_credentials

S = TypeVar("S", bound=BaseSettings)


class ServerSettings(BaseSettings):
    """Settings every server has. Subclasses set ``model_config = SettingsConfigDict(env_prefix=...)``."""

    model_config = SettingsConfigDict(extra="forbid")

    listen: str = Field(default="127.0.0.1:50051", description="HOST:PORT to listen on (port 0 = any free port).")
    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM) for TLS.")
    tls_key_file: Path | None = Field(default=None, description="Server private key (PEM) for TLS.")
    tls_client_ca_file: Path | None = Field(default=None, description="CA (PEM) that client certificates must chain to (mutual TLS).")
    auth_token: str | None = Field(default=None, description="Bearer token every RPC must carry (prefer --auth-token-file).")
    auth_token_file: Path | None = Field(default=None, description="File holding the bearer token.")
    metrics_listen: str | None = Field(default=None, description="HOST:PORT for the Prometheus /metrics endpoint (off when unset).")
    health_listen: str | None = Field(default=None, description="HOST:PORT for a plaintext health-only gRPC port, for kubelet probes when TLS is on (off when unset).")
    drain_delay_seconds: float = Field(default=0.0, ge=0, description="On shutdown, report NOT_SERVING this long before refusing calls.")
    log_format: str = Field(default="text", description="text or json.")
    log_level: str = Field(default="INFO", description="Python logging level.")
    grace_seconds: float = Field(default=5.0, ge=0, description="How long shutdown waits for in-flight RPCs.")

    @field_validator("listen", "metrics_listen", "health_listen")
    @classmethod
    def _listen_address(cls, value: str | None, info) -> str | None:  # noqa: ANN001
        from vllm_planner.transport.address import listen_address

        return None if value is None else listen_address(value, info.field_name)

    @field_validator("*", mode="before")
    @classmethod
    def _no_empty_strings(cls, value: Any) -> Any:
        # From a flag, the environment or the YAML file alike, '' never means "not set": an empty
        # auth_token would otherwise switch token auth off without a word.
        items = value if isinstance(value, list) else [value]
        if any(isinstance(item, str) and not item.strip() for item in items):
            raise ValueError("must not be empty (leave the setting out to use the default)")
        return value

    @model_validator(mode="after")
    def _check(self) -> "ServerSettings":
        if self.log_format not in ("text", "json"):
            raise ValueError("log_format must be 'text' or 'json'")
        if not isinstance(logging.getLevelName(self.log_level.upper()), int):
            raise ValueError(f"log_level {self.log_level!r} is not a logging level")
        if self.auth_token and self.auth_token_file:
            raise ValueError("set auth_token or auth_token_file, not both")
        return self

    def resolved_auth_token(self) -> str | None:
        if self.auth_token_file:
            return read_token(self.auth_token_file, what=f"--auth-token-file {file_label(self.auth_token_file)}")
        return self.auth_token or None

    def server_options(self) -> ServerOptions:
        """The server's options; reads the token file and checks the TLS files (OpenSSL) now, so a bad
        file fails at start-up in one line instead of as gRPC's "Failed to bind"."""
        options = self._options()
        server_credentials(options)
        return options

    def _options(self) -> ServerOptions:
        return ServerOptions(
            listen=self.listen,
            tls_cert_file=self.tls_cert_file,
            tls_key_file=self.tls_key_file,
            tls_client_ca_file=self.tls_client_ca_file,
            auth_token=self.resolved_auth_token(),
            grace_seconds=self.grace_seconds,
            metrics_listen=self.metrics_listen,
            health_listen=self.health_listen,
            log_format=self.log_format,
            log_level=self.log_level,
            drain_delay_seconds=self.drain_delay_seconds,
        )


def _without_none(annotation: Any) -> Any:
    """``X | None`` -> ``X``; anything else unchanged (``list[str]`` stays a list)."""
    if get_origin(annotation) in (Union, UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_settings_arguments(parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]) -> None:
    """One flag per settings field (default None, so unset flags fall through to env/YAML/defaults)."""
    parser.add_argument("--config", type=Path, default=None, help="YAML file with settings (lowest precedence but defaults).")
    prefix = settings_cls.model_config.get("env_prefix", "")
    for name, field in settings_cls.model_fields.items():
        annotation = field.annotation
        help_text = f"{field.description or ''} [env {prefix}{name.upper()}]".strip()
        base = _without_none(annotation)
        if base is bool:
            parser.add_argument(_flag(name), action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif get_origin(base) is list or base is list:
            parser.add_argument(_flag(name), action="append", default=None, metavar="VALUE", help=help_text + " (repeatable)")
        else:
            parser.add_argument(_flag(name), default=None, metavar=name.upper(), help=help_text)


class _BoundedYamlSource(YamlConfigSettingsSource):
    """The YAML settings file, read like every other file users name (``vllm_planner.bounded``)."""

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        label = f"--config {file_label(file_path)}"
        data = read_yaml(file_path, max_bytes=MAX_SETTINGS_BYTES, what=label)
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise InputError(f"{label}: the top level must be a mapping of setting: value")
        return data


_SETTINGS_WORDING = {"Extra inputs are not permitted": "unknown setting", "Field required": "is required"}


def startup_error_line(exc: BaseException) -> str:
    """One line for a settings or start-up failure; validation errors name the flag of each field."""
    if isinstance(exc, ValidationError):
        parts = []
        errors = exc.errors(include_url=False, include_input=False, include_context=False)
        for error in errors[:5]:
            message = error["msg"].removeprefix("Value error, ")
            message = _SETTINGS_WORDING.get(message, message)
            loc = [str(p) for p in error["loc"]]
            if not loc:
                parts.append(message)
            elif error["type"] == "extra_forbidden":  # a key of the YAML file or an unknown field
                parts.append(f"{'.'.join(loc)[:64]}: {message}")
            else:
                parts.append(f"{_flag(loc[0])}{''.join(f'[{p}]' for p in loc[1:])}: {message}")
        more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
        return "; ".join(parts) + more
    text = " ".join(str(exc).split())
    return (text[:1000] or type(exc).__name__)


def build_settings(prog: str, build: Callable[[], S], bad_input: tuple[type[BaseException], ...] = ()) -> S:
    """``build()`` (settings, backends, files), or exit 2 with one line saying why not."""
    try:
        return build()
    except (ValidationError, ValueError, OSError, *bad_input) as exc:
        fail(prog, startup_error_line(exc))


def serve_or_fail(prog: str, serve: Awaitable[None], bad_input: tuple[type[BaseException], ...] = ()) -> int:
    """Run the service until it stops; a start-up failure (bad address, unusable port or file) is one
    line and exit 2. Errors after start-up are logged by the service and never reach here."""
    try:
        asyncio.run(serve)
    except (ValidationError, ValueError, OSError, *bad_input) as exc:
        fail(prog, startup_error_line(exc))
    return 0


def load_settings(settings_cls: type[BaseSettings], args: argparse.Namespace | None = None, **overrides: Any):
    """Build settings with flags > environment > YAML (--config or <PREFIX>CONFIG) > defaults."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    cli_values = {}
    config_path = None
    if args is not None:
        config_path = getattr(args, "config", None)
        for name in settings_cls.model_fields:
            value = getattr(args, name, None)
            if value is not None:
                cli_values[name] = value
    cli_values.update({k: v for k, v in overrides.items() if v is not None})
    if config_path is None and os.environ.get(f"{prefix}CONFIG"):
        config_path = Path(os.environ[f"{prefix}CONFIG"])
    if config_path is not None:  # missing, unreadable or not a regular file: say so (pydantic skips it)
        read_bytes(config_path, max_bytes=MAX_SETTINGS_BYTES, what=f"--config {file_label(config_path)}")

    class _WithYaml(settings_cls):  # type: ignore[misc, valid-type]
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls_: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
            if config_path is not None:
                sources.append(_BoundedYamlSource(settings_cls_, yaml_file=config_path))
            return tuple(sources)

    _WithYaml.__name__ = settings_cls.__name__
    return _WithYaml(**cli_values)
