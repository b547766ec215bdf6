"""The one configuration precedence for both services: flags > environment > YAML file > defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml
from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from helpers.pki import make_pki
from vllm_planner.transport.config import ServerSettings, add_settings_arguments, load_settings


class DemoSettings(ServerSettings):
    """What a service does: subclass with its own prefix and fields."""

    model_config = SettingsConfigDict(env_prefix="DEMO_SVC_", extra="forbid")

    peers: list[str] = Field(default_factory=list, description="Peers.")
    fake: bool = Field(default=False, description="Use fake data.")
    refresh_seconds: float = Field(default=2.0, description="Refresh period.")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    import os

    for key in list(os.environ):
        if key.startswith("DEMO_SVC_"):
            monkeypatch.delenv(key)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, DemoSettings)
    return parser.parse_args(argv)


def _yaml(tmp_path: Path, values: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_defaults_apply_when_nothing_is_set():
    settings = load_settings(DemoSettings, _parse([]))
    assert settings.listen == "127.0.0.1:50051"
    assert settings.log_format == "text" and settings.metrics_listen is None and settings.peers == []


def test_each_layer_overrides_the_one_below(tmp_path, monkeypatch):
    config = _yaml(
        tmp_path,
        {"listen": "0.0.0.0:1", "log_level": "DEBUG", "refresh_seconds": 9, "metrics_listen": "0.0.0.0:9090",
         "peers": ["yaml:1"]},
    )
    monkeypatch.setenv("DEMO_SVC_LISTEN", "0.0.0.0:2")
    monkeypatch.setenv("DEMO_SVC_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("DEMO_SVC_PEERS", '["env:1","env:2"]')
    settings = load_settings(DemoSettings, _parse(["--config", str(config), "--listen", "0.0.0.0:3"]))
    assert settings.listen == "0.0.0.0:3"  # flag beats env and YAML
    assert settings.log_level == "WARNING"  # env beats YAML
    assert settings.peers == ["env:1", "env:2"]  # env (JSON list) beats YAML
    assert settings.refresh_seconds == 9  # YAML beats the default
    assert settings.metrics_listen == "0.0.0.0:9090"
    assert settings.grace_seconds == 5.0  # default


def test_flags_types_and_repeatable_lists(tmp_path):
    settings = load_settings(
        DemoSettings,
        _parse(["--fake", "--peers", "a:1", "--peers", "b:2", "--grace-seconds", "1.5", "--log-format", "json"]),
    )
    assert settings.fake is True and settings.peers == ["a:1", "b:2"]
    assert settings.grace_seconds == 1.5 and settings.log_format == "json"
    assert load_settings(DemoSettings, _parse(["--no-fake"])).fake is False


def test_config_file_from_environment_and_explicit_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("DEMO_SVC_CONFIG", str(_yaml(tmp_path, {"listen": "10.0.0.1:7"})))
    assert load_settings(DemoSettings, _parse([])).listen == "10.0.0.1:7"
    assert load_settings(DemoSettings, _parse([]), listen="10.0.0.1:8").listen == "10.0.0.1:8"


def test_bad_configuration_is_rejected(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="missing.yaml: No such file"):
        load_settings(DemoSettings, _parse(["--config", str(tmp_path / "missing.yaml")]))
    with pytest.raises(ValidationError):  # a typo in the YAML file is an error, not silently ignored
        load_settings(DemoSettings, _parse(["--config", str(_yaml(tmp_path, {"lisen": "x:1"}))]))
    with pytest.raises(ValidationError):
        load_settings(DemoSettings, _parse(["--log-format", "xml"]))
    with pytest.raises(ValidationError):
        load_settings(DemoSettings, _parse(["--log-level", "LOUD"]))
    monkeypatch.setenv("DEMO_SVC_AUTH_TOKEN", "a")
    with pytest.raises(ValidationError, match="not both"):
        load_settings(DemoSettings, _parse(["--auth-token-file", str(tmp_path / "t")]))


def test_server_options_carry_tls_token_metrics_health_and_logging(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    monkeypatch.setenv("DEMO_SVC_AUTH_TOKEN_FILE", str(token_file))
    pki = make_pki(tmp_path)  # server_options() checks the PEM files (OpenSSL), so they must be real
    config = _yaml(
        tmp_path,
        {"tls_cert_file": str(pki["server_cert"]), "tls_key_file": str(pki["server_key"]),
         "tls_client_ca_file": str(pki["ca"]), "metrics_listen": "0.0.0.0:9090", "health_listen": "0.0.0.0:50052",
         "log_format": "json", "drain_delay_seconds": 2},
    )
    options = load_settings(DemoSettings, _parse(["--config", str(config)])).server_options()
    assert options.auth_token == "from-file"  # stripped of the trailing newline
    assert options.tls_cert_file == pki["server_cert"] and options.tls_client_ca_file == pki["ca"]
    assert options.metrics_listen == "0.0.0.0:9090" and options.health_listen == "0.0.0.0:50052"
    assert options.log_format == "json" and options.drain_delay_seconds == 2
    token_file.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        load_settings(DemoSettings, _parse([])).server_options()


def test_every_field_has_a_flag_and_help_names_the_env_variable():
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser, DemoSettings)
    help_text = parser.format_help()
    for name in DemoSettings.model_fields:
        assert "--" + name.replace("_", "-") in help_text
    assert "DEMO_SVC_METRICS_LISTEN" in help_text
