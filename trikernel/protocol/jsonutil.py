"""JSON for the wire: orjson when importable, the standard library otherwise.

Rules (the Jupyter messaging spec has JSON objects on the wire; frontends are JavaScript):
- ``NaN`` and infinities become ``null``: JavaScript's ``JSON.parse`` rejects the bare tokens.
- Integers too large for orjson fall back to the standard library, which writes them exactly.
- Keys that are not strings are written as strings (``{1: "a"}`` becomes ``{"1": "a"}``).
- Dates and datetimes become ISO 8601 strings; bytes become base64 (as jupyter_client does);
  sets and tuples become lists; objects with ``tolist`` (NumPy) use it.

Reading: orjson turns an integer over 64 bits into a float (the standard library keeps it
exact); requests from frontends carry no such integers, so the fast parser stays.

Nothing here raises for a value that merely has an unusual type: :func:`dumps` raises
``TypeError`` only for an object it has no rule for, and ``ValueError`` for nesting too deep
to write. :func:`loads` raises ``ValueError`` (never
anything else) for bytes that are not a JSON document.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["dumps", "loads"]


def _default(obj: Any) -> Any:
    """Turn a value JSON has no type for into one it has (orjson's and json's ``default``)."""
    if isinstance(obj, (datetime.datetime, datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return base64.b64encode(obj).decode("ascii")
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, Mapping):
        return dict(obj)
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _clean(obj: Any, depth: int = 0) -> Any:
    """Copy ``obj`` with NaN/inf as None and every key a string; the slow path's only pass."""
    if depth > 900:
        raise ValueError("object is nested too deeply for JSON")
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {
            (k if isinstance(k, str) else _key(k)): _clean(v, depth + 1) for k, v in obj.items()
        }
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [_clean(v, depth + 1) for v in obj]
    if isinstance(obj, (str, int, bool)) or obj is None:
        return obj
    return _clean(_default(obj), depth + 1)


def _key(key: object) -> str:
    if isinstance(key, float) and not math.isfinite(key):
        return str(key)
    return json.dumps(key) if isinstance(key, (int, float, bool)) or key is None else str(key)


def _std_dumps(obj: Any) -> bytes:
    try:
        try:
            text = json.dumps(obj, default=_default, ensure_ascii=False, allow_nan=False)
        except (ValueError, TypeError):
            # NaN, a non-string key of an odd type, or an odd type nested in a key.
            obj = _clean(obj)
            text = json.dumps(obj, ensure_ascii=False, allow_nan=False)
    except RecursionError:
        raise ValueError("object is nested too deeply for JSON") from None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate has no UTF-8 form: write it as a \ud800-style escape instead.
        return json.dumps(obj, default=_default, ensure_ascii=True, allow_nan=False).encode()


def _std_loads(data: bytes | str) -> Any:
    try:
        if not isinstance(data, str):
            # The wire is UTF-8 (spec); json.loads(bytes) would also guess UTF-16 and UTF-32.
            data = bytes(data).decode("utf-8")
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON is nested too deeply") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"JSON is not valid UTF-8: {exc}") from None


dumps: Callable[[Any], bytes]
loads: Callable[[bytes | str], Any]

try:
    import orjson
except ImportError:  # pragma: no cover - exercised by the no-orjson test session
    dumps = _std_dumps
    loads = _std_loads
else:
    # No OPT_SERIALIZE_NUMPY: with it, orjson imports numpy the first time it meets a value of
    # a type it does not know (bytes will do): +150 ms and +11 MiB in every kernel. Arrays go
    # through _default's tolist() instead.
    _OPTS = orjson.OPT_NON_STR_KEYS

    def dumps(obj: Any) -> bytes:
        """Serialise ``obj`` to UTF-8 JSON bytes (see the module's rules)."""
        try:
            return orjson.dumps(obj, default=_default, option=_OPTS)
        except (orjson.JSONEncodeError, TypeError):
            # Integers over 64 bits, nesting past orjson's limit, lone surrogates, key types
            # orjson refuses: the standard library handles what is representable at all.
            return _std_dumps(obj)

    def loads(data: bytes | str) -> Any:
        """Parse JSON bytes or text; raise ``ValueError`` if it is not a JSON document."""
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            # orjson rejects NaN tokens, numbers beyond float range and surrogate escapes,
            # which Python's json reads.
            return _std_loads(data)
