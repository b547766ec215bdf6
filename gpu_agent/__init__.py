"""GPU agent: a read-only gRPC daemon that serves one host's GPU inventory (NVML, nvidia-smi or a replay).

Layout: ``inventory`` (pure pydantic domain), backends (``nvml_backend``, ``smi_backend``,
``backends``), ``watchdog`` (timeouts around driver calls), ``collector`` (the one collector thread and
its cached snapshot), ``convert`` (proto <-> domain), ``servicer``/``app``/``main`` (the gRPC server).
"""

__version__ = "0.1.0"
