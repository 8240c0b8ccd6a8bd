"""Float vs quantized on the held-out clips, and the golden decisions of an export.

Float path: TensorFlow YAMNet (train.yamnet) + the Keras head on the batch-framed patches.
Quantized path: model/yamnet.tflite + head.tflite through the edge's own streaming pipeline
(`edge.pipeline.classify_clip`: the path the microphone takes), under the edge's interpreter
with one thread. A clip's decision is `edge.pipeline.decide` (argmax of the mean over patches)
on both paths.

golden.json keeps, per test clip, the quantized decision and mean probabilities as the
exporting runtime gave them; `check_golden` replays the clips in whatever runtime is installed
(ai-edge-litert, or tflite-runtime 2.14 in the legacy venv) and compares. golden.json records the
runtime (backend, version) that made it: replayed by that same runtime, the comparison is a
self-check (GoldenCheck.same_runtime) that can only show the replay reproduces it to golden's
rounding; the one that matters is under another runtime (the Pi environments). This module imports
no TensorFlow (the float path imports it only when run), so the check runs on the Pi side.

Regenerating the golden file: it is rewritten by every export (`oido-convert`); after changing
the model, the data or the runtime's expected behaviour, re-run `oido-convert` and commit
nothing (model/ is generated).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from edge.audio import read_audio
from edge.errors import ManifestError
from edge.framing import waveform_to_patches
from edge.params import DEFAULT_CLASSES, DEFAULT_PARAMS, Params
from edge.pipeline import StreamingPipeline, classify_clip, decide, voting_mean


def row_cosines(reference: npt.ArrayLike, other: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Cosine of each row pair of two [n, d] arrays, float64 [n]: 1 where both rows are zero, 0 where
    only one is (an all-zero embedding is no match for a real one)."""
    reference = np.asarray(reference, np.float64)
    other = np.asarray(other, np.float64)
    reference_norms = np.linalg.norm(reference, axis=1)
    other_norms = np.linalg.norm(other, axis=1)
    norms = reference_norms * other_norms
    both_zero = (reference_norms == 0) & (other_norms == 0)
    return np.where(norms > 0, np.sum(reference * other, axis=1) / np.maximum(norms, 1e-300),
                    np.where(both_zero, 1.0, 0.0))

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
PathArg = Union[str, "os.PathLike[str]"]

GOLDEN_FORMAT = "oido-golden/1"
GOLDEN_NAME = "golden.json"
TEST_DATA = "testData.json"
AUDIO_DIR = "audio"
GOLDEN_TOP_LABELS = 3
"""Labels listed with their probability per clip in golden.json."""
GOLDEN_PROBABILITY_TOLERANCE = 0.2
"""Largest |mean probability - golden| another runtime may give for any label of a clip, for
models with dynamic-range (hybrid) ops: tflite-runtime 2.14 runs those on its builtin kernels,
which quantize activations more coarsely than ai-edge-litert's XNNPACK (measured: same
decisions, mean probabilities up to 0.14 apart)."""
GOLDEN_FLOAT_PROBABILITY_TOLERANCE = 0.01
"""The same for models computing in float (float32, int8_weights): only summation order differs."""
FLOAT_ARITHMETIC = ("float32", "int8_weights")
"""Quantizations whose kernels compute in float in every runtime."""
GOLDEN_TIE_MARGIN = 0.02
"""A clip whose golden top-two mean probabilities are closer than this may flip its decision."""
GOLDEN_HYBRID_TIE_MARGIN = 0.05
"""The same for models with dynamic-range (hybrid) ops: tflite-runtime 2.14's builtin hybrid
kernels move a clip's mean probabilities by up to ~0.03 from ai-edge-litert's (measured on the
104 fold-5 clips: 0.029), so a near-tie that close may come out the other way (one clip of 104,
top two 0.038 apart). Wider drifts still fail on the probability tolerance."""
REGENERATE_HINT = "regenerate it with `oido-convert` (it rewrites model/golden.json with each export)"

TARGETS: dict[str, float] = {
    "yamnet_max_mb": 4.2,
    "head_max_mb": 0.6,
    "cosine_mean_min": 0.995,
    "accuracy_max_clips_lost": 1,
    "default_task_accuracy_min": 31 / 32,
}
"""What quantization may cost, and the default task's own goal; the report says which targets are met (MB = 10^6 bytes).

Accuracy is judged as quantized against float, on all test clips and on the target clips alike:
the quantized model may decide at most `accuracy_max_clips_lost` clips fewer right than the float
one. The float accuracy itself is the head's, not the export's (it is reported, not judged): a
fixed bar such as 31/32 said NO for every head that misses two clips in float, and 8/8 on a small
own-data test set. One clip, not zero: quantization may flip a clip whose top two labels are a
near-tie (GOLDEN_TIE_MARGIN; the tutorial head has one such clip), which is not a broken export.
More would let a real loss through: a whole clip is ~3% of the default task's 32 targets.

`default_task_accuracy_min` is the goal of the default task (the tutorial's four classes, fold 5:
31 of 32 targets, quantized), judged only for a head whose targets are DEFAULT_TASK_LABELS."""
DEFAULT_TASK_LABELS = DEFAULT_CLASSES
"""The default task's targets (edge.params.DEFAULT_CLASSES, which train.prepare prepares)."""
_BYTES_PER_MB = 1e6


# --- timing wrappers: the pipeline sees the edge objects, we see their calls ---


class _RecordingYamnet:
    """Wraps edge.yamnet.YamnetTflite: keeps each embedding and each run's duration."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.embeddings: list[FloatArray] = []
        self.seconds: list[float] = []

    def run(self, patch: FloatArray) -> tuple[FloatArray, FloatArray]:
        start = time.perf_counter()
        embedding, scores = self.model.run(patch)
        self.seconds.append(time.perf_counter() - start)
        self.embeddings.append(np.array(embedding, dtype=np.float32, copy=True))
        return embedding, scores


class _TimedHead:
    """Wraps edge.head.HeadTflite, timing each call."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.seconds: list[float] = []

    def run(self, embeddings: FloatArray) -> FloatArray:
        start = time.perf_counter()
        probabilities = self.model.run(embeddings)
        self.seconds.append(time.perf_counter() - start)
        return probabilities


def _latency(seconds: Sequence[float]) -> dict[str, float]:
    values = np.asarray(seconds, np.float64) * 1e3
    if values.size == 0:
        return {}
    return {
        "median": round(float(np.median(values)), 3),
        "p99": round(float(np.percentile(values, 99)), 3),
        "calls": int(values.size),
    }


def runtime_info(interpreter: Any) -> dict[str, str]:
    """{"backend": "ai_edge_litert" | "tflite_runtime", "version": ...} of a loaded interpreter."""
    from edge.runtime import backend_of

    backend = backend_of(interpreter)
    version = "unknown"
    try:
        from importlib import metadata

        version = metadata.version(backend.replace("_", "-"))
    except Exception:  # noqa: BLE001 - version is informative only
        module = sys.modules.get(backend)
        version = str(getattr(module, "__version__", version))
    return {"backend": backend, "version": version}


# --- the report ---


@dataclass(frozen=True)
class ClipOutcome:
    """One test clip on both paths."""

    file_name: str
    class_name: str
    true_index: int
    float_index: int
    quantized_index: int
    float_mean: tuple[float, ...]
    """Mean Keras-head probability per label over the clip's patches."""
    quantized_mean: tuple[float, ...]
    patches: int
    cosine_min: float
    """Lowest embedding cosine (quantized vs float) among the clip's patches."""

    def to_dict(self, labels: Sequence[str]) -> dict[str, Any]:
        return {
            "fileName": self.file_name,
            "className": self.class_name,
            "float": labels[self.float_index],
            "quantized": labels[self.quantized_index],
            "float_mean": [round(p, 5) for p in self.float_mean],
            "quantized_mean": [round(p, 5) for p in self.quantized_mean],
            "patches": self.patches,
            "cosine_min": round(self.cosine_min, 5),
        }


@dataclass
class ParityReport:
    """Float vs quantized on the test clips: cosine, decisions, accuracy, sizes, latency."""

    labels: list[str]
    background_label: Optional[str]
    clips: list[ClipOutcome]
    cosine: dict[str, float]
    sizes_bytes: dict[str, int]
    latency_ms: dict[str, dict[str, float]]
    quantization: dict[str, str]
    runtime: dict[str, str]
    sha256: dict[str, str]
    targets: dict[str, float] = field(default_factory=lambda: dict(TARGETS))

    # --- figures ---
    def _target_clips(self) -> list[ClipOutcome]:
        if self.background_label is None:
            return list(self.clips)
        return [c for c in self.clips if self.labels[c.true_index] != self.background_label]

    @staticmethod
    def _accuracy(clips: Sequence[ClipOutcome], attribute: str) -> dict[str, Any]:
        correct = sum(int(getattr(c, attribute) == c.true_index) for c in clips)
        return {"correct": correct, "clips": len(clips), "accuracy": round(correct / len(clips), 4) if clips else None}

    def clips_needed(self, float_correct: int) -> int:
        """Fewest right quantized clips that keep within accuracy_max_clips_lost of the float model's."""
        return max(0, float_correct - int(self.targets["accuracy_max_clips_lost"]))

    def is_default_task(self) -> bool:
        """The head's targets (its labels but the background) are the default task's four classes."""
        return tuple(label for label in self.labels if label != self.background_label) == DEFAULT_TASK_LABELS

    def default_task_clips_needed(self, target_clips: int) -> int:
        """Fewest right quantized target clips that meet default_task_accuracy_min (31 of 32)."""
        return math.ceil(self.targets["default_task_accuracy_min"] * target_clips - 1e-9)

    def summary(self) -> dict[str, Any]:
        targets = self._target_clips()
        agree = sum(int(c.float_index == c.quantized_index) for c in self.clips)
        accuracy = {
            "all_clips": {
                "float": self._accuracy(self.clips, "float_index"),
                "quantized": self._accuracy(self.clips, "quantized_index"),
            },
            "target_clips": {
                "float": self._accuracy(targets, "float_index"),
                "quantized": self._accuracy(targets, "quantized_index"),
            },
        }
        float_targets = accuracy["target_clips"]["float"]["correct"]
        quant_targets = accuracy["target_clips"]["quantized"]["correct"]
        quant_all = accuracy["all_clips"]["quantized"]["correct"]
        float_all = accuracy["all_clips"]["float"]["correct"]
        met = {
            "yamnet_size": self.sizes_bytes.get("yamnet", 0) <= self.targets["yamnet_max_mb"] * _BYTES_PER_MB,
            "head_size": self.sizes_bytes.get("head", 0) <= self.targets["head_max_mb"] * _BYTES_PER_MB,
            "cosine_mean": self.cosine.get("mean", 0.0) >= self.targets["cosine_mean_min"],
            "accuracy_all_clips": quant_all >= self.clips_needed(float_all),
            "accuracy_target_clips": quant_targets >= self.clips_needed(float_targets),
        }
        if self.is_default_task():
            met["default_task_accuracy"] = quant_targets >= self.default_task_clips_needed(len(targets))
        return {
            "clips": len(self.clips),
            "target_clips": len(targets),
            "patches": int(sum(c.patches for c in self.clips)),
            "embedding_cosine": self.cosine,
            "decisions_agree": {"agree": agree, "clips": len(self.clips)},
            "accuracy": accuracy,
            "sizes_bytes": self.sizes_bytes,
            "latency_ms": self.latency_ms,
            "quantization": self.quantization,
            "runtime": self.runtime,
            "targets": self.targets,
            "targets_met": met,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "background_label": self.background_label,
            "sha256": self.sha256,
            **self.summary(),
            "per_clip": [c.to_dict(self.labels) for c in self.clips],
        }

    def to_markdown(self) -> str:
        s = self.summary()
        acc = s["accuracy"]

        def frac(entry: Mapping[str, Any]) -> str:
            return f"{entry['correct']}/{entry['clips']}"

        def mb(role: str) -> str:
            return f"{self.sizes_bytes.get(role, 0) / _BYTES_PER_MB:.3f} MB"

        def lat(role: str) -> str:
            values = self.latency_ms.get(role, {})
            return (
                f"{values.get('median', float('nan')):.2f} / {values.get('p99', float('nan')):.2f} ms"
                if values
                else "-"
            )

        ok = {True: "yes", False: "NO"}
        met = s["targets_met"]
        lost = int(self.targets["accuracy_max_clips_lost"])

        def kept(entry: Mapping[str, Any]) -> str:
            """The target of a quantized accuracy: within `lost` clips of the float one."""
            return f"quantized >= {self.clips_needed(entry['correct'])}/{entry['clips']} (float - {lost})"

        rows = [
            (
                "embedding cosine mean / p1 / min",
                f"{self.cosine['mean']:.5f} / {self.cosine['p1']:.5f} / {self.cosine['min']:.5f}",
                f">= {self.targets['cosine_mean_min']}",
                ok[met["cosine_mean"]],
            ),
            ("clip decisions agree", f"{s['decisions_agree']['agree']}/{s['decisions_agree']['clips']}", "", ""),
            (
                "accuracy, all test clips: float / quantized",
                f"{frac(acc['all_clips']['float'])} / {frac(acc['all_clips']['quantized'])}",
                kept(acc["all_clips"]["float"]),
                ok[met["accuracy_all_clips"]],
            ),
            (
                "accuracy, target clips: float / quantized",
                f"{frac(acc['target_clips']['float'])} / {frac(acc['target_clips']['quantized'])}",
                kept(acc["target_clips"]["float"]),
                ok[met["accuracy_target_clips"]],
            ),
            *(
                [(
                    "the default task's goal: target clips right, quantized",
                    frac(acc["target_clips"]["quantized"]),
                    f">= {self.default_task_clips_needed(s['target_clips'])}/{s['target_clips']}",
                    ok[met["default_task_accuracy"]],
                )]
                if "default_task_accuracy" in met
                else []
            ),
            (
                f"yamnet.tflite ({self.quantization.get('yamnet', '?')})",
                mb("yamnet"),
                f"<= {self.targets['yamnet_max_mb']} MB",
                ok[met["yamnet_size"]],
            ),
            (
                f"head.tflite ({self.quantization.get('head', '?')})",
                mb("head"),
                f"<= {self.targets['head_max_mb']} MB",
                ok[met["head_size"]],
            ),
            ("YAMNet latency per patch, median / p99", lat("yamnet"), "", ""),
            ("head latency per patch, median / p99", lat("head"), "", ""),
        ]
        lines = [
            f"Parity on {s['clips']} held-out clips ({s['patches']} patches): TF float vs TF-Lite under "
            f"{self.runtime.get('backend', '?')} {self.runtime.get('version', '')}, 1 thread",
            "",
            "| measure | value | target | met |",
            "|---|---|---|---|",
        ]
        lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
        flips = [c for c in self.clips if c.float_index != c.quantized_index]
        if flips:
            lines += ["", "Clips whose decision differs:"]
            lines += [
                f"- {c.file_name} ({c.class_name}): float {self.labels[c.float_index]}, "
                f"quantized {self.labels[c.quantized_index]}"
                for c in flips
            ]
        return "\n".join(lines)

    def golden_tolerance(self) -> float:
        """How far another runtime's mean probabilities may drift from golden.json's."""
        exact = all(self.quantization.get(role) in FLOAT_ARITHMETIC for role in ("yamnet", "head"))
        return GOLDEN_FLOAT_PROBABILITY_TOLERANCE if exact else GOLDEN_PROBABILITY_TOLERANCE

    def golden_tie_margin(self) -> float:
        """Top-two margin below which another runtime may flip a clip's decision."""
        exact = all(self.quantization.get(role) in FLOAT_ARITHMETIC for role in ("yamnet", "head"))
        return GOLDEN_TIE_MARGIN if exact else GOLDEN_HYBRID_TIE_MARGIN

    def golden(self) -> dict[str, Any]:
        """golden.json: the quantized decision and probabilities of every test clip."""
        clips = []
        for clip in self.clips:
            order = np.argsort(clip.quantized_mean)[::-1][:GOLDEN_TOP_LABELS]
            clips.append(
                {
                    "fileName": clip.file_name,
                    "className": clip.class_name,
                    "decision": self.labels[clip.quantized_index],
                    "label_index": clip.quantized_index,
                    "mean_probabilities": [round(p, 6) for p in clip.quantized_mean],
                    "top": [{"label": self.labels[i], "probability": round(clip.quantized_mean[i], 6)} for i in order],
                }
            )
        return {
            "format": GOLDEN_FORMAT,
            "regenerate": REGENERATE_HINT,
            "labels": self.labels,
            "yamnet_sha256": self.sha256.get("yamnet", ""),
            "head_sha256": self.sha256.get("head", ""),
            "runtime": self.runtime,
            "tolerance": {"probability": self.golden_tolerance(), "tie_margin": self.golden_tie_margin()},
            "clips": clips,
        }


def _clip_path(data_dir: Path, file_name: str) -> Path:
    return data_dir / AUDIO_DIR / file_name


def evaluate_parity(
    *,
    yamnet_tf: Any,
    keras_head: Any,
    model_dir: PathArg,
    yamnet_file: Any,
    head_file: Any,
    clips: Sequence[Any],
    data_dir: PathArg,
    labels: Sequence[str],
    background_label: Optional[str],
    params: Params = DEFAULT_PARAMS,
    num_threads: int = 1,
    progress: bool = False,
) -> ParityReport:
    """Run both paths over `clips` (convert.export.Clip entries) and compare.

    yamnet_tf: train.yamnet.YamnetTF; keras_head: train.head.TrainedHead;
    yamnet_file / head_file: the manifest entries (edge.manifest.ModelFile) of the files in model_dir.
    """
    from edge.head import HeadTflite
    from edge.manifest import HEAD_OUTPUT_ROLE
    from edge.yamnet import YamnetTflite

    model_dir = Path(model_dir)
    data_dir = Path(data_dir)
    yamnet_path = model_dir / yamnet_file.file
    head_path = model_dir / head_file.file
    yamnet = _RecordingYamnet(
        YamnetTflite(yamnet_path, outputs=yamnet_file.outputs, num_threads=num_threads, params=params)
    )
    head = _TimedHead(
        HeadTflite(
            head_path, output_index=head_file.outputs[HEAD_OUTPUT_ROLE].index, num_threads=num_threads, params=params
        )
    )
    pipeline = StreamingPipeline(yamnet, head, labels=labels, params=params)

    waveforms = [read_audio(_clip_path(data_dir, c.file_name), target_rate_hz=params.sample_rate_hz) for c in clips]
    patches = [waveform_to_patches(w, params=params) for w in waveforms]
    sizes = [len(p) for p in patches]
    float_embeddings = (
        yamnet_tf.embed_patches(np.concatenate(patches), progress=progress)[0]
        if patches
        else np.zeros((0, params.embedding_size), np.float32)
    )
    per_clip_float = np.split(float_embeddings, np.cumsum(sizes)[:-1]) if sizes else []

    iterator: Any = zip(clips, waveforms, per_clip_float)
    if progress and sys.stderr.isatty():
        from tqdm import tqdm

        iterator = tqdm(iterator, total=len(clips), desc="parity", unit="clip")
    outcomes: list[ClipOutcome] = []
    all_cosines: list[FloatArray] = []
    for clip, waveform, reference in iterator:
        yamnet.embeddings.clear()
        result = classify_clip(pipeline, waveform)
        quantized = np.stack(yamnet.embeddings)
        if quantized.shape != reference.shape:
            raise ValueError(
                f"{_clip_path(data_dir, clip.file_name)}: the streaming pipeline made {len(quantized)} patches, batch "
                f"framing {len(reference)}; edge.framing's streaming and batch framers disagree"
            )
        cosines = row_cosines(reference, quantized)
        all_cosines.append(cosines)
        float_probabilities = keras_head.predict(reference)
        outcomes.append(
            ClipOutcome(
                file_name=clip.file_name,
                class_name=clip.class_name,
                true_index=int(clip.class_number),
                float_index=decide(float_probabilities, result.audible),
                quantized_index=int(result.label_index),
                float_mean=tuple(float(p) for p in voting_mean(float_probabilities, result.audible)),
                quantized_mean=tuple(float(p) for p in voting_mean(result.probabilities, result.audible)),
                patches=len(reference),
                cosine_min=float(cosines.min()),
            )
        )
    cosines = np.concatenate(all_cosines) if all_cosines else np.ones(1)
    return ParityReport(
        labels=list(labels),
        background_label=background_label,
        clips=outcomes,
        cosine={
            "mean": round(float(cosines.mean()), 6),
            "p1": round(float(np.percentile(cosines, 1)), 6),
            "min": round(float(cosines.min()), 6),
        },
        sizes_bytes={"yamnet": yamnet_path.stat().st_size, "head": head_path.stat().st_size},
        latency_ms={"yamnet": _latency(yamnet.seconds), "head": _latency(head.seconds)},
        quantization={"yamnet": yamnet_file.quantization, "head": head_file.quantization},
        runtime=runtime_info(yamnet.model.interpreter),
        sha256={"yamnet": yamnet_file.sha256, "head": head_file.sha256},
    )


# --- golden check (no TensorFlow) ---


@dataclass(frozen=True)
class GoldenClipCheck:
    """One clip replayed in the current runtime against golden.json."""

    file_name: str
    expected: str
    got: str
    max_probability_difference: float
    golden_margin: float
    tolerance: float = GOLDEN_PROBABILITY_TOLERANCE
    """Largest max_probability_difference accepted (from golden.json)."""
    tie_margin: float = GOLDEN_TIE_MARGIN
    """Golden top-two margin below which the decision may differ (from golden.json)."""

    @property
    def decision_ok(self) -> bool:
        return self.expected == self.got or self.golden_margin < self.tie_margin

    @property
    def probabilities_ok(self) -> bool:
        return self.max_probability_difference <= self.tolerance

    @property
    def ok(self) -> bool:
        return self.decision_ok and self.probabilities_ok


@dataclass(frozen=True)
class GoldenCheck:
    """Every golden clip replayed; `failures` lists the ones that disagree."""

    runtime: dict[str, str]
    golden_runtime: dict[str, str]
    clips: tuple[GoldenClipCheck, ...]

    @property
    def failures(self) -> list[GoldenClipCheck]:
        return [c for c in self.clips if not c.ok]

    @property
    def decisions_equal(self) -> int:
        return sum(int(c.expected == c.got) for c in self.clips)

    @property
    def same_runtime(self) -> bool:
        """The runtime (backend and version) that made golden.json replays it. The comparison then
        checks the export against itself (same code, same kernels): it shows the replay reproduces
        golden.json, not that another runtime agrees; that is what the Pi environments check."""
        return self.runtime == self.golden_runtime

    @property
    def largest_difference(self) -> float:
        """Largest |mean probability - golden| over every clip and label."""
        return max((c.max_probability_difference for c in self.clips), default=0.0)

    def describe(self) -> str:
        lines = [
            f"{self.decisions_equal}/{len(self.clips)} decisions equal to golden.json "
            f"({self.golden_runtime.get('backend')} {self.golden_runtime.get('version')}) under "
            f"{self.runtime.get('backend')} {self.runtime.get('version')}"
            f"{' (the runtime that made it: a self-check)' if self.same_runtime else ''}; "
            f"largest probability difference {self.largest_difference:.4f}"
        ]
        lines += [
            f"  {c.file_name}: golden {c.expected}, got {c.got}, "
            f"probability difference {c.max_probability_difference:.4f}"
            for c in self.failures
        ]
        return "\n".join(lines)


def read_golden(model_dir: PathArg) -> dict[str, Any]:
    """model_dir/golden.json; ManifestError naming it if missing or malformed."""
    path = Path(model_dir) / GOLDEN_NAME
    if not path.is_file():
        raise ManifestError(f"{path}: not found; {REGENERATE_HINT}", path=path)
    try:
        golden = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ManifestError(f"{path}: not valid JSON ({error}); {REGENERATE_HINT}", path=path) from None
    if (
        not isinstance(golden, dict)
        or golden.get("format") != GOLDEN_FORMAT
        or not isinstance(golden.get("clips"), list)
    ):
        raise ManifestError(f"{path}: not an {GOLDEN_FORMAT} file; {REGENERATE_HINT}", path=path)
    return golden


def check_golden(
    model_dir: PathArg,
    data_dir: PathArg,
    *,
    backend: Optional[str] = None,
    limit: Optional[int] = None,
) -> GoldenCheck:
    """Replay golden.json's clips through the edge pipeline in the installed runtime.

    Raises ManifestError naming the file when golden.json belongs to other model files,
    AudioError naming a missing clip.
    """
    from edge.head import HeadTflite
    from edge.manifest import load_manifest
    from edge.yamnet import YamnetTflite

    model_dir = Path(model_dir)
    data_dir = Path(data_dir)
    golden = read_golden(model_dir)
    manifest = load_manifest(model_dir)
    golden_path = model_dir / GOLDEN_NAME
    if (golden.get("yamnet_sha256"), golden.get("head_sha256")) != (manifest.yamnet.sha256, manifest.head.sha256):
        raise ManifestError(
            f"{golden_path}: made for other model files than {manifest.path} lists; {REGENERATE_HINT}", path=golden_path
        )
    if list(golden.get("labels", [])) != list(manifest.labels):
        raise ManifestError(f"{golden_path}: labels differ from {manifest.path}; {REGENERATE_HINT}", path=golden_path)
    yamnet = YamnetTflite.from_manifest(manifest, backend=backend)
    head = HeadTflite.from_manifest(manifest, backend=backend)
    pipeline = StreamingPipeline(yamnet, head, labels=manifest.labels, params=manifest.params)
    tolerance = float(golden.get("tolerance", {}).get("probability", GOLDEN_PROBABILITY_TOLERANCE))
    tie_margin = float(golden.get("tolerance", {}).get("tie_margin", GOLDEN_TIE_MARGIN))
    checks = []
    if not golden.get("clips"):
        raise ManifestError(f"{golden_path} holds no clips, so it checks nothing; {REGENERATE_HINT}", path=golden_path)
    for entry in golden["clips"][:limit]:
        waveform = read_audio(_clip_path(data_dir, entry["fileName"]), target_rate_hz=manifest.params.sample_rate_hz)
        result = classify_clip(pipeline, waveform)
        mean = voting_mean(result.probabilities, result.audible)
        expected_mean = np.asarray(entry["mean_probabilities"], np.float64)
        ordered = np.sort(expected_mean)[::-1]
        margin = float(ordered[0] - ordered[1]) if len(ordered) > 1 else 1.0
        checks.append(
            GoldenClipCheck(
                file_name=entry["fileName"],
                expected=entry["decision"],
                got=result.label,
                max_probability_difference=float(np.max(np.abs(mean - expected_mean))),
                golden_margin=margin,
                tolerance=tolerance,
                tie_margin=tie_margin,
            )
        )
    return GoldenCheck(
        runtime=runtime_info(yamnet.interpreter),
        golden_runtime=dict(golden.get("runtime", {})),
        clips=tuple(checks),
    )
