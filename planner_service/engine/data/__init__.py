"""Bundled data files of the planning engine (read via importlib.resources)."""
