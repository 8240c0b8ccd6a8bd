"""oido-convert's core: TensorFlow YAMNet + the Keras head -> model/yamnet.tflite, head.tflite, manifest.json.

What is exported
  yamnet.tflite  waveform float32 [patch_samples] -> "embeddings" [1024], "scores" [521],
                 "log_mel" [96, 64] (named outputs and a serving signature).
  head.tflite    "embeddings" float32 [n, 1024] -> "probabilities" float32 [n, num_labels].
  manifest.json  the contract's oido-model/1 schema (labels, params, thresholds, tensors,
                 hashes, versions, evaluation), written last.
  parity.json / parity.md / golden.json  the float-vs-quantized report and the golden
                 decisions the runtime-parity test compares against.

How YAMNet is quantized (candidates; ``auto`` measures them and keeps the fastest under the
edge's interpreter, 1 thread, among the ACCURATE ones: embedding cosine vs float, on training
patches held out from calibration, with mean >= ``cosine_target`` and 1st percentile >=
``cosine_floor`` on BOTH kernel paths the edge may take: the default one (XNNPACK) and the
runtime's builtin kernels, which is what tflite-runtime 2.14 runs for ops its XNNPACK lacks,
such as dynamic-range convolutions):
  dynamic_range  int8 weights (per channel), float activations, for the pointwise convs and
                 the dense layers. The log-mel front end and the depthwise convs stay FLOAT:
                 the converter has no denylist for dynamic-range quantization, so both are
                 converted and the float weights put back into the quantized flatbuffer
                 (convert.graph). Hybrid kernels quantize their INPUT on the fly: on the mel
                 matrix that wrecks low-energy bins, on the depthwise convs it costs most of
                 the embedding error, for 0.13 MB of weights. Each remaining hybrid op is
                 also tried alone on the builtin kernels (tflite-runtime 2.14's hybrid convs
                 quantize a whole activation tensor with one scale): an op that alone pulls
                 an embedding below ``hybrid_op_cosine_floor`` (YAMNet's layer 12-13
                 pointwise convs) gets int8_weights' treatment instead, DEQUANTIZE in front
                 and float arithmetic, so the file stays int8-sized and accurate in both
                 runtimes while the other ops keep int8 arithmetic.
  full_int8      int8 activations too, calibrated on a few hundred training patches, the
                 front end kept float through the MLIR quantizer's node denylist.
  int8_weights   the dynamic_range file with a DEQUANTIZE in front of each int8 weight:
                 int8 on disk, float arithmetic (float accuracy, float speed, the same
                 numbers in every runtime).
Dense layers are quantized per tensor, not per channel: TF 2.21's per-channel int8 dense
layers (FULLY_CONNECTED v12) do not load in tflite-runtime 2.14. The head is quantized the
same way as YAMNet (falling back to dynamic_range if that fails its checks).

Every file is checked (convert.sanity) before anything in model/ changes: all files are
written to a temporary directory inside model/, checked, then moved in with os.replace,
manifest.json last. A failed export raises ConvertError and leaves the previous model.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Union

import numpy as np
import numpy.typing as npt

from convert.errors import ConvertError
from convert.graph import TfliteGraph
from convert.sanity import (
    SanityReport,
    check_head_file,
    check_yamnet_file,
    find_class_map,
    probe_sounds,
    read_class_map,
)
from edge.audio import read_audio
from edge.detect import DetectorConfig
from edge.errors import ConfigError, OidoError
from edge.framing import waveform_to_patches
from edge.manifest import HEAD_OUTPUT_ROLE, MANIFEST_NAME, Manifest, ModelFile, TensorSpec, load_manifest, sha256_file
from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)


class ExportInputError(ConvertError):
    """What the export reads is missing or does not fit (no trained head, no prepared data, no YAMNet
    weights, a head of other data or params, bad thresholds): the user's to fix, so oido-convert
    exits 2 for it, as oido-train does for the same mistakes. Nothing has been written."""


FloatArray = npt.NDArray[np.float32]
PathArg = Union[str, "os.PathLike[str]"]

YAMNET_FILE = "yamnet.tflite"
HEAD_FILE = "head.tflite"
PARITY_JSON = "parity.json"
PARITY_MARKDOWN = "parity.md"
GOLDEN_FILE = "golden.json"
THRESHOLDS_FILE = "thresholds.json"
"""Optional per-label thresholds written by training ({label: p} or {"thresholds": {...}})."""
TRAIN_DATA = "trainData.json"
TEST_DATA = "testData.json"
AUDIO_DIR = "audio"

YAMNET_INPUT_NAME = "waveform"
YAMNET_OUTPUT_ORDER = ("embeddings", "scores", "log_mel")
HEAD_INPUT_NAME = "embeddings"

QUANTIZATIONS = ("dynamic_range", "full_int8", "int8_weights")
"""How a file can be quantized (see the module docstring)."""
AUTO = "auto"
CALIBRATION_PATCHES_PER_CLIP = 2
"""Calibration takes this many random patches of a clip, so a few hundred span many clips."""
QUANTIZATION_LABELS = {
    "dynamic_range": (
        "dynamic-range int8 weights (pointwise convs, dense); float front end and depthwise convs; "
        "ops too coarse on builtin hybrid kernels dequantized to float"
    ),
    "full_int8": "int8 weights and activations (calibrated); float front end",
    "int8_weights": "int8 weights dequantized at load time; float arithmetic",
}


@dataclass(frozen=True)
class ExportOptions:
    """How oido-convert exports (defaults: the project's)."""

    quantization: str = AUTO
    """"auto" (measure every candidate, keep the fastest accurate one) or one of QUANTIZATIONS."""
    calibration_patches: int = 200
    """Training patches that calibrate full int8 (spread over clips, CALIBRATION_PATCHES_PER_CLIP each)."""
    selection_clips_per_label: int = 2
    """Whole training clips per label (not used for calibration) that judge the candidates
    (embedding cosine, latency) and check the head's decisions."""
    latency_rounds: int = 3
    """Rounds over the latency patches when timing candidates (interleaved, so load hits all alike)."""
    latency_patches: int = 24
    """Patches timed per candidate per round."""
    cosine_target: float = 0.995
    """Mean embedding cosine vs float a candidate needs (on each kernel path) to count as accurate."""
    cosine_floor: float = 0.98
    """1st-percentile embedding cosine a candidate needs (on each kernel path): no group of
    patches may be badly off even when the mean looks fine."""
    hybrid_op_cosine_floor: float = 0.998
    """Worst embedding cosine (vs float, builtin kernels) one dynamic-range op may cause on its
    own; an op below it computes in float from its int8 weights instead."""
    hybrid_op_patches: int = 12
    """Calibration patches each dynamic-range op is tried alone on (builtin kernels)."""
    seed: int = 0
    """Seed of the clip/patch sampling."""
    evaluate: bool = True
    """Run the parity report on the test clips (and write parity.* and golden.json)."""
    yamnet_source: str = "auto"
    """train.yamnet.load_yamnet source: "auto", "tflite" or "hub"."""
    yamnet_weights: Path | None = None
    """YAMNet weights file (default: found by train.yamnet)."""
    class_map: Path | None = None
    """yamnet_class_map.csv (default: beside the weights, or the shared assets)."""
    assets_dir: Path | None = None
    """The assets root holding yamnet/ (``--assets``), searched first for the weights and class map."""
    num_threads: int = 1
    """Interpreter threads for the latency measurements (the Pi's setting)."""
    progress: bool = False
    """Show progress bars (on a terminal only)."""

    def __post_init__(self) -> None:
        if self.quantization != AUTO and self.quantization not in QUANTIZATIONS:
            raise ConfigError(f"quantization {self.quantization!r}: use {AUTO!r} or one of {list(QUANTIZATIONS)}")
        for name in (
            "calibration_patches",
            "selection_clips_per_label",
            "latency_rounds",
            "latency_patches",
            "hybrid_op_patches",
            "num_threads",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("cosine_target", "cosine_floor", "hybrid_op_cosine_floor"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in (0, 1], got {getattr(self, name)}")


# --- data -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clip:
    """One entry of data/trainData.json or testData.json."""

    file_name: str
    class_name: str
    class_number: int
    fold: int
    source: str = ""

    def path(self, data_dir: Path) -> Path:
        return data_dir / AUDIO_DIR / self.file_name


def read_clips(data_dir: PathArg, which: str, *, labels: Sequence[str]) -> list[Clip]:
    """Entries of data_dir/<which> checked against the head's labels; ConvertError naming the file."""
    path = Path(data_dir) / which
    if not path.is_file():
        raise ExportInputError(f"{path} not found: prepare the data first (oido-train prepare)", path=path)
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
        clips = [
            Clip(
                file_name=str(e["fileName"]),
                class_name=str(e["className"]),
                class_number=int(e["classNumber"]),
                fold=int(e.get("fold", 0)),
                source=str(e.get("source", "")),
            )
            for e in entries
        ]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError, ValueError) as error:
        raise ExportInputError(
            f"{path}: not a list of clip entries ({error}); re-run oido-train prepare", path=path
        ) from None
    for clip in clips:
        if not 0 <= clip.class_number < len(labels) or labels[clip.class_number] != clip.class_name:
            raise ExportInputError(
                f"{path}: {clip.file_name} is {clip.class_name!r} (class {clip.class_number}) but the head's "
                f"labels are {list(labels)}: the head was trained on other data; retrain it or re-prepare",
                path=path,
            )
    return clips


def clip_patches(clip: Clip, data_dir: Path, *, params: Params) -> FloatArray:
    """float32 [p, patch_samples]: the clip framed as the edge frames it."""
    return waveform_to_patches(read_audio(clip.path(data_dir), target_rate_hz=params.sample_rate_hz), params=params)


@dataclass
class TrainingSample:
    """Training audio for calibration and for judging candidates."""

    calibration_patches: FloatArray
    """float32 [c, patch_samples]: patches spread over many training clips."""
    selection_clips: list[Clip]
    selection_patches: list[FloatArray]
    """Per selection clip float32 [p_i, patch_samples] (clips disjoint from calibration)."""


def sample_training_audio(
    clips: Sequence[Clip], data_dir: Path, *, options: ExportOptions, labels: Sequence[str], params: Params
) -> TrainingSample:
    """Pick selection clips (whole, per label) and calibration patches (two per other clip), seeded."""
    if not clips:
        raise ExportInputError(
            f"{data_dir / TRAIN_DATA} lists no clips: prepare the data first", path=data_dir / TRAIN_DATA
        )
    rng = np.random.default_rng(options.seed)
    order = [clips[i] for i in rng.permutation(len(clips))]
    selection: list[Clip] = []
    for label_index in range(len(labels)):
        selection += [c for c in order if c.class_number == label_index][: options.selection_clips_per_label]
    chosen = {c.file_name for c in selection}
    selection_patches = [clip_patches(c, data_dir, params=params) for c in selection]
    calibration: list[FloatArray] = []
    for clip in order:
        if clip.file_name in chosen:
            continue
        patches = clip_patches(clip, data_dir, params=params)
        picks = rng.choice(len(patches), size=min(CALIBRATION_PATCHES_PER_CLIP, len(patches)), replace=False)
        calibration += [patches[i] for i in sorted(picks)]
        if len(calibration) >= options.calibration_patches:
            break
    if not calibration:  # a tiny data set: every clip judges; calibrate on the same patches
        logger.warning(
            "too few training clips to keep calibration and selection apart; calibrating on the selection clips"
        )
        calibration = list(np.concatenate(selection_patches))
    return TrainingSample(
        calibration_patches=np.stack(calibration[: options.calibration_patches]).astype(np.float32),
        selection_clips=selection,
        selection_patches=selection_patches,
    )


# --- the trained head --------------------------------------------------------------------


def load_trained_head(model_dir: Path, *, params: Params, yamnet_sha256: str | None) -> Any:
    """train.head.load_head, checked against params and the YAMNet weights; ConvertError naming the file."""
    from train.head import HEAD_METADATA_FILE, HeadError, load_head

    json_path = model_dir / HEAD_METADATA_FILE
    try:
        head = load_head(model_dir)
    except HeadError as error:
        raise ExportInputError(f"{error}", path=json_path) from None
    inputs = int(head.model.inputs[0].shape[-1])
    outputs = int(head.model.outputs[0].shape[-1])
    keras_path = model_dir / str(head.extra.get("head_file", "head.keras"))
    if inputs != params.embedding_size:
        raise ExportInputError(
            f"{keras_path} takes {inputs}-value embeddings but YAMNet gives {params.embedding_size}: "
            "it was trained for another embedding model; retrain it with oido-train fit",
            path=keras_path,
        )
    if outputs != len(head.labels):
        raise ExportInputError(
            f"{keras_path} outputs {outputs} classes but {json_path} lists "
            f"{len(head.labels)} labels: retrain",
            path=json_path,
        )
    if head.params.to_dict() != params.to_dict():
        raise ExportInputError(
            f"{json_path}: the head was trained with params {head.params.to_dict()}, the export uses "
            f"{params.to_dict()}; retrain or export with the head's params",
            path=json_path,
        )
    if yamnet_sha256 is not None:
        check_head_matches_yamnet(head, yamnet_sha256, model_dir=model_dir)
    return head


def check_head_matches_yamnet(head: Any, yamnet_sha256: str, *, model_dir: Path) -> None:
    """ConvertError naming head.json when the head was trained on another YAMNet's embeddings."""
    json_path = model_dir / "head.json"
    if head.yamnet_weights_sha256 != yamnet_sha256:
        raise ExportInputError(
            f"{json_path}: the head was trained on embeddings of YAMNet weights {head.yamnet_weights_sha256[:16]}..., "
            f"but the export uses weights {yamnet_sha256[:16]}...; retrain the head or pass the same weights",
            path=json_path,
        )


def resolve_thresholds(model_dir: Path, head: Any) -> tuple[dict[str, float], str]:
    """Per-label onset thresholds and where they came from.

    head.json "thresholds", else model_dir/thresholds.json, else DetectorConfig's default for
    every label but the background one. A thresholds.json that names the head it was chosen for
    ("head_sha256", as `oido-train fit-openset` and `calibrate` write it) is ignored, with a
    warning, for any other head: it is left over from an earlier training run. A hand-written one
    without "head_sha256" applies to whatever head is there. ConvertError naming the file for bad values.
    """
    labels = list(head.labels)
    source_path = model_dir / "head.json"
    values = head.extra.get("thresholds")
    if values is None and (model_dir / THRESHOLDS_FILE).is_file():
        source_path = model_dir / THRESHOLDS_FILE
        try:
            document = json.loads(source_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ExportInputError(f"{source_path}: not valid JSON ({error})", path=source_path) from None
        values = document.get("thresholds", document) if isinstance(document, dict) else document
        chosen_for = document.get("head_sha256") if isinstance(document, dict) else None
        if chosen_for and chosen_for != head.extra.get("head_sha256"):
            logger.warning(
                "%s was chosen for another head (%s...), not this one; ignoring it. For calibrated "
                "thresholds train with `oido-train fit-openset` (or run `oido-train calibrate`), then convert again",
                source_path, str(chosen_for)[:12],
            )
            values = None
    if values is None:
        default = DetectorConfig().default_threshold
        return {label: default for label in labels if label != head.background_label}, "default"
    if not isinstance(values, dict):
        raise ExportInputError(f"{source_path}: thresholds must be an object {{label: probability}}", path=source_path)
    unknown = sorted(set(values) - set(labels))
    if unknown:
        raise ExportInputError(
            f"{source_path}: thresholds for unknown labels {unknown}; labels are {labels}", path=source_path
        )
    try:
        config = DetectorConfig(thresholds={str(k): float(v) for k, v in values.items()})
    except (ConfigError, TypeError, ValueError) as error:
        raise ExportInputError(f"{source_path}: {error}", path=source_path) from None
    return dict(config.thresholds), str(source_path.name)


def head_calibration_warnings(head: Any) -> list[str]:
    """What fit-openset or calibrate warned about the head's thresholds (head.json "openset" ->
    "calibration" -> "warnings", train.openset.calibration_warnings): classes they may never light."""
    openset = head.extra.get("openset")
    calibration = openset.get("calibration") if isinstance(openset, dict) else None
    warnings = calibration.get("warnings") if isinstance(calibration, dict) else None
    return [str(text) for text in warnings] if isinstance(warnings, list) else []


# --- TensorFlow -> TF-Lite -----------------------------------------------------------------


def _freeze(function: Any) -> Any:
    """A concrete function with its variables folded into constants (Keras 3 keeps them as
    resource variables, which the converter would otherwise leave out of the file)."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(function)


def _converter(frozen: Any) -> Any:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    # Per-channel int8 dense layers are FULLY_CONNECTED v12, which tflite-runtime 2.14 lacks.
    converter._experimental_disable_per_channel_quantization_for_dense_layers = True  # noqa: SLF001
    return converter


def _convert(converter: Any, what: str) -> bytes:
    try:
        return bytes(converter.convert())
    except Exception as error:  # the converter raises ConverterError, RuntimeError, ValueError ...
        raise ConvertError(f"TFLiteConverter failed on {what}: {error}") from error


def _calibrated_int8(
    frozen: Any, representative: Callable[[], Iterator[list[Any]]], *, denylisted_nodes: Sequence[str], what: str
) -> bytes:
    """Full int8 with float I/O; `denylisted_nodes` (op output names) stay float."""
    import tensorflow as tf
    from tensorflow.lite.python.convert import mlir_quantize

    converter = _converter(frozen)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter._experimental_calibrate_only = True  # noqa: SLF001 - quantize below, with the denylist
    with warnings.catch_warnings():
        # "Statistics for quantized inputs were expected": the inputs stay float on purpose.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        calibrated = _convert(converter, f"{what} (calibration)")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
            return bytes(
                mlir_quantize(
                    calibrated,
                    denylisted_nodes=list(denylisted_nodes),
                    disable_per_channel_for_dense_layers=True,
                )
            )
    except Exception as error:
        raise ConvertError(f"the int8 quantizer failed on {what}: {error}") from error


@dataclass
class Candidate:
    """One way of quantizing a model, and how it measured."""

    name: str
    model_bytes: bytes | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)
    size_bytes: int = 0
    cosine: dict[str, float] = field(default_factory=dict)
    """Embedding cosine vs float on the selection patches (edge interpreter): mean, p1, min."""
    cosine_builtin_kernels: dict[str, float] = field(default_factory=dict)
    """The same with the runtime's builtin kernels, no delegate (tflite-runtime 2.14's path)."""
    latency_ms: dict[str, float] = field(default_factory=dict)
    """Per-patch latency under the edge's interpreter: median, p99."""
    eligible: bool = False

    def to_dict(self) -> dict[str, Any]:
        values: dict[str, Any] = {"description": QUANTIZATION_LABELS.get(self.name, self.name)}
        if self.error:
            values["error"] = self.error
        else:
            values.update(
                size_bytes=self.size_bytes,
                cosine=self.cosine,
                cosine_builtin_kernels=self.cosine_builtin_kernels,
                latency_ms=self.latency_ms,
                accurate=self.eligible,
            )
        if self.notes:
            values["notes"] = self.notes
        return values


def _name_yamnet_io(graph: TfliteGraph, params: Params) -> None:
    graph.name_io(
        input_name=YAMNET_INPUT_NAME,
        outputs={
            "embeddings": graph.output_with_shape((params.embedding_size,)),
            "scores": graph.output_with_shape((params.yamnet_classes,)),
            "log_mel": graph.output_with_shape((params.patch_frames, params.mel_bands)),
        },
        output_order=YAMNET_OUTPUT_ORDER,
    )


def convert_yamnet(
    yamnet: Any,
    *,
    quantizations: Sequence[str],
    calibration_patches: FloatArray,
    params: Params,
    hybrid_op_cosine_floor: float = ExportOptions.hybrid_op_cosine_floor,
    hybrid_op_patches: int = ExportOptions.hybrid_op_patches,
) -> list[Candidate]:
    """Convert TF YAMNet (train.yamnet.YamnetTF) into the asked quantization candidates.

    A candidate whose conversion fails carries the error instead of bytes. The dynamic-range
    ops that alone pull an embedding below hybrid_op_cosine_floor on the builtin kernels (tried
    on hybrid_op_patches calibration patches) are dequantized to float (module docstring).
    """
    started = time.perf_counter()
    frozen = _freeze(yamnet.concrete_function())
    float_bytes = _convert(_converter(frozen), "YAMNet (float)")
    float_graph = TfliteGraph(float_bytes, source="YAMNet float conversion")
    front_end = float_graph.ancestors(float_graph.output_with_shape((params.patch_frames, params.mel_bands)))
    logger.debug(
        "YAMNet front end: %d ops (%s)",
        len(front_end),
        sorted({float_graph.op_name(float_graph.graph.operators[i]) for i in front_end}),
    )

    candidates: list[Candidate] = []
    dynamic_bytes: bytes | None = None
    if "dynamic_range" in quantizations or "int8_weights" in quantizations:
        import tensorflow as tf

        converter = _converter(frozen)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        graph = TfliteGraph(_convert(converter, "YAMNet (dynamic range)"), source="YAMNet dynamic-range conversion")
        keep_float = graph.ancestors(graph.output_with_shape((params.patch_frames, params.mel_bands)))
        keep_float += [i for i, op in enumerate(graph.graph.operators) if graph.op_name(op) == "DEPTHWISE_CONV_2D"]
        restored = graph.restore_float_weights(sorted(set(keep_float)), float_graph)
        _name_yamnet_io(graph, params)
        dynamic_bytes = graph.to_bytes()
        if "dynamic_range" in quantizations:
            notes = [f"kept float: {len(restored)} ops (front end, depthwise convs)"]
            coarse = coarse_hybrid_ops(
                dynamic_bytes,
                float_graph,
                calibration_patches[:hybrid_op_patches],
                cosine_floor=hybrid_op_cosine_floor,
                params=params,
            )
            dynamic_graph = TfliteGraph(dynamic_bytes, source="YAMNet dynamic-range conversion")
            if coarse:
                dynamic_graph.dequantize_weights(float_graph, op_indices=[index for index, _, _ in coarse])
            notes.append(
                f"each hybrid op alone on the builtin kernels, {min(hybrid_op_patches, len(calibration_patches))} "
                f"calibration patches: "
                + (
                    "dequantized to float (worst cosine < "
                    f"{hybrid_op_cosine_floor}): " + ", ".join(f"{name} {cosine:.4f}" for _, name, cosine in coarse)
                    if coarse
                    else f"all >= {hybrid_op_cosine_floor}"
                )
            )
            candidates.append(Candidate("dynamic_range", dynamic_graph.to_bytes(), notes=notes))
        if "int8_weights" in quantizations:
            weights_graph = TfliteGraph(dynamic_bytes, source="YAMNet int8-weights edit")
            count = weights_graph.dequantize_weights(float_graph)
            candidates.append(Candidate("int8_weights", weights_graph.to_bytes(), notes=[f"{count} DEQUANTIZE ops"]))
    if "full_int8" in quantizations:

        def representative() -> Iterator[list[Any]]:
            for patch in calibration_patches:
                yield [patch.astype(np.float32)]

        try:
            int8_bytes = _calibrated_int8(
                frozen, representative, denylisted_nodes=float_graph.op_output_names(front_end), what="YAMNet"
            )
            graph = TfliteGraph(int8_bytes, source="YAMNet full-int8 conversion")
            _name_yamnet_io(graph, params)
            candidates.append(
                Candidate(
                    "full_int8", graph.to_bytes(), notes=[f"calibrated on {len(calibration_patches)} training patches"]
                )
            )
        except ConvertError as error:
            candidates.append(Candidate("full_int8", error=str(error)))
    logger.info("YAMNet converted to %s in %.1f s", [c.name for c in candidates], time.perf_counter() - started)
    return candidates


def coarse_hybrid_ops(
    dynamic_bytes: bytes,
    float_graph: TfliteGraph,
    patches: FloatArray,
    *,
    cosine_floor: float,
    params: Params,
) -> list[tuple[int, str, float]]:
    """Hybrid ops of a dynamic-range YAMNet too coarse on the runtime's builtin kernels.

    Each hybrid op is run ALONE (every other one with its float weights) on the builtin kernels,
    no delegate: the arithmetic tflite-runtime 2.14 does for hybrid convolutions, which
    quantizes a whole activation tensor with one scale. Returns (op index, layer name, worst
    embedding cosine vs the float model) of the ops below `cosine_floor`, in op order; [] when
    no runtime can select its builtin kernels.
    """
    if not len(patches):
        return []
    named_float = TfliteGraph(float_graph.to_bytes(), source=float_graph.source)
    _name_yamnet_io(named_float, params)
    reference = builtin_kernel_embeddings(named_float.to_bytes(), patches)
    if reference is None:
        return []
    hybrid = TfliteGraph(dynamic_bytes, source="YAMNet dynamic-range conversion").quantized_weight_ops()
    coarse: list[tuple[int, str, float]] = []
    for op_index in hybrid:
        alone = TfliteGraph(dynamic_bytes, source="YAMNet dynamic-range conversion")
        name = _layer_name(alone.tensor_name(alone.graph.operators[op_index].outputs[0]))
        # The others in float arithmetic from their int8 weights: float's numbers, a quarter of its bytes.
        alone.dequantize_weights(float_graph, op_indices=[other for other in hybrid if other != op_index])
        embeddings = builtin_kernel_embeddings(alone.to_bytes(), patches)
        if embeddings is None:
            return []
        worst = cosine_stats(reference, embeddings)["min"]
        logger.debug("YAMNet hybrid op %d (%s) alone on builtin kernels: worst cosine %.5f", op_index, name, worst)
        if worst < cosine_floor:
            coarse.append((op_index, name, worst))
    return coarse


def _layer_name(tensor_name: str) -> str:
    """'PartitionedCall/yamnet_patch_1/layer13_pointwise_conv_1/Relu;...' -> 'layer13_pointwise_conv_1'."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[-2] if len(parts) >= 2 else parts[0]


def convert_head(keras_model: Any, *, quantization: str, calibration_embeddings: FloatArray, params: Params) -> bytes:
    """The Keras head as TF-Lite: "embeddings" float32 [n, embedding_size] -> "probabilities"."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, params.embedding_size], tf.float32, name=HEAD_INPUT_NAME)])
    def serve(embeddings: Any) -> Any:
        return keras_model(embeddings, training=False)

    frozen = _freeze(serve.get_concrete_function())
    float_bytes = _convert(_converter(frozen), "the head (float)")
    float_graph = TfliteGraph(float_bytes, source="head float conversion")
    if quantization == "full_int8":

        def representative() -> Iterator[list[Any]]:
            for embedding in calibration_embeddings:
                yield [embedding[np.newaxis].astype(np.float32)]

        graph = TfliteGraph(
            _calibrated_int8(frozen, representative, denylisted_nodes=(), what="the head"),
            source="head int8 conversion",
        )
    else:
        converter = _converter(frozen)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        graph = TfliteGraph(_convert(converter, "the head (dynamic range)"), source="head dynamic-range conversion")
        if quantization == "int8_weights":
            graph.dequantize_weights(float_graph)
    (output,) = graph.outputs
    graph.name_io(input_name=HEAD_INPUT_NAME, outputs={HEAD_OUTPUT_ROLE: output}, output_order=(HEAD_OUTPUT_ROLE,))
    return graph.to_bytes()


# --- measuring candidates -------------------------------------------------------------------


def cosine_stats(reference: FloatArray, other: FloatArray) -> dict[str, float]:
    """Row-wise cosine of two float32 [n, d] arrays: mean, 1st percentile, min (rounded)."""
    from convert.parity import row_cosines

    cosines = row_cosines(reference, other)
    return {
        "mean": round(float(np.mean(cosines)), 6),
        "p1": round(float(np.percentile(cosines, 1)), 6),
        "min": round(float(np.min(cosines)), 6),
    }


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
    """Median and 99th percentile of per-call times, in milliseconds."""
    values = np.asarray(seconds, np.float64) * 1e3
    return {
        "median": round(float(np.median(values)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "calls": int(values.size),
    }


def measure_yamnet_candidates(
    candidates: Sequence[Candidate],
    *,
    work_dir: Path,
    patches: FloatArray,
    reference_embeddings: FloatArray,
    options: ExportOptions,
    params: Params,
) -> None:
    """Fill each candidate's size, cosine vs float and latency (edge interpreter, interleaved rounds)."""
    from edge.errors import ModelError
    from edge.yamnet import YamnetTflite

    models: dict[str, Any] = {}
    for candidate in candidates:
        if candidate.model_bytes is None:
            continue
        path = work_dir / f"candidate-{candidate.name}.tflite"
        path.write_bytes(candidate.model_bytes)
        candidate.size_bytes = len(candidate.model_bytes)
        try:
            model = YamnetTflite(path, num_threads=options.num_threads, params=params)
            embeddings, _ = model.embed_patches(patches)
        except (ModelError, ValueError, RuntimeError) as error:
            candidate.error = f"does not run under the edge's interpreter: {error}"
            continue
        candidate.cosine = cosine_stats(reference_embeddings, embeddings)
        paths = [candidate.cosine]
        builtin = builtin_kernel_embeddings(path, patches, num_threads=options.num_threads)
        if builtin is not None:
            candidate.cosine_builtin_kernels = cosine_stats(reference_embeddings, builtin)
            paths.append(candidate.cosine_builtin_kernels)
        candidate.eligible = all(
            stats["mean"] >= options.cosine_target and stats["p1"] >= options.cosine_floor for stats in paths
        )
        models[candidate.name] = model
    timed = patches[: options.latency_patches]
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(options.latency_rounds):
        for name, model in models.items():
            for patch in timed:
                start = time.perf_counter()
                model.run(patch)
                times[name].append(time.perf_counter() - start)
    for candidate in candidates:
        if candidate.name in times:
            candidate.latency_ms = latency_stats(times[candidate.name])
        logger.info("YAMNet %s: %s", candidate.name, candidate.to_dict())


def builtin_kernel_embeddings(
    model: Path | bytes, patches: FloatArray, *, num_threads: int = 1
) -> FloatArray | None:
    """Embeddings float32 [p, 1024] of an exported YAMNet (file or bytes) run on the builtin kernels, no delegate.

    That is the arithmetic tflite-runtime 2.14 does for the ops its XNNPACK cannot take
    (dynamic-range convolutions among them). None if the runtime cannot select its kernels.
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter, OpResolverType  # type: ignore[no-redef]
        except ImportError:
            return None
    try:
        source = {"model_content": model} if isinstance(model, bytes) else {"model_path": str(model)}
        interpreter = Interpreter(
            **source,
            num_threads=num_threads,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        )
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
        logger.warning("%s: cannot run on the builtin kernels (%s)", "model" if isinstance(model, bytes) else model, error)
        return None
    (waveform,) = interpreter.get_input_details()
    outputs = [d for d in interpreter.get_output_details() if d["name"] == "embeddings"]
    if not outputs:
        return None
    (embeddings,) = outputs
    rows = []
    for patch in patches:
        interpreter.set_tensor(waveform["index"], patch.reshape(waveform["shape"]).astype(np.float32))
        interpreter.invoke()
        rows.append(np.array(interpreter.get_tensor(embeddings["index"]), np.float32).reshape(-1))
    return np.stack(rows)


def choose_candidate(
    candidates: Sequence[Candidate], *, cosine_target: float, cosine_floor: float
) -> tuple[Candidate, str]:
    """The fastest accurate candidate (or, if none is accurate, the most accurate), and why."""
    usable = [c for c in candidates if c.error is None and c.model_bytes is not None and c.latency_ms]
    if not usable:
        errors = "; ".join(f"{c.name}: {c.error}" for c in candidates)
        raise ConvertError(f"no YAMNet conversion ran under the edge's interpreter ({errors})")
    accurate = [c for c in usable if c.eligible]
    if accurate:
        best = min(accurate, key=lambda c: c.latency_ms["median"])
        others = ", ".join(
            f"{c.name} {c.latency_ms['median']:.2f} ms, cosine {c.cosine['mean']:.4f}"
            + (f" ({c.cosine_builtin_kernels['mean']:.4f} builtin)" if c.cosine_builtin_kernels else "")
            + ("" if c.eligible else " - not accurate")
            for c in usable
            if c is not best
        )
        reason = (
            f"{best.name}: fastest of the candidates whose embeddings match float (cosine mean >= {cosine_target}, "
            f"1st percentile >= {cosine_floor}) on the edge's kernels and the builtin kernels "
            f"({best.latency_ms['median']:.2f} ms/patch median, cosine {best.cosine['mean']:.4f}"
            f"{'; others: ' + others if others else ''})"
        )
        return best, reason
    def worst(candidate: Any, statistic: str) -> float:
        return min(candidate.cosine[statistic], (candidate.cosine_builtin_kernels or {}).get(statistic, 1.0))

    # A candidate that loses some patches entirely (1st percentile under the floor) is worse than
    # one a little under the mean target everywhere: rank by the floor first.
    best = max(usable, key=lambda c: (worst(c, "p1") >= cosine_floor, worst(c, "mean"), worst(c, "p1")))
    reason = (
        f"{best.name}: no candidate reached mean cosine {cosine_target} with 1st percentile {cosine_floor} on "
        f"both kernel paths; kept the most accurate (mean {worst(best, 'mean'):.4f}, 1st percentile "
        f"{worst(best, 'p1'):.4f})"
    )
    logger.warning(reason)
    return best, reason


# --- the export ---------------------------------------------------------------------------

STAGING_PREFIX = ".export-"
"""The export writes into model_dir/.export-XXXX first and moves the files in once they check out."""


@dataclass
class ExportResult:
    """What oido-convert wrote."""

    model_dir: Path
    manifest: Manifest
    yamnet: Candidate
    head_quantization: str
    reason: str
    trials: list[Candidate]
    sanity: dict[str, SanityReport]
    parity: Any | None
    seconds: float

    def summary(self) -> str:
        lines = [
            f"exported {self.model_dir / YAMNET_FILE} ({self.manifest.yamnet.quantization}, "
            f"{self.yamnet.size_bytes / 1e6:.2f} MB) and {self.model_dir / HEAD_FILE} "
            f"({self.head_quantization}, {self.sanity['head'].size_bytes / 1e6:.3f} MB) in {self.seconds:.1f} s",
            f"kept {self.reason}",
        ]
        if self.parity is not None:
            lines.append(self.parity.to_markdown())
        return "\n".join(lines)


def _versions() -> dict[str, str]:
    import tensorflow as tf

    versions = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "tensorflow": tf.__version__,
    }
    try:
        import keras

        versions["keras"] = keras.__version__
    except ImportError:  # pragma: no cover
        pass
    from importlib import metadata

    for distribution, key in (
        ("oido", "oido"),
        ("ai-edge-litert", "ai_edge_litert"),
        ("tflite-runtime", "tflite_runtime"),
    ):
        try:
            versions[key] = metadata.version(distribution)
        except metadata.PackageNotFoundError:
            continue
    versions.setdefault("oido", _source_tree_version())
    return versions


def _source_tree_version() -> str:
    """The project version from pyproject.toml, when the package runs uninstalled from its tree."""
    import re

    pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
    try:
        found = re.search(r'^version\s*=\s*"([^"]+)"', pyproject.read_text(encoding="utf-8"), re.MULTILINE)
    except OSError:
        found = None
    return found.group(1) if found else "unknown"


def _tensor_spec(detail: Mapping[str, Any]) -> TensorSpec:
    shape = [int(d) for d in detail.get("shape_signature", detail["shape"])]
    return TensorSpec(name=str(detail["name"]), index=int(detail["index"]), shape=tuple(shape))


def _model_entry(path: Path, *, quantization: str, source_sha256: str, role: str) -> ModelFile:
    from edge.runtime import load_interpreter

    interpreter = load_interpreter(path)
    (input_detail,) = interpreter.get_input_details()
    outputs = {str(d["name"]): _tensor_spec(d) for d in interpreter.get_output_details()}
    if role == "head" and set(outputs) != {HEAD_OUTPUT_ROLE}:
        raise ConvertError(f"{path}: head outputs {sorted(outputs)}, expected [{HEAD_OUTPUT_ROLE!r}]", path=path)
    return ModelFile(
        file=path.name,
        sha256=sha256_file(path),
        quantization=quantization,
        source_sha256=source_sha256,
        input=_tensor_spec(input_detail),
        outputs=outputs,
    )


def export_head_file(
    keras_model: Any,
    path: Path,
    *,
    preferred: str,
    calibration_embeddings: FloatArray,
    clip_embeddings: Sequence[FloatArray],
    keras_probabilities: Sequence[FloatArray],
    labels: Sequence[str],
    params: Params,
) -> tuple[str, SanityReport]:
    """Write the head to `path` quantized like YAMNet (`preferred`), else dynamic_range; checked.

    Returns (quantization used, its check report); ConvertError if no quantization passes.
    """
    failures: list[str] = []
    for mode in dict.fromkeys([preferred, "dynamic_range"]):
        try:
            path.write_bytes(
                convert_head(
                    keras_model, quantization=mode, calibration_embeddings=calibration_embeddings, params=params
                )
            )
            report = check_head_file(
                path,
                clip_embeddings=clip_embeddings,
                keras_probabilities=keras_probabilities,
                labels=labels,
                params=params,
            )
            return mode, report
        except ConvertError as error:
            failures.append(f"{mode}: {error}")
            logger.warning("head as %s failed: %s", mode, error)
    raise ConvertError(f"{HEAD_FILE}: no quantization passed its checks ({'; '.join(failures)})", path=path)


def _write_json(path: Path, document: Any) -> None:
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def publish(staging: Path, model_dir: Path, names: Sequence[str]) -> None:
    """Move checked files from staging into model_dir, manifest.json last (os.replace each)."""
    ordered = [n for n in names if n != MANIFEST_NAME] + ([MANIFEST_NAME] if MANIFEST_NAME in names else [])
    for name in ordered:
        os.replace(staging / name, model_dir / name)


def export_model(
    model_dir: PathArg = "model",
    data_dir: PathArg = "data",
    *,
    options: ExportOptions = ExportOptions(),
    params: Params = DEFAULT_PARAMS,
    yamnet: Any | None = None,
) -> ExportResult:
    """Export YAMNet + the trained head in model_dir as checked TF-Lite files with a manifest.

    Args:
        model_dir: holds head.json and the head-<sha>.keras it names (from oido-train); receives the exported files.
        data_dir: the prepared data (trainData.json for calibration, testData.json for parity).
        options: quantization and measurement settings.
        params: must equal the params the head was trained with.
        yamnet: a train.yamnet.YamnetTF to export (default: load_yamnet per options).

    Raises:
        ExportInputError: (a ConvertError) missing or mismatched input: no head, no prepared data, no
            YAMNet weights, naming the file; nothing is written.
        ConvertError: an exported file failing its checks, naming the file; model_dir is unchanged.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}
    lap = [started]

    def tick(phase: str) -> None:
        now = time.perf_counter()
        timings[phase] = round(now - lap[0], 2)
        lap[0] = now
        logger.debug("%s: %.1f s", phase, timings[phase])

    model_dir = Path(model_dir)
    data_dir = Path(data_dir)
    if not model_dir.is_dir():
        raise ExportInputError(
            f"{model_dir} is not a directory: train a head first (oido-train fit-openset, the head the Pi ships; "
            "or oido-train fit)",
            path=model_dir,
        )

    head = load_trained_head(model_dir, params=params, yamnet_sha256=None)  # cheap checks before YAMNet loads
    labels = list(head.labels)
    thresholds, thresholds_source = resolve_thresholds(model_dir, head)
    if head.background_label is None and thresholds_source == "default":
        logger.warning(
            "%s has no background class and no chosen thresholds: on the device every class fires at %g on any "
            "sound it resembles (a closed-set head: fine for testing clips, not for listening all day); train "
            "with `oido-train fit-openset` for a head that stays dark for other sounds",
            model_dir / "head.json", DetectorConfig().default_threshold,
        )  # fmt: skip
    if thresholds_source == "head.json":
        for text in head_calibration_warnings(head):
            logger.warning("%s: its thresholds, exported as they are, were calibrated with a warning: %s",
                           model_dir / "head.json", text)  # fmt: skip
    train_clips = read_clips(data_dir, TRAIN_DATA, labels=labels)  # no prepared data: said before YAMNet loads
    test_clips = read_clips(data_dir, TEST_DATA, labels=labels) if options.evaluate else []
    if yamnet is None:
        from train.yamnet import AssetError, load_yamnet

        try:
            yamnet = load_yamnet(source=options.yamnet_source, weights_path=options.yamnet_weights, params=params,
                                 assets_dir=options.assets_dir)  # fmt: skip
        except (AssetError, ValueError) as error:
            raise ExportInputError(str(error), path=options.yamnet_weights) from None
    check_head_matches_yamnet(head, yamnet.weights_sha256, model_dir=model_dir)
    class_names = read_class_map(
        find_class_map(getattr(yamnet, "weights_path", None), explicit=options.class_map, assets_dir=options.assets_dir)
    )
    tick("load")
    sample = sample_training_audio(train_clips, data_dir, options=options, labels=labels, params=params)
    probes = probe_sounds(params)

    selection_patches = np.concatenate(sample.selection_patches)
    selection_embeddings, _ = yamnet.embed_patches(selection_patches)
    calibration_embeddings, _ = yamnet.embed_patches(sample.calibration_patches)
    sizes = [len(p) for p in sample.selection_patches]
    clip_embeddings = np.split(selection_embeddings, np.cumsum(sizes)[:-1])
    keras_probabilities = [head.predict(e) for e in clip_embeddings]
    tick("training_audio")

    for stale in model_dir.glob(f"{STAGING_PREFIX}*"):
        # Left by an export that was killed (SIGKILL, a power cut): tens of MB nobody will use.
        logger.info("removing %s, left by an interrupted export", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=model_dir))
    try:
        quantizations = list(QUANTIZATIONS) if options.quantization == AUTO else [options.quantization]
        candidates = convert_yamnet(
            yamnet,
            quantizations=quantizations,
            calibration_patches=sample.calibration_patches,
            params=params,
            hybrid_op_cosine_floor=options.hybrid_op_cosine_floor,
            hybrid_op_patches=options.hybrid_op_patches,
        )
        tick("convert_yamnet")
        measure_yamnet_candidates(
            candidates,
            work_dir=staging,
            patches=selection_patches,
            reference_embeddings=selection_embeddings,
            options=options,
            params=params,
        )
        kept, reason = choose_candidate(
            candidates, cosine_target=options.cosine_target, cosine_floor=options.cosine_floor
        )
        tick("measure_candidates")
        yamnet_path = staging / YAMNET_FILE
        yamnet_path.write_bytes(kept.model_bytes or b"")
        sanity = {"yamnet": check_yamnet_file(yamnet_path, class_names=class_names, probes=probes, params=params)}
        tick("check_yamnet")

        head_path = staging / HEAD_FILE
        head_quantization, sanity["head"] = export_head_file(
            head.model,
            head_path,
            preferred=kept.name,
            calibration_embeddings=calibration_embeddings,
            clip_embeddings=clip_embeddings,
            keras_probabilities=keras_probabilities,
            labels=labels,
            params=params,
        )
        tick("head")
        head_source = head.extra.get("head_sha256") or sha256_file(
            model_dir / head.extra.get("head_file", "head.keras")
        )
        yamnet_entry = _model_entry(
            yamnet_path, quantization=kept.name, source_sha256=yamnet.weights_sha256, role="yamnet"
        )
        head_entry = _model_entry(
            head_path, quantization=head_quantization, source_sha256=str(head_source), role="head"
        )

        written = [YAMNET_FILE, HEAD_FILE]
        parity = None
        if options.evaluate:
            from convert.parity import evaluate_parity

            parity = evaluate_parity(
                yamnet_tf=yamnet,
                keras_head=head,
                model_dir=staging,
                yamnet_file=yamnet_entry,
                head_file=head_entry,
                clips=test_clips,
                data_dir=data_dir,
                labels=labels,
                background_label=head.background_label,
                params=params,
                num_threads=options.num_threads,
                progress=options.progress,
            )
            _write_json(staging / PARITY_JSON, parity.to_dict())
            (staging / PARITY_MARKDOWN).write_text(parity.to_markdown() + "\n", encoding="utf-8")
            _write_json(staging / GOLDEN_FILE, parity.golden())
            written += [PARITY_JSON, PARITY_MARKDOWN, GOLDEN_FILE]
            tick("parity")

        seconds = time.perf_counter() - started
        evaluation: dict[str, Any] = {
            "quantization": {
                "kept": kept.name,
                "head": head_quantization,
                "reason": reason,
                "cosine_target": options.cosine_target,
                "cosine_floor": options.cosine_floor,
                "trials": {c.name: c.to_dict() for c in candidates},
                "judged_on": f"{len(selection_patches)} patches of {len(sample.selection_clips)} training clips",
            },
            "sanity": {name: report.to_dict() for name, report in sanity.items()},
            "thresholds_source": thresholds_source,
            "export_seconds": round(seconds, 1),
            "export_phases_seconds": dict(timings),
        }
        if parity is not None:
            evaluation["parity"] = parity.summary()
        detector = head.extra.get("detector") if isinstance(head.extra.get("detector"), dict) else {}
        manifest = Manifest(
            labels=tuple(labels),
            background_label=head.background_label,
            params=params,
            thresholds=thresholds,
            yamnet=yamnet_entry,
            head=head_entry,
            detector=detector,
            audioset_classes=tuple(class_names),
            versions=_versions(),
            evaluation=evaluation,
            created_utc=datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        manifest.write(staging)
        try:
            checked = load_manifest(staging, check_models=True)
        except OidoError as error:
            raise ConvertError(
                f"the new {MANIFEST_NAME} does not validate: {error}", path=model_dir / MANIFEST_NAME
            ) from None
        publish(staging, model_dir, written + [MANIFEST_NAME])
        for stale in {PARITY_JSON, PARITY_MARKDOWN, GOLDEN_FILE} - set(written):
            # Reports of the previous model would describe files that are gone.
            (model_dir / stale).unlink(missing_ok=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = ExportResult(
        model_dir=model_dir,
        manifest=checked.with_changes(model_dir=model_dir),
        yamnet=kept,
        head_quantization=head_quantization,
        reason=reason,
        trials=candidates,
        sanity=sanity,
        parity=parity,
        seconds=time.perf_counter() - started,
    )
    logger.info("export done in %.1f s", result.seconds)
    return result
