"""The planner gRPC service: servicer, proto<->pydantic converters, error interceptor, bootstrap."""
