"""The TF-Lite interpreter, from whichever runtime is installed (never TensorFlow).

`load_interpreter` tries ai-edge-litert (current, works with numpy 2), then
tflite-runtime (older Pi images, numpy < 2), and fails with an install hint.
Also: quantize/dequantize helpers for int8/uint8 input and output tensors.
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from edge.errors import ModelError

logger = logging.getLogger(__name__)

BACKENDS: Tuple[str, ...] = ("ai_edge_litert", "tflite_runtime")
"""Runtimes tried, in order: module names of ai-edge-litert and tflite-runtime."""

INSTALL_HINT = (
    "no TF-Lite runtime found: install one with `pip install ai-edge-litert` "
    "(or, on Python <= 3.11 with numpy < 2, `pip install tflite-runtime`)"
)

Interpreter = Any  # ai_edge_litert.interpreter.Interpreter or tflite_runtime.interpreter.Interpreter


def _interpreter_class(backend: Optional[str] = None) -> Tuple[str, Callable[..., Interpreter]]:
    """(backend name, Interpreter class) of the first importable runtime (or of `backend`)."""
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"unknown TF-Lite backend {backend!r}; use one of {list(BACKENDS)}")
    failures = []
    for name in BACKENDS if backend is None else (backend,):
        try:
            if name == "ai_edge_litert":
                from ai_edge_litert.interpreter import Interpreter as cls
            else:
                from tflite_runtime.interpreter import Interpreter as cls  # type: ignore[no-redef]
        except (ImportError, AttributeError) as error:  # tflite-runtime under numpy 2: ImportError
            failures.append(f"{name}: {error}")
            continue
        return name, cls
    logger.debug("TF-Lite runtimes not importable: %s", "; ".join(failures))
    raise RuntimeError(f"{INSTALL_HINT} ({'; '.join(failures)})")


def available_backend() -> Optional[str]:
    """Name of the runtime load_interpreter would use, or None if none is installed."""
    try:
        return _interpreter_class()[0]
    except RuntimeError:
        return None


def load_interpreter(
    path: Union[str, "os.PathLike[str]"],
    *,
    num_threads: int = 1,
    preserve_all_tensors: bool = False,
    backend: Optional[str] = None,
) -> Interpreter:
    """Load a .tflite model and allocate its tensors.

    preserve_all_tensors keeps intermediate tensors readable (for YAMNet's internal
    embedding); backend forces "ai_edge_litert" or "tflite_runtime".
    Raises ModelError naming the file if it is missing or not a valid model,
    RuntimeError with an install hint if no runtime is installed.
    """
    model_path = Path(path)
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    if not model_path.is_file():
        raise ModelError(
            f"{model_path}: model file not found; export it with `oido-convert` or pass the right path",
            path=model_path,
        )
    if model_path.stat().st_size == 0:
        raise ModelError(f"{model_path}: model file is empty (0 bytes); re-export or re-copy it", path=model_path)
    try:
        check_tflite_bytes(model_path.read_bytes())
    except (ValueError, struct.error) as error:
        raise ModelError(
            f"{model_path}: not a loadable TF-Lite model ({error}); the file is corrupt or truncated: "
            f"re-export or re-copy it",
            path=model_path,
        ) from None
    name, cls = _interpreter_class(backend)
    try:
        with warnings.catch_warnings():
            # ai-edge-litert warns that preserving tensors costs memory: we need one of them.
            warnings.filterwarnings("ignore", message=".*experimental_preserve_all_tensors.*")
            interpreter = cls(
                model_path=str(model_path),
                num_threads=num_threads,
                experimental_preserve_all_tensors=preserve_all_tensors,
            )
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        raise ModelError(
            f"{model_path}: not a loadable TF-Lite model ({error}); the file is corrupt, truncated or "
            f"needs ops this runtime ({name}) lacks: re-export or re-copy it",
            path=model_path,
        ) from None
    logger.debug("loaded %s with %s (%d thread(s))", model_path, name, num_threads)
    return interpreter


_FILE_IDENTIFIER = b"TFL3"
_HEADER_BYTES = 8  # root table offset + file identifier


class _FlatbufferReader:
    """Bounds-checked reads of the TF-Lite flatbuffer (schema.fbs) fields we walk."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, position: int) -> int:
        size = struct.calcsize(fmt)
        if position < 0 or position + size > len(self.data):
            raise ValueError(f"offset {position} is outside the {len(self.data)}-byte file")
        return struct.unpack_from(fmt, self.data, position)[0]

    def table(self, position: int) -> Tuple[int, List[int]]:
        """(table position, field offsets) of the table at `position`."""
        vtable = position - self._unpack("<i", position)
        vtable_bytes = self._unpack("<H", vtable)
        table_bytes = self._unpack("<H", vtable + 2)
        if vtable_bytes < 4 or position + table_bytes > len(self.data):
            raise ValueError(f"table at {position} overruns the file")
        fields = [self._unpack("<H", vtable + 4 + 2 * i) for i in range((vtable_bytes - 4) // 2)]
        return position, fields

    def field_position(self, table: Tuple[int, List[int]], field: int) -> Optional[int]:
        position, fields = table
        return position + fields[field] if field < len(fields) and fields[field] else None

    def vector(self, table: Tuple[int, List[int]], field: int, element_bytes: int) -> Tuple[int, int]:
        """(first element position, length) of a vector field; (0, 0) if absent."""
        where = self.field_position(table, field)
        if where is None:
            return 0, 0
        start = where + self._unpack("<I", where)
        length = self._unpack("<I", start)
        if start + 4 + length * element_bytes > len(self.data):
            raise ValueError(f"vector of {length} elements at {start} overruns the file")
        return start + 4, length

    def tables(self, table: Tuple[int, List[int]], field: int) -> List[Tuple[int, List[int]]]:
        start, length = self.vector(table, field, 4)
        return [self.table(start + 4 * i + self._unpack("<I", start + 4 * i)) for i in range(length)]

    def ints(self, table: Tuple[int, List[int]], field: int) -> List[int]:
        start, length = self.vector(table, field, 4)
        return [self._unpack("<i", start + 4 * i) for i in range(length)]

    def scalar(self, table: Tuple[int, List[int]], field: int, fmt: str, default: int = 0) -> int:
        where = self.field_position(table, field)
        return default if where is None else self._unpack(fmt, where)


def check_tflite_bytes(data: bytes) -> None:
    """Raise ValueError if `data` is not a structurally sound TF-Lite model.

    Walks the model's tables, vectors and buffers with bounds checks, so a truncated
    or corrupt file is refused here instead of crashing runtimes that do not verify
    the flatbuffer (tflite-runtime 2.14 segfaults on a truncated model).
    """
    if len(data) < _HEADER_BYTES or data[4:8] != _FILE_IDENTIFIER:
        raise ValueError("no TF-Lite file identifier (TFL3)")
    reader = _FlatbufferReader(data)
    model = reader.table(reader._unpack("<I", 0))
    # Model fields (schema.fbs): 1 operator_codes, 2 subgraphs, 4 buffers.
    num_opcodes = len(reader.tables(model, 1))
    buffers = reader.tables(model, 4)
    for buffer in buffers:
        reader.vector(buffer, 0, 1)  # Buffer.data
        offset = reader.scalar(buffer, 1, "<Q")
        size = reader.scalar(buffer, 2, "<Q")
        if offset > 1 and offset + size > len(data):
            raise ValueError(f"buffer data at {offset} (+{size}) lies beyond the end of the file")
    subgraphs = reader.tables(model, 2)
    if not subgraphs:
        raise ValueError("the model has no subgraph")
    for subgraph in subgraphs:
        # SubGraph: 0 tensors, 1 inputs, 2 outputs, 3 operators.
        tensors = reader.tables(subgraph, 0)
        for tensor in tensors:
            reader.ints(tensor, 0)  # shape
            if reader.scalar(tensor, 2, "<I") >= max(1, len(buffers)):
                raise ValueError("a tensor refers to a buffer that does not exist")
        for index in reader.ints(subgraph, 1) + reader.ints(subgraph, 2):
            if not 0 <= index < len(tensors):
                raise ValueError(f"subgraph input/output {index} is not a tensor")
        for operator in reader.tables(subgraph, 3):
            if reader.scalar(operator, 0, "<I") >= num_opcodes:
                raise ValueError("an operator refers to an operator code that does not exist")
            for index in reader.ints(operator, 1) + reader.ints(operator, 2):
                if not -1 <= index < len(tensors):
                    raise ValueError(f"operator tensor {index} does not exist")


def backend_of(interpreter: Interpreter) -> str:
    """Which runtime an interpreter comes from: "ai_edge_litert" or "tflite_runtime"."""
    module = type(interpreter).__module__
    return "tflite_runtime" if module.startswith("tflite_runtime") else "ai_edge_litert"


def is_quantized(detail: Dict[str, Any]) -> bool:
    """True if a tensor detail is an integer tensor with a quantization scale."""
    scale, _ = detail.get("quantization", (0.0, 0))
    return np.dtype(detail["dtype"]).kind in "iu" and scale != 0.0


def quantize(values: npt.ArrayLike, detail: Dict[str, Any]) -> np.ndarray:
    """Float values -> the tensor's dtype (int8/uint8: round(x / scale) + zero point, saturated)."""
    dtype = np.dtype(detail["dtype"])
    array = np.asarray(values, dtype=np.float32)
    if not is_quantized(detail):
        return array.astype(dtype, copy=False)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(array / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(values: np.ndarray, detail: Dict[str, Any]) -> npt.NDArray[np.float32]:
    """A tensor's values -> float32 ((q - zero point) x scale for int8/uint8)."""
    if not is_quantized(detail):
        return np.asarray(values, dtype=np.float32)
    scale, zero_point = detail["quantization"]
    return ((np.asarray(values, dtype=np.float32) - zero_point) * scale).astype(np.float32)


def tensor_names(detail: Dict[str, Any]) -> Tuple[str, ...]:
    """The names a tensor goes by: TF-Lite joins fused names with ';'."""
    return tuple(part.strip() for part in str(detail.get("name", "")).split(";") if part.strip())
