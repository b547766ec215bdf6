"""Protobuf <-> pydantic converters for the planner service (the only place that knows both).

The proto messages in ``protos/vllm_planner/v1/planner.proto`` mirror the pydantic models field by
field, so conversion is driven by the pydantic field names and the proto descriptors instead of one
hand-written function per message: a field added to both sides converts with no code here. The
conventions the walk relies on:

* ``None`` (pydantic) <-> absent (proto3 ``optional`` / unset sub-message); an absent optional field
  with a pydantic default is left out, so the pydantic default applies (as in the CLI).
* pydantic ``Enum`` <-> proto enum ``<ENUM_NAME>_<VALUE>``; ``*_UNSPECIFIED`` (0) means "not set".
* ``dict`` (inline config.json) <-> JSON object string (integers stay integers).
* ``dict`` <-> ``repeated {key, value}`` entries, ``value`` a scalar or a ``ScalarValue`` (any scalar
  or null): not a proto map, which loses the order, and the CLI's JSON output must be the same in
  embedded and remote mode.
* ``int | "auto"`` (``max_model_len``) <-> oneof ``{max_model_len, max_model_len_auto}``.

``from_proto`` validates with pydantic, so a bad request raises ``pydantic.ValidationError`` whose
error locations are the dotted proto field paths; the server's interceptor turns those into
``INVALID_ARGUMENT`` field violations.
"""

from __future__ import annotations

import json
import logging
import re
import types
import typing
from enum import Enum
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pydantic import BaseModel

from planner_service.engine.errors import InvalidRequestError
from planner_service.metadata.config_file import parse_json_object

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)
P = TypeVar("P", bound=Message)

# Fields whose pydantic value is ``int | "auto" | None``: the proto carries "auto" as a bool twin.
_AUTO_SUFFIX = "_auto"
_AUTO = "auto"


def to_proto(model: BaseModel, message: P) -> P:
    """Copy ``model`` into ``message`` (a fresh proto instance) and return it."""
    descriptor = message.DESCRIPTOR
    for name in type(model).model_fields:
        value = getattr(model, name)
        field = descriptor.fields_by_name.get(name)
        if field is None:
            log.warning("%s.%s has no proto field; dropped", type(model).__name__, name)
            continue
        if value is None:
            continue
        if isinstance(value, str) and value == _AUTO and f"{name}{_AUTO_SUFFIX}" in descriptor.fields_by_name:
            setattr(message, f"{name}{_AUTO_SUFFIX}", True)
        elif _is_entry_list(field):
            target = getattr(message, name)
            for key, item in value.items():
                entry = target.add(key=key)
                if entry.DESCRIPTOR.fields_by_name["value"].message_type is None:
                    entry.value = item
                else:
                    _scalar_value_to_proto(item, entry.value)
        elif field.is_repeated:
            target = getattr(message, name)
            for item in value:
                if isinstance(item, BaseModel):
                    to_proto(item, target.add())
                else:
                    target.append(item)
        elif field.message_type is not None:
            sub = getattr(message, name)
            sub.SetInParent()  # a sub-model whose fields are all defaults is still "set"
            to_proto(value, sub)
        elif field.enum_type is not None:
            setattr(message, name, _enum_number(field, value))
        elif isinstance(value, dict):
            setattr(message, name, json.dumps(value))
        else:
            setattr(message, name, value)
    return message


def from_proto(message: Message, model_cls: type[M]) -> M:
    """Build and validate a ``model_cls`` from ``message``.

    Raises:
        pydantic.ValidationError: a value breaks the model's constraints.
        InvalidRequestError: an inline JSON field is not a JSON object.
    """
    return model_cls.model_validate(_to_dict(message, model_cls, prefix=""))


def _to_dict(message: Message, model_cls: type[BaseModel], prefix: str) -> dict[str, Any]:
    descriptor = message.DESCRIPTOR
    out: dict[str, Any] = {}
    for name, info in model_cls.model_fields.items():
        field = descriptor.fields_by_name.get(name)
        if field is None:
            continue
        auto_name = f"{name}{_AUTO_SUFFIX}"
        if auto_name in descriptor.fields_by_name and message.HasField(auto_name):
            if getattr(message, auto_name):
                out[name] = _AUTO
            continue
        annotation = info.annotation
        if _is_entry_list(field):
            out[name] = {entry.key: _entry_value(entry) for entry in getattr(message, name)}
        elif field.is_repeated:
            nested = _model_type(annotation)
            items = getattr(message, name)
            out[name] = [_to_dict(i, nested, f"{prefix}{name}.") for i in items] if nested else list(items)
        elif field.message_type is not None:
            if message.HasField(name):
                out[name] = _to_dict(getattr(message, name), _model_type(annotation), f"{prefix}{name}.")
        elif field.has_presence and not message.HasField(name):
            if info.is_required():  # ``x: T | None`` with no default: absent is an explicit None
                out[name] = None
            # else absent: the pydantic default (None = "recommend") applies
        elif field.enum_type is not None:
            number = getattr(message, name)
            if number != 0:
                out[name] = _enum_value(field, number, _enum_type(annotation))
        elif _accepts_dict(annotation):
            out[name] = _parse_json_object(getattr(message, name), f"{prefix}{name}")
        else:
            out[name] = getattr(message, name)
    return out


# ------------------------------------------------------------------------------------------------
# Helpers
# ------------------------------------------------------------------------------------------------


def _is_entry_list(field: FieldDescriptor) -> bool:
    """A repeated ``{key, value}`` message (not a map): an ordered dict."""
    entry = field.message_type
    return (
        field.is_repeated
        and entry is not None
        and not entry.GetOptions().map_entry
        and set(entry.fields_by_name) == {"key", "value"}
    )


def _flatten(annotation: Any) -> list[Any]:
    """All leaf types of an annotation (``A | None`` -> [A, None], ``list[A]`` -> [A])."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, tuple):
        return [leaf for arg in typing.get_args(annotation) for leaf in _flatten(arg)]
    return [annotation]


def _model_type(annotation: Any) -> type[BaseModel] | None:
    for leaf in _flatten(annotation):
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            return leaf
    return None


def _enum_type(annotation: Any) -> type[Enum] | None:
    for leaf in _flatten(annotation):
        if isinstance(leaf, type) and issubclass(leaf, Enum):
            return leaf
    return None


def _accepts_dict(annotation: Any) -> bool:
    return any(leaf is dict or typing.get_origin(leaf) is dict for leaf in _flatten(annotation))


def _enum_prefix(field: FieldDescriptor) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", field.enum_type.name).upper() + "_"


def _enum_number(field: FieldDescriptor, value: Enum | str) -> int:
    raw = value.value if isinstance(value, Enum) else value
    name = _enum_prefix(field) + str(raw).upper().replace("-", "_")
    return field.enum_type.values_by_name[name].number


def _enum_value(field: FieldDescriptor, number: int, enum_cls: type[Enum] | None) -> Any:
    value = field.enum_type.values_by_number.get(number)
    if value is None:  # a newer client's value: let pydantic reject it with the field path
        return number
    suffix = value.name.removeprefix(_enum_prefix(field))
    if enum_cls is not None:
        for member in enum_cls:
            if str(member.value).upper().replace("-", "_") == suffix:
                return member
    return suffix.lower()


def _parse_json_object(text: str, path: str) -> dict:
    """A present JSON field (even ``""``: presence, not emptiness, says "given") as a bounded object.

    The text comes off the wire, so it goes through the same size/nesting-bounded reader as a
    config.json file: a raw ``json.loads`` of 100k brackets raises RecursionError (INTERNAL).
    """
    if not text:
        raise InvalidRequestError.for_field(path, "is empty; send a JSON object or leave the field unset")
    try:
        return parse_json_object(text, what=path)
    except InvalidRequestError as exc:
        raise InvalidRequestError.for_field(path, str(exc).removeprefix(f"{path} ")) from None


def _scalar_value_to_proto(value: Any, target: Message) -> None:
    # bool before int: bool is an int subclass; None leaves the oneof empty.
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, str):
        target.string_value = value
    elif value is not None:
        raise TypeError(f"unsupported scalar {value!r}")
    else:
        target.SetInParent()


def _entry_value(entry: Message) -> Any:
    if entry.DESCRIPTOR.fields_by_name["value"].message_type is None:
        return entry.value
    return _scalar_value_from_proto(entry.value)


def _scalar_value_from_proto(message: Message) -> Any:
    kind = message.WhichOneof("kind")
    return None if kind is None else getattr(message, kind)
