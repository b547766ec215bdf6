"""gRPC plumbing shared by gpu_agent and planner_service servers and by the SDK channels.

One place sets message-size limits, keepalive (the same on both sides), TLS/mTLS, bearer-token auth,
health, reflection and graceful shutdown, so every server and client behaves alike.
"""
