"""The one exception -> gRPC status mapping (``planner_service.server.interceptor.status_for``)."""

from __future__ import annotations

import pytest
from google.rpc import code_pb2, error_details_pb2
from pydantic import ValidationError

from planner_service.engine import errors
from planner_service.engine.models import PolicyOptions
from planner_service.server.interceptor import DeadlineExceededError, status_for


def _details(status, message_cls):  # noqa: ANN001, ANN202
    found = []
    for detail in status.details:
        if detail.Is(message_cls.DESCRIPTOR):
            item = message_cls()
            detail.Unpack(item)
            found.append(item)
    return found


@pytest.mark.parametrize(
    ("exc", "code", "reason"),
    [
        (errors.InvalidRequestError("bad"), code_pb2.INVALID_ARGUMENT, "INVALID_REQUEST"),
        (errors.UnsupportedArchitectureError("no heads"), code_pb2.INVALID_ARGUMENT, "UNSUPPORTED_ARCHITECTURE"),
        (errors.UnsupportedVersionError("0.1"), code_pb2.INVALID_ARGUMENT, "UNSUPPORTED_VERSION"),
        (errors.ModelNotFoundError("m"), code_pb2.NOT_FOUND, "MODEL_NOT_FOUND"),
        (errors.GpuNotFoundError("g"), code_pb2.NOT_FOUND, "GPU_NOT_FOUND"),
        (errors.PermissionDeniedError("/etc"), code_pb2.PERMISSION_DENIED, "PERMISSION_DENIED"),
        (errors.MetadataUnavailableError("hub"), code_pb2.UNAVAILABLE, "METADATA_UNAVAILABLE"),
        (DeadlineExceededError("late"), code_pb2.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
        (errors.PlannerError("other"), code_pb2.INVALID_ARGUMENT, "PLANNER"),
    ],
)
def test_domain_errors_map_to_their_codes_with_error_info(exc, code, reason):
    status = status_for(exc)
    assert status.code == code
    assert status.message == str(exc)
    (info,) = _details(status, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "vllm-planner")


def test_field_violations_travel_as_bad_request():
    exc = errors.InvalidRequestError.for_field("hardware.tensor_parallel_size", "must divide 32 heads")
    (bad,) = _details(status_for(exc), error_details_pb2.BadRequest)
    assert [(v.field, v.description) for v in bad.field_violations] == [
        ("hardware.tensor_parallel_size", "must divide 32 heads")
    ]


def test_a_pydantic_validation_error_gives_one_violation_per_error():
    with pytest.raises(ValidationError) as info:
        PolicyOptions(gpu_memory_utilization=1.5, fragmentation_factor=-0.5)  # 2 is a seed multiplier now
    status = status_for(info.value)
    assert status.code == code_pb2.INVALID_ARGUMENT
    (bad,) = _details(status, error_details_pb2.BadRequest)
    assert [v.field for v in bad.field_violations] == ["gpu_memory_utilization", "fragmentation_factor"]
    assert "gpu_memory_utilization" in status.message


def test_anything_else_is_internal_without_its_message():
    status = status_for(KeyError("/srv/private/path"))
    assert status.code == code_pb2.INTERNAL
    assert "private" not in status.message
    assert _details(status, error_details_pb2.BadRequest) == []
