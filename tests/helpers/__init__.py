"""Helpers shared by the test files: paths of the shared fixtures, polling, engine request builders,
an offline Hub environment, a FleetService harness and a throw-away PKI.

``tests/`` is on ``sys.path`` while pytest runs (no ``__init__.py`` there), so tests import these
as ``from helpers.paths import H100_CAPTURE`` — the same way ``fixtures.metadata.builders`` is found.
"""
