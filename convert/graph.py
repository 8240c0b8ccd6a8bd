"""Edits of a converted TF-Lite flatbuffer that the converter has no option for.

TFLiteConverter's dynamic-range quantization has no op denylist: it int8-quantizes every
large enough constant of a FULLY_CONNECTED / CONV_2D / DEPTHWISE_CONV_2D op, including the
mel matrix of YAMNet's front end, whose hybrid kernel then quantizes the spectrogram to int8
on the fly and ruins its low-energy bins. So the exporter converts twice (float and
quantized) and edits the quantized flatbuffer here:

* `restore_float_weights`: chosen ops get their float weights (and the float op version)
  back from the float conversion, matched by output tensor name;
* `dequantize_weights`: every hybrid op gets a DEQUANTIZE of its int8 weights in front of
  it and runs in float ("int8 weights": the size of int8, the arithmetic of float);
* `name_io`: input/output tensors get the names the edge looks for ("waveform",
  "embeddings", ...) and a serving signature that uses them.

Built on the object API of TensorFlow's own schema module (``schema_py_generated``), so no
extra package is needed. Every edit keeps the op order topological.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from convert.errors import ConvertError

logger = logging.getLogger(__name__)

FILE_IDENTIFIER = b"TFL3"
"""The TF-Lite flatbuffer file identifier."""
SERVING_SIGNATURE = "serving_default"
"""Signature key of the exported models (the converter's default)."""
DEQUANTIZE_PER_CHANNEL_VERSION = 5
"""DEQUANTIZE op version for per-channel int8 input (TF-Lite op_version.cc); per-tensor int8 is 2."""
DEQUANTIZE_PER_TENSOR_VERSION = 2
_EXTENDED_OPCODE = 127
"""deprecated_builtin_code of ops numbered above 126 (PLACEHOLDER_FOR_GREATER_OP_CODES)."""


def _schema() -> Any:
    from tensorflow.lite.python import schema_py_generated  # shipped with TensorFlow

    return schema_py_generated


class TfliteGraph:
    """A TF-Lite model held as the schema's object tree, first subgraph editable.

    Raises ConvertError (naming `source`) when the bytes are not a TF-Lite model.
    """

    def __init__(self, model_bytes: bytes, *, source: str = "converted model") -> None:
        schema = _schema()
        self.source = source
        if len(model_bytes) < 8 or model_bytes[4:8] != FILE_IDENTIFIER:
            raise ConvertError(f"{source}: not a TF-Lite flatbuffer (no {FILE_IDENTIFIER!r} identifier)")
        try:
            self.model = schema.ModelT.InitFromPackedBuf(model_bytes, 0)
        except Exception as error:  # flatbuffers raises anything on garbage
            raise ConvertError(f"{source}: unreadable TF-Lite flatbuffer ({error})") from error
        if not self.model.subgraphs:
            raise ConvertError(f"{source}: the model has no subgraph")
        self.graph = self.model.subgraphs[0]
        self._names = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}
        for op in self.graph.operators:  # object API gives read-only numpy arrays
            op.inputs = [int(i) for i in op.inputs] if op.inputs is not None else []
            op.outputs = [int(i) for i in op.outputs] if op.outputs is not None else []

    # --- reading ---
    def to_bytes(self) -> bytes:
        import flatbuffers

        builder = flatbuffers.Builder(1 << 20)
        builder.Finish(self.model.Pack(builder), file_identifier=FILE_IDENTIFIER)
        return bytes(builder.Output())

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return self._names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "CUSTOM")

    def op_version(self, op: Any) -> int:
        return int(self.model.operatorCodes[op.opcodeIndex].version)

    def tensor_name(self, index: int) -> str:
        name = self.graph.tensors[index].name
        return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)

    def tensor_shape(self, index: int) -> tuple[int, ...]:
        shape = self.graph.tensors[index].shape
        return tuple(int(d) for d in shape) if shape is not None else ()

    @property
    def outputs(self) -> list[int]:
        return [int(i) for i in self.graph.outputs]

    @property
    def inputs(self) -> list[int]:
        return [int(i) for i in self.graph.inputs]

    def output_with_shape(self, shape: Sequence[int]) -> int:
        """Index of the one graph output of this shape; ConvertError if none or several."""
        matches = [index for index in self.outputs if self.tensor_shape(index) == tuple(shape)]
        if len(matches) != 1:
            raise ConvertError(
                f"{self.source}: expected one output of shape {list(shape)}, found {len(matches)} "
                f"(outputs: {[self.tensor_shape(i) for i in self.outputs]})"
            )
        return matches[0]

    def ancestors(self, tensor_index: int) -> list[int]:
        """Indices of the ops that `tensor_index` depends on (its producer included), in op order."""
        producer = {out: i for i, op in enumerate(self.graph.operators) for out in op.outputs}
        seen: set[int] = set()
        stack = [tensor_index]
        while stack:
            op_index = producer.get(stack.pop())
            if op_index is None or op_index in seen:
                continue
            seen.add(op_index)
            stack.extend(i for i in self.graph.operators[op_index].inputs if i >= 0)
        return sorted(seen)

    def op_output_names(self, op_indices: Iterable[int]) -> list[str]:
        """Output tensor names of the given ops (the converter's "node" names, for denylists)."""
        return [self.tensor_name(t) for i in op_indices for t in self.graph.operators[i].outputs]

    def _is_int8_constant(self, index: int) -> bool:
        tensor = self.graph.tensors[index]
        data = self.model.buffers[tensor.buffer].data if tensor.buffer < len(self.model.buffers) else None
        return tensor.type == _schema().TensorType.INT8 and data is not None and len(data) > 0

    def quantized_weight_ops(self) -> list[int]:
        """Ops that read an int8 constant while computing in float (hybrid, dynamic-range ops)."""
        float32 = _schema().TensorType.FLOAT32
        found = []
        for index, op in enumerate(self.graph.operators):
            if self.op_name(op) == "DEQUANTIZE":
                continue
            outputs_float = all(self.graph.tensors[t].type == float32 for t in op.outputs)
            if outputs_float and any(i >= 0 and self._is_int8_constant(i) for i in op.inputs):
                found.append(index)
        return found

    def count_types(self) -> dict[str, int]:
        """Tensors per element type, e.g. {"FLOAT32": 80, "INT8": 26} (for logs and checks)."""
        type_names = {value: name for name, value in vars(_schema().TensorType).items() if not name.startswith("_")}
        counts: dict[str, int] = {}
        for tensor in self.graph.tensors:
            name = type_names.get(tensor.type, str(tensor.type))
            counts[name] = counts.get(name, 0) + 1
        return counts

    # --- editing ---
    def _opcode_index(self, builtin_code: int, version: int) -> int:
        for index, code in enumerate(self.model.operatorCodes):
            if max(code.builtinCode, code.deprecatedBuiltinCode) == builtin_code and code.version == version:
                return index
        code = _schema().OperatorCodeT()
        code.builtinCode = builtin_code
        code.deprecatedBuiltinCode = min(builtin_code, _EXTENDED_OPCODE)
        code.version = version
        self.model.operatorCodes.append(code)
        return len(self.model.operatorCodes) - 1

    def _new_buffer(self, data: Any) -> int:
        buffer = _schema().BufferT()
        buffer.data = data
        self.model.buffers.append(buffer)
        return len(self.model.buffers) - 1

    def _drop_unused_buffers(self) -> None:
        used = {tensor.buffer for subgraph in self.model.subgraphs for tensor in subgraph.tensors}
        used |= {entry.buffer for entry in self.model.metadata or []}  # min_runtime_version, conversion metadata
        for index, buffer in enumerate(self.model.buffers):
            if index and index not in used:
                buffer.data = None  # keep the slot (indices stay valid), lose the bytes

    def restore_float_weights(self, op_indices: Iterable[int], float_graph: "TfliteGraph") -> list[str]:
        """Give the chosen ops back their float constants and float op versions.

        float_graph: the same model converted without quantization; ops are matched by
        their first output tensor's name. Returns the names of the ops changed.
        """
        float_ops = {float_graph.tensor_name(op.outputs[0]): op for op in float_graph.graph.operators if op.outputs}
        changed: list[str] = []
        for op_index in op_indices:
            op = self.graph.operators[op_index]
            int8_inputs = [pos for pos, t in enumerate(op.inputs) if t >= 0 and self._is_int8_constant(t)]
            if not int8_inputs:
                continue
            name = self.tensor_name(op.outputs[0])
            float_op = float_ops.get(name)
            if float_op is None or len(float_op.inputs) != len(op.inputs):
                raise ConvertError(
                    f"{self.source}: op {op_index} ({self.op_name(op)} -> {name!r}) has no counterpart in "
                    f"{float_graph.source}; the float and quantized conversions differ"
                )
            for position in int8_inputs:
                source = float_graph.graph.tensors[float_op.inputs[position]]
                data = float_graph.model.buffers[source.buffer].data
                if data is None or source.type == _schema().TensorType.INT8:
                    raise ConvertError(f"{float_graph.source}: {name!r} input {position} is not a float constant")
                tensor = self.graph.tensors[op.inputs[position]]
                tensor.type = source.type
                tensor.quantization = None
                tensor.buffer = self._new_buffer(np.array(data, copy=True))
            float_code = float_graph.model.operatorCodes[float_op.opcodeIndex]
            op.opcodeIndex = self._opcode_index(
                max(float_code.builtinCode, float_code.deprecatedBuiltinCode), float_code.version
            )
            # Hybrid-only options (asymmetric input quantization) mean nothing to a float op.
            op.builtinOptions = float_op.builtinOptions
            op.builtinOptionsType = float_op.builtinOptionsType
            changed.append(f"{self.op_name(op)}:{name}")
        self._drop_unused_buffers()
        logger.debug("%s: float weights restored for %s", self.source, changed)
        return changed

    def dequantize_weights(self, float_graph: "TfliteGraph", *, op_indices: Iterable[int] | None = None) -> int:
        """Turn hybrid ops into DEQUANTIZE(int8 weights) -> float op; returns how many.

        op_indices: which hybrid ops (default: every one). The runtime dequantizes constant
        weights once, when tensors are allocated, so the model keeps int8's size and runs
        float kernels (float accuracy, float speed). Op indices shift after this call.
        """
        schema = _schema()
        dequantize_code = schema.BuiltinOperator.DEQUANTIZE
        new_ops = []
        hybrid = self.quantized_weight_ops()
        if op_indices is not None:
            chosen = set(op_indices)
            hybrid = [index for index in hybrid if index in chosen]
        float_ops = {float_graph.tensor_name(op.outputs[0]): op for op in float_graph.graph.operators if op.outputs}
        for op_index in hybrid:
            op = self.graph.operators[op_index]
            name = self.tensor_name(op.outputs[0])
            float_op = float_ops.get(name)
            if float_op is None:
                raise ConvertError(f"{self.source}: op {name!r} has no counterpart in {float_graph.source}")
            for position, tensor_index in enumerate(op.inputs):
                if tensor_index < 0 or not self._is_int8_constant(tensor_index):
                    continue
                weights = self.graph.tensors[tensor_index]
                scales = weights.quantization.scale if weights.quantization is not None else None
                per_channel = scales is not None and len(scales) > 1
                dequantized = schema.TensorT()
                dequantized.name = (self.tensor_name(tensor_index) + "/dequantized").encode()
                dequantized.shape = np.array(weights.shape, dtype=np.int32)
                dequantized.type = schema.TensorType.FLOAT32
                dequantized.buffer = 0  # no data: computed at allocation
                self.graph.tensors.append(dequantized)
                dequantized_index = len(self.graph.tensors) - 1
                dequantize = schema.OperatorT()
                dequantize.opcodeIndex = self._opcode_index(
                    dequantize_code,
                    DEQUANTIZE_PER_CHANNEL_VERSION if per_channel else DEQUANTIZE_PER_TENSOR_VERSION,
                )
                dequantize.inputs = [tensor_index]
                dequantize.outputs = [dequantized_index]
                new_ops.append(dequantize)
                op.inputs[position] = dequantized_index
            float_code = float_graph.model.operatorCodes[float_op.opcodeIndex]
            op.opcodeIndex = self._opcode_index(
                max(float_code.builtinCode, float_code.deprecatedBuiltinCode), float_code.version
            )
            op.builtinOptions = float_op.builtinOptions
            op.builtinOptionsType = float_op.builtinOptionsType
        # Constants first: DEQUANTIZE ops read only constants, so they may all run up front.
        self.graph.operators = new_ops + list(self.graph.operators)
        return len(hybrid)

    def name_io(self, *, input_name: str, outputs: Mapping[str, int], output_order: Sequence[str]) -> None:
        """Name the (single) input and the outputs, order outputs, and add a serving signature.

        outputs: role -> current tensor index; output_order: roles in the wanted output order.
        """
        schema = _schema()
        if len(self.inputs) != 1:
            raise ConvertError(f"{self.source}: expected one input, found {len(self.inputs)}")
        missing = [role for role in output_order if role not in outputs]
        if missing or set(outputs) - set(output_order):
            raise ConvertError(f"{self.source}: output roles {sorted(outputs)} do not match {list(output_order)}")
        if sorted(outputs.values()) != sorted(self.outputs):
            raise ConvertError(f"{self.source}: named outputs {dict(outputs)} are not the graph outputs {self.outputs}")
        input_index = self.inputs[0]
        self.graph.tensors[input_index].name = input_name.encode()
        for role, index in outputs.items():
            self.graph.tensors[index].name = role.encode()
        self.graph.outputs = np.array([outputs[role] for role in output_order], dtype=np.int32)

        def tensor_map(name: str, index: int) -> Any:
            entry = schema.TensorMapT()
            entry.name = name.encode()
            entry.tensorIndex = index
            return entry

        signature = schema.SignatureDefT()
        signature.signatureKey = SERVING_SIGNATURE.encode()
        signature.subgraphIndex = 0
        signature.inputs = [tensor_map(input_name, input_index)]
        signature.outputs = [tensor_map(role, outputs[role]) for role in output_order]
        self.model.signatureDefs = [signature]
