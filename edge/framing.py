"""Framing of a 16 kHz waveform into YAMNet patches, batch and streaming.

Patch k covers samples [k * hop_samples, k * hop_samples + patch_samples)
(0.975 s every 0.48 s). YAMNet pads the end of a waveform with zeros to at least
one patch and then up to the next whole hop (`Params.patches_in`); both framers
here do the same, so a stream cut into any blocks gives the batch patches exactly.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Union

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]


def _as_waveform(waveform: npt.ArrayLike) -> FloatArray:
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(
            f"waveform must be mono float32 [samples], got shape {samples.shape}; "
            f"average the channels first (edge.audio.read_audio does)"
        )
    return samples


def waveform_to_patches(
    waveform: npt.ArrayLike,
    *,
    params: Params = DEFAULT_PARAMS,
    pad_end: bool = True,
) -> FloatArray:
    """Cut a waveform into YAMNet patches.

    waveform: float32 [n] in [-1, 1] at params.sample_rate_hz.
    Returns float32 [p, patch_samples]; with pad_end (YAMNet's padding)
    p = params.patches_in(n) (80000 samples -> 10 patches), else only whole patches.
    """
    samples = _as_waveform(waveform)
    patch, hop = params.patch_samples, params.hop_samples
    if pad_end:
        count = params.patches_in(len(samples))
        needed = (count - 1) * hop + patch
        if needed > len(samples):
            samples = np.concatenate([samples, np.zeros(needed - len(samples), np.float32)])
    else:
        count = 0 if len(samples) < patch else 1 + (len(samples) - patch) // hop
    if count == 0:
        return np.zeros((0, patch), np.float32)
    view = np.lib.stride_tricks.as_strided(
        samples, shape=(count, patch), strides=(hop * samples.strides[0], samples.strides[0]), writeable=False
    )
    return np.ascontiguousarray(view)


def wavfile_to_patches(
    path: Union[str, Path],
    *,
    params: Params = DEFAULT_PARAMS,
    pad_end: bool = True,
) -> FloatArray:
    """read_audio + waveform_to_patches: any audio file -> float32 [p, patch_samples]."""
    from edge.audio import read_audio

    return waveform_to_patches(
        read_audio(path, target_rate_hz=params.sample_rate_hz), params=params, pad_end=pad_end
    )


class StreamingFramer:
    """Patches from audio arriving in blocks of any size.

    push() returns the patches completed by a block; flush() ends the stream,
    returning the remaining patches padded as waveform_to_patches pads (at least
    one patch per stream, as YAMNet), and resets.
    """

    def __init__(self, *, params: Params = DEFAULT_PARAMS) -> None:
        self.params = params
        self._patch_samples = params.patch_samples
        self._hop_samples = params.hop_samples
        # A preallocated buffer holding samples [_start, _end), the next patch's first sample at
        # _start: a block is copied in once, an emitted patch only moves _start on, and the held
        # samples move back to the front only when the free tail is too short for a block.
        self._buffer = np.zeros(4 * self._patch_samples, np.float32)
        self._no_patches = np.zeros((0, self._patch_samples), np.float32)
        self._no_patches.flags.writeable = False  # shared by every push that completes no patch
        self.reset()

    def reset(self) -> None:
        """Forget buffered audio; the next sample pushed is sample 0 of a new stream."""
        self._start = 0
        self._end = 0
        self._patches_emitted = 0
        self._samples_seen = 0

    @property
    def samples_seen(self) -> int:
        """Samples pushed since reset()."""
        return self._samples_seen

    @property
    def patches_emitted(self) -> int:
        return self._patches_emitted

    def push(self, block: npt.ArrayLike) -> FloatArray:
        """Add block: float32 [n] at params.sample_rate_hz. Returns float32 [k, patch_samples], k >= 0."""
        is_mono_float32 = type(block) is np.ndarray and block.dtype == np.float32 and block.ndim == 1
        samples = block if is_mono_float32 else _as_waveform(block)
        count = len(samples)
        self._samples_seen += count
        start, end = self._start, self._end
        if end + count > len(self._buffer):
            held = end - start
            if held + count > len(self._buffer):
                grown = np.zeros(held + count + 2 * self._patch_samples, np.float32)
                grown[:held] = self._buffer[start:end]
                self._buffer = grown
            else:
                self._buffer[:held] = self._buffer[start:end]  # numpy copies overlapping ranges safely
            start, end = 0, held
        self._buffer[end : end + count] = samples
        end += count
        self._end = end
        held = end - start
        if held < self._patch_samples:
            self._start = start
            return self._no_patches
        if held < self._patch_samples + self._hop_samples:  # one patch: the usual case
            patches = self._buffer[np.newaxis, start : start + self._patch_samples].copy()
        else:
            patches = waveform_to_patches(self._buffer[start:end], params=self.params, pad_end=False)
        self._start = start + len(patches) * self._hop_samples
        self._patches_emitted += len(patches)
        return patches

    def flush(self) -> FloatArray:
        """End the stream: the remaining patches, zero padded. Returns float32 [k, patch_samples]."""
        total = self.params.patches_in(self._samples_seen)
        remaining = total - self._patches_emitted
        params = self.params
        if remaining > 0:
            needed = (remaining - 1) * params.hop_samples + params.patch_samples
            padded = np.zeros(needed, np.float32)
            held = min(needed, self._end - self._start)
            padded[:held] = self._buffer[self._start : self._start + held]
            patches = waveform_to_patches(padded, params=params, pad_end=False)[:remaining]
        else:
            patches = np.zeros((0, params.patch_samples), np.float32)
        self.reset()
        return patches
