"""The one set of numbers both sides agree on: YAMNet framing, windows, decisions.

Every length in samples is derived here from seconds/frames; no other module
spells out 15600, 7680 or 0.48.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np


_MAY_BE_ZERO = frozenset({"overlap", "mel_min_hz"})
"""Float fields for which 0 is a valid value; every other number must be > 0."""
_NEGATIVE = frozenset({"silent_patch_dbfs"})
"""Float fields that must be < 0 (levels in dB full scale)."""
MAX_WINDOW_SECONDS = 60.0
"""Longest window decision: its patches' probabilities are kept until it decides."""
DEFAULT_CLASSES: tuple[str, ...] = ("crying_baby", "clock_alarm", "toilet_flush", "water_drops")
"""The default task's labels (the tutorial's four ESC-50 classes), in head output order: train
prepares them, convert judges the default task's goal for a head of them."""


@dataclass(frozen=True)
class Params:
    """Audio front end, YAMNet patching and window decisions (YAMNet's params.py, extended)."""

    sample_rate_hz: int = 16000
    """Rate every model input is at; audio at other rates is resampled to it."""
    stft_window_seconds: float = 0.025
    """Length of one STFT frame (periodic Hann)."""
    stft_hop_seconds: float = 0.010
    """Step between STFT frames."""
    mel_bands: int = 64
    """Mel bands of the log-mel spectrogram."""
    mel_min_hz: float = 125.0
    """Lower edge of the lowest mel band."""
    mel_max_hz: float = 7500.0
    """Upper edge of the highest mel band."""
    log_offset: float = 0.001
    """Added to mel magnitudes before the log, so silence stays finite."""
    patch_frames: int = 96
    """STFT frames in one YAMNet patch (0.975 s of audio)."""
    patch_hop_frames: int = 48
    """STFT frames between the starts of consecutive patches (0.48 s)."""
    embedding_size: int = 1024
    """Length of one YAMNet embedding."""
    yamnet_classes: int = 521
    """AudioSet classes YAMNet scores."""
    window_seconds: float = 3.0
    """Audio one window decision looks at (the tutorial's NUM_SECONDS)."""
    overlap: float = 0.5
    """Fraction of a window shared with the next (the tutorial's OVERLAP_FACTOR)."""
    clip_seconds: float = 5.0
    """Length of one ESC-50 clip."""
    silent_patch_dbfs: float = -90.0
    """Patches quieter than this (RMS, dB full scale) hold no evidence: they do not vote in clip or
    window decisions and cannot start an event. YAMNet cannot hear them: at -90 dBFS the embedding
    of noise or of water drops is within cosine 0.995 of digital silence's. ESC-50 pads short
    recordings with digital zeros, and a patch of zeros gets the same output in every clip:
    averaged into the clip's mean it decided near-ties (5-261433-A-15: 8 of its 10 patches)."""

    def __post_init__(self) -> None:
        # A manifest is read from disk: refuse what would crash (NaN, inf, 16000.5 Hz) or be absurd later.
        for item in fields(self):
            value = getattr(self, item.name)
            if item.type in ("int", int):
                if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                    raise ValueError(f"{item.name} must be a positive whole number, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{item.name} must be a finite number, got {value!r}")
            elif item.name in _NEGATIVE:
                if value >= 0:
                    raise ValueError(f"{item.name} must be a level below 0 dBFS, got {value!r}")
            elif value <= 0 and item.name not in _MAY_BE_ZERO:
                raise ValueError(f"{item.name} must be positive, got {value!r}")
        if not 0.0 <= self.overlap < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        # A window decides over the patches wholly inside it, which lie on the hop grid wherever it
        # starts: only a patch plus a hop is sure to hold one (3 s holds 4 or 5).
        shortest = (self.patch_samples + self.hop_samples) / self.sample_rate_hz
        if self.window_seconds < shortest - 1e-9:
            raise ValueError(
                f"window_seconds={self.window_seconds:g} is shorter than one YAMNet patch plus one hop "
                f"({shortest:.3f} s), so some windows would hold no whole patch and decide nothing; "
                f"use a window of at least {shortest:.3f} s"
            )
        if self.window_seconds > MAX_WINDOW_SECONDS:
            raise ValueError(
                f"window_seconds={self.window_seconds:g} is longer than {MAX_WINDOW_SECONDS:g} s: a window "
                f"keeps every patch's probabilities until it decides; use {MAX_WINDOW_SECONDS:g} s or less"
            )

    # --- derived sizes, in samples unless the name says otherwise ---
    @property
    def stft_window_samples(self) -> int:
        return round(self.sample_rate_hz * self.stft_window_seconds)

    @property
    def stft_hop_samples(self) -> int:
        return round(self.sample_rate_hz * self.stft_hop_seconds)

    @property
    def fft_length(self) -> int:
        return 2 ** math.ceil(math.log2(self.stft_window_samples))

    @property
    def spectrum_bins(self) -> int:
        return self.fft_length // 2 + 1

    @property
    def patch_samples(self) -> int:
        """Samples one patch spans: 15600 at 16 kHz."""
        return (self.patch_frames - 1) * self.stft_hop_samples + self.stft_window_samples

    @property
    def patch_seconds(self) -> float:
        return self.patch_samples / self.sample_rate_hz

    @property
    def hop_samples(self) -> int:
        """Samples between patch starts: 7680 at 16 kHz."""
        return self.patch_hop_frames * self.stft_hop_samples

    @property
    def hop_seconds(self) -> float:
        return self.hop_samples / self.sample_rate_hz

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate_hz)

    @property
    def decision_hop_samples(self) -> int:
        """Samples between window decisions: window x (1 - overlap)."""
        return max(1, round(self.window_samples * (1.0 - self.overlap)))

    @property
    def decision_hop_seconds(self) -> float:
        return self.decision_hop_samples / self.sample_rate_hz

    @property
    def window_patches(self) -> int:
        """Whole patches that fit inside one window: 5 for 3 s."""
        return 1 + (self.window_samples - self.patch_samples) // self.hop_samples

    @property
    def clip_samples(self) -> int:
        return round(self.clip_seconds * self.sample_rate_hz)

    def audible(self, rms_dbfs: Any) -> Any:
        """bool (or bool array): patches at these RMS levels hold evidence (>= silent_patch_dbfs)."""
        return np.asarray(rms_dbfs) >= self.silent_patch_dbfs

    def patches_in(self, num_samples: int) -> int:
        """Patches YAMNet makes of `num_samples` samples, end padded to the next hop.

        Matches YAMNet's own padding: at least one patch; 5 s at 16 kHz -> 10.
        """
        if num_samples <= self.patch_samples:
            return 1
        return 1 + math.ceil((num_samples - self.patch_samples) / self.hop_samples)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "Params":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**values)

    def with_changes(self, **changes: Any) -> "Params":
        return replace(self, **changes)


DEFAULT_PARAMS = Params()
