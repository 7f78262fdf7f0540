"""A compiled plan as ``marshal`` data, and back.

Not pickle: loading a pickle can call anything, so a cache file someone else wrote would be
code run with the user's rights outside every sandbox. ``marshal`` builds only plain values;
the only classes this decoder makes are the dataclasses, enums and named tuples of the few
modules a plan is made of (``MODULES``), already imported, named in the data and checked to be
exactly that before anything is built. It is also several times faster
to load than pickle, which is the point of a cache on the one-shot path.
"""

from __future__ import annotations

import dataclasses
import enum
import marshal
import sys
from typing import Any

_DC, _ENUM, _TUPLE, _LIST, _DICT, _FSET, _SET, _NAMEDTUPLE = range(8)
_CONTAINERS = (
    (tuple, _TUPLE),
    (list, _LIST),
    (frozenset, _FSET),
    (set, _SET),
)
_BUILD: dict[int, Any] = {_TUPLE: tuple, _LIST: list, _FSET: frozenset, _SET: set}


class CodecError(ValueError):
    """The data is not a plan this version wrote (or was tampered with)."""


def encode(value: Any) -> bytes:
    return marshal.dumps(_enc(value))


_PLAIN = (type(None), bool, int, float, str, bytes)


def _enc(v: Any) -> Any:
    if type(v) in _PLAIN:
        return v
    if isinstance(v, enum.Enum):
        return (_ENUM, _name(type(v)), _enc(v.value))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        fields = tuple((f.name, _enc(getattr(v, f.name))) for f in dataclasses.fields(v))
        return (_DC, _name(type(v)), fields)
    if isinstance(v, dict):
        return (_DICT, tuple((_enc(k), _enc(x)) for k, x in v.items()))
    if isinstance(v, tuple) and type(v) is not tuple:  # a NamedTuple of ringfence's
        return (_NAMEDTUPLE, _name(type(v)), tuple(_enc(x) for x in v))
    for kind, tag in _CONTAINERS:
        if isinstance(v, kind):
            items: Any = v
            return (tag, tuple(_enc(x) for x in items))
    raise CodecError(f"cannot keep a {type(v).__name__} in the plan cache")


def _name(cls: type) -> str:
    if cls.__module__ not in MODULES:
        raise CodecError(f"{cls.__module__}.{cls.__qualname__} is not part of a plan")
    return f"{cls.__module__}:{cls.__qualname__}"


def decode(data: bytes) -> Any:
    try:
        return _dec(marshal.loads(data))
    except (EOFError, TypeError, IndexError, KeyError, AttributeError, RecursionError) as e:
        raise CodecError(f"not a cached plan: {e}") from e


# The modules whose classes a plan is made of. Only these are looked at, and only once they
# are imported already (the caller imports plan_model first): decoding never imports.
MODULES = frozenset(
    {
        "ringfence.platforms.linux.plan_model",
        "ringfence.platforms.linux.mountops",
        "ringfence.platforms.linux.landlock",
        "ringfence.platforms.linux.seccomp",
        "ringfence.policy.model",
    }
)


def _cls(name: Any, kind: type) -> Any:
    if not isinstance(name, str) or ":" not in name:
        raise CodecError(f"not a class name: {name!r}")
    module, _, qual = name.partition(":")
    if module not in MODULES or sys.modules.get(module) is None:
        raise CodecError(f"{module} is not a module plans are made of")
    if "." in qual or not qual.isidentifier():
        raise CodecError(f"not a class name: {qual!r}")
    cls = getattr(sys.modules[module], qual, None)
    if not isinstance(cls, type) or cls.__module__ != module:
        raise CodecError(f"{name} is not a class of that module")
    if kind is enum.Enum and not issubclass(cls, enum.Enum):
        raise CodecError(f"{name} is not an enum")
    if kind is tuple and not (issubclass(cls, tuple) and hasattr(cls, "_fields")):
        raise CodecError(f"{name} is not a named tuple")
    if kind is object and not (dataclasses.is_dataclass(cls) and not issubclass(cls, enum.Enum)):
        raise CodecError(f"{name} is not a dataclass")
    return cls


def _dec(v: Any) -> Any:
    if type(v) in _PLAIN:
        return v
    if not isinstance(v, tuple) or not v or type(v[0]) is not int:
        raise CodecError("malformed value")
    tag = v[0]
    if tag == _DC:
        return _dataclass(v[1], v[2])
    if tag == _ENUM:
        return _cls(v[1], enum.Enum)(_dec(v[2]))
    if tag == _DICT:
        return {_dec(k): _dec(x) for k, x in v[1]}
    if tag == _NAMEDTUPLE:
        return _cls(v[1], tuple)(*(_dec(x) for x in v[2]))
    build = _BUILD.get(tag)
    if build is None:
        raise CodecError(f"unknown tag {tag}")
    return build(_dec(x) for x in v[1])


def _dataclass(name: Any, items: Any) -> Any:
    cls = _cls(name, object)
    names = {f.name for f in dataclasses.fields(cls)}
    got = {k: _dec(x) for k, x in items}
    if set(got) != names:
        raise CodecError(f"{name}: fields differ from this version's")
    obj = object.__new__(cls)
    for k, x in got.items():
        object.__setattr__(obj, k, x)
    return obj
