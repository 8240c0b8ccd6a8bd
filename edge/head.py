"""The trained head under the TF-Lite runtime: embeddings in, class probabilities out.

Float heads and fully int8-quantized heads both work: int8/uint8 input and output
tensors are quantized/dequantized with the tensor's own scale and zero point.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Optional, Union

import numpy as np
import numpy.typing as npt

from edge.errors import ModelError
from edge.params import DEFAULT_PARAMS, Params
from edge.runtime import backend_of, dequantize, is_quantized, load_interpreter, quantize

if TYPE_CHECKING:  # pragma: no cover
    from edge.manifest import Manifest

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


class HeadTflite:
    """Head .tflite: run(embeddings float32 [n, 1024]) -> probabilities float32 [n, num_labels].

    output_index: tensor index of the probabilities (from the manifest); default: the only output.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        num_threads: int = 1,
        output_index: Optional[int] = None,
        params: Params = DEFAULT_PARAMS,
        backend: Optional[str] = None,
    ) -> None:
        self.path = Path(path)
        self.params = params
        self.interpreter = load_interpreter(self.path, num_threads=num_threads, backend=backend)
        inputs = self.interpreter.get_input_details()
        outputs = self.interpreter.get_output_details()
        if len(inputs) != 1:
            raise ModelError(f"{self.path}: a head takes one input (embeddings), this has {len(inputs)}", path=self.path)
        self._input: Dict[str, Any] = inputs[0]
        if output_index is None:
            if len(outputs) != 1:
                raise ModelError(
                    f"{self.path}: has {len(outputs)} outputs; say which is the probabilities "
                    f"(manifest head.outputs.probabilities)",
                    path=self.path,
                )
            self._output: Dict[str, Any] = outputs[0]
        else:
            matches = [d for d in outputs if d["index"] == output_index]
            if not matches:
                raise ModelError(
                    f"{self.path}: tensor {output_index} is not an output; the manifest belongs to another head",
                    path=self.path,
                )
            self._output = matches[0]
        if int(self._input["shape"][-1]) != params.embedding_size:
            raise ModelError(
                f"{self.path}: input shape {list(self._input['shape'])} does not take "
                f"{params.embedding_size}-value YAMNet embeddings; train the head on these embeddings",
                path=self.path,
            )
        self.num_labels = int(self._output["shape"][-1])
        self._batch = int(self._input["shape"][0]) if len(self._input["shape"]) == 2 else 1
        # Float input and output (every quantization but full int8) need no conversion per call.
        self._float_io = not self.quantized and not is_quantized(self._output)
        self._one_embedding_shape = (1, params.embedding_size)
        logger.info(
            "head %s via %s: %d labels, input %s %s",
            self.path,
            backend_of(self.interpreter),
            self.num_labels,
            np.dtype(self._input["dtype"]).name,
            "(quantized)" if self.quantized else "",
        )

    @classmethod
    def from_manifest(cls, manifest: "Manifest", *, num_threads: int = 1, backend: Optional[str] = None) -> "HeadTflite":
        """The manifest's head file (tensors checked against the manifest: ManifestError)."""
        from edge.manifest import HEAD_OUTPUT_ROLE

        head = cls(
            manifest.head_path,
            num_threads=num_threads,
            output_index=manifest.head.outputs[HEAD_OUTPUT_ROLE].index,
            params=manifest.params,
            backend=backend,
        )
        manifest.check_interpreter("head", head.interpreter)
        return head

    @property
    def tensor_details(self) -> Dict[str, Dict[str, Any]]:
        """Interpreter details of the tensors used: "input" and "probabilities"."""
        return {"input": dict(self._input), "probabilities": dict(self._output)}

    @property
    def quantized(self) -> bool:
        return np.dtype(self._input["dtype"]).kind in "iu"

    def _set_batch(self, batch: int) -> None:
        if batch != self._batch:
            shape = [batch] + [int(d) for d in self._input["shape"][1:]]
            self.interpreter.resize_tensor_input(self._input["index"], shape, strict=False)
            self.interpreter.allocate_tensors()
            self._input = next(d for d in self.interpreter.get_input_details() if d["index"] == self._input["index"])
            self._output = next(
                d for d in self.interpreter.get_output_details() if d["index"] == self._output["index"]
            )
            self._batch = batch

    def run(self, embeddings: npt.ArrayLike) -> FloatArray:
        """embeddings float32 [n, 1024] (or [1024]) -> probabilities float32 [n, num_labels]."""
        if (
            self._float_io
            and self._batch == 1
            and type(embeddings) is np.ndarray
            and embeddings.dtype == np.float32
            and embeddings.shape == self._one_embedding_shape
            and len(self._input["shape"]) == 2
        ):
            # The stream's call, one embedding per patch: straight through the interpreter.
            interpreter = self.interpreter
            interpreter.set_tensor(self._input["index"], embeddings)
            interpreter.invoke()
            return interpreter.get_tensor(self._output["index"]).reshape(1, self.num_labels)
        values = np.asarray(embeddings, dtype=np.float32)
        if values.ndim == 1:
            values = values[np.newaxis]
        if values.ndim != 2 or values.shape[1] != self.params.embedding_size:
            raise ValueError(
                f"head input must be embeddings of shape [n, {self.params.embedding_size}], got {values.shape}"
            )
        if len(values) == 0:
            return np.zeros((0, self.num_labels), np.float32)
        self._set_batch(len(values))
        if len(self._input["shape"]) == 1:
            values = values.reshape(-1)
        interpreter = self.interpreter
        if self._float_io:
            interpreter.set_tensor(self._input["index"], values)
            interpreter.invoke()
            probabilities = interpreter.get_tensor(self._output["index"])
        else:
            interpreter.set_tensor(self._input["index"], quantize(values, self._input))
            interpreter.invoke()
            probabilities = dequantize(interpreter.get_tensor(self._output["index"]), self._output)
        return probabilities.reshape(len(embeddings) if np.ndim(embeddings) == 2 else 1, self.num_labels)
