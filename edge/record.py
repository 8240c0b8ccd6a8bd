"""The core of `oido-edge record`: seconds of microphone audio to a 16 kHz mono WAV.

With --dataset, one run is one recording session: its takes are cut from one continuous capture
and written as DIR/LABEL/<session>_<NNNN>.wav, the session being the run's start time
(YYYYMMDD-HHMMSS). `oido-train prepare` reads "<group>_<number>" as clip <number> of source
group <group> (data/README.md, "Source groups", rule 3), so the takes of one run share a fold
and no two runs, under any labels, share a group.

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
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence, Union

import numpy as np
import numpy.typing as npt

from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS, Params
from edge.sources import Gap

log = logging.getLogger(__name__)

DATASET_DIGITS = 4
"""Takes in a label folder are numbered 0000, 0001, ... on from the folder's highest number."""
SESSION_TIME_FORMAT = "%Y%m%d-%H%M%S"
"""A session is named by its local start time, e.g. 20240501-143012."""
TAKE_SEPARATOR = "_"
"""<session>_<NNNN>: prepare's rule 3 (stem minus a trailing _NN) reads <session> as the group."""

# Names `record` has written: <session>_<NNNN>, or the bare NNNN of releases before sessions.
_TAKE_STEM = re.compile(r"(?:(?P<session>\d{8}-\d{6}[a-z]*)_)?(?P<take>\d+)")

SUBTYPES = {"float32": "FLOAT", "pcm16": "PCM_16"}
"""Sample formats `record` writes (float32 like the tutorial's clips, or 16-bit PCM)."""

FULL_SCALE = 0.999
"""A sample this loud (absolute value) is at full scale: the microphone's input clipped there."""
CLIPPED_FRACTION = 0.001
"""A take with more than this fraction of its samples at full scale is reported as clipped."""


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
    peak_dbfs: float = -math.inf
    """The loudest captured sample (any channel, as the microphone delivered it), in dBFS (-inf: digital silence)."""
    full_scale_fraction: float = 0.0
    """Fraction of the captured samples at full scale (FULL_SCALE): where the input clipped."""

    def level_problem(self, params: Params = DEFAULT_PARAMS) -> Optional[str]:
        """Why this take makes a poor training clip, judged by its level, or None: silent (no
        sample reaches params.silent_patch_dbfs, under which YAMNet hears nothing) or clipped
        (more than CLIPPED_FRACTION of its samples at full scale)."""
        if self.path is None:
            return None
        if self.peak_dbfs < params.silent_patch_dbfs:
            return (f"{self.path} is silent (peak {self.peak_dbfs:.1f} dBFS): check that the microphone is "
                    "the input you meant (oido-edge devices) and that it is not muted")  # fmt: skip
        if self.full_scale_fraction > CLIPPED_FRACTION:
            return (f"{self.path} clipped ({100 * self.full_scale_fraction:.1f}% of its samples at full scale): "
                    "lower the microphone's gain or move it away from the sound, then record it again")  # fmt: skip
        return None


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


def label_folder(dataset_dir: Union[str, Path], label: str) -> Path:
    """DIR/LABEL, the folder `record --dataset DIR --label LABEL` numbers takes in; ConfigError
    naming --label when LABEL cannot be a folder name (label_problem). Touches no disk."""
    problem = label_problem(label)
    if problem is not None:
        raise ConfigError(f"--label {label!r} {problem}: it becomes a folder name; use e.g. crying_baby")
    return Path(dataset_dir) / label


def new_session_id(dataset_dir: Union[str, Path], *, now: Optional[datetime] = None) -> str:
    """A session name no file in any label folder of `dataset_dir` uses: the start time, YYYYMMDD-HHMMSS.

    Two runs started in the same second get 20240501-143012, then 20240501-143012b, c, ...: prepare
    shares a group across label folders, so a reused name would put two runs in one group.
    """
    stamp = (now or datetime.now()).strftime(SESSION_TIME_FORMAT)
    root = Path(dataset_dir)
    stems: set[str] = set()
    if root.is_dir():
        for folder in root.iterdir():
            if folder.is_dir():
                stems.update(path.stem for path in folder.iterdir())
    suffixes = [""] + [chr(code) for code in range(ord("b"), ord("z") + 1)]
    for suffix in suffixes:
        # Taken if prepare would read an existing stem as this group: <name>, <name>_NN, <name>-NN, <name>__x.
        taken = re.compile(re.escape(stamp + suffix) + r"(?:[_-]\d+|__.*)?")
        if not any(taken.fullmatch(stem) for stem in stems):
            return stamp + suffix
    raise ConfigError(f"{root}: {len(suffixes)} recording sessions started at {stamp}; wait a second and retry")


def next_dataset_path(dataset_dir: Union[str, Path], label: str, *, session: Optional[str] = None) -> Path:
    """DIR/LABEL/<session>_<NNNN>.wav, NNNN one above the highest take number in the folder (0000 for the first).

    Earlier takes count whatever their session, and the bare NNNN.wav of older releases too, so
    numbers keep going up and no existing file is ever chosen. `session` defaults to a new one
    (new_session_id). ConfigError for a label that cannot be a folder name, before touching disk.
    """
    folder = label_folder(dataset_dir, label)
    session = session if session is not None else new_session_id(dataset_dir)
    numbers = []
    if folder.is_dir():
        for path in folder.iterdir():
            match = _TAKE_STEM.fullmatch(path.stem)
            if match and path.suffix.lower() == ".wav":
                numbers.append(int(match["take"]))
    number = max(numbers, default=-1) + 1
    while True:
        path = folder / f"{session}{TAKE_SEPARATOR}{number:0{DATASET_DIGITS}d}.wav"
        if not path.exists():
            return path
        number += 1


class _Takes:
    """One capture cut into consecutive takes: each blocks() yields the next `frames` frames of `source`.

    The block that straddles two takes is split, so no audio falls between them: the takes are
    clips cut from one recording, which is why they share a source group.
    """

    def __init__(self, source: Any, frames: int) -> None:
        self._source = source
        self._frames = frames
        self._items: Iterator[Any] = iter(source.blocks())
        self._leftover: Optional[npt.NDArray[np.float32]] = None
        self.rate_hz = source.rate_hz

    @property
    def stopped(self) -> bool:
        return bool(self._source.stopped)

    def blocks(self) -> Iterator[Any]:
        remaining = self._frames
        while remaining > 0:
            if self._leftover is not None:
                block, self._leftover = self._leftover, None
            else:
                item = next(self._items, None)
                if item is None:
                    return
                if isinstance(item, Gap):
                    yield item
                    continue
                block = np.asarray(item, dtype=np.float32)
            if len(block) > remaining:
                block, self._leftover = block[:remaining], block[remaining:]
            remaining -= len(block)
            yield block

    def close(self) -> None:
        close = getattr(self._items, "close", None)
        if close is not None:
            close()


def record_session(
    source: Any,
    dataset_dir: Union[str, Path],
    label: str,
    *,
    seconds: float,
    takes: int = 1,
    subtype: str = "FLOAT",
    params: Params = DEFAULT_PARAMS,
    now: Optional[datetime] = None,
) -> list[Recording]:
    """Record `takes` consecutive clips of `seconds` each into DIR/LABEL/<session>_<NNNN>.wav (one new session).

    Stops after the take during which the source stopped, nothing was captured or the disk refused
    more; returns one Recording per take started. Raises ConfigError for a bad label, take count or
    duration before anything is captured or written.
    """
    if takes < 1:
        raise ConfigError(f"--count {takes}: record at least one take, e.g. --count 10")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds}: record at least a fraction of a second, e.g. --seconds 5")
    label_folder(dataset_dir, label)
    session = new_session_id(dataset_dir, now=now)
    shared = _Takes(source, round(seconds * int(source.rate_hz)))
    results: list[Recording] = []
    try:
        for take in range(1, takes + 1):
            path = next_dataset_path(dataset_dir, label, session=session)
            log.info("recording %.1f s to %s (take %d of %d, session %s)", seconds, path, take, takes, session)
            result = record(shared, path, seconds=seconds, subtype=subtype, params=params)
            results.append(result)
            if (result.path is None or result.interrupted) and take < takes:
                log.warning("session %s stopped during take %d of %d", session, take, takes)
                break
    finally:
        shared.close()
    return results


def missing_folders(folder: Union[str, Path]) -> List[Path]:
    """The folders check_output_folder(`folder`) would make: `folder` and its missing parents,
    deepest first (empty when it exists)."""
    missing: List[Path] = []
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Remove `folders` (deepest first) while each is empty: what a take that never came made."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (a take, another user's file) or already gone: leave the rest
            return


def check_output_folder(folder: Union[str, Path]) -> Path:
    """`folder` as a Path, made (with its parents) if missing, for `record` to write takes in;
    ConfigError naming it and the fix when it cannot be made (under a file, /proc, a missing drive).

    Checked before the microphone opens, so a mistyped path costs no take. A folder that exists but
    is read-only is found when the WAV is opened, still before anything is captured (OSError).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        why = "a file is in the way" if isinstance(error, (FileExistsError, NotADirectoryError)) else (
            error.strerror or str(error))
        raise ConfigError(f"{folder}: cannot make the folder to record into ({why}); give a path in a folder "
                          f"you can write, e.g. ~/recordings/take.wav", path=folder) from None
    return folder


def check_output_path(path: Union[str, Path]) -> Path:
    """`path` as a Path if `record` can write its WAV there, its folder made if missing (check_output_folder);
    ConfigError naming the fix if it is a folder, or not named .wav.

    Checked before anything is captured: the WAV is renamed onto `path` at the end, which a folder
    refuses, and a WAV under another name (take.flac, take.mp3) would be skipped or misread later.
    """
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; give a file such as {path / 'take.wav'}, or use --dataset {path} "
                          f"--label NAME to number takes in it", path=path)
    if path.suffix.lower() != ".wav":
        raise ConfigError(f"{path}: record writes WAV files; name it {path.with_suffix('.wav')} (a WAV under "
                          f"another name would be misread or skipped by prepare)", path=path)
    check_output_folder(path.parent)
    return path


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
    what was captured and written is kept. Raises before capturing: ConfigError if `path` is a
    folder, not a .wav or in a folder that cannot be made (check_output_path) or the source's
    rate cannot be resampled, OSError if `path` cannot be written.
    """
    from edge.audio import WavWriter
    from edge.resample import StreamingResampler, can_resample

    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"--seconds {seconds}: record at least a fraction of a second, e.g. --seconds 5")
    rate_hz = int(source.rate_hz)
    target_hz = params.sample_rate_hz
    if not can_resample(rate_hz, target_hz):
        raise ConfigError(f"audio at {rate_hz} Hz cannot be resampled to {target_hz} Hz; capture at 16000, 44100 or "
                          f"48000 Hz (--rate or [audio] rate_hz)")
    path = check_output_path(path)  # makes its folder: after every other refusal
    resampler = None if rate_hz == target_hz else StreamingResampler(rate_hz, target_hz)
    wanted = round(seconds * rate_hz)
    captured = 0
    writer = WavWriter(path, rate_hz=target_hz, subtype=subtype)  # a read-only or full disk fails here
    error: Optional[OSError] = None
    peak = 0.0
    full_scale = 0

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
            if len(block):  # the level as the microphone delivered it: any channel, before resampling
                magnitude = np.abs(block).max(axis=1) if block.ndim == 2 else np.abs(block)
                peak = max(peak, float(magnitude.max()))
                full_scale += int(np.count_nonzero(magnitude >= FULL_SCALE))
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
                     error=None if error is None else str(error),
                     peak_dbfs=20.0 * math.log10(min(peak, 1.0)) if peak > 0 else -math.inf,
                     full_scale_fraction=full_scale / captured if captured else 0.0)  # fmt: skip
