"""The one streaming path from audio blocks to patch probabilities, window decisions and events.

Live audio and clips go through the same `StreamingPipeline.push()/flush()`:

    audio block (any rate, any channels)
      -> channel mean -> StreamingResampler (to params.sample_rate_hz)
      -> StreamingFramer (a 0.975 s patch every 0.48 s)
      -> YAMNet (embedding, scores) -> head (class probabilities)   [once per patch]
      -> Detector (events, per patch) and window decisions (params.window_seconds windows, 3 s by
         default, every window x (1 - overlap); from cached patch probabilities)

`classify_clip` feeds a whole waveform through exactly that path, so what is
measured on files is what the Pi does.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

from edge.detect import Detector, DetectorConfig, Event
from edge.errors import ConfigError
from edge.framing import StreamingFramer
from edge.params import DEFAULT_PARAMS, Params
from edge.resample import StreamingResampler

try:  # Python >= 3.8
    from typing import Protocol
except ImportError:  # pragma: no cover
    Protocol = object  # type: ignore[assignment,misc]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

_SILENCE_DBFS = -200.0
"""rms_dbfs reported for an all-zero patch (log of zero)."""

SILENCE = "silence"
"""Shown instead of a class for a window or clip without one audible patch: such audio holds no
evidence, and the argmax of YAMNet's output for digital silence would look like a real decision."""


class PatchEmbedder(Protocol):
    """What the pipeline needs of YAMNet (edge.yamnet.YamnetTflite, or a fake in tests)."""

    def run(self, patch: FloatArray) -> Tuple[FloatArray, FloatArray]:
        """patch: float32 [patch_samples] -> (embedding float32 [1024], scores float32 [521])."""
        ...


class PatchClassifier(Protocol):
    """What the pipeline needs of the head (edge.head.HeadTflite, or a fake in tests)."""

    def run(self, embeddings: FloatArray) -> FloatArray:
        """embeddings: float32 [n, 1024] -> probabilities float32 [n, num_labels]."""
        ...


@dataclass(frozen=True, eq=False)
class PatchResult:
    """Everything computed for one YAMNet patch."""

    index: int
    """Patch number since the stream started (0, 1, ...)."""
    start_sample: int
    """First sample of the patch, at params.sample_rate_hz, in stream time."""
    probabilities: FloatArray
    """float32 [num_labels]: head output, in label order."""
    yamnet_scores: FloatArray
    """float32 [521]: YAMNet's own AudioSet scores."""
    rms_dbfs: float
    """RMS level of the patch in dB full scale (-200 for digital silence)."""
    embedding: Optional[FloatArray] = None
    """float32 [1024]: YAMNet embedding (kept for debugging and benchmarks)."""
    yamnet_seconds: float = 0.0
    """Wall time spent in YAMNet for this patch."""
    head_seconds: float = 0.0
    """Wall time spent in the head for this patch."""


@dataclass(frozen=True, eq=False)
class WindowDecision:
    """The tutorial's decision over one window (Params.window_seconds every decision_hop_seconds:
    3 s every 1.5 s by default), from cached patch probabilities.

    Window k spans [end_sample - window_samples, end_sample) with
    end_sample = window_samples + k * decision_hop_samples, and averages the
    patches lying wholly inside it.
    """

    index: int
    end_sample: int
    patch_indices: Tuple[int, ...]
    mean_probabilities: FloatArray
    """float32 [num_labels]: mean of the patches' probabilities (the audible ones; all when none is)."""
    label: str
    """labels[decide(...)]: argmax of the mean."""
    score: float
    """mean_probabilities[label_index]."""
    silent: bool = False
    """No patch of the window is audible (Params.silent_patch_dbfs): it holds no evidence, so its
    label is only the argmax of what YAMNet makes of silence; shown as SILENCE, never a class."""

    @property
    def label_index(self) -> int:
        return int(np.argmax(self.mean_probabilities))

    @property
    def shown_label(self) -> str:
        """What a person is told this window heard: its label, or SILENCE when no patch was audible."""
        return SILENCE if self.silent else self.label


@dataclass(frozen=True, eq=False)
class StepOutput:
    """What one push()/flush() produced."""

    patches: Tuple[PatchResult, ...] = ()
    windows: Tuple[WindowDecision, ...] = ()
    started: Tuple[Event, ...] = ()
    """Events that began (end_seconds None)."""
    ended: Tuple[Event, ...] = ()
    """Events that finished (with end_seconds)."""


@dataclass(frozen=True, eq=False)
class ClipResult:
    """classify_clip's answer for one waveform."""

    labels: Tuple[str, ...]
    probabilities: FloatArray
    """float32 [patches, num_labels]: every patch's head output."""
    patches: Tuple[PatchResult, ...]
    windows: Tuple[WindowDecision, ...]
    events: Tuple[Event, ...]
    """Every event of the clip, ended (end_seconds set)."""
    audible: npt.NDArray[np.bool_]
    """bool [patches]: the patches that vote (Params.audible of their levels)."""
    label_index: int
    """decide(probabilities, audible): the clip's class."""
    score: float
    """Mean probability of that class over the clip's voting (audible) patches."""

    @property
    def label(self) -> str:
        """labels[label_index]; of a silent clip, only the argmax over silence (evaluation keeps it)."""
        return self.labels[self.label_index]

    @property
    def silent(self) -> bool:
        """No patch of the clip is audible: it holds no evidence for any class."""
        return not bool(np.any(self.audible))

    @property
    def shown_label(self) -> str:
        """What a person is told the clip is: its label, or SILENCE when no patch was audible."""
        return SILENCE if self.silent else self.label


_NOTHING = StepOutput()
"""What a push that completes no patch and no window returns (immutable, so shared)."""


def decide(probabilities: npt.ArrayLike, audible: Optional[npt.ArrayLike] = None) -> int:
    """The tutorial's decision: argmax over labels of the mean over patches.

    probabilities: float [p, num_labels] (p >= 1); audible: optional bool [p]
    (Params.audible of the patch levels): only those patches vote, unless none is.
    Shared by window decisions, clip decisions and training evaluation.
    """
    return int(np.argmax(voting_mean(probabilities, audible)))


def voting_mean(probabilities: npt.ArrayLike, audible: Optional[npt.ArrayLike] = None) -> npt.NDArray[np.float64]:
    """float64 [num_labels]: mean over the patches that vote (the audible ones; all when none is)."""
    values = np.asarray(probabilities, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0 or values.shape[1] == 0:
        raise ValueError(f"decide() needs probabilities of shape [patches >= 1, labels >= 1], got {values.shape}")
    if audible is not None:
        mask = np.asarray(audible, dtype=bool).reshape(-1)
        if mask.shape != (values.shape[0],):
            raise ValueError(f"audible must hold one flag per patch ({values.shape[0]}), got shape {mask.shape}")
        if mask.any():
            values = values[mask]
    return values.mean(axis=0)


def window_patch_indices(window_index: int, *, params: Params = DEFAULT_PARAMS) -> range:
    """Indices of the patches lying wholly inside window `window_index` (may be empty)."""
    start = window_index * params.decision_hop_samples
    end = start + params.window_samples
    first = -(-start // params.hop_samples)  # ceil
    last = (end - params.patch_samples) // params.hop_samples
    return range(first, max(first, last + 1))


def window_mean(rows: Sequence[FloatArray]) -> FloatArray:
    """Mean of patch probabilities: rows float32 [num_labels] each (>= 1) -> float32 [num_labels].

    Bit for bit np.mean(rows, axis=0, dtype=np.float64).astype(np.float32) (float64 sums
    row after row, one division), with a few small in-place steps instead of np.mean's
    general machinery: run once per decision, right after the models have pushed
    everything else out of the CPU caches.
    """
    total = np.array(rows[0], dtype=np.float64)
    for row in rows[1:]:
        total += row
    total /= len(rows)
    return total.astype(np.float32)


def _to_float(samples: np.ndarray) -> np.ndarray:
    """Float samples pass through; integer PCM (int16, int32, uint8, ...) is scaled to [-1, 1)."""
    kind = samples.dtype.kind
    if kind == "f":
        return samples
    if kind == "i":
        return samples.astype(np.float64) / float(2 ** (8 * samples.dtype.itemsize - 1))
    if kind == "u":
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        return (samples.astype(np.float64) - half) / half
    raise ValueError(f"audio block must be numeric samples, got dtype {samples.dtype}")


def _rms_dbfs(patch: FloatArray) -> float:
    # A float32 dot product (BLAS sums in many lanes: within 1e-4 dB of a float64 sum) rather than
    # a float64 copy of every patch. The level decides whether a patch votes (Params.silent_patch_dbfs);
    # training measures it in float64, so only a patch within 1e-4 dB of that level could differ.
    samples = np.asarray(patch, dtype=np.float32).reshape(-1)
    rms = math.sqrt(float(np.dot(samples, samples)) / samples.size) if samples.size else 0.0
    return 20.0 * math.log10(rms) if rms > 0 else _SILENCE_DBFS


class StreamingPipeline:
    """Blocks of audio in; patches, window decisions and events out.

    yamnet: PatchEmbedder (edge.yamnet.YamnetTflite); head: PatchClassifier (edge.head.HeadTflite);
    labels: the head's labels in output order; detector: a Detector over those labels
    (default: Detector(DetectorConfig()) ); input_rate_hz: rate of the pushed blocks
    (default params.sample_rate_hz; other rates are resampled in stream).
    """

    def __init__(
        self,
        yamnet: PatchEmbedder,
        head: PatchClassifier,
        *,
        labels: Sequence[str],
        params: Params = DEFAULT_PARAMS,
        detector: Optional[Detector] = None,
        input_rate_hz: Optional[int] = None,
    ) -> None:
        self.yamnet = yamnet
        self.head = head
        self.labels: Tuple[str, ...] = tuple(labels)
        self.params = params
        self.detector = detector if detector is not None else Detector(labels=self.labels, params=params)
        if tuple(self.detector.labels) != self.labels:
            raise ConfigError(
                f"the detector's labels {list(self.detector.labels)} differ from the pipeline's "
                f"{list(self.labels)}; build the Detector with the head's labels"
            )
        self.input_rate_hz = params.sample_rate_hz if input_rate_hz is None else int(input_rate_hz)
        if self.input_rate_hz <= 0:
            raise ConfigError(f"input_rate_hz must be a positive sample rate, got {input_rate_hz}")
        self._resampler: Optional[StreamingResampler] = (
            None
            if self.input_rate_hz == params.sample_rate_hz
            else StreamingResampler(self.input_rate_hz, params.sample_rate_hz)
        )
        self._framer = StreamingFramer(params=params)
        self._channels: Optional[int] = None
        # Sizes the per-block path reads (Params derives them on every access).
        self._hop_samples = params.hop_samples
        self._window_samples = params.window_samples
        self._decision_hop_samples = params.decision_hop_samples
        self._silent_patch_dbfs = params.silent_patch_dbfs
        self._probabilities_shape = (1, len(self.labels))
        self.reset()

    # --- state ---
    def reset(self) -> None:
        """Start a new stream: clears resampler, framer, patch cache, windows and detector."""
        if self._resampler is not None:
            self._resampler.reset()
        self._framer.reset()
        self.detector.reset()
        self._channels = None
        self._samples_seen = 0  # at params.sample_rate_hz, after resampling
        self._next_patch = 0
        self._next_window = 0
        self._next_window_end = self._window_samples  # stream sample where window _next_window ends
        self._probabilities: Dict[int, FloatArray] = {}
        self._audible: Dict[int, bool] = {}
        self.yamnet_seconds_total = 0.0
        self.head_seconds_total = 0.0

    @property
    def samples_seen(self) -> int:
        """Samples (at params.sample_rate_hz) that reached the framer since reset()."""
        return self._samples_seen

    @property
    def patches_seen(self) -> int:
        """Patches run through YAMNet and the head since reset()."""
        return self._next_patch

    @property
    def stream_seconds(self) -> float:
        return self._samples_seen / self.params.sample_rate_hz

    # --- streaming ---
    def push(self, block: npt.ArrayLike) -> StepOutput:
        """Add audio: block float [n] or [n, channels] in [-1, 1] (or integer PCM, scaled) at input_rate_hz."""
        if self._resampler is None and type(block) is np.ndarray and block.dtype == np.float32 and block.ndim == 1:
            # The microphone's usual block: float32 mono at the model rate. A finite sum of squares proves
            # every sample finite (a NaN or Inf makes it NaN or Inf); otherwise check sample by sample.
            mono = block if math.isfinite(float(np.dot(block, block))) else self._to_mono(block)
        else:
            mono = self._to_mono(block)
            if self._resampler is not None:
                mono = self._resampler.push(mono)
        return self._consume(mono, final=False)

    def flush(self) -> StepOutput:
        """End the stream: pad the last patches like YAMNet, emit them, close active events, reset.

        A stream that received no samples at all ends with no patches.
        """
        if self._samples_seen == 0 and (self._resampler is None or self._resampler.inputs_seen == 0):
            self.reset()
            return StepOutput()
        tail = self._resampler.flush() if self._resampler is not None else np.zeros(0, np.float32)
        output = self._consume(tail, final=True)
        self.reset()
        return output

    def _to_mono(self, block: npt.ArrayLike) -> FloatArray:
        samples = _to_float(np.asarray(block))
        if samples.ndim == 2:
            if self._channels is None:
                self._channels = samples.shape[1]
            elif samples.shape[1] != self._channels:
                raise ValueError(
                    f"audio block has {samples.shape[1]} channels, earlier blocks had {self._channels}; "
                    f"keep the channel count fixed within a stream or call reset()"
                )
            samples = samples.mean(axis=1, dtype=np.float64) if samples.shape[1] > 1 else samples[:, 0]
        elif samples.ndim != 1:
            raise ValueError(f"audio block must be [samples] or [samples, channels], got shape {samples.shape}")
        mono = np.asarray(samples, dtype=np.float32)
        if not np.all(np.isfinite(mono)):
            mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
            logger.warning("audio block held NaN/Inf samples; replaced them with 0")
        return mono

    def _consume(self, samples: FloatArray, *, final: bool) -> StepOutput:
        self._samples_seen += len(samples)
        patches = self._framer.push(samples)
        if not final and not len(patches) and self._samples_seen < self._next_window_end:
            return _NOTHING  # most blocks complete no patch and no window
        if final:
            patches = np.concatenate([patches, self._framer.flush()])
        results: List[PatchResult] = []
        started: List[Event] = []
        ended: List[Event] = []
        for patch in patches:
            result = self._run_patch(patch)
            results.append(result)
            new, done = self.detector.update(result)
            started.extend(new)
            ended.extend(done)
        windows = self._ready_windows()
        if final:
            ended.extend(self.detector.close(self._samples_seen))
        return StepOutput(tuple(results), tuple(windows), tuple(started), tuple(ended))

    def _run_patch(self, patch: FloatArray) -> PatchResult:
        index = self._next_patch
        level = _rms_dbfs(patch)  # before YAMNet, while the freshly framed patch is still in cache
        t0 = time.perf_counter()
        embedding, scores = self.yamnet.run(patch)
        t1 = time.perf_counter()
        embedding = np.asarray(embedding, np.float32)
        probabilities = np.asarray(self.head.run(embedding[np.newaxis]), np.float32)
        t2 = time.perf_counter()
        if probabilities.shape != self._probabilities_shape:
            raise ConfigError(
                f"the head returned probabilities of shape {probabilities.shape} for one embedding; "
                f"expected (1, {len(self.labels)}) for labels {list(self.labels)}: use the head the labels belong to"
            )
        self._next_patch += 1
        self._probabilities[index] = probabilities[0]
        self._audible[index] = level >= self._silent_patch_dbfs
        self.yamnet_seconds_total += t1 - t0
        self.head_seconds_total += t2 - t1
        return PatchResult(
            index=index,
            start_sample=index * self._hop_samples,
            probabilities=probabilities[0],
            yamnet_scores=np.asarray(scores, np.float32),
            rms_dbfs=level,
            embedding=embedding,
            yamnet_seconds=t1 - t0,
            head_seconds=t2 - t1,
        )

    def _ready_windows(self) -> List[WindowDecision]:
        windows: List[WindowDecision] = []
        params = self.params
        while self._next_window_end <= self._samples_seen:
            index = self._next_window
            indices = tuple(window_patch_indices(index, params=params))
            self._next_window += 1
            self._next_window_end += self._decision_hop_samples
            if not indices:
                continue
            audible = [i for i in indices if self._audible[i]]
            # A window without an audible patch keeps the mean of them all (decide()'s rule) but says it is silent.
            mean = window_mean([self._probabilities[i] for i in audible or indices])
            label_index = int(np.argmax(mean))
            windows.append(
                WindowDecision(
                    index=index,
                    end_sample=self._next_window_end - self._decision_hop_samples,
                    patch_indices=indices,
                    mean_probabilities=mean,
                    label=self.labels[label_index],
                    score=float(mean[label_index]),
                    silent=not audible,
                )
            )
            # Later windows start at or after this one: drop patches they cannot use.
            keep_from = window_patch_indices(self._next_window, params=params).start
            for old in [i for i in self._probabilities if i < keep_from]:
                del self._probabilities[old]
                del self._audible[old]
        return windows


def classify_clip(
    pipeline: StreamingPipeline,
    waveform: npt.ArrayLike,
    *,
    block_samples: int = 1024,
) -> ClipResult:
    """Classify a whole clip through the streaming path, in blocks of `block_samples`.

    waveform: float [n] or [n, channels] in [-1, 1] at pipeline.input_rate_hz.
    The pipeline is reset before and after.
    """
    if block_samples <= 0:
        raise ValueError(f"block_samples must be positive, got {block_samples}")
    samples = np.asarray(waveform)
    if samples.ndim not in (1, 2) or len(samples) == 0:
        raise ValueError(f"classify_clip needs a non-empty waveform [n] or [n, channels], got shape {samples.shape}")
    pipeline.reset()
    outputs = [pipeline.push(samples[start : start + block_samples]) for start in range(0, len(samples), block_samples)]
    outputs.append(pipeline.flush())
    patches = tuple(p for out in outputs for p in out.patches)
    windows = tuple(w for out in outputs for w in out.windows)
    events = tuple(e for out in outputs for e in out.ended)
    probabilities = np.stack([p.probabilities for p in patches]).astype(np.float32)
    audible = np.asarray(pipeline.params.audible([p.rms_dbfs for p in patches]), bool)
    mean = voting_mean(probabilities, audible)
    label_index = int(np.argmax(mean))
    return ClipResult(
        labels=pipeline.labels,
        probabilities=probabilities,
        patches=patches,
        windows=windows,
        events=events,
        audible=audible,
        label_index=label_index,
        score=float(mean[label_index]),
    )


def load_pipeline(
    model_dir: Union[str, Path],
    *,
    input_rate_hz: Optional[int] = None,
    num_threads: int = 1,
    detector_overrides: Optional[Mapping[str, object]] = None,
    verify_hashes: bool = True,
) -> StreamingPipeline:
    """Build the pipeline of an exported model directory (manifest.json, yamnet.tflite, head.tflite).

    detector_overrides: DetectorConfig fields replacing the manifest's (e.g. from the
    edge config file); "thresholds" entries are merged over the manifest's thresholds.
    Raises ManifestError / ModelError naming the file at fault.
    """
    from edge.head import HeadTflite
    from edge.manifest import load_manifest
    from edge.yamnet import YamnetTflite

    manifest = load_manifest(model_dir, verify_hashes=verify_hashes)
    yamnet = YamnetTflite.from_manifest(manifest, num_threads=num_threads)
    head = HeadTflite.from_manifest(manifest, num_threads=num_threads)
    config: DetectorConfig = manifest.detector_config(detector_overrides)
    detector = Detector(config, labels=manifest.labels, params=manifest.params, audioset_classes=manifest.audioset_classes)
    return StreamingPipeline(
        yamnet,
        head,
        labels=manifest.labels,
        params=manifest.params,
        detector=detector,
        input_rate_hz=input_rate_hz,
    )
