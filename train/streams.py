"""Evaluation streams: held-out clips laid end to end, scored at the level of EVENTS.

A device that listens all day is judged by the events it reports, not by clip accuracy. This
module builds long, deterministic streams from held-out clips -- target clips at known offsets
among non-target sounds, optionally mixed over a background at a chosen SNR -- runs them
through the edge's own pipeline and detector, and scores the events:

  * per class: event recall, onset-to-detection latency (median, max),
  * false events per hour of non-target sound,
  * a threshold sweep (false events/hour vs missed events).

The stream is described by a JSON spec (`StreamSpec`, format "oido-stream/1"): which file plays
where, at which gain, and where each target's sound begins (its onset). `render_stream` turns
a spec into audio, so a stream can be replayed on the device (`oido-edge replay stream.wav`).

YAMNet is the slow part and a stream's patch embeddings depend only on its audio, so
`embed_stream` computes them once per (spec, YAMNet weights) and caches them; heads and
detectors are then re-run on the cached patches. `check_against_pipeline` proves once per
evaluation that this shortcut gives the same probabilities and events as feeding the stream
through `edge.pipeline.StreamingPipeline` block by block.

Timing of a detection: an event is reported when the patch that completes its onset rule has
been heard, i.e. at the END of that patch (patch start + 0.975 s); latency is that time minus
the target's onset (its first frame within `onset_below_peak_db` of the clip's loudest frame).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from edge.detect import Detector, DetectorConfig, Event, threshold_text
from edge.params import DEFAULT_PARAMS, Params
from edge.pipeline import PatchResult, StreamingPipeline
from train.embeddings import SILENCE_DBFS, cache_folder, patch_rms_dbfs

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

STREAM_FORMAT = "oido-stream/1"
DEFAULT_STREAM_CACHE = Path("data/cache/streams")

Role = Literal["target", "nontarget", "bed"]
ROLES: tuple[str, ...] = ("target", "nontarget", "bed")


class StreamError(ValueError):
    """A stream spec is malformed or its audio changed; the message names the file and the fix."""


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class StreamOptions:
    """How a stream is laid out and how its events are scored."""

    min_gap_seconds: float = 0.0
    """Shortest silence between consecutive clips."""
    max_gap_seconds: float = 0.5
    """Longest silence between consecutive clips; gaps are drawn uniformly, so no clip starts on
    the 0.48 s patch grid by construction."""
    tail_seconds: float = 2.0
    """Silence after the last clip, so a last event can finish."""
    onset_frame_seconds: float = 0.025
    """Frame length used to find a clip's active span."""
    onset_below_peak_db: float = 20.0
    """A frame is active when its level is within this many dB of the clip's loudest frame; a
    target's onset is its first active frame (20 dB: a recording's noise floor or a faint
    prelude before the sound itself does not count as its onset)."""
    latency_limit_seconds: float = 1.5
    """A target counts as detected in time when its event is reported within this long of onset."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_gap_seconds <= self.max_gap_seconds:
            raise ValueError(
                f"need 0 <= min_gap_seconds <= max_gap_seconds, got {self.min_gap_seconds}, {self.max_gap_seconds}"
            )
        for name in ("tail_seconds", "onset_frame_seconds", "onset_below_peak_db", "latency_limit_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"StreamOptions.{name} must not be negative, got {getattr(self, name)}")


DEFAULT_STREAM_OPTIONS = StreamOptions()


# --------------------------------------------------------------------------- spec


@dataclass(frozen=True)
class SourceClip:
    """A clip available for a stream."""

    path: Path
    role: Role
    """"target" (a class the head detects), "nontarget" (anything else) or "bed" (mixed under targets)."""
    label: str | None
    """Head label of a target; None otherwise."""
    category: str
    """Finer name for reports and leave-one-class-out (ESC-50 category, or the label)."""
    fold: int | None = None


@dataclass(frozen=True)
class StreamClip:
    """One clip placed in a stream. Sample positions are stream samples at the spec's rate."""

    file: str
    """Audio file (absolute path)."""
    sha256: str
    """sha256 of the file's bytes when the spec was built (checked when rendering)."""
    role: Role
    label: str | None
    category: str
    start_sample: int
    """Where the clip's first sample plays."""
    num_samples: int
    """How many of its samples play (a bed is cut to its target's length)."""
    gain_db: float
    """Gain applied to the clip."""
    onset_sample: int
    """Stream sample where its sound begins (first active frame)."""
    active_end_sample: int
    """Stream sample where its sound ends (end of the last active frame)."""

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.num_samples

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Any, *, where: str) -> "StreamClip":
        names = {f.name for f in fields(cls)}
        if not isinstance(values, dict) or set(values) != names:
            raise StreamError(f"{where}: a clip needs exactly the keys {sorted(names)}, got {values!r}")
        if values["role"] not in ROLES:
            raise StreamError(f"{where}: clip role {values['role']!r} is not one of {list(ROLES)}")
        return cls(**values)


@dataclass(frozen=True)
class StreamSpec:
    """A whole stream: its clips, length and how it was built (JSON, replayable)."""

    sample_rate_hz: int
    num_samples: int
    clips: tuple[StreamClip, ...]
    seed: int
    recipe: Mapping[str, Any] = field(default_factory=dict)
    """How it was built (sources, gaps, background SNR), for the record."""
    format: str = STREAM_FORMAT

    @property
    def seconds(self) -> float:
        return self.num_samples / self.sample_rate_hz

    @property
    def targets(self) -> tuple[StreamClip, ...]:
        return tuple(c for c in self.clips if c.role == "target")

    @property
    def nontargets(self) -> tuple[StreamClip, ...]:
        return tuple(c for c in self.clips if c.role == "nontarget")

    @property
    def nontarget_seconds(self) -> float:
        """Seconds of non-target clips (the denominator of false events per hour)."""
        return sum(c.num_samples for c in self.nontargets) / self.sample_rate_hz

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "sample_rate_hz": self.sample_rate_hz,
            "num_samples": self.num_samples,
            "seconds": round(self.seconds, 3),
            "seed": self.seed,
            "recipe": dict(self.recipe),
            "clips": [c.to_dict() for c in self.clips],
        }

    def sha256(self) -> str:
        """Hash of what fixes the audio (rate, length, and each clip's file, bytes, place and gain).

        Keys the stream-embedding cache; labels, onsets and the recipe do not change it.
        """
        audio = [
            [c.file, c.sha256, c.start_sample, c.num_samples, c.gain_db]
            for c in sorted(self.clips, key=lambda c: (c.start_sample, c.file))
        ]
        document = {"sample_rate_hz": self.sample_rate_hz, "num_samples": self.num_samples, "clips": audio}
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the spec as JSON atomically."""
        return _write_text_atomic(Path(path), json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def from_dict(cls, values: Any, *, where: str = "stream spec") -> "StreamSpec":
        if not isinstance(values, dict) or values.get("format") != STREAM_FORMAT:
            raise StreamError(f"{where}: not an {STREAM_FORMAT} stream spec; build one with oido-train evaluate-stream")
        try:
            clips = tuple(StreamClip.from_dict(c, where=where) for c in values["clips"])
            spec = cls(
                sample_rate_hz=int(values["sample_rate_hz"]),
                num_samples=int(values["num_samples"]),
                clips=clips,
                seed=int(values["seed"]),
                recipe=dict(values.get("recipe") or {}),
            )
        except (KeyError, TypeError) as error:
            raise StreamError(f"{where}: missing or bad field ({error}); rebuild the stream") from None
        return spec

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "StreamSpec":
        source = Path(path)
        try:
            values = json.loads(source.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StreamError(f"{source}: stream spec not found; check the path") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise StreamError(f"{source}: not valid JSON ({error}); rebuild the stream") from None
        return cls.from_dict(values, where=str(source))


# --------------------------------------------------------------------------- audio helpers


def _write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staged = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(staged, path)
    except BaseException:
        Path(staged).unlink(missing_ok=True)
        raise
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class AudioLibrary:
    """Reads clips once (16 kHz mono float32) and remembers them with their hashes."""

    def __init__(self, *, params: Params = DEFAULT_PARAMS) -> None:
        self.params = params
        self._audio: dict[str, FloatArray] = {}
        self._sha: dict[str, str] = {}

    def waveform(self, path: str | os.PathLike[str]) -> FloatArray:
        """float32 [n] in [-1, 1] at params.sample_rate_hz."""
        from edge.audio import read_audio

        key = str(Path(path).resolve())
        if key not in self._audio:
            self._audio[key] = read_audio(key, target_rate_hz=self.params.sample_rate_hz)
        return self._audio[key]

    def sha256(self, path: str | os.PathLike[str]) -> str:
        key = str(Path(path).resolve())
        if key not in self._sha:
            self._sha[key] = file_sha256(key)
        return self._sha[key]


def frame_levels_db(waveform: npt.ArrayLike, *, frame_samples: int) -> FloatArray:
    """Level of consecutive frames: float32 [ceil(n / frame_samples)] in dB full scale."""
    samples = np.asarray(waveform, dtype=np.float64)
    if frame_samples <= 0:
        raise ValueError(f"frame_samples must be positive, got {frame_samples}")
    padded = np.zeros(math.ceil(len(samples) / frame_samples) * frame_samples)
    padded[: len(samples)] = samples
    power = np.mean(padded.reshape(-1, frame_samples) ** 2, axis=1)
    with np.errstate(divide="ignore"):
        return np.where(power > 0, 10.0 * np.log10(np.maximum(power, 1e-30)), SILENCE_DBFS).astype(np.float32)


def active_span(
    waveform: npt.ArrayLike, *, options: StreamOptions = DEFAULT_STREAM_OPTIONS, params: Params = DEFAULT_PARAMS
) -> tuple[int, int]:
    """(first, end) sample of a clip's sound: its frames within onset_below_peak_db of the loudest.

    An all-silent clip gives (0, 0).
    """
    samples = np.asarray(waveform, dtype=np.float32)
    frame = max(1, round(options.onset_frame_seconds * params.sample_rate_hz))
    levels = frame_levels_db(samples, frame_samples=frame)
    if len(levels) == 0 or levels.max() <= SILENCE_DBFS:
        return 0, 0
    active = np.flatnonzero(levels >= levels.max() - options.onset_below_peak_db)
    return int(active[0]) * frame, min(len(samples), (int(active[-1]) + 1) * frame)


def active_power(
    waveform: npt.ArrayLike, *, options: StreamOptions = DEFAULT_STREAM_OPTIONS, params: Params = DEFAULT_PARAMS
) -> float:
    """Mean power of a clip's active frames (linear, full scale = 1); 0 for silence."""
    samples = np.asarray(waveform, dtype=np.float64)
    frame = max(1, round(options.onset_frame_seconds * params.sample_rate_hz))
    levels = frame_levels_db(samples, frame_samples=frame)
    if len(levels) == 0 or levels.max() <= SILENCE_DBFS:
        return 0.0
    keep = levels >= levels.max() - options.onset_below_peak_db
    return float(np.mean(10.0 ** (levels[keep].astype(np.float64) / 10.0)))


# --------------------------------------------------------------------------- building


def build_stream(
    targets: Sequence[SourceClip],
    nontargets: Sequence[SourceClip],
    *,
    seed: int = 0,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    params: Params = DEFAULT_PARAMS,
    library: AudioLibrary | None = None,
    recipe: Mapping[str, Any] | None = None,
) -> StreamSpec:
    """Lay clips end to end: non-targets in a seeded random order, targets interleaved among them.

    Each target goes into its own gap between non-target clips while there are enough gaps (so
    every target is surrounded by other sounds); every clip is preceded by a random silence of
    min_gap..max_gap seconds, so onsets do not fall on the patch grid. Deterministic for a seed.
    """
    if not targets and not nontargets:
        raise ValueError("a stream needs at least one clip; check the folds and classes selected")
    library = library or AudioLibrary(params=params)
    rng = np.random.default_rng(seed)
    rate = params.sample_rate_hz
    order_nt = [nontargets[i] for i in rng.permutation(len(nontargets))]
    order_t = [targets[i] for i in rng.permutation(len(targets))]
    slots_count = len(order_nt) + 1
    if len(order_t) <= slots_count:
        slots = sorted(rng.choice(slots_count, size=len(order_t), replace=False).tolist())
    else:  # more targets than gaps: spread them, several per gap
        slots = sorted(rng.integers(0, slots_count, size=len(order_t)).tolist())
    sequence: list[SourceClip] = []
    pending = list(zip(slots, order_t))
    for position in range(slots_count):
        while pending and pending[0][0] == position:
            sequence.append(pending.pop(0)[1])
        if position < len(order_nt):
            sequence.append(order_nt[position])

    clips: list[StreamClip] = []
    cursor = 0
    for source in sequence:
        gap = rng.uniform(options.min_gap_seconds, options.max_gap_seconds)
        start = cursor + round(gap * rate)
        waveform = library.waveform(source.path)
        first, end = active_span(waveform, options=options, params=params)
        clips.append(
            StreamClip(
                file=str(Path(source.path).resolve()),
                sha256=library.sha256(source.path),
                role=source.role,
                label=source.label,
                category=source.category,
                start_sample=start,
                num_samples=len(waveform),
                gain_db=0.0,
                onset_sample=start + first,
                active_end_sample=start + end,
            )
        )
        cursor = start + len(waveform)
    total = cursor + round(options.tail_seconds * rate)
    description = {
        "targets": len(order_t),
        "nontargets": len(order_nt),
        "gap_seconds": [options.min_gap_seconds, options.max_gap_seconds],
        "tail_seconds": options.tail_seconds,
        **dict(recipe or {}),
    }
    return StreamSpec(sample_rate_hz=rate, num_samples=total, clips=tuple(clips), seed=seed, recipe=description)


def with_background(
    spec: StreamSpec,
    beds: Sequence[SourceClip],
    *,
    snr_db: float,
    seed: int = 0,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    params: Params = DEFAULT_PARAMS,
    library: AudioLibrary | None = None,
) -> StreamSpec:
    """Mix a background clip under every target at `snr_db`.

    SNR is the ratio of the target's active-frame power to the bed's active-frame power; each
    bed starts with its target and is cut to the target's length. Beds are used in a seeded
    random order, cycling when there are fewer beds than targets.
    """
    if not beds:
        raise ValueError("no background clips to mix under the targets; choose background classes that exist")
    library = library or AudioLibrary(params=params)
    rng = np.random.default_rng(seed)
    order = [beds[i] for i in rng.permutation(len(beds))]
    added: list[StreamClip] = []
    for index, target in enumerate(spec.targets):
        bed = order[index % len(order)]
        bed_audio = library.waveform(bed.path)
        target_audio = library.waveform(target.file)
        signal = active_power(target_audio, options=options, params=params) * 10.0 ** (target.gain_db / 10.0)
        noise = active_power(bed_audio, options=options, params=params)
        if noise <= 0.0 or signal <= 0.0:
            logger.warning("no background under %s (silent target or bed %s)", target.file, bed.path)
            continue
        gain_db = 10.0 * math.log10(signal / noise) - snr_db
        length = min(len(bed_audio), target.num_samples)
        added.append(
            StreamClip(
                file=str(Path(bed.path).resolve()),
                sha256=library.sha256(bed.path),
                role="bed",
                label=None,
                category=bed.category,
                start_sample=target.start_sample,
                num_samples=length,
                gain_db=round(gain_db, 4),
                onset_sample=target.start_sample,
                active_end_sample=target.start_sample + length,
            )
        )
    recipe = {**dict(spec.recipe), "background_snr_db": snr_db, "background_categories": sorted({b.category for b in beds})}
    return replace(spec, clips=spec.clips + tuple(added), recipe=recipe)


def render_stream(
    spec: StreamSpec, *, library: AudioLibrary | None = None, params: Params = DEFAULT_PARAMS, check_hashes: bool = True
) -> FloatArray:
    """The stream's audio: float32 [spec.num_samples] at spec.sample_rate_hz.

    Raises StreamError naming the file when a clip is missing or its bytes changed since the
    spec was built (the stream would not be the one measured).
    """
    if spec.sample_rate_hz != params.sample_rate_hz:
        raise StreamError(
            f"the stream is at {spec.sample_rate_hz} Hz but params say {params.sample_rate_hz} Hz; rebuild it"
        )
    library = library or AudioLibrary(params=params)
    out = np.zeros(spec.num_samples, np.float64)
    for clip in spec.clips:
        if not Path(clip.file).is_file():
            raise StreamError(f"{clip.file}: clip of the stream not found; prepare the data again or rebuild the stream")
        if check_hashes and library.sha256(clip.file) != clip.sha256:
            raise StreamError(f"{clip.file}: its bytes changed since the stream was built; rebuild the stream")
        audio = library.waveform(clip.file)[: clip.num_samples].astype(np.float64)
        stop = min(spec.num_samples, clip.start_sample + len(audio))
        out[clip.start_sample : stop] += audio[: stop - clip.start_sample] * 10.0 ** (clip.gain_db / 20.0)
    return out.astype(np.float32)


# --------------------------------------------------------------------------- patches of a stream


class PatchEmbedder(Protocol):
    """YAMNet as the stream cache needs it (train.yamnet.YamnetTF, or `TfliteEmbedder`)."""

    weights_sha256: str

    def embed_patches(self, patches: FloatArray) -> tuple[FloatArray, FloatArray]:
        """float32 [p, patch_samples] -> (embeddings float32 [p, 1024], scores float32 [p, 521])."""
        ...


class TfliteEmbedder:
    """edge.yamnet.YamnetTflite with the hash of its file, for the stream cache."""

    def __init__(self, yamnet: Any, *, weights_sha256: str | None = None) -> None:
        self.yamnet = yamnet
        self.weights_sha256 = weights_sha256 or file_sha256(yamnet.path)

    def embed_patches(self, patches: FloatArray, *, batch_size: int = 1) -> tuple[FloatArray, FloatArray]:
        """float32 [p, patch_samples] -> (embeddings, scores); the interpreter runs one patch at a time."""
        return self.yamnet.embed_patches(patches)

    def run(self, patch: FloatArray) -> tuple[FloatArray, FloatArray]:
        return self.yamnet.run(patch)


@dataclass(frozen=True)
class StreamPatches:
    """Per-patch YAMNet outputs of a stream (what the head and detector need)."""

    start_samples: IntArray
    """int64 [p]: first sample of each patch."""
    embeddings: FloatArray
    """float32 [p, 1024]"""
    yamnet_scores: FloatArray
    """float32 [p, 521]"""
    rms_dbfs: FloatArray
    """float32 [p]: patch level as edge.pipeline computes it."""

    def __len__(self) -> int:
        return len(self.start_samples)


def embed_stream(
    spec: StreamSpec,
    embedder: PatchEmbedder,
    *,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_STREAM_CACHE,
    params: Params = DEFAULT_PARAMS,
    library: AudioLibrary | None = None,
    batch_patches: int = 512,
) -> StreamPatches:
    """YAMNet outputs of every patch of the stream, framed exactly as the edge frames it.

    Cached as <cache_dir>/<cache_folder(embedder)>/<spec sha256[:24]>.npz (atomic write); None: no cache.
    """
    from edge.framing import waveform_to_patches

    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / cache_folder(embedder) / f"{spec.sha256()[:24]}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as entry:
                    return StreamPatches(
                        start_samples=np.asarray(entry["start_samples"], np.int64),
                        embeddings=np.asarray(entry["embeddings"], np.float32),
                        yamnet_scores=np.asarray(entry["yamnet_scores"], np.float32),
                        rms_dbfs=np.asarray(entry["rms_dbfs"], np.float32),
                    )
            except (OSError, ValueError, KeyError) as error:
                logger.warning("stream cache %s unreadable (%s); computing it again", path, error)
    waveform = render_stream(spec, library=library, params=params)
    patches = waveform_to_patches(waveform, params=params)
    logger.info("YAMNet over %d patches of a %.0f s stream", len(patches), spec.seconds)
    parts = [embedder.embed_patches(patches[i : i + batch_patches]) for i in range(0, len(patches), batch_patches)]
    result = StreamPatches(
        start_samples=np.arange(len(patches), dtype=np.int64) * params.hop_samples,
        embeddings=np.concatenate([np.asarray(e, np.float32) for e, _ in parts]),
        yamnet_scores=np.concatenate([np.asarray(s, np.float32) for _, s in parts]),
        rms_dbfs=patch_rms_dbfs(patches),
    )
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staged = tempfile.mkstemp(prefix=".stream-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                np.savez(stream, **asdict(result))
            os.replace(staged, path)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
    return result


# --------------------------------------------------------------------------- detection


@dataclass(frozen=True)
class Detection:
    """An event as the device reports it, with the time it was reported."""

    label: str
    start_seconds: float
    """Start of the first patch counted towards the onset (edge Event.start_seconds)."""
    detected_seconds: float
    """End of the patch that completed the onset rule: when the LED lights."""
    end_seconds: float
    peak_score: float
    mean_score: float


def detect_events(
    probabilities: npt.ArrayLike,
    patches: StreamPatches,
    *,
    labels: Sequence[str],
    config: DetectorConfig,
    num_samples: int,
    params: Params = DEFAULT_PARAMS,
    audioset_classes: Sequence[str] = (),
) -> list[Detection]:
    """Run the edge's Detector over per-patch probabilities [p, L] of a stream of num_samples samples
    (patches: where each patch starts, its level and YAMNet's AudioSet scores, which decide whether
    it holds evidence; audioset_classes: YAMNet's class names, needed when config has a veto)."""
    probs = np.asarray(probabilities, np.float32)
    starts = np.asarray(patches.start_samples, np.int64)
    levels = np.asarray(patches.rms_dbfs, np.float32)
    if probs.ndim != 2 or probs.shape[1] != len(labels) or len(probs) != len(starts) or len(levels) != len(starts):
        raise ValueError(
            f"probabilities {probs.shape} must be [patches, {len(labels)}] with one start ({len(starts)}) "
            f"and one level ({len(levels)}) per patch"
        )
    detector = Detector(config, labels=labels, params=params, audioset_classes=audioset_classes)
    yamnet_scores = np.asarray(patches.yamnet_scores, np.float32)
    if config.veto and yamnet_scores.shape != (len(starts), params.yamnet_classes):
        raise ValueError(
            f"the detector's veto needs YAMNet's scores [patches, {params.yamnet_classes}] of every patch, "
            f"got {yamnet_scores.shape} for {len(starts)} patches"
        )
    empty_scores = np.zeros(params.yamnet_classes, np.float32)
    pending: dict[tuple[str, float], float] = {}
    finished: list[tuple[Event, float]] = []
    for index in range(len(probs)):
        patch = PatchResult(
            index=index,
            start_sample=int(starts[index]),
            probabilities=probs[index],
            yamnet_scores=yamnet_scores[index] if config.veto else empty_scores,
            rms_dbfs=float(levels[index]),
        )
        started, ended = detector.update(patch)
        heard = (int(starts[index]) + params.patch_samples) / params.sample_rate_hz
        for event in started:
            pending[(event.label, event.start_seconds)] = heard
        for event in ended:
            finished.append((event, pending.pop((event.label, event.start_seconds))))
    for event in detector.close(num_samples):
        finished.append((event, pending.pop((event.label, event.start_seconds))))
    detections = [
        Detection(
            label=e.label,
            start_seconds=e.start_seconds,
            detected_seconds=heard,
            end_seconds=float(e.end_seconds if e.end_seconds is not None else num_samples / params.sample_rate_hz),
            peak_score=e.peak_score,
            mean_score=e.mean_score,
        )
        for e, heard in finished
    ]
    return sorted(detections, key=lambda d: (d.detected_seconds, d.label))


# --------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class TargetOutcome:
    """What happened to one target clip of the stream."""

    file: str
    label: str
    onset_seconds: float
    detected: bool
    latency_seconds: float | None
    """Report time minus onset of its first correct event; None when missed."""
    wrong_labels: tuple[str, ...] = ()
    """Labels of other target classes reported during it (confusions)."""
    extra_events: int = 0
    """Further correct events during it (the sound was split in several events)."""


@dataclass(frozen=True)
class StreamScore:
    """Event-level figures of one stream."""

    labels: tuple[str, ...]
    targets: tuple[TargetOutcome, ...]
    false_events: tuple[tuple[Detection, str], ...]
    """Events outside every target, with the category of the non-target sound they fell in."""
    nontarget_seconds: float
    latency_limit_seconds: float

    @property
    def false_per_hour(self) -> float:
        hours = self.nontarget_seconds / 3600.0
        return self.false_events_of(None) / hours if hours > 0 else 0.0

    def recall(self, label: str | None = None, *, in_time: bool = False) -> tuple[int, int]:
        """(detected, total) targets of `label` (all when None); in_time: within the latency limit."""
        chosen = [t for t in self.targets if label is None or t.label == label]
        hits = [
            t for t in chosen
            if t.detected and (not in_time or (t.latency_seconds is not None and t.latency_seconds <= self.latency_limit_seconds))
        ]  # fmt: skip
        return len(hits), len(chosen)

    def latencies(self, label: str | None = None) -> list[float]:
        return [t.latency_seconds for t in self.targets if t.latency_seconds is not None and (label is None or t.label == label)]

    def false_events_of(self, label: str | None) -> int:
        """Events of `label` (every label when None) that lit an LED for nothing: those outside every
        target, and confusions (an event of another class during a target: the wrong LED lights)."""
        outside = sum(1 for d, _ in self.false_events if label is None or d.label == label)
        return outside + sum(len(t.wrong_labels) if label is None else t.wrong_labels.count(label) for t in self.targets)

    def summary(self) -> dict[str, Any]:
        """JSON-ready per-class and overall figures."""
        per_class: dict[str, Any] = {}
        for label in self.labels:
            hits, total = self.recall(label)
            if total == 0 and not self.false_events_of(label):
                continue
            per_class[label] = _figures(self, label)
        return {
            "overall": _figures(self, None),
            "per_class": per_class,
            "nontarget_seconds": round(self.nontarget_seconds, 2),
            "false_events": [
                {"label": d.label, "detected_seconds": round(d.detected_seconds, 3), "peak_score": round(d.peak_score, 4), "during": c}
                for d, c in self.false_events
            ],
            "missed": [{"file": Path(t.file).name, "label": t.label, "onset_seconds": round(t.onset_seconds, 3)} for t in self.targets if not t.detected],
            "late": [
                {"file": Path(t.file).name, "label": t.label, "latency_seconds": round(t.latency_seconds, 3)}
                for t in self.targets if t.latency_seconds is not None and t.latency_seconds > self.latency_limit_seconds
            ],
            "confusions": [{"file": Path(t.file).name, "label": t.label, "reported": list(t.wrong_labels)} for t in self.targets if t.wrong_labels],
        }  # fmt: skip


def _figures(score: StreamScore, label: str | None) -> dict[str, Any]:
    hits, total = score.recall(label)
    in_time, _ = score.recall(label, in_time=True)
    latencies = score.latencies(label)
    false_events = score.false_events_of(label)
    hours = score.nontarget_seconds / 3600.0
    return {
        "targets": total,
        "detected": hits,
        "detected_in_time": in_time,
        "latency_median_seconds": round(float(np.median(latencies)), 3) if latencies else None,
        "latency_max_seconds": round(float(np.max(latencies)), 3) if latencies else None,
        "false_events": false_events,
        "false_per_hour": round(false_events / hours, 2) if hours > 0 else 0.0,
        "confusions": sum(len(t.wrong_labels) for t in score.targets if label is None or t.label == label),
    }


def score_stream(
    spec: StreamSpec,
    detections: Sequence[Detection],
    *,
    labels: Sequence[str],
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    exclude_categories: Sequence[str] = (),
) -> StreamScore:
    """Match events to the stream's targets.

    An event belongs to the target clip its evidence ([start_seconds, detected_seconds]) overlaps
    most; the first event of the right label is the target's detection, later ones are extra
    events, other labels are confusions (counted as false events of their label too: the wrong LED
    lights). Events overlapping no target are false events, charged to the non-target clip they
    overlap most ("silence" between clips). A detection before the target's measured onset has
    latency 0. Non-target clips of
    `exclude_categories` (and events falling in them) are left out entirely.
    """
    rate = spec.sample_rate_hz
    targets = sorted(spec.targets, key=lambda c: c.start_sample)
    spans = [(c.start_sample / rate, c.end_sample / rate) for c in targets]
    excluded = set(exclude_categories)
    others = [c for c in spec.nontargets]
    hits: dict[int, list[Detection]] = {i: [] for i in range(len(targets))}
    wrong: dict[int, list[str]] = {i: [] for i in range(len(targets))}
    false_events: list[tuple[Detection, str]] = []
    for detection in detections:
        low, high = detection.start_seconds, max(detection.detected_seconds, detection.start_seconds)
        best, best_overlap = None, 0.0
        for index, (start, end) in enumerate(spans):
            overlap = min(high, end) - max(low, start)
            if overlap > best_overlap:
                best, best_overlap = index, overlap
        if best is not None:
            if detection.label == targets[best].label:
                hits[best].append(detection)
            else:
                wrong[best].append(detection.label)
            continue
        category, category_overlap = "silence", 0.0
        for clip in others:
            overlap = min(high, clip.end_sample / rate) - max(low, clip.start_sample / rate)
            if overlap > category_overlap:
                category, category_overlap = clip.category, overlap
        if category not in excluded:
            false_events.append((detection, category))
    outcomes = []
    for index, clip in enumerate(targets):
        found = sorted(hits[index], key=lambda d: d.detected_seconds)
        onset = clip.onset_sample / rate
        outcomes.append(
            TargetOutcome(
                file=clip.file,
                label=str(clip.label),
                onset_seconds=onset,
                detected=bool(found),
                # Not below 0: the onset is the first frame within 20 dB of the clip's peak, and a head
                # may rightly fire on the fainter sound before it (faint drips, then loud ones).
                latency_seconds=max(0.0, found[0].detected_seconds - onset) if found else None,
                wrong_labels=tuple(wrong[index]),
                extra_events=max(0, len(found) - 1),
            )
        )
    nontarget_seconds = sum(c.num_samples for c in others if c.category not in excluded) / rate
    return StreamScore(
        labels=tuple(labels),
        targets=tuple(outcomes),
        false_events=tuple(false_events),
        nontarget_seconds=nontarget_seconds,
        latency_limit_seconds=options.latency_limit_seconds,
    )


# --------------------------------------------------------------------------- threshold sweep


@dataclass(frozen=True)
class SweepPoint:
    """Event figures at one onset threshold (the same threshold for every target label)."""

    threshold: float
    missed: Mapping[str, int]
    """Targets per label with no event in time (latency above the limit counts as missed)."""
    targets: Mapping[str, int]
    false_events: Mapping[str, int]
    nontarget_seconds: float

    @property
    def total_missed(self) -> int:
        return sum(self.missed.values())

    @property
    def total_false(self) -> int:
        return sum(self.false_events.values())

    def false_per_hour(self, label: str | None = None) -> float:
        count = self.total_false if label is None else self.false_events[label]
        return count / (self.nontarget_seconds / 3600.0) if self.nontarget_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "threshold": round(self.threshold, 4),
            "missed": dict(self.missed),
            "targets": dict(self.targets),
            "false_events": dict(self.false_events),
            "false_per_hour": round(self.false_per_hour(), 2),
        }


DEFAULT_SWEEP = tuple(float(t) for t in np.round(np.concatenate([np.arange(0.3, 0.9, 0.05), np.arange(0.9, 1.0, 0.01), [0.995, 0.999]]), 4))
"""Onset thresholds the sweep tries."""


def sweep_thresholds(
    streams: Sequence[tuple[StreamSpec, FloatArray, StreamPatches]],
    *,
    labels: Sequence[str],
    config: DetectorConfig,
    thresholds: Sequence[float] = DEFAULT_SWEEP,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    params: Params = DEFAULT_PARAMS,
    exclude_categories: Sequence[str] = (),
    audioset_classes: Sequence[str] = (),
) -> list[SweepPoint]:
    """Figures at each threshold, summed over streams given as (spec, probabilities [p, L], patches).

    Every target label gets the same onset threshold (release follows it as the config says);
    labels are detected independently by the edge Detector, so per-label columns equal what a
    per-label threshold would give.
    """
    targets_of = [l for l in labels if l != config.background_label]
    points = []
    for threshold in thresholds:
        trial = config.with_changes(thresholds={label: float(threshold) for label in targets_of})
        missed = {label: 0 for label in targets_of}
        totals = {label: 0 for label in targets_of}
        false = {label: 0 for label in targets_of}
        seconds = 0.0
        for spec, probabilities, patches in streams:
            detections = detect_events(probabilities, patches, labels=labels, config=trial, num_samples=spec.num_samples, params=params,
                                       audioset_classes=audioset_classes)  # fmt: skip
            score = score_stream(spec, detections, labels=labels, options=options, exclude_categories=exclude_categories)
            for label in targets_of:
                hits, total = score.recall(label, in_time=True)
                missed[label] += total - hits
                totals[label] += total
                false[label] += score.false_events_of(label)
            seconds += score.nontarget_seconds
        points.append(SweepPoint(threshold=float(threshold), missed=missed, targets=totals, false_events=false, nontarget_seconds=seconds))
    return points


SWEEP_MARKS = (0.3, 0.5, 0.7, 0.9, 0.97, 0.99, 0.997, 0.999, 0.9999)
"""Thresholds written next to the all-classes curve of a sweep plot (when the sweep has them)."""


def logit(p: float) -> float:
    """log(p / (1 - p)), with p kept within [1e-9, 1 - 1e-9]."""
    p = min(max(p, 1e-9), 1 - 1e-9)
    return math.log(p / (1 - p))


def plot_sweep(
    points: Sequence[SweepPoint],
    path: str | os.PathLike[str],
    *,
    chosen: Mapping[str, float] | None = None,
    title: str = "",
    target_false_per_hour: float | None = None,
    ceiling: Sequence[tuple[float, int]] = (),
    shipped: tuple[float, int] | None = None,
) -> Path:
    """PNG: false events per hour (x) vs missed events (y), one curve per label plus all labels.

    Each point is one onset threshold; `chosen` thresholds are marked. Lower-left is better.
    `ceiling`: (false events per hour, missed) of per-class thresholds chosen on these very
    points (train.openset.hindsight), drawn as a dashed line; `shipped`: the detector's own
    (false events per hour, missed), a black star.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(points[0].missed) if points else []
    figure, axis = plt.subplots(figsize=(7.5, 5.0), dpi=120)
    floor = 0.5  # zero false events drawn at 0.5/h on the log axis
    for label in labels + [None]:
        xs = [max(p.false_per_hour(label), floor) for p in points]
        ys = [p.total_missed if label is None else p.missed[label] for p in points]
        style = {"color": "black", "linewidth": 2.2} if label is None else {"linewidth": 1.2}
        axis.plot(xs, ys, marker="o", markersize=3, label="all classes" if label is None else label, **style)
        if label is not None and chosen and label in chosen:
            nearest = min(points, key=lambda p: abs(p.threshold - chosen[label]))
            axis.plot([max(nearest.false_per_hour(label), floor)], [nearest.missed[label]], marker="*", markersize=13,
                      color=axis.lines[-1].get_color(), markeredgecolor="black")  # fmt: skip
    if ceiling:
        axis.plot([max(x, floor) for x, _ in ceiling], [y for _, y in ceiling], color="black", linestyle="--", linewidth=1.2,
                  drawstyle="steps-post", label="best per-class thresholds, in hindsight")  # fmt: skip
    if shipped is not None:
        axis.plot([max(shipped[0], floor)], [shipped[1]], marker="*", markersize=16, color="black", linestyle="none",
                  label="shipped thresholds, all classes")  # fmt: skip
    labelled: set[int] = set()
    for mark in SWEEP_MARKS:  # a few readable thresholds along the all-classes curve
        index = min(range(len(points)), key=lambda i: abs(logit(points[i].threshold) - logit(mark))) if points else None
        if index is None or index in labelled or abs(logit(points[index].threshold) - logit(mark)) > 0.3:
            continue
        labelled.add(index)
        p = points[index]
        axis.annotate(threshold_text(p.threshold), (max(p.false_per_hour(), floor), p.total_missed), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))  # fmt: skip
    if target_false_per_hour:
        axis.axvline(target_false_per_hour, color="grey", linestyle="--", linewidth=1)
        axis.text(target_false_per_hour, axis.get_ylim()[1] * 0.95, f" target {target_false_per_hour:g}/h", fontsize=8, color="grey")
    axis.set_xscale("log")
    axis.set_xlabel("false events per hour of non-target sound (0 drawn at 0.5)")
    axis.set_ylabel(f"missed targets (of {sum(points[0].targets.values()) if points else 0}; late counts as missed)")
    axis.set_title(title or "Onset threshold sweep (numbers: threshold; stars: chosen)", fontsize=10)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    plt.close(figure)
    return target


# --------------------------------------------------------------------------- the pipeline itself


@dataclass(frozen=True)
class PipelineRun:
    """Per-patch probabilities and events from feeding a stream through StreamingPipeline."""

    probabilities: FloatArray
    start_samples: IntArray
    detections: tuple[Detection, ...]


def run_pipeline(pipeline: StreamingPipeline, waveform: npt.ArrayLike, *, block_samples: int = 1024) -> PipelineRun:
    """Feed audio through the edge pipeline in blocks, like the microphone does.

    Report time of an event: end of the last patch of the step that started it (exact while
    block_samples <= hop_samples, when a step holds at most one patch).
    """
    samples = np.asarray(waveform, np.float32)
    params = pipeline.params
    pipeline.reset()
    probabilities: list[FloatArray] = []
    starts: list[int] = []
    pending: dict[tuple[str, float], float] = {}
    finished: list[tuple[Event, float]] = []
    outputs = (pipeline.push(samples[i : i + block_samples]) for i in range(0, len(samples), block_samples))
    for step in [*outputs, pipeline.flush()]:
        for patch in step.patches:
            probabilities.append(patch.probabilities)
            starts.append(patch.start_sample)
        heard = ((starts[-1] if starts else 0) + params.patch_samples) / params.sample_rate_hz
        for event in step.started:
            pending[(event.label, event.start_seconds)] = heard
        for event in step.ended:
            finished.append((event, pending.pop((event.label, event.start_seconds), heard)))
    detections = tuple(
        sorted(
            (
                Detection(e.label, e.start_seconds, h, float(e.end_seconds or 0.0), e.peak_score, e.mean_score)
                for e, h in finished
            ),
            key=lambda d: (d.detected_seconds, d.label),
        )
    )
    return PipelineRun(
        probabilities=np.stack(probabilities).astype(np.float32),
        start_samples=np.asarray(starts, np.int64),
        detections=detections,
    )


def check_against_pipeline(
    cached: tuple[FloatArray, IntArray, Sequence[Detection]],
    run: PipelineRun,
    *,
    atol: float = 1e-5,
) -> None:
    """Raise RuntimeError (saying what differs) unless cached-patch results equal the pipeline's.

    cached: (probabilities [p, L], starts [p], detections) computed from cached stream patches;
    atol: largest allowed probability difference (TensorFlow may sum in another order for one
    patch than for a batch).
    """
    probabilities, starts, detections = cached
    if probabilities.shape != run.probabilities.shape or not np.array_equal(starts, run.start_samples):
        raise RuntimeError(
            f"cached stream patches {probabilities.shape} differ from the pipeline's {run.probabilities.shape}: "
            "delete the stream cache (data/cache/streams) and run again"
        )
    worst = float(np.max(np.abs(probabilities - run.probabilities))) if probabilities.size else 0.0
    if worst > atol:
        raise RuntimeError(
            f"cached stream probabilities differ from the pipeline's by up to {worst:.2e} (> {atol:g}): "
            "the cache was made with another YAMNet; delete data/cache/streams and run again"
        )
    ours = [(d.label, round(d.start_seconds, 4), round(d.end_seconds, 4)) for d in detections]
    theirs = [(d.label, round(d.start_seconds, 4), round(d.end_seconds, 4)) for d in run.detections]
    if sorted(ours) != sorted(theirs):
        raise RuntimeError(f"cached-patch events differ from the pipeline's: {sorted(set(ours) ^ set(theirs))[:5]}")
