"""Model values as JSON and back, for what the state database keeps as ``jsonb`` (audit notes).

Only the types a caller names can come back: a stored value can never make the bot build
anything else. Dataclasses carry their type's name; enums, datetimes and timedeltas are tagged.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

TYPE = "$type"


class CodecError(ValueError):
    """A stored value that is not one of the types asked for (or not well formed)."""


def encode(value: Any) -> Any:
    """``value`` as JSON-able data (dataclasses, enums, datetimes, timedeltas, tuples, lists, dicts)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {TYPE: type(value).__name__, **fields}
    if isinstance(value, enum.Enum):
        return {TYPE: type(value).__name__, "value": value.value}
    if isinstance(value, datetime):
        return {TYPE: "datetime", "value": value.isoformat()}
    if isinstance(value, timedelta):
        return {TYPE: "timedelta", "seconds": value.total_seconds()}
    if isinstance(value, (list, tuple)):
        return [encode(item) for item in value]
    if isinstance(value, dict):
        return {str(key): encode(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise CodecError(f"cannot encode a {type(value).__name__}")


def decode(data: Any, types: Iterable[type]) -> Any:
    """The value ``encode`` made, built only from ``types`` (dataclasses and enums)."""
    return _Decoder({t.__name__: t for t in types}).value(data)


class _Decoder:
    def __init__(self, types: dict[str, type]) -> None:
        self._types = types

    def value(self, data: Any) -> Any:
        if isinstance(data, list):
            return tuple(self.value(item) for item in data)
        if not isinstance(data, dict):
            return data
        name = data.get(TYPE)
        if name is None:
            return {key: self.value(item) for key, item in data.items()}
        try:
            if name == "datetime":
                return datetime.fromisoformat(str(data["value"]))
            if name == "timedelta":
                return timedelta(seconds=float(data["seconds"]))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise CodecError(f"a stored {name} is not well formed: {exc}") from None
        kind = self._types.get(str(name))
        if kind is None:
            raise CodecError(f"unexpected type {str(name)[:40]!r}")
        try:
            if issubclass(kind, enum.Enum):
                return kind(data["value"])
            fields = {f.name for f in dataclasses.fields(kind) if f.init}  # type: ignore[arg-type]
            return kind(**{key: self.value(item) for key, item in data.items() if key in fields})
        except (KeyError, TypeError, ValueError) as exc:
            raise CodecError(f"a stored {name} is not well formed: {exc}") from None
