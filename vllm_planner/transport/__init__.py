"""gRPC plumbing shared by gpu_agent and planner_service servers and by the SDK channels.

One place sets message-size limits, keepalive (the same on both sides), TLS/mTLS, bearer-token auth,
health, reflection, request ids, Prometheus metrics, logging and graceful shutdown, so every server
and client behaves alike. Modules: ``server`` (start_server, ServerOptions, RunningServer),
``channel`` (create_channel, create_aio_channel, ChannelOptions), ``auth`` (token interceptor and
client credentials), ``config`` (ServerSettings, add_settings_arguments, load_settings),
``metrics`` (service metrics and the registry API), ``logs`` (configure_logging),
``observability`` (the per-RPC interceptor), ``settings`` (limits and keepalive).
"""
