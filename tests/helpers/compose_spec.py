"""Compose files against the Compose Specification's own JSON schema (draft-07), vendored with its
license in tests/fixtures/compose-spec/ so no test needs the network."""

from __future__ import annotations

import functools
import json

import jsonschema

from helpers.paths import FIXTURES

SCHEMA = FIXTURES / "compose-spec" / "compose-spec.json"


@functools.cache
def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def compose_spec_errors(document: object) -> list[str]:
    """One line per schema violation ("services.agent.cap_drop: 'ALL' is not of type 'array'")."""
    errors = sorted(_validator().iter_errors(document), key=lambda e: [str(p) for p in e.path])
    return [f"{'.'.join(map(str, e.path)) or '<top>'}: {e.message}" for e in errors]
