"""Reliability test support (bad input, faults, load) shared with ``benchmarks/``.

``helpers``: real servers as subprocesses, dead/silent endpoints, /proc RSS, polling; ``load``: the
multi-process load driver; ``bad_input_cases``: the table of malformed Plan requests.
"""
