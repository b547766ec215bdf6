"""Clients: the Python SDK (``clients.sdk``) and the ``vllm-planner`` CLI (``clients.cli``)."""
