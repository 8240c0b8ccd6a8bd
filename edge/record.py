"""The core of `oido-edge record`: seconds of microphone audio to a 16 kHz mono WAV.

The audio is captured at the device's rate, averaged to mono and resampled in stream to the
model's rate, so a recording is exactly what the pipeline would have heard. It is written to
disk as it arrives (under a temporary name, renamed into place at the end), so a folder that
cannot be written fails before anything is captured, and whatever stops the recording (the
duration, a signal, an exception, a full disk) the samples captured so far are kept as a valid WAV.
"""

from __future__ import annotations

import logging
import math
import os
import unicodedata
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


@dataclass(frozen=True)
class Recording:
    path: Optional[Path]
    """Where the WAV was written; None if nothing was captured."""
    seconds: float
    """Length of what was written, at the model's rate."""
    interrupted: bool
    """True if the recording stopped before the requested duration."""
    error: Optional[str] = None
    """Why writing stopped early (disk full, read-only), if it did; what was written is kept."""


def label_problem(label: str) -> Optional[str]:
    """Why `label` cannot be a class folder name, or None. The same rule as train.datasets.validate_label.

    Refused: empty or blank, "." / "..", path separators, control characters, leading or trailing
    whitespace. Any other unicode ("tür_klopfen", "狗", "door knock") is a fine label.
    """
    if not label.strip():
        return "is empty"
    if label in (".", ".."):
        return "is a relative path"
    if "/" in label or "\\" in label or os.sep in label or (os.altsep and os.altsep in label):
        return "contains a path separator"
    if any(unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp") for char in label):
        return "contains a control character"
    if label != label.strip():
        return "starts or ends with whitespace"
    return None


def next_dataset_path(dataset_dir: Union[str, Path], label: str) -> Path:
    """DIR/LABEL/NNNN.wav with NNNN one above the highest number already there (0000 for the first)."""
    problem = label_problem(label)
    if problem is not None:
        raise ConfigError(f"--label {label!r} {problem}: it becomes a folder name; use e.g. crying_baby")
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

    Stops early when the source stops (signal) or ends, or the disk refuses more (one log line);
    what was captured and written is kept. Raises OSError before capturing if `path` cannot be written.
    """
    from edge.audio import WavWriter
    from edge.resample import StreamingResampler

    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds}: record at least a fraction of a second, e.g. --seconds 5")
    rate_hz = int(source.rate_hz)
    target_hz = params.sample_rate_hz
    resampler = None if rate_hz == target_hz else StreamingResampler(rate_hz, target_hz)
    wanted = round(seconds * rate_hz)
    captured = 0
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = WavWriter(path, rate_hz=target_hz, subtype=subtype)  # a read-only or full disk fails here
    error: Optional[OSError] = None

    def write(samples: npt.NDArray[np.float32]) -> None:
        nonlocal error
        if error is None and len(samples):
            try:
                writer.write(np.clip(samples, -1.0, 1.0))
            except OSError as failure:
                error = failure
                log.error("%s: cannot write more (%s); kept the first %.2f s as a valid WAV", path,
                          failure.strerror or failure, writer.seconds)

    try:
        for item in source.blocks():
            if isinstance(item, Gap):
                log.warning("audio was lost while recording (%s); the recording has a gap", item.reason)
                continue
            block = np.asarray(item, dtype=np.float32)
            block = block[: wanted - captured]
            mono = block.mean(axis=1, dtype=np.float32) if block.ndim == 2 else block
            write(resampler.push(mono) if resampler is not None else mono)
            captured += len(block)
            if captured >= wanted or source.stopped or error is not None:
                break
    finally:
        # Runs on KeyboardInterrupt too: keep what was captured.
        if resampler is not None:
            write(resampler.flush())
        written = writer.close()
        if written is None:
            log.warning("nothing was captured; %s not written", path)
    interrupted = captured < wanted or error is not None
    if interrupted and error is None:
        log.warning("recording stopped after %.2f of %.2f s; wrote what was captured", captured / rate_hz, seconds)
    return Recording(path=written, seconds=writer.frames / target_hz, interrupted=interrupted,
                     error=None if error is None else str(error))
