"""What happens to a detected event besides its LED: a JSON-lines log, and optionally its audio on disk.

EventLog appends one JSON object per finished event::

    {"label": "crying_baby", "start_seconds": 12.48, "end_seconds": 16.335, "duration_seconds": 3.855,
     "peak_score": 0.97, "mean_score": 0.88, "start_utc": "2025-01-02T03:04:05.678Z", "end_utc": ...,
     "source": "mic:USB Audio", "audio": "/var/lib/oido/events/oido-20250102T030405678-crying_baby.wav"}

EventAudioSaver keeps the last few seconds of input in a ring buffer and writes each finished
event's audio as a 16-bit WAV, deleting the oldest clips beyond a disk budget and a count.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import IO, Any, Optional, Union

import numpy as np
import numpy.typing as npt

from edge.config import STDOUT, EventConfig
from edge.detect import Event

log = logging.getLogger(__name__)

SCORE_DECIMALS = 4
"""Scores in the log are rounded to this many decimals."""

SECONDS_DECIMALS = 3
"""Times in the log are rounded to milliseconds."""

RING_SLACK_SECONDS = 10.0
"""Extra audio the saver keeps beyond pre-roll + longest clip: an event ends (hold, latency) after its sound."""

CLIP_PREFIX = "oido-"
"""Saved clips are named oido-<UTC time>-<label>.wav; only such files are ever deleted."""

_CLIP_NAME = re.compile(r"^oido-\d{8}T\d{9}-.+\.wav$")

BYTES_PER_MB = 1024 * 1024


def utc_iso(timestamp: float) -> str:
    """POSIX time -> '2025-01-02T03:04:05.678Z'."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def event_record(
    event: Event,
    *,
    offset_seconds: float = 0.0,
    stream_start_time: Optional[float] = None,
    source: Optional[str] = None,
    audio_path: Optional[Path] = None,
) -> dict[str, Any]:
    """The JSON-ready dict of one event.

    offset_seconds: added to the event's stream times (the stream time where the pipeline was
    last reset). stream_start_time: POSIX time of stream time 0, for the *_utc fields.
    """
    start = event.start_seconds + offset_seconds
    end = None if event.end_seconds is None else event.end_seconds + offset_seconds
    record: dict[str, Any] = {
        "label": event.label,
        "start_seconds": round(start, SECONDS_DECIMALS),
        "end_seconds": None if end is None else round(end, SECONDS_DECIMALS),
        "duration_seconds": None if end is None else round(end - start, SECONDS_DECIMALS),
        "peak_score": round(float(event.peak_score), SCORE_DECIMALS),
        "mean_score": round(float(event.mean_score), SCORE_DECIMALS),
    }
    if stream_start_time is not None:
        record["start_utc"] = utc_iso(stream_start_time + start)
        record["end_utc"] = None if end is None else utc_iso(stream_start_time + end)
    if source is not None:
        record["source"] = source
    if audio_path is not None:
        record["audio"] = str(audio_path)
    return record


class EventLog:
    """Appends one JSON line per event to a file (created with its directory) or to stdout ("-").

    Each line is flushed as written, so a crash loses at most the event being written.
    """

    def __init__(self, target: Union[str, Path, IO[str]]) -> None:
        self._owned = False
        if isinstance(target, (str, Path)):
            if str(target) == STDOUT:
                self._stream: IO[str] = sys.stdout
                self.path: Optional[Path] = None
            else:
                self.path = Path(target)
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                    self._stream = open(self.path, "a", encoding="utf-8", buffering=1)
                except OSError as error:
                    raise OSError(
                        f"{self.path}: cannot open the event log ({error.strerror}); give a writable "
                        f"--event-log path or '-' for stdout"
                    ) from None
                self._owned = True
        else:
            self._stream = target
            self.path = None
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._stream.write(json.dumps(record, separators=(", ", ": ")) + "\n")
        self._stream.flush()
        self.count += 1

    def close(self) -> None:
        if self._owned and not self._stream.closed:
            self._stream.close()

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventAudioSaver:
    """Saves each finished event's input audio (with pre-roll) as a 16-bit mono WAV in `directory`.

    feed() every input block (float32 [n] or [n, channels] at rate_hz), in order; mark_origin()
    where the pipeline's stream time restarts at 0 (after a gap); save(event) once it has ended.
    After each save the oldest clips are deleted until at most `keep` remain and they use at
    most `budget_mb`.
    """

    def __init__(
        self,
        directory: Union[str, Path],
        *,
        rate_hz: int,
        budget_mb: float = EventConfig.budget_mb,
        keep: int = EventConfig.keep,
        pre_roll_seconds: float = EventConfig.pre_roll_seconds,
        max_clip_seconds: float = EventConfig.max_clip_seconds,
    ) -> None:
        if rate_hz <= 0 or budget_mb <= 0 or keep < 1 or pre_roll_seconds < 0 or max_clip_seconds <= 0:
            raise ValueError(
                f"EventAudioSaver: need rate_hz > 0, budget_mb > 0, keep >= 1, pre_roll_seconds >= 0, "
                f"max_clip_seconds > 0; got {rate_hz}, {budget_mb}, {keep}, {pre_roll_seconds}, {max_clip_seconds}"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rate_hz = rate_hz
        self.budget_bytes = int(budget_mb * BYTES_PER_MB)
        self.keep = keep
        self.pre_roll_seconds = pre_roll_seconds
        self.max_clip_seconds = max_clip_seconds
        capacity = round((pre_roll_seconds + max_clip_seconds + RING_SLACK_SECONDS) * rate_hz)
        self._ring = np.zeros(capacity, dtype=np.float32)
        self._total = 0  # samples fed so far
        self._origin = 0  # sample where stream time 0 of the current pipeline segment is
        self.saved: list[Path] = []

    def feed(self, block: npt.NDArray[np.float32]) -> None:
        mono = np.asarray(block, dtype=np.float32)
        if mono.ndim == 2:
            mono = mono.mean(axis=1)
        capacity = len(self._ring)
        if len(mono) >= capacity:
            mono = mono[-capacity:]
            self._total += len(block) - capacity
        start = self._total % capacity
        first = min(len(mono), capacity - start)
        self._ring[start : start + first] = mono[:first]
        self._ring[: len(mono) - first] = mono[first:]
        self._total += len(mono)

    def mark_origin(self) -> None:
        """Stream time 0 is now (the pipeline was reset)."""
        self._origin = self._total

    def _audio(self, start_sample: int, end_sample: int) -> npt.NDArray[np.float32]:
        oldest = max(0, self._total - len(self._ring))
        start = max(start_sample, oldest)
        end = min(end_sample, self._total)
        if end <= start:
            return np.zeros(0, dtype=np.float32)
        indices = np.arange(start, end) % len(self._ring)
        return self._ring[indices]

    def save(self, event: Event, *, wall_time: Optional[float] = None) -> Optional[Path]:
        """Write the event's audio; returns the path, or None if nothing was written."""
        from edge.audio import write_wav  # soundfile is needed only when saving

        if event.end_seconds is None:
            return None
        end = self._origin + round(event.end_seconds * self.rate_hz)
        start = self._origin + round((event.start_seconds - self.pre_roll_seconds) * self.rate_hz)
        start = max(start, end - round(self.max_clip_seconds * self.rate_hz))
        audio = self._audio(start, end)
        if len(audio) == 0:
            log.warning("event %s at %.2f s: its audio is no longer buffered; not saved", event.label,
                        event.start_seconds)
            return None
        when = dt.datetime.fromtimestamp(time.time() if wall_time is None else wall_time, tz=dt.timezone.utc)
        stamp = when.strftime("%Y%m%dT%H%M%S") + f"{when.microsecond // 1000:03d}"
        safe_label = re.sub(r"[^A-Za-z0-9_.-]+", "_", event.label)
        path = self.directory / f"{CLIP_PREFIX}{stamp}-{safe_label}.wav"
        suffix = 1
        while path.exists():
            path = self.directory / f"{CLIP_PREFIX}{stamp}-{safe_label}-{suffix}.wav"
            suffix += 1
        try:
            write_wav(path, np.clip(audio, -1.0, 1.0), rate_hz=self.rate_hz, subtype="PCM_16")
        except OSError as error:
            log.warning("cannot save event audio to %s: %s", path, error)
            return None
        self.saved.append(path)
        self.enforce_budget()
        return path if path.exists() else None

    def clips(self) -> list[Path]:
        """Saved clips in the directory, oldest first (names sort by time)."""
        return sorted(p for p in self.directory.iterdir() if _CLIP_NAME.match(p.name) and p.is_file())

    def enforce_budget(self) -> list[Path]:
        """Delete the oldest clips beyond `keep` files or `budget_mb`; returns what was deleted."""
        clips = self.clips()
        sizes = {p: p.stat().st_size for p in clips}
        total = sum(sizes.values())
        deleted = []
        while clips and (len(clips) > self.keep or total > self.budget_bytes):
            oldest = clips.pop(0)
            total -= sizes[oldest]
            try:
                os.remove(oldest)
            except OSError as error:
                log.warning("cannot delete old event clip %s: %s", oldest, error)
                continue
            deleted.append(oldest)
        if deleted:
            log.info("deleted %d old event clip(s) to stay within %d clips / %.0f MB", len(deleted), self.keep,
                     self.budget_bytes / BYTES_PER_MB)
        return deleted
