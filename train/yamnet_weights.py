"""Read YAMNet's float weights out of a TF-Lite file of the published model.

The project's weight source is ``yamnet_public_int8w.tflite``: the public TF Hub
google/yamnet/1 weights converted with dynamic-range quantization (int8 weights with
per-channel scales, BatchNorm folded into the conv biases). This module walks that
file's operator graph with the ``tflite`` flatbuffer package (or TensorFlow's copy of
the schema), dequantizes every constant the network uses and checks the graph is the
YAMNet we rebuild in ``train.yamnet`` (conv kinds, strides, channels, padding, ReLU).

Weights are found by the ops that consume them, not by tensor names: the converter
deduplicates constants and gives some tensors names that mention several layers.

NumPy plus the flatbuffer schema; no interpreter is needed to read the weights.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

ConvKind = Literal["conv", "depthwise", "pointwise"]


@dataclass(frozen=True)
class LayerSpec:
    """One convolution of YAMNet's MobileNet-v1 body (yamnet.py's _YAMNET_LAYER_DEFS, expanded)."""

    name: str
    """Keras layer name, e.g. ``layer2/depthwise_conv`` (YAMNet's own naming)."""
    kind: ConvKind
    """``conv`` (3x3 full conv), ``depthwise`` (3x3 per channel) or ``pointwise`` (1x1 conv)."""
    stride: int
    """Stride along time and frequency."""
    channels: int
    """Output channels."""


def _yamnet_layers() -> tuple[LayerSpec, ...]:
    # (stride, channels) of each separable block after layer1, as in YAMNet's yamnet.py.
    separable = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512)]
    separable += [(1, 512)] * 5 + [(2, 1024), (1, 1024)]
    layers = [LayerSpec("layer1/conv", "conv", 2, 32)]
    in_channels = 32
    for number, (stride, channels) in enumerate(separable, start=2):
        layers.append(LayerSpec(f"layer{number}/depthwise_conv", "depthwise", stride, in_channels))
        layers.append(LayerSpec(f"layer{number}/pointwise_conv", "pointwise", 1, channels))
        in_channels = channels
    return tuple(layers)


YAMNET_LAYERS: tuple[LayerSpec, ...] = _yamnet_layers()
"""The 27 convolutions of YAMNet in execution order."""

CONV_KERNEL_SIZE = 3
"""Height and width of YAMNet's conv and depthwise kernels."""


@dataclass(frozen=True)
class ConvWeights:
    """Float weights of one convolution, in Keras layout, BatchNorm already folded in."""

    spec: LayerSpec
    kernel: FloatArray
    """conv: [3, 3, in, out]; depthwise: [3, 3, channels, 1]; pointwise: [1, 1, in, out]."""
    bias: FloatArray
    """float32 [out]: folded BatchNorm offset."""


@dataclass(frozen=True)
class YamnetWeights:
    """Every float constant of YAMNet, as read from one TF-Lite file."""

    path: Path
    """The file they were read from."""
    sha256: str
    """sha256 of that file's bytes (hex)."""
    convs: tuple[ConvWeights, ...]
    """The 27 convolutions, in YAMNet_LAYERS order."""
    dense_kernel: FloatArray
    """float32 [embedding_size, yamnet_classes]: embeddings -> class logits."""
    dense_bias: FloatArray
    """float32 [yamnet_classes]."""
    mel_matrix: FloatArray
    """float32 [spectrum_bins, mel_bands]: the file's (dequantized) STFT magnitude -> mel matrix."""
    stft_window: FloatArray
    """float32 [stft_window_samples]: the file's analysis window (periodic Hann)."""
    log_offset: float
    """Added to mel energies before the log, as found in the file."""

    def arrays(self) -> list[FloatArray]:
        """The network's weights in Keras ``get_weights()`` order: convs, then dense."""
        arrays: list[FloatArray] = []
        for conv in self.convs:
            arrays += [conv.kernel, conv.bias]
        return arrays + [self.dense_kernel, self.dense_bias]

    @property
    def num_values(self) -> int:
        """Float values in the network (front end excluded): 3,729,481 for YAMNet."""
        return int(sum(array.size for array in self.arrays()))


# --- flatbuffer access -------------------------------------------------------------

_NUMPY_TYPES: dict[str, Any] = {
    "FLOAT32": np.float32,
    "FLOAT16": np.float16,
    "FLOAT64": np.float64,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
}


def _schema() -> Any:
    """The TF-Lite flatbuffer schema: the ``tflite`` package, else the copy inside TensorFlow."""
    try:
        import tflite

        return tflite
    except ImportError:
        from tensorflow.lite.python import schema_py_generated

        return schema_py_generated


class _Graph:
    """The first subgraph of a TF-Lite flatbuffer: ops, tensors and constants."""

    def __init__(self, path: Path, buffer: bytes) -> None:
        tflite = _schema()
        self.path = path
        self._buffer = buffer
        self._tflite = tflite
        try:
            self._model = tflite.Model.GetRootAs(buffer, 0)
            self._graph = self._model.Subgraphs(0)
            op_names = {
                value: name for name, value in vars(tflite.BuiltinOperator).items() if not name.startswith("_")
            }
            self._type_names = {
                value: name for name, value in vars(tflite.TensorType).items() if not name.startswith("_")
            }
            self.ops: list[dict[str, Any]] = []
            for index in range(self._graph.OperatorsLength()):
                op = self._graph.Operators(index)
                code = self._model.OperatorCodes(op.OpcodeIndex())
                builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
                self.ops.append(
                    {
                        "index": index,
                        "name": op_names.get(builtin, f"op{builtin}"),
                        "inputs": [int(i) for i in op.InputsAsNumpy()],
                        "outputs": [int(i) for i in op.OutputsAsNumpy()],
                        "op": op,
                    }
                )
            self.inputs = [int(i) for i in self._graph.InputsAsNumpy()]
        except Exception as error:  # flatbuffers raise anything on garbage
            raise ValueError(
                f"{path}: not a readable TF-Lite model ({error}); replace it with an intact copy of "
                "yamnet_public_int8w.tflite (check it against SHA256SUMS)"
            ) from error
        self._producer = {out: op for op in self.ops for out in op["outputs"]}

    def tensor_name(self, index: int) -> str:
        return self._graph.Tensors(index).Name().decode("utf-8", "replace")

    def tensor_shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in self._graph.Tensors(index).ShapeAsNumpy())

    def producer(self, index: int) -> dict[str, Any] | None:
        return self._producer.get(index)

    def consumers(self, index: int) -> list[dict[str, Any]]:
        return [op for op in self.ops if index in op["inputs"]]

    def constant(self, index: int) -> FloatArray:
        """The float value of constant tensor `index`, dequantized per channel if int8.

        Follows a DEQUANTIZE op back to its constant (some converters emit one).
        """
        producer = self.producer(index)
        if producer is not None:
            if producer["name"] != "DEQUANTIZE":
                raise ValueError(f"{self.path}: tensor {index} ({self.tensor_name(index)}) is not a constant")
            return self.constant(producer["inputs"][0])
        tensor = self._graph.Tensors(index)
        type_name = self._type_names.get(tensor.Type(), str(tensor.Type()))
        if type_name not in _NUMPY_TYPES:
            raise ValueError(f"{self.path}: tensor {index} has unsupported type {type_name}")
        buffer = self._model.Buffers(tensor.Buffer())
        dtype = np.dtype(_NUMPY_TYPES[type_name])
        shape = self.tensor_shape(index)
        if buffer.Offset() > 1:  # large models keep data outside the flatbuffer table
            raw = np.frombuffer(self._buffer, dtype=np.uint8, count=buffer.Size(), offset=buffer.Offset())
        else:
            raw = buffer.DataAsNumpy()
        if isinstance(raw, int) or raw.size == 0:
            raise ValueError(f"{self.path}: tensor {index} ({self.tensor_name(index)}) holds no data")
        values = np.frombuffer(raw.tobytes(), dtype=dtype).reshape(shape)
        quantization = tensor.Quantization()
        scales = quantization.ScaleAsNumpy() if quantization is not None and quantization.ScaleLength() else None
        if scales is None or np.issubdtype(dtype, np.floating):
            return values.astype(np.float32)
        zero_points = quantization.ZeroPointAsNumpy() if quantization.ZeroPointLength() else np.zeros_like(scales)
        axis = quantization.QuantizedDimension()
        broadcast = [1] * values.ndim
        if scales.size > 1:
            broadcast[axis] = scales.size
        scale = np.asarray(scales, np.float64).reshape(broadcast)
        zero = np.asarray(zero_points, np.float64).reshape(broadcast)
        return ((values.astype(np.float64) - zero) * scale).astype(np.float32)

    def conv_options(self, op: dict[str, Any]) -> tuple[int, int, int, int]:
        """(padding, stride_h, stride_w, fused_activation) of a CONV_2D / DEPTHWISE_CONV_2D op."""
        table = op["op"].BuiltinOptions()
        if op["name"] == "CONV_2D":
            options = self._tflite.Conv2DOptions()
        else:
            options = self._tflite.DepthwiseConv2DOptions()
        options.Init(table.Bytes, table.Pos)
        return options.Padding(), options.StrideH(), options.StrideW(), options.FusedActivationFunction()

    @property
    def padding_same(self) -> int:
        return int(self._tflite.Padding.SAME)

    @property
    def relu(self) -> int:
        return int(self._tflite.ActivationFunctionType.RELU)


# --- reading -----------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_yamnet_weights(path: str | Path, *, params: Params = DEFAULT_PARAMS) -> YamnetWeights:
    """Read and dequantize YAMNet's weights from a TF-Lite file of the published model.

    Args:
        path: a TF-Lite YAMNet (``yamnet_public_int8w.tflite``; per-tensor int8 or float
            conversions of the same network also work).
        params: sizes the file must agree with (patch samples, mel bands, classes ...).

    Returns:
        The float weights, convs in Keras layout.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming the file, when it is not a TF-Lite YAMNet of the expected shape.
    """
    path = Path(path)
    buffer = path.read_bytes()
    graph = _Graph(path, buffer)
    sha256 = hashlib.sha256(buffer).hexdigest()

    def fail(what: str) -> ValueError:
        return ValueError(
            f"{path}: {what}; this is not the YAMNet the project rebuilds - use "
            "yamnet_public_int8w.tflite from the project's shared assets"
        )

    input_shape = graph.tensor_shape(graph.inputs[0])
    if int(np.prod(input_shape)) != params.patch_samples:
        raise fail(f"input shape {list(input_shape)} is not one patch of {params.patch_samples} samples")

    convs_ops = [op for op in graph.ops if op["name"] in ("CONV_2D", "DEPTHWISE_CONV_2D")]
    if len(convs_ops) != len(YAMNET_LAYERS):
        raise fail(f"it has {len(convs_ops)} convolutions, YAMNet has {len(YAMNET_LAYERS)}")

    convs: list[ConvWeights] = []
    previous_output: int | None = None
    for spec, op in zip(YAMNET_LAYERS, convs_ops):
        expected_op = "DEPTHWISE_CONV_2D" if spec.kind == "depthwise" else "CONV_2D"
        if op["name"] != expected_op:
            raise fail(f"op {op['index']} is {op['name']} where YAMNet has {expected_op} ({spec.name})")
        if previous_output is not None and op["inputs"][0] != previous_output:
            raise fail(f"op {op['index']} ({spec.name}) does not take the previous convolution's output")
        padding, stride_h, stride_w, activation = graph.conv_options(op)
        if padding != graph.padding_same or (stride_h, stride_w) != (spec.stride, spec.stride):
            raise fail(f"op {op['index']} ({spec.name}) has padding {padding}, strides {(stride_h, stride_w)}")
        if activation != graph.relu:
            raise fail(f"op {op['index']} ({spec.name}) is not followed by ReLU")
        kernel = graph.constant(op["inputs"][1])
        bias = graph.constant(op["inputs"][2])
        # TF-Lite conv [out, h, w, in] -> Keras [h, w, in, out];
        # TF-Lite depthwise [1, h, w, channels] -> Keras [h, w, channels, 1]: the same transpose.
        kernel = np.transpose(kernel, (1, 2, 3, 0))
        size = 1 if spec.kind == "pointwise" else CONV_KERNEL_SIZE
        out_channels = kernel.shape[2] if spec.kind == "depthwise" else kernel.shape[3]
        if kernel.shape[:2] != (size, size) or out_channels != spec.channels or bias.shape != (spec.channels,):
            raise fail(f"{spec.name} has kernel {list(kernel.shape)} and bias {list(bias.shape)}")
        convs.append(ConvWeights(spec, np.ascontiguousarray(kernel), bias))
        previous_output = op["outputs"][0]
        logger.debug("%s <- tensors %s (%s)", spec.name, op["inputs"][1:], graph.tensor_name(op["inputs"][2]))

    # Body tail: MEAN (global average pool = embedding) -> FULLY_CONNECTED (logits).
    mean_ops = [op for op in graph.consumers(previous_output) if op["name"] == "MEAN"]
    if not mean_ops:
        raise fail("the last convolution is not followed by a global mean pool")
    dense_ops = [op for op in graph.consumers(mean_ops[0]["outputs"][0]) if op["name"] == "FULLY_CONNECTED"]
    if not dense_ops:
        raise fail("the embedding is not followed by a dense layer")
    dense_kernel = graph.constant(dense_ops[0]["inputs"][1]).T  # TF-Lite FC weights are [out, in]
    dense_bias = graph.constant(dense_ops[0]["inputs"][2])
    if dense_kernel.shape != (params.embedding_size, params.yamnet_classes):
        raise fail(f"dense kernel is {list(dense_kernel.shape)}")

    # Front end: the FULLY_CONNECTED feeding LOG is the mel matrix (+ log offset as its bias);
    # the MUL by a [stft_window_samples] constant is the analysis window.
    log_ops = [op for op in graph.ops if op["name"] == "LOG"]
    mel_op = graph.producer(log_ops[0]["inputs"][0]) if log_ops else None
    if mel_op is None or mel_op["name"] != "FULLY_CONNECTED":
        raise fail("no mel matrix (a dense op feeding LOG) found")
    mel_matrix = np.ascontiguousarray(graph.constant(mel_op["inputs"][1]).T)
    if mel_matrix.shape != (params.spectrum_bins, params.mel_bands):
        raise fail(f"mel matrix is {list(mel_matrix.shape)}")
    log_offset = params.log_offset
    if len(mel_op["inputs"]) > 2 and mel_op["inputs"][2] >= 0:
        offsets = graph.constant(mel_op["inputs"][2])
        log_offset = float(offsets.reshape(-1)[0])
        if not np.allclose(offsets, log_offset):
            raise fail("the log offset is not one value")
    window = None
    for op in graph.ops:
        if op["name"] != "MUL":
            continue
        for index in op["inputs"]:
            shape = graph.tensor_shape(index)
            if graph.producer(index) is None and shape and int(np.prod(shape)) == params.stft_window_samples:
                window = graph.constant(index).reshape(-1)
    if window is None:
        raise fail(f"no analysis window of {params.stft_window_samples} samples found")

    weights = YamnetWeights(
        path=path,
        sha256=sha256,
        convs=tuple(convs),
        dense_kernel=np.ascontiguousarray(dense_kernel),
        dense_bias=dense_bias,
        mel_matrix=mel_matrix,
        stft_window=window,
        log_offset=log_offset,
    )
    logger.info("read %d YAMNet weights from %s", weights.num_values, path)
    return weights
