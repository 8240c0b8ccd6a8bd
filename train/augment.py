"""Training augmentation for open-set detection, on audio (YAMNet then embeds the result).

A target clip is time-shifted (so its patches fall on other phases of the 0.48 s grid, as in a
stream), given a random gain, and mixed over a background clip at a random SNR. Every patch of
the result is labelled by what it holds (train.openset): a patch where the target is near-silent
(more than `quiet_below_peak_db` under the target's loudest patch) holds only background and is
labelled as the background class; one where the background is louder than the target there is
left out of training. The same rule cleans the plain clips: ESC-50 clips contain
silent stretches that carry the clip's label, which teaches the head to call silence a target.

Mixed clips are embedded once per (plan, YAMNet weights) and cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params
from train.embeddings import cache_folder, patch_rms_dbfs
from train.streams import DEFAULT_STREAM_OPTIONS, AudioLibrary, PatchEmbedder, StreamOptions, active_power

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_AUGMENT_CACHE = Path("data/cache/augment")
CACHE_FORMAT = "oido-augment/2"
"""Changes when the cached arrays change (keys every cache entry)."""


@dataclass(frozen=True)
class MixOptions:
    """How augmented copies of the target clips are made."""

    copies: int = 2
    """Augmented copies of every target training clip."""
    snr_db: tuple[float, float] = (0.0, 20.0)
    """Range of the target-to-background SNR (uniform, dB)."""
    gain_db: tuple[float, float] = (-12.0, 0.0)
    """Range of the gain applied to the mixture (uniform, dB); peaks are kept within full scale."""
    background_probability: float = 0.8
    """Chance that a copy is mixed over a background clip (else: shifted and gained only)."""
    shift: bool = True
    """Delay the clip by a random fraction of a hop, so patches sample other phases."""
    min_patch_snr_db: float = 0.0
    """A mixed patch is labelled a target only where the target is at least this much louder
    than the background in it; below, it is left out of training."""
    speed: tuple[float, float] = (1.0, 1.0)
    """Range of the target's playback speed (uniform; 1.1 plays it 10% faster and higher, as a
    smaller clock or a younger baby would sound). (1, 1): unchanged, the default."""
    tilt_db_per_octave: tuple[float, float] = (0.0, 0.0)
    """Range of a spectral tilt applied to the mixture (uniform, dB per octave around 1 kHz),
    as another microphone or room would colour it. (0, 0): none, the default."""
    background_copies: int = 0
    """Copies of every background clip made the same way (shifted, gained, over another
    background clip) and trained on as background, so quieter and shifted sounds are not
    only ever targets. 0: none, the default."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0 or self.background_copies < 0:
            raise ValueError(
                f"MixOptions.copies (--mix-copies) and background_copies (--mix-background-copies) must be 0 or more, "
                f"got {self.copies}, {self.background_copies}"
            )
        for name in ("snr_db", "gain_db", "speed", "tilt_db_per_octave"):
            low, high = getattr(self, name)
            if low > high:
                raise ValueError(f"MixOptions.{name} must be (low, high), got {getattr(self, name)}")
        if not (0.5 <= self.speed[0] and self.speed[1] <= 2.0):
            raise ValueError(f"MixOptions.speed must lie within [0.5, 2], got {self.speed}")
        if not 0.0 <= self.background_probability <= 1.0:
            raise ValueError(f"MixOptions.background_probability must be in [0, 1], got {self.background_probability}")


@dataclass(frozen=True)
class MixPlan:
    """One augmented clip: target (shifted, gained) + optional background at an SNR."""

    target: str
    target_sha256: str
    background: str | None
    background_sha256: str | None
    snr_db: float
    gain_db: float
    shift_samples: int
    speed: float = 1.0
    tilt_db_per_octave: float = 0.0


NEUTRAL_PLAN = {"speed": 1.0, "tilt_db_per_octave": 0.0}
"""Plan fields added after the first cache format: left out of cache keys at these values, so
plans made before them keep their cached embeddings."""


def _plan_key(plan: MixPlan) -> dict[str, object]:
    return {k: v for k, v in asdict(plan).items() if NEUTRAL_PLAN.get(k, object()) != v}


def plan_mixes(
    targets: Sequence[str | os.PathLike[str]],
    backgrounds: Sequence[str | os.PathLike[str]],
    *,
    options: MixOptions,
    library: AudioLibrary,
    params: Params = DEFAULT_PARAMS,
) -> list[MixPlan]:
    """`options.copies` seeded plans per target clip; backgrounds drawn at random (with repeats)."""
    rng = np.random.default_rng(options.seed)
    plans = []
    for _ in range(options.copies):
        for target in targets:
            use_background = bool(backgrounds) and rng.random() < options.background_probability
            background = backgrounds[int(rng.integers(len(backgrounds)))] if use_background else None
            plans.append(
                MixPlan(
                    target=str(Path(target).resolve()),
                    target_sha256=library.sha256(target),
                    background=None if background is None else str(Path(background).resolve()),
                    background_sha256=None if background is None else library.sha256(background),
                    snr_db=round(float(rng.uniform(*options.snr_db)), 3),
                    gain_db=round(float(rng.uniform(*options.gain_db)), 3),
                    shift_samples=int(rng.integers(params.hop_samples)) if options.shift else 0,
                    speed=_draw(rng, options.speed, 1.0, 4),
                    tilt_db_per_octave=_draw(rng, options.tilt_db_per_octave, 0.0, 2),
                )
            )
    return plans


BACKGROUND_MIX_SEED = 7919
"""Added to MixOptions.seed for the background copies' plans, so they draw apart from the targets'."""


def plan_background_mixes(
    backgrounds: Sequence[str | os.PathLike[str]], *, options: MixOptions, library: AudioLibrary, params: Params = DEFAULT_PARAMS
) -> list[MixPlan]:
    """`options.background_copies` seeded plans per background clip, each over another background clip."""
    if options.background_copies == 0 or not backgrounds:
        return []
    copies = replace(options, copies=options.background_copies, seed=options.seed + BACKGROUND_MIX_SEED)
    return plan_mixes(backgrounds, backgrounds, options=copies, library=library, params=params)


def _draw(rng: np.random.Generator, bounds: tuple[float, float], neutral: float, digits: int) -> float:
    """A uniform draw from bounds; no draw (so the other draws stay as they were) when they are (neutral, neutral)."""
    if bounds == (neutral, neutral):
        return neutral
    return round(float(rng.uniform(*bounds)), digits)


def change_speed(waveform: npt.NDArray[np.floating], speed: float, *, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    """The waveform played `speed` times faster (shorter and higher), resampled with soxr."""
    if speed == 1.0:
        return np.asarray(waveform, np.float64)
    import soxr

    return soxr.resample(np.asarray(waveform, np.float64), sample_rate_hz, round(sample_rate_hz / speed), quality="VHQ")


def tilt(waveform: npt.NDArray[np.floating], db_per_octave: float, *, sample_rate_hz: int) -> npt.NDArray[np.float64]:
    """The waveform with its spectrum tilted by db_per_octave around 1 kHz (within +-18 dB), by FFT."""
    waveform = np.asarray(waveform, np.float64)
    if db_per_octave == 0.0 or len(waveform) == 0:
        return waveform
    spectrum = np.fft.rfft(waveform)
    frequencies = np.fft.rfftfreq(len(waveform), 1.0 / sample_rate_hz)
    gain_db = np.clip(db_per_octave * np.log2(np.maximum(frequencies, 50.0) / 1000.0), -18.0, 18.0)
    return np.fft.irfft(spectrum * 10.0 ** (gain_db / 20.0), n=len(waveform))


def render_mix(
    plan: MixPlan, *, library: AudioLibrary, options: StreamOptions = DEFAULT_STREAM_OPTIONS, params: Params = DEFAULT_PARAMS
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(mixture, target part, background part), each float32 [n] at params.sample_rate_hz."""
    target = change_speed(library.waveform(plan.target), plan.speed, sample_rate_hz=params.sample_rate_hz)
    signal = np.concatenate([np.zeros(plan.shift_samples), target])
    bed = np.zeros(len(signal))
    if plan.background is not None:
        background = library.waveform(plan.background).astype(np.float64)
        source = np.resize(background, len(signal))  # repeat a short bed; cut a long one
        signal_power = active_power(target, options=options, params=params)
        bed_power = active_power(source, options=options, params=params)
        if signal_power > 0 and bed_power > 0:
            bed = source * math.sqrt(signal_power / bed_power / 10.0 ** (plan.snr_db / 10.0))
    signal = tilt(signal, plan.tilt_db_per_octave, sample_rate_hz=params.sample_rate_hz)
    bed = tilt(bed, plan.tilt_db_per_octave, sample_rate_hz=params.sample_rate_hz)
    mixture = signal + bed
    gain = 10.0 ** (plan.gain_db / 20.0)
    peak = float(np.max(np.abs(mixture))) if len(mixture) else 0.0
    if peak * gain > 1.0:
        gain = 1.0 / peak
    return (mixture * gain).astype(np.float32), (signal * gain).astype(np.float32), (bed * gain).astype(np.float32)


@dataclass(frozen=True)
class AugmentedClip:
    """Embeddings of one augmented clip, with which patches hold target sound."""

    plan: MixPlan
    embeddings: FloatArray
    """float32 [p, 1024]"""
    yamnet_scores: FloatArray
    """float32 [p, 521]"""
    target_level_db: FloatArray
    """float32 [p]: RMS of the target part per patch, dB full scale."""
    background_level_db: FloatArray
    """float32 [p]: RMS of the background part per patch, dB full scale (-200 without one)."""


def embed_mixes(
    plans: Sequence[MixPlan],
    embedder: PatchEmbedder,
    *,
    library: AudioLibrary,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    params: Params = DEFAULT_PARAMS,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
) -> list[AugmentedClip]:
    """YAMNet outputs of every plan, cached as one .npz per plan list and YAMNet weights."""
    from edge.framing import waveform_to_patches

    if not plans:
        return []
    key = hashlib.sha256(json.dumps([CACHE_FORMAT, *[_plan_key(p) for p in plans]], sort_keys=True).encode()).hexdigest()[:24]
    path = None if cache_dir is None else Path(cache_dir) / cache_folder(embedder) / f"{key}.npz"
    if path is not None and path.is_file():
        try:
            with np.load(path, allow_pickle=False) as entry:
                counts = entry["counts"]
                bounds = np.concatenate([[0], np.cumsum(counts)])
                return [
                    AugmentedClip(
                        plan=plan,
                        embeddings=entry["embeddings"][bounds[i] : bounds[i + 1]],
                        yamnet_scores=entry["yamnet_scores"][bounds[i] : bounds[i + 1]],
                        target_level_db=entry["target_level_db"][bounds[i] : bounds[i + 1]],
                        background_level_db=entry["background_level_db"][bounds[i] : bounds[i + 1]],
                    )
                    for i, plan in enumerate(plans)
                ]
        except (OSError, ValueError, KeyError) as error:
            logger.warning("augmentation cache %s unreadable (%s); computing it again", path, error)
    logger.info("YAMNet over %d augmented clips", len(plans))
    clips = []
    for plan in plans:
        mixture, target_part, bed_part = render_mix(plan, library=library, options=options, params=params)
        embeddings, scores = embedder.embed_patches(waveform_to_patches(mixture, params=params))
        levels = patch_rms_dbfs(waveform_to_patches(target_part, params=params))
        bed_levels = patch_rms_dbfs(waveform_to_patches(bed_part, params=params))
        clips.append(AugmentedClip(plan, np.asarray(embeddings, np.float32), np.asarray(scores, np.float32), levels, bed_levels))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, staged = tempfile.mkstemp(prefix=".augment-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                np.savez(
                    stream,
                    counts=np.array([len(c.embeddings) for c in clips]),
                    embeddings=np.concatenate([c.embeddings for c in clips]),
                    yamnet_scores=np.concatenate([c.yamnet_scores for c in clips]),
                    target_level_db=np.concatenate([c.target_level_db for c in clips]),
                    background_level_db=np.concatenate([c.background_level_db for c in clips]),
                )
            os.replace(staged, path)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
    return clips
