"""The core of `oido-edge record`: seconds of microphone audio to a 16 kHz mono WAV.

The audio is captured at the device's rate, averaged to mono and resampled in stream to the
model's rate, so a recording is exactly what the pipeline would have heard. Whatever stops the
recording (the duration, a signal, an exception) the samples captured so far are written as a
valid WAV, atomically.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS, Params
from edge.sources import Gap

log = logging.getLogger(__name__)

DATASET_DIGITS = 4
"""Recordings in a dataset folder are numbered 0000.wav, 0001.wav, ..."""

SUBTYPES = {"float32": "FLOAT", "pcm16": "PCM_16"}
"""Sample formats `record` writes (float32 like the tutorial's clips, or 16-bit PCM)."""

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Recording:
    path: Optional[Path]
    """Where the WAV was written; None if nothing was captured."""
    seconds: float
    """Length of what was written, at the model's rate."""
    interrupted: bool
    """True if the recording stopped before the requested duration."""


def next_dataset_path(dataset_dir: Union[str, Path], label: str) -> Path:
    """DIR/LABEL/NNNN.wav with NNNN one above the highest number already there (0000 for the first)."""
    if not _LABEL.match(label):
        raise ConfigError(
            f"--label {label!r}: use letters, digits, '_', '-' or '.' (it becomes a folder name), e.g. crying_baby"
        )
    folder = Path(dataset_dir) / label
    numbers = [int(p.stem) for p in folder.glob("*.wav") if p.stem.isdigit()] if folder.is_dir() else []
    return folder / f"{max(numbers, default=-1) + 1:0{DATASET_DIGITS}d}.wav"


def record(
    source: Any,
    path: Union[str, Path],
    *,
    seconds: float,
    subtype: str = "FLOAT",
    params: Params = DEFAULT_PARAMS,
) -> Recording:
    """Capture `seconds` of `source` (rate_hz, blocks(), stopped) into a mono WAV at params.sample_rate_hz.

    Stops early when the source stops (signal) or ends; what was captured is still written.
    """
    from edge.audio import write_wav
    from edge.resample import StreamingResampler

    if seconds <= 0:
        raise ConfigError(f"--seconds {seconds}: record at least a fraction of a second, e.g. --seconds 5")
    rate_hz = int(source.rate_hz)
    target_hz = params.sample_rate_hz
    resampler = None if rate_hz == target_hz else StreamingResampler(rate_hz, target_hz)
    wanted = round(seconds * rate_hz)
    captured = 0
    pieces: list[npt.NDArray[np.float32]] = []
    path = Path(path)
    try:
        for item in source.blocks():
            if isinstance(item, Gap):
                log.warning("audio was lost while recording (%s); the recording has a gap", item.reason)
                continue
            block = np.asarray(item, dtype=np.float32)
            block = block[: wanted - captured]
            mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
            pieces.append(resampler.push(mono) if resampler is not None else mono)
            captured += len(block)
            if captured >= wanted or source.stopped:
                break
    finally:
        # Runs on KeyboardInterrupt too: keep what was captured.
        if resampler is not None:
            pieces.append(resampler.flush())
        waveform = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        written: Optional[Path] = None
        if len(waveform):
            path.parent.mkdir(parents=True, exist_ok=True)
            write_wav(path, np.clip(waveform, -1.0, 1.0), rate_hz=target_hz, subtype=subtype)
            written = path
        else:
            log.warning("nothing was captured; %s not written", path)
    interrupted = captured < wanted
    if interrupted:
        log.warning("recording stopped after %.2f of %.2f s; wrote what was captured", captured / rate_hz, seconds)
    return Recording(path=written, seconds=len(waveform) / target_hz, interrupted=interrupted)
