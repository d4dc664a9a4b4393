"""Values between Python and the controller.

Going out, Python values become JSON: tuples and ranges become lists, NumPy
scalars become numbers, NumPy arrays become typed arrays
``{"dtype", "shape", "data": base64}`` inside JSON, or raw bytes when they are
a whole body (:func:`raw_array`), and :class:`Reference` becomes
``{"$ref": name}``.  Coming back, typed arrays become NumPy arrays when NumPy
is installed (answers are asked for in ``format=typed`` then) and lists
otherwise.

The engines know five dtypes: float64, float32, int64, int32 and uint8.
Other NumPy dtypes are converted when no information is lost (bool and
int8/int16/uint16 → int32, uint32 → int64, float16 → float32); the rest
(complex, uint64, objects, strings) is a ``TypeError``.
"""

from __future__ import annotations

import base64
import struct
from typing import Any, Dict, List, Optional, Tuple, Union

try:  # NumPy is optional: without it arrays travel as JSON lists.
    import numpy as _np
except ImportError:  # pragma: no cover - depends on the machine
    _np = None

__all__ = ["Reference", "HAVE_NUMPY", "to_wire", "from_wire", "raw_array", "array_from_raw",
           "DTYPES"]

#: True when NumPy can be imported: arrays then travel as bytes.
HAVE_NUMPY = _np is not None

#: The dtypes engines hold, with their ``struct`` codes.
DTYPES: Dict[str, str] = {"float64": "d", "float32": "f", "int64": "q", "int32": "i",
                          "uint8": "B"}

_WIDEN = {"bool": "uint8", "int8": "int32", "int16": "int32", "uint16": "int32",
          "uint32": "int64", "float16": "float32"}


class Reference:
    """A name on the engines, passed as an argument in its place
    (``view.apply("psum", Reference("a"))``), as IPython Parallel's."""

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise TypeError("a Reference needs a variable name")
        self.name = name

    def __repr__(self) -> str:
        return "Reference(%r)" % self.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and other.name == self.name

    def __hash__(self) -> int:
        return hash(("Reference", self.name))


def is_array(value: Any) -> bool:
    """True for a NumPy ndarray."""
    return _np is not None and isinstance(value, _np.ndarray)


def _wire_array(a: Any) -> Any:
    """``a`` as a C-contiguous little-endian array of an engine dtype."""
    name = a.dtype.name
    if name in _WIDEN:
        a = a.astype(_WIDEN[name])
        name = a.dtype.name
    if name not in DTYPES:
        raise TypeError("arrays of dtype %s cannot go to engines (they hold %s)"
                        % (name, ", ".join(DTYPES)))
    want = _np.dtype(name).newbyteorder("<")
    if a.dtype != want or not a.flags.c_contiguous:
        a = _np.ascontiguousarray(a, dtype=want)
    return a


def raw_array(value: Any) -> Tuple[memoryview, str, str]:
    """``(bytes, dtype, shape)`` of a NumPy array for a raw body: the bytes
    are the array's own buffer when it is already contiguous little-endian."""
    a = _wire_array(value)
    shape = ",".join(str(d) for d in a.shape)
    return memoryview(a).cast("B"), a.dtype.name, shape


def array_from_raw(data: Union[bytes, memoryview], dtype: str, shape: str) -> Any:
    """The NumPy array (or, without NumPy, nested lists) of a raw answer."""
    dims = [int(d) for d in shape.split(",") if d.strip()] if shape else []
    if dtype not in DTYPES:
        raise ValueError("unknown dtype %r in an answer" % dtype)
    if _np is not None:
        a = _np.frombuffer(data, dtype=_np.dtype(dtype).newbyteorder("<"))
        return a.reshape(dims) if dims else a.reshape(())
    return _nest(_unpack(data, dtype), dims)


def multipart_arrays(content_type: str, body: bytes) -> Optional[List[Any]]:
    """The arrays of a ``multipart/mixed`` pull (docs/binary.md), one per
    part in order, each over the answer's own bytes (no copy with NumPy); None
    when a part is not a raw array (a JSON part) or the body is not the
    format.  Parts are taken by their ``Content-Length``: the data is never
    searched for the boundary."""
    ctype, _, params = content_type.partition(";")
    if ctype.strip().lower() != "multipart/mixed":
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    view = memoryview(body)
    delim = b"--" + boundary.encode("ascii")
    if not body.startswith(delim + b"\r\n"):
        return None
    at = len(delim) + 2
    out: List[Any] = []
    while True:
        end = body.find(b"\r\n\r\n", at)
        if end < 0:
            return None
        headers = {}
        for line in body[at:end].decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        if not headers.get("content-type", "").startswith("application/octet-stream"):
            return None
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            return None
        start = end + 4
        if length < 0 or start + length + 2 + len(delim) > len(body):
            return None
        out.append(array_from_raw(view[start:start + length], headers.get("x-ippc-dtype", ""),
                                  headers.get("x-ippc-shape", "")))
        at = start + length
        if body[at:at + 2 + len(delim)] != b"\r\n" + delim:
            return None
        at += 2 + len(delim)
        if body[at:at + 2] == b"--":
            return out
        if body[at:at + 2] != b"\r\n":
            return None
        at += 2


def _unpack(data: Union[bytes, memoryview], dtype: str) -> List[Any]:
    code = DTYPES[dtype]
    n = len(data) // struct.calcsize(code)
    return list(struct.unpack("<%d%s" % (n, code), data))


def _nest(flat: List[Any], dims: List[int]) -> Any:
    if not dims:
        return flat[0] if flat else None
    if len(dims) == 1:
        return flat
    step = len(flat) // dims[0] if dims[0] else 0
    return [_nest(flat[i * step:(i + 1) * step], dims[1:]) for i in range(dims[0])]


def to_wire(value: Any) -> Any:
    """``value`` as JSON-able data for the controller."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("JSON cannot carry %r" % value)
        return value
    if isinstance(value, Reference):
        return {"$ref": value.name}
    if _np is not None:
        if isinstance(value, _np.ndarray):
            a = _wire_array(value)
            return {"dtype": a.dtype.name, "shape": list(a.shape),
                    "data": base64.b64encode(memoryview(a).cast("B")).decode("ascii")}
        if isinstance(value, _np.generic):
            return to_wire(value.item())
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError("dict keys sent to engines must be strings, not %r" % (k,))
            out[k] = to_wire(v)
        return out
    if isinstance(value, (list, tuple, range)):
        return [to_wire(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        raise TypeError("bytes cannot go to engines as a value; use a uint8 NumPy array")
    raise TypeError("cannot send a %s to engines (JSON values, NumPy arrays and "
                    "Reference only)" % type(value).__name__)


def _is_typed(value: Dict[str, Any]) -> bool:
    return (len(value) == 3 and isinstance(value.get("dtype"), str)
            and isinstance(value.get("shape"), list) and isinstance(value.get("data"), str)
            and value["dtype"] in DTYPES)


def from_wire(value: Any) -> Any:
    """An answer's value as Python data: typed arrays become NumPy arrays
    (nested lists without NumPy)."""
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    if isinstance(value, dict):
        if _is_typed(value):
            data = base64.b64decode(value["data"])
            shape = ",".join(str(d) for d in value["shape"])
            arr = array_from_raw(data, value["dtype"], shape)
            if _np is not None:
                return arr.copy() if not arr.flags.writeable else arr
            return arr
        return {k: from_wire(v) for k, v in value.items()}
    return value


def wire_format() -> str:
    """The ``format`` to ask answers in: typed with NumPy, list without."""
    return "typed" if _np is not None else "list"


def split_like_scatter(seq: Any, parts: int) -> List[Any]:
    """``seq`` split as scatter does: the first ``len % parts`` parts get one more."""
    n = len(seq)
    base, extra = divmod(n, parts)
    out = []
    at = 0
    for i in range(parts):
        k = base + (1 if i < extra else 0)
        out.append(seq[at:at + k])
        at += k
    return out


def concat(parts: List[Any]) -> Any:
    """Parts joined in order (NumPy arrays with ``concatenate``)."""
    if _np is not None and parts and all(isinstance(p, _np.ndarray) for p in parts):
        return _np.concatenate(parts)
    out: List[Any] = []
    for p in parts:
        out.extend(list(p) if not isinstance(p, list) else p)
    return out


def numpy_module() -> Optional[Any]:
    """The NumPy module, or None."""
    return _np

