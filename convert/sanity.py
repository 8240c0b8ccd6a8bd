"""Checks every exported .tflite must pass BEFORE it replaces anything in model/.

YAMNet (through the edge's own `edge.yamnet.YamnetTflite`, so what is checked is what the Pi
loads): its top AudioSet class must be "Silence" for silence, a beep/sine class for a 1 kHz
tone and "Speech" for speech synthesized with espeak-ng; it must not be a weightless stub
(file size, outputs that change with the input); it must output "embeddings", "scores" and
"log_mel".

The head (through `edge.head.HeadTflite`): probabilities in [0, 1] summing to 1, and the same
clip decisions (`edge.pipeline.decide`) as the Keras head on real YAMNet embeddings.

Only numpy, soundfile/soxr (for the speech probe) and the edge runtime: no TensorFlow.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from convert.errors import ConvertError
from edge.framing import waveform_to_patches
from edge.params import DEFAULT_PARAMS, Params
from edge.pipeline import decide

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

MIN_YAMNET_BYTES = 3_000_000
"""A YAMNet file smaller than this cannot hold its 3.7 M int8 weights: a weightless stub."""
SILENCE_CLASS = "Silence"
SPEECH_CLASS = "Speech"
TONE_CLASSES = ("Beep, bleep", "Sine wave", "Tuning fork", "Dial tone", "Sidetone", "Chirp tone")
"""AudioSet classes a pure 1 kHz tone may legitimately top (the "beep / sine" family)."""
TONE_HZ = 1000.0
"""Frequency of the tone probe."""
TONE_AMPLITUDE = 0.5
"""Peak amplitude of the tone probe (full scale is 1)."""
PROBE_SECONDS = 2.0
"""Length of the silence and tone probes."""
SPEECH_TEXT = "Hello. This is a short test of the sound recognizer. " "The quick brown fox jumps over the lazy dog."
"""What espeak-ng says for the speech probe."""
ESPEAK = "espeak-ng"
MIN_OUTPUT_CHANGE = 1e-3
"""Smallest max-abs difference between two probes' embeddings of a working model."""
PROBABILITY_SUM_TOLERANCE = 1e-3
"""|sum(probabilities) - 1| allowed for a float-output head (plus the output step if int8)."""
MIN_PATCH_AGREEMENT = 0.95
"""Fraction of patches whose argmax the exported head must share with the Keras head."""


@dataclass(frozen=True)
class ProbeResult:
    """What a YAMNet file said about one probe sound."""

    name: str
    top_class: str
    top_score: float
    expected: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return self.top_class in self.expected

    def to_dict(self) -> dict[str, Any]:
        return {
            "top_class": self.top_class,
            "top_score": round(self.top_score, 4),
            "expected": list(self.expected),
            "passed": self.passed,
        }


@dataclass(frozen=True)
class SanityReport:
    """The checks one exported file passed (raised ConvertError otherwise)."""

    file: str
    size_bytes: int
    checks: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "size_bytes": self.size_bytes, **self.checks}


# --- probes ------------------------------------------------------------------------


def read_class_map(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Display names of YAMNet's classes in score order, from yamnet_class_map.csv."""
    from train.yamnet import read_class_map as read

    try:
        return read(path)
    except ValueError as error:
        raise ConvertError(str(error), path=Path(path)) from None


def find_class_map(
    weights_path: str | os.PathLike[str] | None,
    *,
    explicit: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """yamnet_class_map.csv: `explicit`, else beside the weights file, else where train looks
    for the weights (train.yamnet.class_map_candidates: ``assets_dir``, the assets, the user cache)."""
    from train.yamnet import CLASS_MAP_FILE_NAME, class_map_candidates

    candidates = [Path(explicit)] if explicit is not None else class_map_candidates(weights_path, assets_dir=assets_dir)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise ConvertError(
        f"YAMNet class map not found (looked at {[str(c) for c in candidates]}); pass --class-map "
        f"PATH to {CLASS_MAP_FILE_NAME}",
        path=candidates[0] if candidates else None,
    )


def tone(params: Params = DEFAULT_PARAMS) -> FloatArray:
    """float32 [n]: a TONE_HZ sine of TONE_AMPLITUDE, PROBE_SECONDS long, at params.sample_rate_hz."""
    count = round(PROBE_SECONDS * params.sample_rate_hz)
    time_s = np.arange(count, dtype=np.float64) / params.sample_rate_hz
    return (TONE_AMPLITUDE * np.sin(2 * math.pi * TONE_HZ * time_s)).astype(np.float32)


def silence(params: Params = DEFAULT_PARAMS) -> FloatArray:
    """float32 [n] of zeros, PROBE_SECONDS long."""
    return np.zeros(round(PROBE_SECONDS * params.sample_rate_hz), np.float32)


def synthesized_speech(params: Params = DEFAULT_PARAMS, *, text: str = SPEECH_TEXT) -> FloatArray:
    """float32 [n]: espeak-ng saying `text`, resampled to params.sample_rate_hz with soxr.

    Raises ConvertError with an install hint when espeak-ng is missing or fails.
    """
    executable = shutil.which(ESPEAK)
    if executable is None:
        raise ConvertError(f"{ESPEAK} not found: the export's speech check needs it (apt-get install espeak-ng)")
    import soundfile
    import soxr

    with tempfile.TemporaryDirectory(prefix="oido-speech-") as folder:
        wav_path = Path(folder) / "speech.wav"
        try:
            subprocess.run([executable, "-w", str(wav_path), text], check=True, capture_output=True, timeout=60)
            waveform, rate_hz = soundfile.read(wav_path, dtype="float32", always_2d=True)
        except (OSError, subprocess.SubprocessError, RuntimeError) as error:
            raise ConvertError(f"{ESPEAK} could not synthesize the speech probe ({error})") from None
    mono = waveform.mean(axis=1)
    if rate_hz != params.sample_rate_hz:
        mono = soxr.resample(mono, rate_hz, params.sample_rate_hz, quality="VHQ")
    return np.asarray(mono, dtype=np.float32)


def probe_sounds(params: Params = DEFAULT_PARAMS) -> dict[str, tuple[FloatArray, tuple[str, ...]]]:
    """name -> (waveform float32 [n] at params.sample_rate_hz, YAMNet classes that may top it)."""
    return {
        "silence": (silence(params), (SILENCE_CLASS,)),
        "tone_1khz": (tone(params), TONE_CLASSES),
        "speech": (synthesized_speech(params), (SPEECH_CLASS,)),
    }


# --- YAMNet ------------------------------------------------------------------------


def check_yamnet_file(
    path: str | os.PathLike[str],
    *,
    class_names: Sequence[str],
    probes: Mapping[str, tuple[FloatArray, tuple[str, ...]]],
    params: Params = DEFAULT_PARAMS,
    target_name: str = "yamnet.tflite",
    min_bytes: int = MIN_YAMNET_BYTES,
) -> SanityReport:
    """Check an exported YAMNet file; raises ConvertError naming `target_name` if it fails.

    probes: from `probe_sounds`. class_names: YAMNet's 521 display names (read_class_map).
    """
    from edge.errors import ModelError
    from edge.yamnet import ROLES, YamnetTflite

    path = Path(path)
    size = path.stat().st_size if path.is_file() else 0

    def fail(what: str) -> ConvertError:
        return ConvertError(f"{target_name} (exported to {path}) failed its check: {what}; not written", path=path)

    if size < min_bytes:
        raise fail(f"{size} bytes is below {min_bytes}: the weights are missing (left as variables?)")
    if len(class_names) != params.yamnet_classes:
        raise ConvertError(f"the class map has {len(class_names)} names, YAMNet scores {params.yamnet_classes}")
    try:
        model = YamnetTflite(path, params=params)
    except ModelError as error:
        raise fail(str(error)) from None
    output_names = sorted(str(detail["name"]) for detail in model.interpreter.get_output_details())
    missing = [role for role in ROLES if role not in output_names]
    if missing or model.embedding_is_internal:
        raise fail(f"outputs {missing or ['embeddings']} are not named outputs of the model (found {output_names})")

    results: dict[str, ProbeResult] = {}
    embeddings: dict[str, FloatArray] = {}
    for name, (waveform, expected) in probes.items():
        patches = waveform_to_patches(waveform, params=params)
        patch_embeddings, scores = model.embed_patches(patches)
        if not (np.all(np.isfinite(patch_embeddings)) and np.all(np.isfinite(scores))):
            raise fail(f"non-finite outputs for the {name} probe")
        mean_scores = scores.mean(axis=0)
        top = int(np.argmax(mean_scores))
        results[name] = ProbeResult(name, class_names[top], float(mean_scores[top]), tuple(expected))
        embeddings[name] = patch_embeddings.mean(axis=0)
        logger.debug("%s probe: %s %.3f", name, class_names[top], mean_scores[top])
    failed = [r for r in results.values() if not r.passed]
    if failed:
        raise fail(
            "; ".join(
                f"{r.name} -> top class {r.top_class!r} ({r.top_score:.2f}), expected one of {list(r.expected)}"
                for r in failed
            )
        )
    names_list = list(embeddings)
    smallest = min(
        (
            float(np.max(np.abs(embeddings[a] - embeddings[b])))
            for i, a in enumerate(names_list)
            for b in names_list[i + 1 :]
        ),
        default=math.inf,
    )
    if smallest < MIN_OUTPUT_CHANGE:
        raise fail(f"embeddings barely change between probes (max difference {smallest:.2e})")
    return SanityReport(
        file=target_name,
        size_bytes=size,
        checks={
            "probes": {name: result.to_dict() for name, result in results.items()},
            "min_probe_embedding_difference": round(smallest, 4),
            "outputs": output_names,
        },
    )


# --- head ----------------------------------------------------------------------------


def check_head_file(
    path: str | os.PathLike[str],
    *,
    clip_embeddings: Sequence[FloatArray],
    keras_probabilities: Sequence[FloatArray],
    labels: Sequence[str],
    params: Params = DEFAULT_PARAMS,
    target_name: str = "head.tflite",
) -> SanityReport:
    """Check an exported head against the Keras head on real embeddings.

    clip_embeddings: per clip float32 [p_i, embedding_size] (YAMNet float embeddings);
    keras_probabilities: the Keras head's float32 [p_i, num_labels] for the same patches.
    Raises ConvertError naming `target_name` if it fails.
    """
    from edge.errors import ModelError
    from edge.head import HeadTflite

    path = Path(path)

    def fail(what: str) -> ConvertError:
        return ConvertError(f"{target_name} (exported to {path}) failed its check: {what}; not written", path=path)

    try:
        head = HeadTflite(path, params=params)
    except ModelError as error:
        raise fail(str(error)) from None
    if head.num_labels != len(labels):
        raise fail(f"it outputs {head.num_labels} probabilities for {len(labels)} labels")
    if not clip_embeddings:
        raise ConvertError("no embeddings to check the head on: the data set has no training clips")
    (output,) = [d for d in head.interpreter.get_output_details()]
    step = float(output["quantization"][0]) if np.dtype(output["dtype"]).kind in "iu" else 0.0
    tolerance = PROBABILITY_SUM_TOLERANCE + len(labels) * step
    agree_clips = 0
    agree_patches = 0
    total_patches = 0
    worst_sum = 0.0
    max_difference = 0.0
    for embeddings, expected in zip(clip_embeddings, keras_probabilities):
        probabilities = head.run(embeddings)
        if (
            not np.all(np.isfinite(probabilities))
            or probabilities.min() < -tolerance
            or probabilities.max() > 1 + tolerance
        ):
            raise fail("probabilities outside [0, 1]")
        worst_sum = max(worst_sum, float(np.max(np.abs(probabilities.sum(axis=1) - 1.0))))
        max_difference = max(max_difference, float(np.max(np.abs(probabilities - expected))))
        agree_clips += int(decide(probabilities) == decide(expected))
        agree_patches += int(np.sum(np.argmax(probabilities, axis=1) == np.argmax(expected, axis=1)))
        total_patches += len(embeddings)
    if worst_sum > tolerance:
        raise fail(f"probabilities sum to 1 +- {worst_sum:.4f} (allowed {tolerance:.4f})")
    if agree_clips != len(clip_embeddings):
        raise fail(f"clip decisions agree with the Keras head on {agree_clips}/{len(clip_embeddings)} clips only")
    patch_agreement = agree_patches / max(1, total_patches)
    if patch_agreement < MIN_PATCH_AGREEMENT:
        raise fail(f"patch decisions agree with the Keras head on {patch_agreement:.1%} of patches only")
    return SanityReport(
        file=target_name,
        size_bytes=path.stat().st_size,
        checks={
            "clips": len(clip_embeddings),
            "clip_decisions_agree": agree_clips,
            "patch_decision_agreement": round(patch_agreement, 4),
            "max_probability_difference": round(max_difference, 4),
            "max_sum_error": round(worst_sum, 5),
        },
    )
