"""Audio files in and out: any readable file -> 16 kHz mono float32; atomic WAV writing.

Reading uses soundfile (libsndfile): WAV (PCM_U8/16/24/32, FLOAT), FLAC, OGG, ...
at any rate and channel count. Channels are averaged, the rate converted with
edge.resample (in float: nothing is clipped).
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Union

import numpy as np
import numpy.typing as npt

from edge.errors import AudioError
from edge.params import DEFAULT_PARAMS
from edge.resample import resample

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
PathArg = Union[str, "os.PathLike[str]"]

_FILE_MODE = 0o644

WAV_SUBTYPES = ("FLOAT", "PCM_16")
"""Subtypes write_wav writes: 32-bit float (lossless for our float32) or 16-bit PCM."""


def _soundfile():  # type: ignore[no-untyped-def]
    try:
        import soundfile
    except (ImportError, OSError) as error:  # OSError: libsndfile missing
        raise RuntimeError(
            f"reading audio files needs soundfile: `pip install soundfile` ({error})"
        ) from None
    return soundfile


def read_audio(path: PathArg, *, target_rate_hz: int = DEFAULT_PARAMS.sample_rate_hz) -> FloatArray:
    """Read an audio file as mono float32 [n], nominally in [-1, 1], at target_rate_hz.

    Mono is the mean of the channels; NaN/Inf samples become 0 (with a warning).
    Raises AudioError naming the file if it is missing, empty or not readable audio.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise AudioError(f"{file_path}: audio file not found; check the path", path=file_path)
    if file_path.stat().st_size == 0:
        raise AudioError(f"{file_path}: file is empty (0 bytes); re-record or re-copy it", path=file_path)
    soundfile = _soundfile()
    try:
        samples, rate_hz = soundfile.read(str(file_path), dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, OSError) as error:  # LibsndfileError is a RuntimeError
        raise AudioError(
            f"{file_path}: not readable audio ({error}); the file may be corrupt or not what its name "
            f"says: convert it to WAV or FLAC (e.g. `ffmpeg -i in -ar 16000 -ac 1 out.wav`)",
            path=file_path,
        ) from None
    if samples.shape[0] == 0:
        raise AudioError(f"{file_path}: holds no audio samples; re-record or re-export it", path=file_path)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if not np.all(np.isfinite(mono)):
        bad = int(np.count_nonzero(~np.isfinite(mono)))
        logger.warning("%s: %d NaN/Inf sample(s) replaced with 0", file_path, bad)
        mono = np.nan_to_num(mono, nan=0.0, posinf=0.0, neginf=0.0)
    if int(rate_hz) != int(target_rate_hz):
        mono = resample(mono, int(rate_hz), int(target_rate_hz))
    return np.ascontiguousarray(mono, dtype=np.float32)


def audio_rate_hz(path: PathArg) -> int:
    """Sample rate of an audio file (AudioError if unreadable)."""
    file_path = Path(path)
    try:
        return int(_soundfile().info(str(file_path)).samplerate)
    except (RuntimeError, ValueError, TypeError, OSError) as error:
        raise AudioError(f"{file_path}: not readable audio ({error})", path=file_path) from None


def write_wav(path: PathArg, waveform: npt.ArrayLike, *, rate_hz: int, subtype: str = "FLOAT") -> Path:
    """Write a WAV file atomically (temp file in the same folder, then os.replace).

    waveform: float [n] or [n, channels], nominally in [-1, 1]; subtype "FLOAT" (exact) or
    "PCM_16" (values beyond [-1, 1] are clipped there, with a warning). Returns the path.
    """
    if subtype not in WAV_SUBTYPES:
        raise ValueError(f"subtype must be one of {list(WAV_SUBTYPES)}, got {subtype!r}")
    if int(rate_hz) <= 0:
        raise ValueError(f"rate_hz must be a positive sample rate, got {rate_hz}")
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim not in (1, 2):
        raise ValueError(f"waveform must be [n] or [n, channels], got shape {samples.shape}")
    if not np.all(np.isfinite(samples)):
        raise ValueError(f"{path}: waveform holds NaN/Inf samples; replace them before writing")
    if subtype == "PCM_16" and samples.size and float(np.max(np.abs(samples))) > 1.0:
        logger.warning("%s: clipping samples beyond [-1, 1] for 16-bit PCM", path)
        samples = np.clip(samples, -1.0, 1.0)
    target = Path(path)
    soundfile = _soundfile()
    descriptor, temp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        soundfile.write(temp_name, samples, int(rate_hz), subtype=subtype, format="WAV")
        os.chmod(temp_name, _FILE_MODE)  # mkstemp makes it owner-only
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return target
