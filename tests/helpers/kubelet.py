"""A fake kubelet: the real PodResources v1 API (the vendored proto) served by grpcio on a unix socket."""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc

from vllm_planner.third_party.kubelet.podresources.v1 import api_pb2, api_pb2_grpc


class FakeKubelet(api_pb2_grpc.PodResourcesListerServicer):
    """``pods``: ``{(namespace, pod): {container: {resource_name: [device ids]}}}``; ``claims``:
    ``{(namespace, pod): {container: [(claim_name, driver_name, device_name)]}}``."""

    def __init__(self, socket_path: Path, pods: dict | None = None, claims: dict | None = None,
                 allocatable: dict[str, list[str]] | None = None) -> None:
        self.socket_path = Path(socket_path)
        self.pods = pods or {}
        self.claims = claims or {}
        self.allocatable = allocatable or {}
        self.calls: list[str] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        api_pb2_grpc.add_PodResourcesListerServicer_to_server(self, self._server)
        self._server.add_insecure_port(f"unix://{self.socket_path}")

    def List(self, request, context):  # noqa: ANN001, N802
        self.calls.append("List")
        response = api_pb2.ListPodResourcesResponse()
        for key in sorted(set(self.pods) | set(self.claims)):
            namespace, name = key
            pod = response.pod_resources.add(name=name, namespace=namespace)
            containers = set(self.pods.get(key, {})) | set(self.claims.get(key, {}))
            for container in sorted(containers):
                c = pod.containers.add(name=container)
                for resource, ids in self.pods.get(key, {}).get(container, {}).items():
                    c.devices.add(resource_name=resource, device_ids=ids)
                for claim_name, driver, device in self.claims.get(key, {}).get(container, []):
                    claim = c.dynamic_resources.add(claim_name=claim_name, claim_namespace=namespace)
                    claim.claim_resources.add(driver_name=driver, pool_name="node", device_name=device)
        return response

    def GetAllocatableResources(self, request, context):  # noqa: ANN001, N802
        self.calls.append("GetAllocatableResources")
        response = api_pb2.AllocatableResourcesResponse()
        for resource, ids in self.allocatable.items():
            response.devices.add(resource_name=resource, device_ids=ids)
        return response

    def __enter__(self) -> "FakeKubelet":
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(0)
