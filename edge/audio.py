"""Audio files in and out: any readable file -> 16 kHz mono float32; atomic WAV writing.

Reading uses soundfile (libsndfile): WAV (PCM_U8/16/24/32, FLOAT), FLAC, OGG, AIFF (and MP3
where libsndfile >= 1.1, when a file is named: folders are scanned for AUDIO_SUFFIXES only),
at any rate and channel count. Channels are averaged, the rate converted with
edge.resample (in float: nothing is clipped).

The contract of `read_audio`, the one train/prepare.py keeps too: float32, mono, finite, at
the target rate, at least one sample. Integer PCM is in [-1, 1] as read; after a rate change
full-scale audio may overshoot by the resampler's band-limiting (real audio: a few percent;
never more than `edge.resample.peak_gain`, < 3). Overshoot is kept, never clipped, so training
and the device see the same numbers. Float files hold what they hold: NaN/Inf become 0, and a
peak beyond MISSCALED_PEAK (no resampling can explain it) is kept with a warning naming the file.

Writing is done here, not by libsndfile, so that a full or read-only disk raises OSError with
its errno, and a stream cut short by one (`WavWriter`) still leaves a valid WAV of what fit.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import struct
import tempfile
from pathlib import Path
from typing import Optional, Union

import numpy as np
import numpy.typing as npt

from edge.errors import AudioError
from edge.params import DEFAULT_PARAMS
from edge.resample import resample

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
PathArg = Union[str, "os.PathLike[str]"]

AUDIO_SUFFIXES = frozenset({".wav", ".flac", ".ogg", ".aif", ".aiff"})
"""File types taken from a folder of recordings (a user's class folders, a folder to replay); no MP3,
which older libsndfile builds cannot read and whose encoder delay shifts onsets."""

_FILE_MODE = 0o644

WAV_SUBTYPES = ("FLOAT", "PCM_16")
"""Subtypes write_wav writes: 32-bit float (lossless for our float32) or 16-bit PCM."""

MISSCALED_PEAK = 4.0
"""A float file peaking beyond this is mis-scaled (resampling overshoot stays below 3): warn."""

_WAV_MAX_BYTES = 0xFFFFFFFF
"""RIFF sizes are 32-bit: a WAV file cannot exceed 4 GiB."""
_PCM16_SCALE = 32768.0
"""float -> 16-bit PCM as libsndfile does it: x * 2^15, rounded, saturated to [-32768, 32767]."""
_ENCODE_FRAMES = 16384
"""Frames encoded and written per step: bounds the temporary memory of a write (a long-running device)."""
_CUT_DATA_CHUNK = re.compile(r"^\s*(?:data|SSND)\s*:\s*(?P<promised>\d+)\s*\(should be (?P<held>\d+)\)", re.MULTILINE)
"""libsndfile's verbose header line for a WAV (AIFF) data chunk longer than the file."""
_UNKNOWN_LENGTH_BYTES = 0x7FFF0000
"""Data sizes from here up (0x7FFFFFFF, 0xFFFFFFFF) mean "length unknown", not "cut short"."""


def _soundfile():  # type: ignore[no-untyped-def]
    try:
        import soundfile
    except (ImportError, OSError) as error:  # OSError: libsndfile missing
        raise RuntimeError(
            f"reading audio files needs soundfile: `pip install soundfile` ({error})"
        ) from None
    return soundfile


def warn_if_misscaled(path: object, peak: float) -> None:
    """Warn, naming `path`, when a float file's `peak` is beyond MISSCALED_PEAK (read_audio and prepare)."""
    if peak > MISSCALED_PEAK:
        logger.warning(
            "%s: peaks at %.3g, far beyond full scale [-1, 1]: the file is probably mis-scaled (integer "
            "samples stored as float?); kept as is, not clipped; re-export it normalised",
            path, peak,
        )


def missing_audio_bytes(extra_info: str) -> int:
    """Bytes of audio a WAV or AIFF header promises that its file lacks (a copy cut short), else 0.

    extra_info: libsndfile's header dump (``soundfile.info(path, verbose=True).extra_info``, or
    ``SoundFile.extra_info``), which reads ``data : 160000 (should be 79978)`` (AIFF: ``SSND : ...``)
    when the data chunk runs past the end of the file; libsndfile itself then reads what is there
    without complaint. A size of 2 GiB or more is the placeholder of a writer that streamed to a
    pipe and never knew the length.
    """
    match = _CUT_DATA_CHUNK.search(extra_info)
    if match is None:
        return 0
    promised, held = int(match["promised"]), int(match["held"])
    return promised - held if held < promised < _UNKNOWN_LENGTH_BYTES else 0


def cut_short_error(path: PathArg, extra_info: str) -> Optional[AudioError]:
    """The AudioError naming `path` when its header (libsndfile's `extra_info` dump) promises more
    audio than the file holds (missing_audio_bytes), else None."""
    missing = missing_audio_bytes(extra_info)
    if not missing:
        return None
    return AudioError(
        f"{path}: cut short: its header promises {missing} more bytes of audio than the file holds (an interrupted "
        f"copy?); copy it again, or delete it",
        path=path,
    )


def read_audio(path: PathArg, *, target_rate_hz: int = DEFAULT_PARAMS.sample_rate_hz) -> FloatArray:
    """Read an audio file as mono float32 [n >= 1], finite, nominally in [-1, 1], at target_rate_hz.

    Mono is the mean of the channels; NaN/Inf samples become 0 (with a warning). Resampled
    full-scale audio may exceed [-1, 1] slightly (kept; see the module docstring).
    Raises AudioError naming the file if it is missing, empty, not readable audio, cut short (a
    WAV or AIFF copy whose header promises more audio than it holds), too short to give one sample
    at target_rate_hz, or at a rate that cannot be converted.
    """
    file_path = Path(path)
    if not file_path.is_file():
        raise AudioError(f"{file_path}: audio file not found; check the path", path=file_path)
    if file_path.stat().st_size == 0:
        raise AudioError(f"{file_path}: file is empty (0 bytes); re-record or re-copy it", path=file_path)
    soundfile = _soundfile()
    cut_short: Optional[AudioError] = None
    try:
        with soundfile.SoundFile(str(file_path)) as audio:
            cut_short = cut_short_error(file_path, str(audio.extra_info))
            if cut_short is None:
                rate_hz = audio.samplerate
                samples = audio.read(dtype="float32", always_2d=True)
    except (RuntimeError, ValueError, TypeError, OSError, MemoryError) as error:
        # LibsndfileError is a RuntimeError; MemoryError: a corrupt header claiming billions of frames.
        raise AudioError(
            f"{file_path}: not readable audio ({type(error).__name__}: {error}); the file may be corrupt or "
            f"not what its name says: convert it to WAV or FLAC (e.g. `ffmpeg -i in -ar 16000 -ac 1 out.wav`)",
            path=file_path,
        ) from None
    if cut_short is not None:
        raise cut_short
    if samples.shape[0] == 0:
        raise AudioError(f"{file_path}: holds no audio samples; re-record or re-export it", path=file_path)
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    mono = _finite(mono, file_path, "")
    warn_if_misscaled(file_path, float(np.max(np.abs(mono))))
    if int(rate_hz) != int(target_rate_hz):
        try:
            mono = resample(mono, int(rate_hz), int(target_rate_hz))
        except ValueError as error:
            raise AudioError(
                f"{file_path}: sample rate {rate_hz} Hz cannot be converted to {target_rate_hz} Hz ({error})",
                path=file_path,
            ) from None
        mono = _finite(mono, file_path, " after resampling")  # only float garbage near 3e38 overflows
    if len(mono) == 0:
        raise AudioError(
            f"{file_path}: {samples.shape[0]} sample(s) at {rate_hz} Hz is less than one sample at "
            f"{target_rate_hz} Hz; record a longer clip",
            path=file_path,
        )
    return np.ascontiguousarray(mono, dtype=np.float32)


def _finite(samples: FloatArray, file_path: Path, where: str) -> FloatArray:
    """samples with NaN/Inf replaced by 0, and one warning naming the file if there were any."""
    if np.all(np.isfinite(samples)):
        return samples
    bad = int(np.count_nonzero(~np.isfinite(samples)))
    logger.warning("%s: %d NaN/Inf sample(s)%s replaced with 0", file_path, bad, where)
    return np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)


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
    A full or read-only disk raises OSError (ENOSPC, EROFS, ...) and leaves any old file as it was.
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
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    writer = WavWriter(path, rate_hz=int(rate_hz), channels=channels, subtype=subtype)
    try:
        writer.write(samples)
        written = writer.close(keep_empty=True)
    except BaseException:
        writer.abort()
        raise
    assert written is not None
    return written


class WavWriter:
    """Streams float samples into a WAV file (FLOAT or PCM_16) under a temporary name; close() renames it into place.

    write() appends float [n] or [n, channels] blocks (PCM_16 is clipped to [-1, 1]). If a write fails
    (disk full, read-only, 4 GiB reached) it raises OSError after cutting the file back to the last whole
    frame, so close() still gives a valid WAV of everything written before the failure. abort() deletes it.
    Opening fails at once (OSError) where the folder is not writable, before any audio is captured.
    """

    def __init__(self, path: PathArg, *, rate_hz: int, channels: int = 1, subtype: str = "FLOAT") -> None:
        if subtype not in WAV_SUBTYPES:
            raise ValueError(f"subtype must be one of {list(WAV_SUBTYPES)}, got {subtype!r}")
        if int(rate_hz) <= 0 or int(channels) < 1:
            raise ValueError(f"need rate_hz > 0 and channels >= 1, got {rate_hz} and {channels}")
        self.path = Path(path)
        self.rate_hz = int(rate_hz)
        self.channels = int(channels)
        self.subtype = subtype
        self._sample_bytes = 4 if subtype == "FLOAT" else 2
        self._frame_bytes = self._sample_bytes * self.channels
        self.frames = 0
        """Whole frames in the file so far."""
        descriptor, temp_name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._fd: Optional[int] = descriptor
        self._temp = Path(temp_name)
        try:
            self._header_bytes = len(self._header())
            self._write_all(self._header())
        except BaseException:
            self.abort()
            raise

    @property
    def seconds(self) -> float:
        return self.frames / self.rate_hz

    def _header(self) -> bytes:
        data_bytes = self.frames * self._frame_bytes
        byte_rate = self.rate_hz * self._frame_bytes
        if self.subtype == "PCM_16":
            fmt = struct.pack("<HHIIHH", 1, self.channels, self.rate_hz, byte_rate, self._frame_bytes, 16)
            chunks = [b"fmt " + struct.pack("<I", len(fmt)) + fmt]
        else:  # IEEE float: an extended fmt chunk and a fact chunk, as the WAVE spec asks
            fmt = struct.pack("<HHIIHHH", 3, self.channels, self.rate_hz, byte_rate, self._frame_bytes, 32, 0)
            chunks = [b"fmt " + struct.pack("<I", len(fmt)) + fmt, b"fact" + struct.pack("<II", 4, self.frames)]
        body = b"WAVE" + b"".join(chunks) + b"data" + struct.pack("<I", data_bytes)
        return b"RIFF" + struct.pack("<I", len(body) + data_bytes) + body

    def _encode(self, block: npt.ArrayLike) -> bytes:
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim == 1:
            samples = samples[:, np.newaxis]
        if samples.ndim != 2 or samples.shape[1] != self.channels:
            raise ValueError(f"{self.path}: expected blocks [n, {self.channels}], got shape {samples.shape}")
        if self.subtype == "PCM_16":
            scaled = np.rint(np.clip(samples, -1.0, 1.0) * _PCM16_SCALE)
            return np.clip(scaled, -_PCM16_SCALE, _PCM16_SCALE - 1).astype("<i2").tobytes()
        return samples.astype("<f4").tobytes()

    def _write_all(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            if written <= 0:  # pragma: no cover - write(2) reports errors by raising
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self._temp))
            view = view[written:]

    def write(self, block: npt.ArrayLike) -> None:
        """Append float [n] or [n, channels]; OSError if the disk refuses (the file stays valid)."""
        if self._fd is None:
            raise ValueError(f"{self.path}: the writer is closed")
        samples = np.asarray(block)
        for start in range(0, len(samples), _ENCODE_FRAMES):
            data = self._encode(samples[start : start + _ENCODE_FRAMES])
            if self._header_bytes + (self.frames * self._frame_bytes) + len(data) > _WAV_MAX_BYTES:
                raise OSError(errno.EFBIG, "a WAV file cannot exceed 4 GiB", str(self.path))
            try:
                self._write_all(data)
            except OSError:
                self._cut_to_whole_frames()
                raise
            self.frames += len(data) // self._frame_bytes

    def _cut_to_whole_frames(self) -> None:
        # Part of the block may have reached the disk: keep its whole frames, drop a torn one.
        assert self._fd is not None
        try:
            size = os.fstat(self._fd).st_size
            self.frames = max(0, size - self._header_bytes) // self._frame_bytes
            os.ftruncate(self._fd, self._header_bytes + self.frames * self._frame_bytes)
            os.lseek(self._fd, 0, os.SEEK_END)
        except OSError as error:  # pragma: no cover - the disk is gone altogether
            logger.debug("%s: cannot trim the partial write: %s", self._temp, error)

    def close(self, *, keep_empty: bool = False) -> Optional[Path]:
        """Finish the header and rename the file into place; returns the path (None if empty and not keep_empty)."""
        if self._fd is None:
            return None
        if self.frames == 0 and not keep_empty:
            self.abort()
            return None
        try:
            os.pwrite(self._fd, self._header(), 0)  # same length as before: needs no new disk space
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.chmod(self._temp, _FILE_MODE)  # mkstemp makes it owner-only
            os.replace(self._temp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        """Delete the temporary file; the target is left as it was."""
        if self._fd is not None:
            try:
                os.close(self._fd)
            except OSError:  # pragma: no cover
                pass
            self._fd = None
        self._temp.unlink(missing_ok=True)


def audio_files_in(folder: PathArg) -> list[Path]:
    """The audio files (AUDIO_SUFFIXES, any case) under `folder` and its sub-folders, sorted;
    AudioError naming the folder when it holds none."""
    root = Path(folder)
    files = sorted(path for path in root.rglob("*") if path.is_file() and path.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AudioError(f"{root}: the folder holds no {'/'.join(sorted(AUDIO_SUFFIXES))} files", path=root)
    return files
