#!/usr/bin/env python3
"""Soak test of `oido-edge listen`'s pipeline: hours of audio as fast as possible, resident memory sampled.

    python scripts/soak.py --hours 2                    # the full soak (a few minutes of CPU on a laptop)
    python scripts/soak.py --minutes 8 --json reports/soak.json  # the CI version's size
    python scripts/soak.py --hours 2 --model-dir model --save-events --state-dir reports/soak

The audio is a looped stream of ESC-50 clips (found as oido-train finds them, without downloading:
$OIDO_ESC50, $OIDO_ASSETS, ../shared/assets, ~/.cache/oido; audio/ at 44.1 kHz, else esc10-16k/; in a
fixed shuffled order; synthetic noise if none is found) with a 3 s 1 kHz beep laid over it every
BEEP_EVERY_SECONDS. A fake source hands it over in --block-seconds blocks, as fast as the CPU allows, to
edge.listen.listen_to: the function `oido-edge listen` runs on the microphone (pipeline, detector, LEDs on
gpiozero's MockFactory, the JSON-lines event log, optionally the event audio saver).

The model is --model-dir (default: ./model if it holds an export, else the YAMNet asset + the test
fixture head over "beep", "speech", "other", built in a temporary folder).

Checks, all of which must hold for exit status 0:
  memory   resident memory (VmRSS, sampled every minute of audio) grows by less than MAX_GROWTH_MB from
           the first to the last 10 minutes (medians; shorter runs compare their first and last quarter);
  patches  no dropped patch: patches run == Params.patches_in(the stream's length at 16 kHz);
  events   the event log complete: one whole JSON line per finished event, none lost, and (with a
           "beep" label) every inserted beep inside a beep event. A --state-dir that already holds an
           events.jsonl (an earlier run's) is appended to; only the lines this run added are checked.

Bad arguments (a non-positive length, rate or block, a --json that is a folder, a --model-dir without an
export) are one line on stderr naming the flag and the fix, exit status 2; failed checks, exit status 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from edge.config import EVENT_LOG_NAME, EdgeConfig, EventConfig  # noqa: E402
from edge.errors import OidoError  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from edge.resample import can_resample, output_length  # noqa: E402

log = logging.getLogger("soak")

PROG = Path(__file__).name
EXIT_FAILED = 1
"""A check failed (memory, patches, events)."""
EXIT_USAGE = 2
"""A bad argument, model or asset location; the message names the fix."""
DEFAULT_MINUTES = 8.0
MIN_RATE_HZ = 8000
"""Lowest --rate taken: below it, resampling the ESC-50 loop takes longer than the soak."""
ESC50_RATE_HZ = 44100
"""The rate of ESC-50's audio/ clips, which the loop is resampled from."""
LOOP_CLIPS = 48
"""ESC-50 clips in the loop (4 minutes of audio, 42 MB as float32 at 44.1 kHz)."""
BEEP_EVERY_SECONDS = 240.0
"""A 3 s beep every this many seconds of audio (30 in 2 hours)."""
FIRST_BEEP_SECONDS = 10.0
BEEP_SECONDS = 3.0
BEEP_HZ = 1000.0
BEEP_AMPLITUDE = 0.5
MEMORY_WINDOW_SECONDS = 600.0
"""The issue's "first and last 10 minutes"."""
MAX_GROWTH_MB = 5.0
SAMPLE_EVERY_SECONDS = 60.0
"""Resident memory is read every this many seconds of audio."""


def resident_kb() -> int:
    """VmRSS of this process, kB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


# --- the audio ---------------------------------------------------------------------------------


def esc50_clips(esc50_dir: Path) -> list[Path]:
    """The clips of an ESC-50 folder: audio/*.wav (44.1 kHz), else esc10-16k/*.flac (16 kHz), sorted."""
    for folder, pattern in (("audio", "*.wav"), ("esc10-16k", "*.flac")):
        clips = sorted((esc50_dir / folder).glob(pattern))
        if clips:
            return clips
    return []


def loop_audio(
    rate_hz: int, *, seed: int = 0, esc50_dir: Optional[Path] = None
) -> tuple[npt.NDArray[np.float32], str]:
    """The looped material: float32 [n] at rate_hz, and where it came from.

    ESC-50 clips from `esc50_dir`; synthetic noise when it is None or holds no clip.
    """
    clips = esc50_clips(esc50_dir) if esc50_dir is not None else []
    if clips:
        import soundfile

        from edge.resample import resample

        order = np.random.default_rng(seed).permutation(len(clips))[:LOOP_CLIPS]
        pieces = []
        for index in order:
            audio, clip_rate = soundfile.read(str(clips[index]), dtype="float32", always_2d=True)
            mono = audio.mean(axis=1)
            pieces.append(mono if clip_rate == rate_hz else resample(mono, clip_rate, rate_hz))
        return np.concatenate(pieces).astype(np.float32), f"{len(pieces)} ESC-50 clips from {clips[0].parent}"
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(240 * rate_hz).astype(np.float32)
    envelope = 0.05 + 0.2 * (np.sin(np.arange(len(noise)) / rate_hz * 2 * np.pi / 7.0) > 0.6)
    return (noise * envelope).astype(np.float32), "synthetic noise (ESC-50 assets not found)"


class LoopedStream:
    """A microphone stand-in: the loop repeated for `seconds`, beeps laid over it, blocks as fast as asked.

    Samples resident memory every SAMPLE_EVERY_SECONDS of audio into `memory`: (audio seconds, kB), and
    while tracemalloc traces, the Python heap into `traced`: (audio seconds, bytes).
    """

    def __init__(self, loop: npt.NDArray[np.float32], *, rate_hz: int, seconds: float, block_seconds: float) -> None:
        self.rate_hz = rate_hz
        self.channels = 1
        self.total = round(seconds * rate_hz)
        self.block = max(1, round(block_seconds * rate_hz))
        self._loop = loop
        self._stop = threading.Event()
        self.sent = 0
        self.memory: list[tuple[float, int]] = []
        self.traced: list[tuple[float, int]] = []
        # One beep early, so the one-time allocations of the first event (and its saved clip) fall in the
        # first memory window, then one every BEEP_EVERY_SECONDS.
        regular = np.arange(BEEP_EVERY_SECONDS / 2, seconds - BEEP_SECONDS - 5, BEEP_EVERY_SECONDS)
        last = seconds - BEEP_SECONDS - 5
        self.beep_starts = [float(start) for start in [FIRST_BEEP_SECONDS, *regular] if start < last]
        t = np.arange(round(BEEP_SECONDS * rate_hz)) / rate_hz
        self._beep = (BEEP_AMPLITUDE * np.sin(2 * np.pi * BEEP_HZ * t)).astype(np.float32)

    def _block_at(self, start: int, size: int) -> npt.NDArray[np.float32]:
        offset = start % len(self._loop)
        if offset + size <= len(self._loop):
            block = self._loop[offset : offset + size]
        else:
            block = np.concatenate([self._loop[offset:], self._loop[: size - (len(self._loop) - offset)]])
        for beep_start in self.beep_starts:
            first = round(beep_start * self.rate_hz)
            overlap_from, overlap_to = max(start, first), min(start + size, first + len(self._beep))
            if overlap_from < overlap_to:
                block = block.copy()
                block[overlap_from - start : overlap_to - start] = self._beep[overlap_from - first : overlap_to - first]
        return block

    def blocks(self) -> Iterator[npt.NDArray[np.float32]]:
        next_sample = 0.0
        while self.sent < self.total and not self._stop.is_set():
            if self.sent >= next_sample:
                self._sample()
                next_sample += SAMPLE_EVERY_SECONDS * self.rate_hz
            size = min(self.block, self.total - self.sent)
            block = self._block_at(self.sent, size)
            self.sent += size
            yield block[:, np.newaxis]
        self._sample()

    def _sample(self) -> None:
        self.memory.append((self.sent / self.rate_hz, resident_kb()))
        if tracemalloc.is_tracing():
            self.traced.append((self.sent / self.rate_hz, tracemalloc.get_traced_memory()[0]))

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()


# --- the run -----------------------------------------------------------------------------------


@dataclass
class SoakReport:
    audio_seconds: float
    wall_seconds: float
    audio_source: str
    model_dir: str
    rate_hz: int
    patches: int
    expected_patches: int
    windows: int
    events: int
    log_lines: int
    """Lines this run added to the event log."""
    events_lost: int
    beeps: int
    beeps_detected: Optional[int]
    """None when the model has no "beep" label."""
    memory_window_seconds: float
    rss_first_mb: float
    rss_last_mb: float
    rss_growth_mb: float
    rss_max_mb: float
    memory: list[tuple[float, int]] = field(default_factory=list)
    traced: list[tuple[float, int]] = field(default_factory=list)
    """Python heap samples (audio seconds, bytes) when run under tracemalloc."""
    failures: list[str] = field(default_factory=list)
    earlier_log_lines: int = 0
    """Lines the event log already held (an earlier run's, same --state-dir); not checked."""

    @property
    def real_time_factor(self) -> float:
        return self.audio_seconds / max(self.wall_seconds, 1e-9)

    def summary(self) -> str:
        beeps = "n/a (no beep label)" if self.beeps_detected is None else f"{self.beeps_detected}/{self.beeps}"
        earlier = f" (after {self.earlier_log_lines} earlier lines, not checked)" if self.earlier_log_lines else ""
        lines = [
            f"audio         {self.audio_seconds / 3600:.2f} h at {self.rate_hz} Hz ({self.audio_source})",
            f"wall time     {self.wall_seconds:.0f} s ({self.real_time_factor:.0f}x real time)",
            f"patches       {self.patches} run, {self.expected_patches} expected",
            f"windows       {self.windows}",
            f"events        {self.events} finished, {self.log_lines} logged{earlier}, {self.events_lost} lost; "
            f"beeps {beeps}",
            f"resident mem  first {self.memory_window_seconds / 60:.0f} min {self.rss_first_mb:.1f} MB, last "
            f"{self.memory_window_seconds / 60:.0f} min {self.rss_last_mb:.1f} MB: growth {self.rss_growth_mb:+.2f} MB "
            f"(limit {MAX_GROWTH_MB:g}), max {self.rss_max_mb:.1f} MB",
            "result        " + ("PASS" if not self.failures else "FAIL: " + "; ".join(self.failures)),
        ]
        return "\n".join(lines)


def default_model_dir(scratch: Path) -> Path:
    """./model if exported, else the YAMNet asset + the fixture head in `scratch`."""
    if (REPO / "model" / "manifest.json").is_file():
        return REPO / "model"
    sys.path.insert(0, str(REPO / "tests"))
    from fixtures.edge_models import real_model_dir

    model_dir = scratch / "model"
    real_model_dir(model_dir)
    return model_dir


def _read_new_lines(path: Path, offset: int) -> list[str]:
    """The lines `path` gained past byte `offset` (its size before the run)."""
    if not path.is_file():
        return []
    with path.open("rb") as file:
        file.seek(offset)
        text = file.read().decode("utf-8", errors="replace")
    # The log starts a torn last line's successor with a newline of its own (edge.events.EventLog._open).
    return (text[1:] if offset and text.startswith("\n") else text).splitlines()


def _median_mb(samples: Sequence[tuple[float, int]]) -> float:
    return statistics.median(kb for _, kb in samples) / 1024 if samples else float("nan")


def run_soak(
    *,
    seconds: float,
    model_dir: Optional[Path] = None,
    rate_hz: int = 44100,
    block_seconds: float = 0.1,
    state_dir: Optional[Path] = None,
    save_events: bool = False,
) -> SoakReport:
    """Run the soak for `seconds` of audio; returns the figures and the failed checks.

    The event log (and with `save_events` the event clips) go to `state_dir`; without one, to a
    temporary folder that is removed with everything else the soak made. An event log already in
    `state_dir` is appended to, and only this run's lines are checked.

    Raises:
        OidoError: the model cannot be loaded (message names the folder and the fix).
        train.assets.AssetError: $OIDO_ESC50 / $OIDO_ASSETS name a folder without ESC-50.
    """
    with tempfile.TemporaryDirectory(prefix="oido-soak-") as scratch:
        return _soak_in(Path(scratch), seconds=seconds, model_dir=model_dir, rate_hz=rate_hz,
                        block_seconds=block_seconds, state_dir=state_dir, save_events=save_events)


def _soak_in(
    scratch: Path,
    *,
    seconds: float,
    model_dir: Optional[Path],
    rate_hz: int,
    block_seconds: float,
    state_dir: Optional[Path],
    save_events: bool,
) -> SoakReport:
    from gpiozero.pins.mock import MockFactory

    from edge.cli import _load_base_pipeline
    from edge.leds import open_led_bank
    from edge.listen import listen_to
    from train.assets import find_local_esc50

    esc50_dir = find_local_esc50()  # before the model: a bad location fails at once
    model_dir = model_dir or default_model_dir(scratch)
    state_dir = state_dir or scratch / "state"
    event_log = state_dir / EVENT_LOG_NAME
    log_offset = event_log.stat().st_size if event_log.is_file() else 0
    earlier_lines = len(_read_new_lines(event_log, 0)) if log_offset else 0
    events = EventConfig(save_dir=state_dir / "clips" if save_events else None, budget_mb=20, keep=50)
    config = EdgeConfig(model_dir=model_dir, state_dir=state_dir, events=events)
    base = _load_base_pipeline(config)  # what cmd_listen loads: manifest checks, config thresholds
    pins = {label: pin for label, pin in zip(base.labels, (17, 27, 22, 23, 5, 6, 13, 19, 26))
            if label != base.detector.config.background_label}
    leds = open_led_bank(pins, status_pin=24, pin_factory=MockFactory())
    loop, origin = loop_audio(rate_hz, esc50_dir=esc50_dir)
    stream = LoopedStream(loop, rate_hz=rate_hz, seconds=seconds, block_seconds=block_seconds)
    started = time.monotonic()
    leds.status_alive()
    try:
        report = listen_to(stream, base, config, leds=leds, source_name="soak")
    finally:
        leds.close()
    wall = time.monotonic() - started

    failures = []
    model_samples = output_length(stream.sent, rate_hz, base.params.sample_rate_hz)
    expected = base.params.patches_in(model_samples)
    if report.patches != expected:
        failures.append(f"{expected - report.patches} patch(es) dropped")
    lines = _read_new_lines(event_log, log_offset)
    records = []
    for number, line in enumerate(lines, start=earlier_lines + 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            failures.append(f"event log line {number} is not a whole JSON record")
    if len(lines) != report.event_count or report.events_lost:
        failures.append(f"event log has {len(lines)} new lines for {report.event_count} events "
                        f"({report.events_lost} lost)")
    beeps_detected = None
    if "beep" in base.labels:
        beep_events = [(r["start_seconds"], r["end_seconds"]) for r in records if r["label"] == "beep"]
        beeps_detected = sum(
            any(start <= beep + 2.0 and end >= beep + 1.0 for start, end in beep_events) for beep in stream.beep_starts
        )
        if beeps_detected != len(stream.beep_starts):
            failures.append(f"only {beeps_detected} of {len(stream.beep_starts)} beeps have a beep event")
    window = min(MEMORY_WINDOW_SECONDS, stream.sent / rate_hz / 4)
    end = stream.sent / rate_hz
    first = [m for m in stream.memory if m[0] <= window]
    last = [m for m in stream.memory if m[0] >= end - window]
    growth = _median_mb(last) - _median_mb(first)
    if not growth < MAX_GROWTH_MB:
        failures.append(f"resident memory grew {growth:.2f} MB")
    return SoakReport(
        audio_seconds=end, wall_seconds=wall, audio_source=origin, model_dir=str(model_dir), rate_hz=rate_hz,
        patches=report.patches, expected_patches=expected, windows=report.window_count,
        events=report.event_count, log_lines=len(lines), events_lost=report.events_lost,
        beeps=len(stream.beep_starts), beeps_detected=beeps_detected, memory_window_seconds=window,
        rss_first_mb=_median_mb(first), rss_last_mb=_median_mb(last), rss_growth_mb=growth,
        rss_max_mb=max(kb for _, kb in stream.memory) / 1024, memory=stream.memory, traced=stream.traced,
        failures=failures, earlier_log_lines=earlier_lines,
    )


def _json_target(path: Path) -> Path:
    """--json's file, its folder made; OidoError when it is a folder or its folder cannot be made."""
    if path.is_dir():
        raise OidoError(f"--json {path} is a folder: give a file name, e.g. --json {path / 'soak.json'}", path=path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OidoError(f"--json {path}: cannot make its folder {path.parent} ({error.strerror or error}): "
                        "give a file in a folder you can write", path=path) from None
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    from train.cli import positive_float_arg, positive_int_arg

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--hours", type=positive_float_arg,
                        help="hours of audio (the full soak: 2)")
    length.add_argument("--minutes", type=positive_float_arg,
                        help=f"minutes of audio (default {DEFAULT_MINUTES:g})")
    parser.add_argument("--model-dir", type=Path,
                        help="exported model (default: ./model, else asset YAMNet + tiny head)")
    parser.add_argument("--rate", type=positive_int_arg, default=44100,
                        help="stream rate in Hz (default 44100, ESC-50's)")
    parser.add_argument("--block-seconds", type=positive_float_arg,
                        default=0.1, help="audio per block (default 0.1)")
    parser.add_argument("--save-events", action="store_true", help="also save each event's audio (budget 20 MB)")
    parser.add_argument("--state-dir", type=Path,
                        help="keep the event log (and saved clips) here; an earlier run's log there is appended "
                             "to, this run's lines are checked (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path,
                        help="write the figures (and the memory samples) here, e.g. reports/soak.json")
    args = parser.parse_args(argv)
    conversions = ((args.rate, DEFAULT_PARAMS.sample_rate_hz), (ESC50_RATE_HZ, args.rate))  # stream, loop
    if args.rate < MIN_RATE_HZ or not all(can_resample(from_hz, to_hz) for from_hz, to_hz in conversions):
        parser.error(f"argument --rate: {args.rate} Hz is not a capture rate the soak can resample: give one from "
                     f"{MIN_RATE_HZ} Hz up, such as 48000 or 44100")  # fmt: skip
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    seconds = 3600 * args.hours if args.hours is not None else 60 * (args.minutes or DEFAULT_MINUTES)
    from train.assets import AssetError

    try:
        if args.state_dir is not None and args.state_dir.exists() and not args.state_dir.is_dir():
            raise OidoError(f"--state-dir {args.state_dir} is a file: give a folder (made if missing)",
                            path=args.state_dir)  # fmt: skip
        json_path = _json_target(args.json) if args.json is not None else None
        report = run_soak(seconds=seconds, model_dir=args.model_dir, rate_hz=args.rate,
                          block_seconds=args.block_seconds, state_dir=args.state_dir, save_events=args.save_events)
    except (OidoError, AssetError) as error:
        print(f"{PROG}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE
    print(report.summary())
    if args.state_dir is not None:
        print(f"event log     {args.state_dir / EVENT_LOG_NAME}")
    if json_path is not None:
        try:
            json_path.write_text(json.dumps({**asdict(report), "real_time_factor": report.real_time_factor}, indent=1))
        except OSError as error:
            print(f"{PROG}: error: cannot write --json {json_path} ({error.strerror or error})", file=sys.stderr)
            return EXIT_FAILED
    return 0 if not report.failures else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
