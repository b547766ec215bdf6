"""Limits and keepalive settings shared by servers and clients (they must match, or the server
answers client pings with GOAWAY "too_many_pings")."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 32 * 1024 * 1024

# Clients ping every 30 s when idle; servers allow pings that often, even without active calls.
KEEPALIVE_TIME_MS = 30_000
KEEPALIVE_TIMEOUT_MS = 10_000

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_TIME_MS // 2),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.so_reuseport", 0),
    # gRPC core sheds calls beyond 1,000 waiting to be dispatched (they fail CANCELLED before any
    # handler runs): 10,000 agents reporting to a (re)started planner at once had ~10 % of their calls
    # cancelled and retried with backoff. Queue a whole fleet's burst instead; each waiting call holds
    # its request (a few KiB), and the hard limit still bounds it.
    ("grpc.server.max_pending_requests", 20_000),
    ("grpc.server.max_pending_requests_hard_limit", 40_000),
]

CLIENT_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", KEEPALIVE_TIME_MS),
    ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
