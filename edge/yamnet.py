"""YAMNet under the TF-Lite runtime: one patch in, embedding and AudioSet scores out.

Works with
  (a) our exported model/yamnet.tflite, whose outputs are "embeddings", "scores" and
      "log_mel" (found through the manifest's tensor indices, the signature or names);
  (b) a published YAMNet .tflite such as ../shared/assets/yamnet/yamnet_public_int8w.tflite,
      which outputs only scores: its embedding is the internal global-average-pool tensor
      (name ending "global_average_pooling2d/Mean"), read with preserve_all_tensors.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, Union

import numpy as np
import numpy.typing as npt

from edge.errors import ModelError
from edge.params import DEFAULT_PARAMS, Params
from edge.runtime import backend_of, dequantize, is_quantized, load_interpreter, quantize, tensor_names

if TYPE_CHECKING:  # pragma: no cover
    from edge.manifest import Manifest, TensorSpec

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_EMBEDDING_TENSOR = "global_average_pooling2d/Mean"
"""Suffix of the internal embedding tensor's name in published YAMNet .tflite files."""

ROLES = ("embeddings", "scores", "log_mel")


@dataclass(frozen=True, eq=False)
class YamnetOutputs:
    """Everything one YAMNet run gives."""

    embedding: FloatArray
    """float32 [embedding_size] (1024): mean-pooled MobileNet features."""
    scores: FloatArray
    """float32 [yamnet_classes] (521): AudioSet class scores in [0, 1]."""
    log_mel: Optional[FloatArray]
    """float32 [patch_frames, mel_bands] (96, 64) if the model outputs it, else None."""


class YamnetTflite:
    """YAMNet .tflite: run(patch float32 [patch_samples]) -> (embedding [1024], scores [521]).

    embedding_tensor: name (or name suffix) of an internal tensor to read as the embedding
    when the model does not output one; outputs: tensor specs by role ("embeddings",
    "scores", "log_mel"), as in the manifest. Raises ModelError naming the file when a
    needed tensor cannot be found.
    """

    def __init__(
        self,
        path: Union[str, "os.PathLike[str]"],
        *,
        embedding_tensor: Optional[str] = None,
        num_threads: int = 1,
        outputs: Optional[Mapping[str, "TensorSpec"]] = None,
        params: Params = DEFAULT_PARAMS,
        backend: Optional[str] = None,
    ) -> None:
        self.path = Path(path)
        self.params = params
        self.num_threads = num_threads
        interpreter = load_interpreter(self.path, num_threads=num_threads, backend=backend)
        indices, internal = self._resolve(interpreter, outputs, embedding_tensor)
        if internal:
            # Intermediate tensors are only kept readable when asked for at load time.
            interpreter = load_interpreter(
                self.path, num_threads=num_threads, preserve_all_tensors=True, backend=backend
            )
        self.interpreter = interpreter
        self.embedding_is_internal = internal
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        self._outputs: Dict[str, Dict[str, Any]] = {role: details[index] for role, index in indices.items()}
        inputs = interpreter.get_input_details()
        if len(inputs) != 1:
            raise ModelError(
                f"{self.path}: has {len(inputs)} inputs; a YAMNet model takes one waveform patch", path=self.path
            )
        self._input = inputs[0]
        input_shape = tuple(int(d) for d in self._input["shape"])
        if int(np.prod(input_shape)) != params.patch_samples:
            raise ModelError(
                f"{self.path}: input shape {list(input_shape)} does not hold one patch of "
                f"{params.patch_samples} samples; use a YAMNet model exported for these params",
                path=self.path,
            )
        self._input_shape = input_shape
        # The per-patch path reads these once: float tensors need no (de)quantization.
        self._input_index = int(self._input["index"])
        self._input_is_float = not is_quantized(self._input) and np.dtype(self._input["dtype"]) == np.float32
        self._float_outputs = {role: not is_quantized(detail) for role, detail in self._outputs.items()}
        self._patch_shape = (params.patch_samples,)
        self._embedding_index = int(self._outputs["embeddings"]["index"])
        self._scores_index = int(self._outputs["scores"]["index"])
        # run()'s direct path: float input and outputs, so a float32 patch goes in and comes out as is.
        self._float_io = self._input_is_float and self._float_outputs["embeddings"] and self._float_outputs["scores"]
        for role, size in (("embeddings", params.embedding_size), ("scores", params.yamnet_classes)):
            shape = self._outputs[role]["shape"]
            if int(np.prod(shape)) != size:
                raise ModelError(
                    f"{self.path}: the {role} tensor {self._outputs[role]['name']!r} has shape {list(shape)}, "
                    f"expected {size} values; is this a YAMNet model?",
                    path=self.path,
                )
        logger.info(
            "YAMNet %s via %s: embedding %s%s",
            self.path,
            backend_of(interpreter),
            self._outputs["embeddings"]["name"],
            " (internal tensor)" if internal else "",
        )

    @classmethod
    def from_manifest(cls, manifest: "Manifest", *, num_threads: int = 1, backend: Optional[str] = None) -> "YamnetTflite":
        """The manifest's yamnet file, read through its declared tensors (checked: ManifestError)."""
        model = cls(
            manifest.yamnet_path,
            num_threads=num_threads,
            outputs=manifest.yamnet.outputs,
            params=manifest.params,
            backend=backend,
        )
        manifest.check_interpreter("yamnet", model.interpreter)
        return model

    # --- tensor discovery ---
    def _resolve(
        self,
        interpreter: Any,
        outputs: Optional[Mapping[str, "TensorSpec"]],
        embedding_tensor: Optional[str],
    ) -> Tuple[Dict[str, int], bool]:
        """Role -> tensor index, and whether the embedding is an internal (non-output) tensor."""
        params = self.params
        output_details = interpreter.get_output_details()
        output_indices = {d["index"] for d in output_details}
        all_details = interpreter.get_tensor_details()
        indices: Dict[str, int] = {}
        if outputs:
            indices = {role: spec.index for role, spec in outputs.items() if role in ROLES}
        if len(indices) < len(ROLES):
            for role, index in _signature_outputs(interpreter).items():
                indices.setdefault(role, index)
        for detail in output_details:
            names = tensor_names(detail)
            for role in ROLES:
                if role not in indices and any(n == role or n.endswith("/" + role) for n in names):
                    indices[role] = detail["index"]
        # Published models: recognise outputs by shape.
        for detail in output_details:
            shape = tuple(int(d) for d in detail["shape"])
            if detail["index"] in indices.values():
                continue
            if "scores" not in indices and shape[-1:] == (params.yamnet_classes,):
                indices["scores"] = detail["index"]
            elif "log_mel" not in indices and shape[-2:] == (params.patch_frames, params.mel_bands):
                indices["log_mel"] = detail["index"]
            elif "embeddings" not in indices and shape[-1:] == (params.embedding_size,):
                indices["embeddings"] = detail["index"]
        if embedding_tensor is not None or "embeddings" not in indices:
            suffix = embedding_tensor or DEFAULT_EMBEDDING_TENSOR
            matches = [
                d
                for d in all_details
                if any(n == suffix or n.endswith(suffix) for n in tensor_names(d))
                and int(np.prod(d["shape"])) == params.embedding_size
            ]
            if not matches:
                raise ModelError(
                    f"{self.path}: no embedding output and no internal tensor named '...{suffix}' with "
                    f"{params.embedding_size} values; export YAMNet with an \"embeddings\" output or pass "
                    f"embedding_tensor=<tensor name>",
                    path=self.path,
                )
            indices["embeddings"] = matches[-1]["index"]
        if "scores" not in indices:
            raise ModelError(
                f"{self.path}: no output with {params.yamnet_classes} AudioSet scores; is this a YAMNet model?",
                path=self.path,
            )
        return indices, indices["embeddings"] not in output_indices

    # --- introspection (the convert step records these in the manifest) ---
    @property
    def tensor_details(self) -> Dict[str, Dict[str, Any]]:
        """Interpreter details of the tensors used, by role: "input", "embeddings", "scores"[, "log_mel"]."""
        return {"input": dict(self._input), **{role: dict(d) for role, d in self._outputs.items()}}

    # --- running ---
    @property
    def has_log_mel(self) -> bool:
        return "log_mel" in self._outputs

    @property
    def backend(self) -> str:
        return backend_of(self.interpreter)

    def _invoke(self, patch: npt.ArrayLike) -> None:
        """Set the input to one patch (float32 [patch_samples]) and run the model."""
        samples = np.asarray(patch, dtype=np.float32)
        if samples.shape != (self.params.patch_samples,):
            raise ValueError(
                f"YAMNet takes one patch of shape ({self.params.patch_samples},), got {samples.shape}; "
                f"frame the audio with edge.framing.waveform_to_patches"
            )
        samples = samples.reshape(self._input_shape)
        self.interpreter.set_tensor(
            self._input_index, samples if self._input_is_float else quantize(samples, self._input)
        )
        self.interpreter.invoke()

    def _read(self, role: str) -> FloatArray:
        """A copy of one output tensor as float32 (get_tensor copies; views would change on the next run)."""
        detail = self._outputs[role]
        values = self.interpreter.get_tensor(detail["index"])
        return values if self._float_outputs[role] else dequantize(values, detail)

    def run_all(self, patch: npt.ArrayLike) -> YamnetOutputs:
        """Run one patch: float32 [patch_samples] in [-1, 1] at params.sample_rate_hz."""
        self._invoke(patch)
        log_mel = None
        if self.has_log_mel:
            log_mel = self._read("log_mel").reshape(self.params.patch_frames, self.params.mel_bands)
        return YamnetOutputs(
            embedding=self._read("embeddings").reshape(-1),
            scores=self._read("scores").reshape(-1),
            log_mel=log_mel,
        )

    def run(self, patch: npt.ArrayLike) -> Tuple[FloatArray, FloatArray]:
        """patch float32 [patch_samples] -> (embedding float32 [1024], scores float32 [521]).

        The streaming pipeline's per-patch call: it leaves the log-mel output unread.
        """
        if self._float_io and type(patch) is np.ndarray and patch.dtype == np.float32 and patch.shape == self._patch_shape:
            # The stream's patch is already float32 [patch_samples]: skip the general conversions.
            interpreter = self.interpreter
            interpreter.set_tensor(self._input_index, patch.reshape(self._input_shape))
            interpreter.invoke()
            return (
                interpreter.get_tensor(self._embedding_index).reshape(-1),
                interpreter.get_tensor(self._scores_index).reshape(-1),
            )
        self._invoke(patch)
        return self._read("embeddings").reshape(-1), self._read("scores").reshape(-1)

    def log_mel(self, patch: npt.ArrayLike) -> FloatArray:
        """The model's log-mel spectrogram of one patch: float32 [patch_frames, mel_bands]."""
        if not self.has_log_mel:
            raise ModelError(
                f"{self.path}: this model has no log_mel output; use the model exported by `oido-convert`",
                path=self.path,
            )
        outputs = self.run_all(patch)
        assert outputs.log_mel is not None
        return outputs.log_mel

    def embed_patches(self, patches: npt.ArrayLike) -> Tuple[FloatArray, FloatArray]:
        """patches float32 [p, patch_samples] -> (embeddings [p, 1024], scores [p, 521]), one by one."""
        batch = np.asarray(patches, dtype=np.float32)
        if batch.ndim != 2:
            raise ValueError(f"patches must be [p, {self.params.patch_samples}], got shape {batch.shape}")
        results = [self.run(patch) for patch in batch]
        if not results:
            return (
                np.zeros((0, self.params.embedding_size), np.float32),
                np.zeros((0, self.params.yamnet_classes), np.float32),
            )
        return np.stack([e for e, _ in results]), np.stack([s for _, s in results])


def _signature_outputs(interpreter: Any) -> Dict[str, int]:
    """Role -> tensor index from the model's signature (exported models keep output names there)."""
    try:
        signatures = interpreter.get_signature_list()
    except (AttributeError, ValueError, RuntimeError):
        return {}
    for key in signatures:
        try:
            details = interpreter.get_signature_runner(key).get_output_details()
        except (AttributeError, ValueError, RuntimeError):
            continue
        found = {name: int(detail["index"]) for name, detail in details.items() if name in ROLES}
        if found:
            return found
    return {}
