"""What happens to a detected event besides its LED: a JSON-lines log, and optionally its audio on disk.

EventLog appends one JSON object per finished event::

    {"label": "crying_baby", "start_seconds": 12.48, "end_seconds": 16.335, "duration_seconds": 3.855,
     "peak_score": 0.97, "mean_score": 0.88, "start_utc": "2025-01-02T03:04:05.678Z", "end_utc": ...,
     "source": "mic:USB Audio", "audio": "/var/lib/oido/events/oido-20250102T030410512-crying_baby.wav"}

(The clip is named by the UTC time it was saved: the event's end plus the hold, not start_utc.)

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
from collections import deque
from pathlib import Path
from typing import IO, Any, Deque, Optional, Union

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

_CLIP_NAME = re.compile(r"^oido-(\d{8}T\d{6})(\d{3})-.+\.wav$")

BYTES_PER_MB = 1024 * 1024

SECONDS_PER_DAY = 24 * 60 * 60

_LOG_FILE_MODE = 0o644
ROTATION_GRACE_SECONDS = 60.0
"""A log renamed away (rotated) with no new file at its path is written on for this long before the
listener makes the new file itself: logrotate's own `create` comes within milliseconds."""


def clip_time(name: str) -> Optional[float]:
    """POSIX time a saved clip's file name (oido-<UTC time>-<label>.wav) gives; None for any other name."""
    match = _CLIP_NAME.match(name)
    if match is None:
        return None
    try:
        moment = dt.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:  # digits that are no date (month 13)
        return None
    return moment.timestamp() + int(match.group(2)) / 1000.0


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

    Each line goes to the file in one write as it happens, so a crash loses at most the event being
    written. A disk that is full or read-only never stops the listener: the failure is logged once
    (with what was lost), a partly written line is cut off so every line stays valid JSON, and
    writing resumes by itself when the disk has room again. `lost` counts the records not written.
    A log file deleted or rotated (renamed) while the device runs is recreated at its path (a
    renamed one after ROTATION_GRACE_SECONDS, unless the rotation's new file appears first).
    """

    def __init__(self, target: Union[str, Path, IO[str]]) -> None:
        self._owned = False
        self._missing_since: Optional[float] = None  # time.monotonic() when the path was first seen missing
        self._fd: Optional[int] = None
        self._stream: Optional[IO[str]] = None
        self.path: Optional[Path] = None
        if isinstance(target, (str, Path)):
            if str(target) == STDOUT:
                self._stream = sys.stdout
            else:
                self.path = Path(target)
                try:
                    self._open()
                except OSError as error:
                    raise OSError(
                        f"{self.path}: cannot open the event log ({error.strerror}); give a writable "
                        f"--event-log path or '-' for stdout"
                    ) from None
                self._owned = True
        else:
            self._stream = target
        self.count = 0
        """Records written."""
        self.lost = 0
        """Records that could not be written (disk full or read-only)."""
        self._failing = False

    def write(self, record: dict[str, Any]) -> bool:
        """Append one record; False (after logging the first failure only) if the disk refused it."""
        line = json.dumps(record, separators=(", ", ": "), ensure_ascii=False) + "\n"
        try:
            if self._owned:
                if self._fd is None:  # a reopen failed earlier
                    self._open()
                self._append(line.encode("utf-8"))
            else:
                assert self._stream is not None
                self._stream.write(line)
                self._stream.flush()
        except OSError as error:
            self.lost += 1
            if not self._failing:
                self._failing = True
                log.error(
                    "cannot write the event log %s (%s); events are not logged until it can be written "
                    "again (the LEDs keep working)", self.path or "<stream>", error.strerror or error,
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("event log %s writable again; %d event(s) were not logged", self.path or "<stream>",
                        self.lost)
        self.count += 1
        return True

    def _open(self) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, _LOG_FILE_MODE)
        # A power cut can leave the last line cut short (or NUL-filled): the next record must not be
        # glued onto it, or the reader would drop a whole event with the torn one.
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def _reopen_if_moved(self) -> None:
        # Appending to a deleted or rotated file would lose every later event without a word.
        assert self._fd is not None and self.path is not None
        try:
            moved = os.stat(self.path).st_ino != os.fstat(self._fd).st_ino
            replaced = True  # another file stands at the path: rotated (logrotate's `create`)
            self._missing_since = None
        except FileNotFoundError:
            moved, replaced = True, False
            if os.fstat(self._fd).st_nlink > 0 and self.path.parent.is_dir():
                # Renamed, not deleted: logrotate is between its rename and its `create`. Making the
                # file now would make logrotate set ours aside as a .backup nobody reads; the event
                # goes to the renamed file (events.jsonl.1, which `oido-edge events` reads) until a
                # new file stands at the path, or until it has been missing too long to be a rotation.
                now = time.monotonic()
                if self._missing_since is None:
                    self._missing_since = now
                if now - self._missing_since < ROTATION_GRACE_SECONDS:
                    return
        if moved:
            self._missing_since = None
            os.close(self._fd)
            self._fd = None
            self._open()
            if replaced:
                log.info("event log %s was rotated; writing the new one", self.path)
            else:
                log.warning("event log %s was deleted or moved; writing a new one", self.path)

    def _append(self, data: bytes) -> None:
        self._reopen_if_moved()
        assert self._fd is not None
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError:
            try:  # a torn line would corrupt the next one: cut it off
                os.ftruncate(self._fd, start)
            except OSError as error:  # pragma: no cover - the file system is gone
                log.debug("cannot cut the torn event line: %s", error)
            raise

    def close(self) -> None:
        if self._owned and self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "EventLog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventAudioSaver:
    """Saves each finished event's input audio (with pre-roll) as a 16-bit mono WAV in `directory`.

    feed() every input block (float32 [n] or [n, channels] at rate_hz), in order; mark_origin()
    where the pipeline's stream time restarts at 0 (after a gap); save(event) once it has ended.
    At start and after each save the oldest clips are deleted until at most `keep` remain, they
    use at most `budget_mb`, and none is older than `keep_days`. A full or read-only disk (or a
    vanished directory) never stops the listener: one line is logged when saving starts failing
    and one when it works again.
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
        keep_days: float = EventConfig.keep_days,
    ) -> None:
        if not (rate_hz > 0 and budget_mb > 0 and keep >= 1 and pre_roll_seconds >= 0 and max_clip_seconds > 0
                and keep_days > 0):
            raise ValueError(
                f"EventAudioSaver: need rate_hz > 0, budget_mb > 0, keep >= 1, pre_roll_seconds >= 0, "
                f"max_clip_seconds > 0, keep_days > 0; got {rate_hz}, {budget_mb}, {keep}, {pre_roll_seconds}, "
                f"{max_clip_seconds}, {keep_days}"
            )
        self.directory = Path(directory)
        self.rate_hz = rate_hz
        self.budget_bytes = int(budget_mb * BYTES_PER_MB)
        self.keep = keep
        self.keep_seconds = keep_days * SECONDS_PER_DAY
        self.pre_roll_seconds = pre_roll_seconds
        self.max_clip_seconds = max_clip_seconds
        capacity = round((pre_roll_seconds + max_clip_seconds + RING_SLACK_SECONDS) * rate_hz)
        # np.full touches every page now: the memory the device needs is taken at start, not over the first minute.
        self._ring = np.full(capacity, 0.0, dtype=np.float32)
        self._total = 0  # samples fed so far
        self._origin = 0  # sample where stream time 0 of the current pipeline segment is
        self.saved: Deque[Path] = deque(maxlen=keep)
        """The most recent clips this saver wrote (at most `keep`: a long run must not grow)."""
        self.failures = 0
        """Events whose audio could not be written."""
        self._failing = False
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            self._failed(error, what=f"cannot create {self.directory}")
        longest_bytes = 2 * round((pre_roll_seconds + max_clip_seconds) * rate_hz) + 44  # 16-bit mono WAV
        if longest_bytes > self.budget_bytes:
            log.warning("budget_mb %g holds less than one event clip of up to %g s at %d Hz (%.1f MB): only the "
                        "newest clip is kept; raise [events] budget_mb", budget_mb,
                        pre_roll_seconds + max_clip_seconds, rate_hz, longest_bytes / BYTES_PER_MB)
        self._remove_unfinished()
        self.enforce_budget()  # a lowered budget or retention applies at once

    def _remove_unfinished(self) -> None:
        # A clip being written when the listener died (power cut, SIGKILL) stays as its temporary
        # file, which no budget or retention would ever count: only this saver writes them, so at
        # start every one is stale.
        try:
            unfinished = [p for p in self.directory.glob(".oido-*.wav.*.tmp") if p.is_file()]
        except OSError:
            return
        for path in unfinished:
            try:
                path.unlink()
            except OSError as error:
                log.debug("cannot remove %s: %s", path, error)
        if unfinished:
            log.info("removed %d unfinished event clip(s) left in %s by an earlier run", len(unfinished), self.directory)

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

    def _audio(self, start_sample: int, end_sample: int) -> list[npt.NDArray[np.float32]]:
        """The buffered samples [start_sample, end_sample) as at most two views of the ring (no copy)."""
        oldest = max(0, self._total - len(self._ring))
        start = max(start_sample, oldest)
        end = min(end_sample, self._total)
        if end <= start:
            return []
        capacity = len(self._ring)
        first, last = start % capacity, (end - 1) % capacity + 1
        if first < last:
            return [self._ring[first:last]]
        return [self._ring[first:], self._ring[:last]]

    def save(self, event: Event, *, wall_time: Optional[float] = None) -> Optional[Path]:
        """Write the event's audio; returns the path, or None if nothing was written."""
        from edge.audio import WavWriter

        if event.end_seconds is None:
            return None
        end = self._origin + round(event.end_seconds * self.rate_hz)
        start = self._origin + round((event.start_seconds - self.pre_roll_seconds) * self.rate_hz)
        start = max(start, end - round(self.max_clip_seconds * self.rate_hz))
        start = max(start, self._origin)  # no pre-roll from before a gap: that audio is minutes older
        pieces = self._audio(start, end)
        if not pieces:
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
            self.directory.mkdir(parents=True, exist_ok=True)  # it may have been deleted meanwhile
            writer = WavWriter(path, rate_hz=self.rate_hz, subtype="PCM_16")  # clips to [-1, 1]
            try:
                for piece in pieces:
                    writer.write(piece)
                writer.close()
            except BaseException:
                writer.abort()  # a clip is all or nothing: no partial event audio
                raise
        except OSError as error:
            self.failures += 1
            self._failed(error, what=f"cannot save event audio to {path}")
            self.enforce_budget()  # make room for the next one
            return None
        if self._failing:
            self._failing = False
            log.warning("saving event audio to %s works again (%d event(s) were not saved)", self.directory,
                        self.failures)
        self.saved.append(path)
        self.enforce_budget()
        return path if path.exists() else None

    def _failed(self, error: OSError, *, what: str) -> None:
        # One line per outage: a full disk would otherwise log every event.
        if not self._failing:
            self._failing = True
            log.error("%s (%s); event audio is not saved until that works again (detection goes on)",
                      what, error.strerror or error)

    def clips(self) -> list[Path]:
        """Saved clips in the directory, oldest first (names sort by time); [] if it cannot be listed."""
        try:
            return sorted(p for p in self.directory.iterdir() if _CLIP_NAME.match(p.name) and p.is_file())
        except OSError:
            return []

    def enforce_budget(self, *, now: Optional[float] = None) -> list[Path]:
        """Delete the oldest clips beyond `keep` files, `budget_mb` or `keep_days`; returns what was deleted.

        now: POSIX time to measure ages from (default: the clock).
        """
        now = time.time() if now is None else now
        sizes: dict[Path, int] = {}
        mtimes: dict[Path, float] = {}
        for clip in self.clips():
            try:
                status = clip.stat()
            except OSError:  # deleted meanwhile
                continue
            sizes[clip], mtimes[clip] = status.st_size, status.st_mtime
        clips = list(sizes)
        total = sum(sizes.values())
        deleted = []
        # The newest clip stays even over the byte budget: a budget smaller than one clip would
        # otherwise delete every clip as soon as it is written.
        while clips and (
            len(clips) > self.keep or (total > self.budget_bytes and len(clips) > 1)
            or now - mtimes[clips[0]] > self.keep_seconds
        ):
            oldest = clips.pop(0)
            total -= sizes[oldest]
            try:
                os.remove(oldest)
            except OSError as error:
                log.warning("cannot delete old event clip %s: %s", oldest, error)
                continue
            deleted.append(oldest)
        if deleted:
            log.info("deleted %d old event clip(s) to stay within %d clips / %.0f MB / %g days", len(deleted),
                     self.keep, self.budget_bytes / BYTES_PER_MB, self.keep_seconds / SECONDS_PER_DAY)
        return deleted


# --- reading the log back: `oido-edge events` ---

_ROTATED = re.compile(r"^\.(\d+)(\.gz)?$")


def event_log_files(path: Path) -> list[Path]:
    """The log and its logrotate siblings (path.1, path.2.gz, ...), oldest first."""
    rotated = []
    if path.parent.is_dir():
        for sibling in path.parent.iterdir():
            match = _ROTATED.match(sibling.name[len(path.name):]) if sibling.name.startswith(path.name) else None
            if match:
                rotated.append((int(match.group(1)), sibling))
    return [sibling for _, sibling in sorted(rotated, reverse=True)] + ([path] if path.exists() else [])


def read_event_logs(path: Path) -> tuple[list[dict[str, Any]], int, list[Path]]:
    """(every record of the log and its rotated files, oldest first; lines that are not a record; the files).

    Raises PermissionError when this user may not read the log's folder or one of its files."""
    import gzip

    records: list[dict[str, Any]] = []
    bad = 0
    files = event_log_files(path)
    for file in files:
        opener = gzip.open if file.suffix == ".gz" else open
        try:
            with opener(file, "rt", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    line = line.strip().strip("\x00")  # a NUL run: blocks a power cut never filled
                    if not line:
                        continue
                    try:
                        record = json.loads(line)
                    except ValueError:
                        bad += 1
                        continue
                    if isinstance(record, dict) and isinstance(record.get("label"), str):
                        records.append(record)
                    else:
                        bad += 1
        except PermissionError:
            raise  # not this user's to read: every count would be short, so no count at all
        except (OSError, EOFError) as error:  # a torn .gz or a bad disk block: the others still count
            log.warning("%s: cannot read (%s); skipped", file, error)
    return records, bad, files


def _event_time(record: dict[str, Any]) -> Optional[dt.datetime]:
    try:
        return dt.datetime.strptime(record["start_utc"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)
    except (KeyError, TypeError, ValueError):
        return None


def history_text(
    records: list[dict[str, Any]], *, days: float, last: int, now: dt.datetime, tz: Optional[dt.tzinfo] = None
) -> str:
    """`oido-edge events`: per day and label, the events that started in the last `days` days, then the
    `last` most recent ones; times in `tz` (None = this machine's local time). Records without a
    start time (from `replay --event-log`) are counted apart."""
    since = now - dt.timedelta(days=days)
    timed = [(moment, record) for record in records if (moment := _event_time(record)) is not None]
    recent = sorted(((moment.astimezone(tz), record) for moment, record in timed if moment >= since), key=lambda item: item[0])
    untimed = len(records) - len(timed)
    labels = sorted({record["label"] for _, record in recent})
    zone = now.astimezone(tz).tzname() or ""  # the header's; each line names its own (DST)
    lines = [f"{len(recent)} event(s) in the last {days:g} day(s)" + (f" ({untimed} more without a start time)" if untimed else "")]
    if recent:
        per_day: dict[str, dict[str, int]] = {}
        for moment, record in recent:
            day = per_day.setdefault(moment.strftime("%Y-%m-%d"), {})
            day[record["label"]] = day.get(record["label"], 0) + 1
        width = max(len(label) for label in labels)
        lines.append(f"  {'day (' + zone + ')':<16}" + "".join(f"  {label:>{width}}" for label in labels))
        for day, counts in sorted(per_day.items()):
            lines.append(f"  {day:<16}" + "".join(f"  {counts.get(label, 0):>{width}}" for label in labels))
        lines.append(f"the last {min(last, len(recent))}:")
        for moment, record in recent[-last:]:
            duration = record.get("duration_seconds")
            audio = f"  {record['audio']}" if record.get("audio") else ""
            lines.append(
                f"  {moment:%Y-%m-%d %H:%M:%S} {moment.tzname() or ''}  {record['label']:<{width}}  "
                f"{'?' if duration is None else f'{duration:.1f}'} s  peak {record.get('peak_score', 0):.2f}{audio}"
            )
    return "\n".join(lines)
