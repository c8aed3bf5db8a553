"""Round-trips frozen dataclasses through JSON, for stored idempotent responses and request hashes."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TypeVar

T = TypeVar("T")


# Types written as they are; exact types, so a str- or int-valued Enum still goes through its branch.
_AS_IS: frozenset[type] = frozenset({str, int, float, bool, type(None)})
# A dataclass's fields, or None for any other type, looked up once per type (every write hashes one).
_FIELD_NAMES: dict[type, tuple[str, ...] | None] = {}
_UNSEEN = ("",)  # not a field tuple any dataclass has
# json.dumps builds an encoder a call when given any option: these are built once, with the same options.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def to_jsonable(value: Any, *, canonical: bool = False) -> Any:
    """JSON-ready data; ``canonical`` writes equal decimals alike (1.0 and 1.00), for fingerprints."""
    kind = type(value)
    if kind in _AS_IS:
        return value
    names = _FIELD_NAMES.get(kind, _UNSEEN)
    if names is _UNSEEN:
        names = tuple(field.name for field in dataclasses.fields(kind)) if dataclasses.is_dataclass(kind) else None
        _FIELD_NAMES[kind] = names
    if names is not None:
        return {name: to_jsonable(getattr(value, name), canonical=canonical) for name in names}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value.normalize() if canonical else value, "f")
    if isinstance(value, dict):
        return {str(key): to_jsonable(item, canonical=canonical) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(item, canonical=canonical) for item in value]
    return value


def dumps(value: Any) -> str:
    return _ENCODER.encode(to_jsonable(value))


def fingerprint(value: Any) -> str:
    """SHA-256 of the canonical JSON of a command: equal requests always hash the same.

    Stored with each idempotency record: a change to this text would turn retries across a release
    into IDEMPOTENCY_KEY_REUSED, so tests pin it.
    """
    return hashlib.sha256(_ENCODER.encode(to_jsonable(value, canonical=True)).encode()).hexdigest()


def loads(cls: type[T], text: str) -> T:
    return typing.cast(T, _from_jsonable(cls, json.loads(text)))


def _from_jsonable(hint: Any, data: Any) -> Any:
    if data is None:
        return None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return _from_jsonable(inner[0], data)
    if origin in (list, tuple):
        (item_hint, *_) = typing.get_args(hint)
        items = [_from_jsonable(item_hint, item) for item in data]
        return tuple(items) if origin is tuple else items
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        return hint(**{name: _from_jsonable(hints[name], value) for name, value in data.items()})
    if isinstance(hint, type) and issubclass(hint, Enum):
        return hint(data)
    if hint is datetime:
        return datetime.fromisoformat(data)
    if hint is date:
        return date.fromisoformat(data)
    if hint is Decimal:
        return Decimal(data)
    return data
