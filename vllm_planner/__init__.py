"""Shared runtime for the vllm-fleet-planner services.

``vllm_planner.v1`` holds the protobuf/gRPC stubs generated from ``protos/vllm_planner/v1`` at build
time (gitignored). ``vllm_planner.transport`` holds the server/channel plumbing both services share.
"""


def version_string(program: str) -> str:
    """``PROGRAM VERSION`` for ``--version`` (the installed distribution's version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("vllm-fleet-planner")
    except PackageNotFoundError:  # running from a source tree that was never installed
        number = "unknown"
    return f"{program} {number}"
