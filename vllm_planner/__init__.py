"""Shared runtime for the vllm-fleet-planner services.

``vllm_planner.v1`` holds the protobuf/gRPC stubs generated from ``protos/vllm_planner/v1`` at build
time (gitignored). ``vllm_planner.transport`` holds the server/channel plumbing both services share.
"""
