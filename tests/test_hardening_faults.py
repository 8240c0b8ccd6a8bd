"""Hardening: faults while running — a failing microphone, a full or read-only disk, signals, interrupted training.

Already covered elsewhere (not repeated here):
- overflows counted and logged, never raised: test_edge_mic.py::test_overflows_are_counted_and_logged_never_raised
- a failed stream reopened with back-off and a Gap: test_edge_mic.py::test_a_failed_stream_is_reopened_with_back_off...
- the virtual microphone vanishing during `record`:
  test_edge_mic.py::test_a_vanished_microphone_is_reopened_and_recording_goes_on
- status LED blink speeds (alive / 4x faster on a fault), as requested of gpiozero:
  test_edge_leds.py::test_status_led_blinks_while_alive_and_four_times_faster_on_a_fault
- SIGTERM while `listen` has an LED lit, and during `record`, on the virtual mic: test_edge_mic.py (mic group)
- `prepare` interrupted leaves no half-written data set:
  test_train_prepare.py::test_interrupted_prepare_leaves_no_half_written_dataset

Disk full is a real tmpfs of a few KB (`mount -t tmpfs -o size=...`, root only; skipped elsewhere) and, so
the behaviour is also checked without root, a monkeypatched os.write raising ENOSPC. Read-only is a
read-only mount: root ignores chmod, so chmod cannot simulate it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterator, Optional

import numpy as np
import pytest

from edge import cli
from edge.config import EdgeConfig, EventConfig
from edge.detect import Detector, DetectorConfig
from edge.events import EventAudioSaver, EventLog
from edge.listen import listen_to, run_stream
from edge.params import DEFAULT_PARAMS
from edge.pipeline import StreamingPipeline
from edge.record import record
from edge.sources import FakeSource, MicrophoneSource
from train import embeddings, head

sf = pytest.importorskip("soundfile")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import LoudIsClockAlarm, LoudnessYamnet  # noqa: E402
from fixtures.virtual_mic import Running, edge_command, microphone_removed  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = DEFAULT_PARAMS.sample_rate_hz
LABELS = ["crying_baby", "clock_alarm", "other"]


# --- fake models and audio --------------------------------------------------------------------


def fake_pipeline(rate_hz: int = RATE) -> StreamingPipeline:
    return StreamingPipeline(LoudnessYamnet(), LoudIsClockAlarm(LABELS), labels=LABELS, input_rate_hz=rate_hz,
                             detector=Detector(DetectorConfig(background_label="other"), labels=LABELS))


def alarms(rate_hz: int, count: int, *, loud: float = 2.0, quiet: float = 3.0, seed: int = 0) -> np.ndarray:
    """`count` loud bursts (each one clock_alarm event) separated by silence."""
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        pieces += [np.zeros(round(quiet * rate_hz)), 0.3 * rng.standard_normal(round(loud * rate_hz))]
    pieces.append(np.zeros(round(quiet * rate_hz)))
    return np.concatenate(pieces).astype(np.float32)


def blocks_of(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def config_for(tmp_path: Path, **events: Any) -> EdgeConfig:
    return EdgeConfig(state_dir=tmp_path / "state", events=EventConfig(**events))


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def error_lines(caplog: pytest.LogCaptureFixture, pattern: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR and re.search(pattern, r.getMessage())]


# --- the microphone fails -----------------------------------------------------------------------


class ScriptedSoundDevice:
    """sounddevice whose streams follow a script: each entry is an exception (InputStream().start() raises it)
    or (audio, overflow blocks, underflow blocks, then) with then "fail" (PortAudio ends the stream) or "end".

    query_devices raises on the calls listed in `listing_fails_at` (PortAudio re-initialising after an unplug).
    """

    default = SimpleNamespace(device=[0, 0])

    def __init__(self, script: list[Any], *, rate_hz: int = 48000, listing_fails_at: tuple[int, ...] = ()) -> None:
        self.script = list(script)
        self.rate_hz = rate_hz
        self.listing_fails_at = listing_fails_at
        self.listings = 0
        self.opened = 0

    def query_devices(self) -> list[dict[str, Any]]:
        self.listings += 1
        if self.listings in self.listing_fails_at:
            raise OSError("PortAudio: Error querying device -1")
        return [{"name": "Scripted USB Mic", "max_input_channels": 1, "default_samplerate": float(self.rate_hz),
                 "hostapi": 0}]

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs: Any) -> None:
        pass

    def _terminate(self) -> None:
        pass

    def _initialize(self) -> None:
        pass

    def InputStream(  # noqa: N802 - sounddevice's name
        self, *, blocksize: int, callback: Callable, finished_callback: Callable, **kwargs: Any
    ) -> Any:
        device = self
        step = self.script.pop(0) if self.script else (np.zeros(0, np.float32), (), (), "end")

        class Stream:
            def start(self) -> None:
                if isinstance(step, BaseException):
                    raise step
                device.opened += 1
                audio, overflows, underflows, then = step
                for index, block in enumerate(blocks_of(audio, blocksize)):
                    status = SimpleNamespace(input_overflow=index in overflows, input_underflow=index in underflows)
                    callback(block[:, None], len(block), None, status)
                if then == "fail":
                    finished_callback()

            def stop(self) -> None:
                raise OSError("PortAudio: Unanticipated host error")  # a vanished device fails to stop

            def close(self) -> None:
                pass

        return Stream()


@pytest.fixture
def status_spy(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The status LED modes set, in order (LedBank's status_alive/fault/off)."""
    from edge.leds import LedBank

    modes: list[str] = []
    for name in ("status_alive", "status_fault", "status_off"):
        original = getattr(LedBank, name)

        def spy(self: Any, _original: Callable = original, _name: str = name) -> None:
            modes.append(_name.removeprefix("status_"))
            _original(self)

        monkeypatch.setattr(LedBank, name, spy)
    return modes


def test_listen_survives_a_failing_microphone_and_the_status_led_blinks_the_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], status_spy: list[str]
) -> None:
    import edge.sources

    rate = 48000
    first = alarms(rate, 1, loud=2.0, quiet=1.0)[: round(2.5 * rate)]  # the stream dies during the alarm
    second = alarms(rate, 1, loud=2.0, quiet=1.0)
    unavailable = OSError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
    sd = ScriptedSoundDevice([(first, {3, 7}, {5}, "fail"), unavailable, unavailable, (second, (), (), "end")],
                             rate_hz=rate, listing_fails_at=(3,))
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(cli, "_load_base_pipeline", lambda config: fake_pipeline())
    events = tmp_path / "events.jsonl"
    code = cli.main(["listen", "--pin", "clock_alarm=27", "--status-pin", "24", "--mock-gpio", "--block-seconds",
                     "0.1", "--event-log", str(events), "--duration", str((len(first) + len(second)) / rate)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert status_spy[:3] == ["alive", "fault", "alive"] and status_spy.count("fault") == 1, status_spy
    assert "audio input failed (the stream stopped); reopening" in captured.err
    assert captured.err.count("reopening the audio input failed") == 3  # 2 refusals + 1 failed device listing
    assert "audio input reopened" in captured.err
    assert re.search(r"2 overflow\(s\), 1 underflow\(s\), 0 dropped block\(s\), 1 reopen\(s\)", captured.err)
    records = jsonl(events)
    assert [r["label"] for r in records] == ["clock_alarm", "clock_alarm"]  # the cut one is ended, not lost
    assert records[0]["end_seconds"] <= len(first) / rate + 0.01 <= records[1]["start_seconds"]
    pins = dict(re.findall(r"gpio (\S+) pin \d+: (.*)", captured.out))
    assert pins["clock_alarm"].split()[-1].startswith("off") and pins["status"].split()[-1].startswith("off")
    assert [s.split("@")[0] for s in pins["clock_alarm"].split()] == ["off", "on", "off", "on", "off"]
    assert sd.opened == 2


def test_microphone_counts_underflows_and_logs_them_with_overflows(caplog: pytest.LogCaptureFixture) -> None:
    audio = np.zeros(48000, np.float32)
    sd = ScriptedSoundDevice([(audio, {1}, {2, 4, 6}, "end")])
    mic = MicrophoneSource(0, 48000, 0.1, 1, sd=sd)
    got = 0
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        for item in mic.blocks():
            got += 1
            if got == 10:
                mic.stop()
    mic.close()
    assert (mic.overflows, mic.underflows) == (1, 3)
    assert any("1 overflow(s), 3 underflow(s)" in r.getMessage() for r in caplog.records)


class WatchedDevice(ScriptedSoundDevice):
    """ScriptedSoundDevice that calls `on_open()` at every attempt to open a stream (the first one included)."""

    def __init__(self, script: list[Any], *, on_open: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(script, **kwargs)
        self.on_open = on_open

    def InputStream(self, **kwargs: Any) -> Any:  # noqa: N802 - sounddevice's name
        self.on_open()
        return super().InputStream(**kwargs)


def test_a_microphone_outage_ends_the_event_and_turns_its_led_off_before_reopening(tmp_path: Path) -> None:
    """The reopen may take minutes (back-off up to 30 s, forever if the device stays gone): the alarm cut by
    the outage must be logged and its LED dark meanwhile, not once the microphone is back."""
    from edge.leds import NullLedBank

    rate = 16000
    first = alarms(rate, 1, loud=2.0, quiet=1.0)[: round(2.5 * rate)]  # the stream dies during the alarm
    second = alarms(rate, 1, loud=2.0, quiet=1.0)
    unavailable = OSError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
    leds = NullLedBank({"clock_alarm": 27})
    events = tmp_path / "events.jsonl"
    during_outage: list[tuple[bool, int]] = []  # at each reopen attempt: (LED lit, events logged)

    def on_open() -> None:
        if sd.opened:  # not the first open
            during_outage.append((leds.is_lit("clock_alarm"), len(jsonl(events)) if events.exists() else 0))

    sd = WatchedDevice([(first, (), (), "fail"), unavailable, unavailable, (second, (), (), "end")], rate_hz=rate,
                       on_open=on_open)
    mic = MicrophoneSource(0, rate, 0.1, 1, sd=sd, backoff_initial_seconds=0.001, backoff_max_seconds=0.002)
    with mic, EventLog(events) as event_log:
        report = run_stream(mic, fake_pipeline(rate), leds=leds, event_log=event_log,
                            duration_seconds=(len(first) + len(second)) / rate)
    assert during_outage == [(False, 1)] * 3  # dark and logged before every attempt
    assert report.gaps == 1 and [r["label"] for r in jsonl(events)] == ["clock_alarm", "clock_alarm"]


def test_wall_clock_event_times_follow_a_clock_step_after_the_start(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A Pi has no real-time clock: it boots on a stale time and NTP steps it later. The events after the step
    carry the stepped (true) time; jitter within the tolerance re-anchors nothing."""
    import edge.sources
    from edge.listen import REANCHOR_TOLERANCE_SECONDS

    rate, block = 16000, 1600
    audio = alarms(rate, 2, loud=2.0, quiet=3.0)  # alarms at 3-5 s and 8-10 s
    stale = 1_700_000_000.0
    step = 36 * 3600.0  # off for 36 h; timesyncd steps the clock after 1 s of audio
    calls = {"n": 0}

    def wall_clock() -> float:  # read once per block, in the callback: its last sample's capture time
        calls["n"] += 1
        captured = stale + calls["n"] * block / rate + (step if calls["n"] > 10 else 0.0)
        return captured + (0.8 * REANCHOR_TOLERANCE_SECONDS if calls["n"] == 60 else 0.0)  # one late callback

    monkeypatch.setattr(edge.sources, "QUEUE_SECONDS", 60.0)  # the scripted device delivers all 13 s at once
    sd = ScriptedSoundDevice([(audio, (), (), "end")], rate_hz=rate)
    mic = MicrophoneSource(0, rate, block / rate, 1, sd=sd, wall_clock=wall_clock)
    with mic, caplog.at_level(logging.INFO, logger="edge.listen"):
        report = run_stream(mic, fake_pipeline(rate), wall_clock=True, duration_seconds=len(audio) / rate,
                            clock=lambda: stale)

    def posix(utc: str) -> float:
        return dt.datetime.strptime(utc, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc).timestamp()

    assert len(report.records) == 2
    for r in report.records:
        assert posix(r["start_utc"]) == pytest.approx(stale + step + r["start_seconds"], abs=0.002), r
        assert posix(r["end_utc"]) == pytest.approx(stale + step + r["end_seconds"], abs=0.002), r
    reanchored = [m for m in caplog.messages if "re-anchored" in m]
    assert len(reanchored) == 1 and "+129600.00 s" in reanchored[0]


# --- several patches in one push; a source that raises ----------------------------------------


def test_the_led_follows_an_event_that_ends_and_restarts_or_blinks_within_one_push() -> None:
    """With 1 s blocks a push holds two or three patches: one may end an alarm and the next start the next
    alarm (the LED must end lit), or an alarm may start and end in one push (the LED must still blink)."""
    from gpiozero.pins.mock import MockFactory

    from edge.leds import LedBank
    from edge.listen import ConsoleView

    rate = RATE
    audio = np.zeros(8 * rate, np.float32)
    for start, end, level in ((1.92, 2.40, 0.3), (3.36, 3.84, 0.3), (5.7175, 5.8175, 0.18)):
        audio[round(start * rate) : round(end * rate)] = level  # patches of 0.975 s every 0.48 s
    pipeline = StreamingPipeline(
        LoudnessYamnet(), LoudIsClockAlarm(LABELS), labels=LABELS,
        detector=Detector(DetectorConfig(background_label="other", min_patches=1, of_patches=1, hold_seconds=0.0),
                          labels=LABELS))
    leds = LedBank({"clock_alarm": 27}, pin_factory=MockFactory())
    disagree: list[int] = []  # pushes after which the LED and the detector disagree

    def check(index: int) -> None:  # called before block `index`: after push index - 1
        if ("clock_alarm" in pipeline.detector.active_labels) != leds.is_lit("clock_alarm"):
            disagree.append(index - 1)

    lines: list[str] = []
    console = ConsoleView(SimpleNamespace(write=lines.append, flush=lambda: None), enabled=False, events_always=True)
    with leds:
        report = run_stream(FakeSource(blocks_of(audio, rate), rate_hz=rate, on_block=check), pipeline, leds=leds,
                            console=console)
        history = [bool(state.state) for state in leds.pins()["clock_alarm"].states]
    assert [(r["start_seconds"], r["end_seconds"]) for r in report.records] == [
        (1.44, 2.895), (2.88, 4.335), (5.28, 6.255)]  # push 3 ends the 1st and starts the 2nd; push 6 holds the 3rd
    assert disagree == []
    assert history == [False, True, False, True, False, True, False]
    assert [">>>" in line for line in lines] == [True, False] * 3  # each start before its end, ends before restarts


def test_transitions_are_ordered_per_label_by_alternation_and_across_labels_by_time() -> None:
    from edge.detect import Event
    from edge.listen import transitions_in_order
    from edge.pipeline import StepOutput

    output = StepOutput(
        started=(Event("crying_baby", 2.0, None, 0.9, 0.9), Event("clock_alarm", 1.4, None, 0.9, 0.9),
                 Event("other", 3.0, None, 0.9, 0.9)),
        ended=(Event("crying_baby", 0.5, 1.0, 0.9, 0.9), Event("clock_alarm", 0.0, 1.5, 0.9, 0.9),
               Event("other", 3.0, 3.0, 0.9, 0.9)),  # cut short by the end of the stream: ends where it starts
    )
    ordered = transitions_in_order(output, active={"crying_baby", "clock_alarm"})
    assert [(kind, event.label) for kind, event in ordered] == [
        ("ended", "crying_baby"), ("ended", "clock_alarm"), ("started", "clock_alarm"), ("started", "crying_baby"),
        ("started", "other"), ("ended", "other")]


def test_an_event_in_progress_is_logged_and_its_led_turned_off_when_the_source_fails(tmp_path: Path) -> None:
    from edge.leds import NullLedBank
    from edge.sources import SourceError

    loud = 0.3 * np.random.default_rng(0).standard_normal(5 * RATE).astype(np.float32)
    source = FakeSource(blocks_of(loud, 1600), rate_hz=RATE, faults={40: SourceError("microphone gone for good")})
    leds = NullLedBank({"clock_alarm": 27})
    with EventLog(tmp_path / "events.jsonl") as event_log, pytest.raises(SourceError, match="gone for good"):
        run_stream(source, fake_pipeline(), leds=leds, event_log=event_log)
    [logged] = jsonl(tmp_path / "events.jsonl")
    assert logged["label"] == "clock_alarm" and logged["start_seconds"] < 1.0 and logged["end_seconds"] == 4.0
    assert not leds.is_lit("clock_alarm")


def test_a_failure_while_ending_the_events_does_not_hide_the_original_error(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from edge.sources import SourceError

    pipeline = fake_pipeline()

    def broken_flush() -> Any:
        raise RuntimeError("the model is gone too")

    monkeypatch.setattr(pipeline, "flush", broken_flush)
    source = FakeSource(blocks_of(np.zeros(RATE, np.float32), 1600), rate_hz=RATE,
                        faults={5: SourceError("microphone gone for good")})
    with caplog.at_level(logging.WARNING, logger="edge.listen"), pytest.raises(SourceError, match="gone for good"):
        run_stream(source, pipeline)
    assert "could not end the events in progress after the failure: RuntimeError: the model is gone too" in caplog.text


# --- the virtual microphone is removed while listening (PulseAudio) --------------------------


def status_blink(mode: str, seconds: float) -> str:
    """The --verbose line edge.leds logs when the status LED starts blinking in `mode`, `seconds` on and off."""
    return re.escape(f"edge.leds: status LED GPIO24: {mode}, blinking {seconds:g} s on, {seconds:g} s off") + "$"


@pytest.mark.mic
def test_listen_reopens_a_removed_virtual_microphone_and_blinks_the_fault_meanwhile(
    virtual_mic: dict[str, str], tiny_model_dir: Path, tmp_path: Path
) -> None:
    listener = Running(edge_command("listen", "--model-dir", str(tiny_model_dir), "--device", "pulse",
                                    "--rate", "48000", "--pin", "beep=17", "--status-pin", "24", "--mock-gpio",
                                    "--verbose", "--event-log", str(tmp_path / "events.jsonl")), virtual_mic)
    blink = 0.5  # LedConfig.blink_seconds
    listener.wait_for_line("listening on input", timeout=120)
    listener.wait_for_line(status_blink("alive", blink), timeout=30)  # healthy: slow blinks
    with microphone_removed(virtual_mic):
        listener.wait_for_line(status_blink("fault", blink / 4), timeout=30)  # the input failed: 4x faster
        listener.wait_for_line("reopening the audio input failed", timeout=30)
    listener.wait_for_line("audio input reopened", timeout=60)
    listener.wait_for_line(status_blink("alive", blink), timeout=30)  # audio flows again: slow blinks
    listener.process.send_signal(signal.SIGTERM)
    code, stdout, stderr = listener.finish(timeout=60)
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    assert len(re.findall(r"status LED GPIO24: ", stderr)) == 3, stderr[-3000:]  # no other change of blink
    status = re.search(r"^gpio status pin 24: (.*)$", stdout, re.MULTILINE)
    assert status and "on@" in status.group(1) and status.group(1).split()[-1].startswith("off"), stdout
    assert all(line.split()[-1].startswith("off") for line in re.findall(r"^gpio .*$", stdout, re.MULTILINE))
    assert "1 reopen(s)" in stderr


# --- a full or read-only disk ------------------------------------------------------------------


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(size_kb, read_only=False) -> a fresh tmpfs of that size; skipped where mounting is not allowed."""
    made: list[Path] = []

    def mount(size_kb: int, *, read_only: bool = False) -> Path:
        point = tmp_path / f"disk{len(made)}"
        point.mkdir()
        options = f"size={size_kb}k" + (",ro" if read_only else "")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True,
                                text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {result.stderr.strip()}")
        made.append(point)
        return point

    yield mount
    for point in reversed(made):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def remount_read_only(point: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True, capture_output=True)


def fill(disk: Path, *, leave_kb: int) -> Path:
    """Fill a tmpfs until only leave_kb remain; returns the filler file (delete it to free the space)."""
    stats = os.statvfs(disk)
    free = stats.f_bavail * stats.f_frsize - leave_kb * 1024
    filler = disk / "filler.bin"
    filler.write_bytes(b"\0" * max(0, free))
    return filler


def test_record_on_a_disk_that_fills_keeps_what_fit_as_a_valid_wav(
    mounts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = mounts(64)
    audio = 0.25 * np.ones(5 * RATE, np.float32)
    source = FakeSource(blocks_of(audio, 1600), rate_hz=RATE)
    with caplog.at_level(logging.WARNING):
        result = record(source, disk / "take.wav", seconds=5)
    info = sf.info(str(disk / "take.wav"))
    assert result.path == disk / "take.wav" and result.interrupted and "No space left" in result.error
    assert info.samplerate == RATE and info.subtype == "FLOAT" and 0.9 < info.duration < 1.1
    assert info.frames == round(result.seconds * RATE)
    written, _ = sf.read(str(disk / "take.wav"), dtype="float32")
    assert np.all(written == 0.25)  # no torn frame at the end
    assert len(error_lines(caplog, r"take\.wav: cannot write more .*kept the first 1\.\d\d s")) == 1
    assert [p.name for p in disk.iterdir()] == ["take.wav"]  # no temporary file left
    assert source.yielded < 20  # stopped capturing at the failure


def test_record_to_a_read_only_folder_fails_before_capturing(mounts: Callable[..., Path]) -> None:
    disk = mounts(64, read_only=True)
    source = FakeSource(blocks_of(np.zeros(RATE, np.float32), 1600), rate_hz=RATE)
    with pytest.raises(OSError) as error:
        record(source, disk / "take.wav", seconds=1)
    assert error.value.errno == errno.EROFS and source.yielded == 0


def test_record_command_on_a_full_disk_exits_1_and_keeps_the_wav(
    mounts: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge.sources

    disk = mounts(64)
    sd = ScriptedSoundDevice([(0.25 * np.ones(4 * 48000, np.float32), (), (), "end")])
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: sd)
    code = cli.main(["record", str(disk / "take.wav"), "--seconds", "4"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_FAILURE and "Traceback" not in captured.err
    assert captured.err.count("cannot write more") == 1 and "(interrupted)" in captured.out
    assert sf.info(str(disk / "take.wav")).duration > 0.9


def test_record_command_into_a_read_only_folder_says_so_without_a_traceback(
    mounts: Callable[..., Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import edge.sources

    disk = mounts(64, read_only=True)
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: ScriptedSoundDevice([]))
    code = cli.main(["record", str(disk / "take.wav"), "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_FAILURE and "Read-only file system" in err and "Traceback" not in err


def test_record_into_an_existing_folder_is_refused_before_capturing_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The WAV is renamed onto the path at the end: a folder there used to throw the whole take away."""
    import edge.sources
    from edge.errors import ConfigError

    folder = tmp_path / "takes"
    folder.mkdir()
    source = FakeSource(blocks_of(np.zeros(RATE, np.float32), 1600), rate_hz=RATE)
    refusal = rf"{re.escape(str(folder))} is a folder; give a file such as .*take\.wav, or use --dataset"
    with pytest.raises(ConfigError, match=refusal):
        record(source, folder, seconds=1)
    assert source.yielded == 0 and list(folder.iterdir()) == []
    sd = ScriptedSoundDevice([(0.25 * np.ones(2 * 48000, np.float32), (), (), "end")])
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: sd)
    code = cli.main(["record", str(folder), "--seconds", "1"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "is a folder; give a file such as" in err and "Traceback" not in err
    assert list(folder.iterdir()) == [] and sd.opened == 0  # refused before the microphone opened


@pytest.mark.parametrize("command", ["record", "listen"])
def test_a_capture_rate_the_resampler_cannot_convert_exits_2_naming_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str
) -> None:
    """ALSA's plughw accepts any rate; 96001 Hz would need a 16-million-tap filter."""
    import edge.sources
    from edge.errors import ConfigError

    sd = ScriptedSoundDevice([])
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: sd)
    monkeypatch.setattr(cli, "_load_base_pipeline", lambda config: fake_pipeline())
    arguments = {"record": [str(tmp_path / "take.wav"), "--seconds", "1"],
                 "listen": ["--no-leds", "--event-log", str(tmp_path / "events.jsonl"), "--duration", "1"]}[command]
    code = cli.main([command, *arguments, "--rate", "96001"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE and "Traceback" not in err, err
    assert "96001 Hz cannot be resampled" in err and "--rate or [audio] rate_hz = one of 16000, 44100, 48000" in err
    assert sd.opened == 0 and list(tmp_path.iterdir()) == []
    with pytest.raises(ConfigError, match="96001 Hz cannot be resampled"):  # record() refuses such a source itself
        record(FakeSource([np.zeros(9600, np.float32)], rate_hz=96001), tmp_path / "take.wav", seconds=1)
    assert list(tmp_path.iterdir()) == []


def test_event_audio_on_a_full_disk_logs_once_and_listening_goes_on(
    tmp_path: Path, mounts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = mounts(512)  # room for about 4 clips of 3.5 s
    filler = fill(disk, leave_kb=0)
    audio = alarms(RATE, 6)
    freed_at = len(blocks_of(audio, 1600)) * 2 // 3

    def on_block(index: int) -> None:
        if index == freed_at:
            filler.unlink()

    source = FakeSource(blocks_of(audio, 1600), rate_hz=RATE, on_block=on_block)
    config = config_for(tmp_path, save_dir=disk / "clips", pre_roll_seconds=0.5)
    with caplog.at_level(logging.INFO):
        report = listen_to(source, fake_pipeline(), config)
    records = jsonl(tmp_path / "state" / "events.jsonl")
    assert report.event_count == len(records) == 6 and report.events_lost == 0
    saved = [r for r in records if "audio" in r]
    assert 1 <= len(saved) < 6 and all(Path(r["audio"]).parent == disk / "clips" for r in saved)
    assert all(sf.info(r["audio"]).frames > 0 for r in saved)
    assert len(error_lines(caplog, "cannot save event audio")) == 1
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert not [p for p in (disk / "clips").iterdir() if p.suffix == ".tmp"]


def test_event_audio_to_a_read_only_disk_logs_once_and_listening_goes_on(
    tmp_path: Path, mounts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = mounts(256)
    (disk / "clips").mkdir()
    audio = alarms(RATE, 4)
    turn = len(blocks_of(audio, 1600)) // 3

    def on_block(index: int) -> None:
        if index == turn:
            remount_read_only(disk)  # no file is open there between saves

    source = FakeSource(blocks_of(audio, 1600), rate_hz=RATE, on_block=on_block)
    config = config_for(tmp_path, save_dir=disk / "clips")
    with caplog.at_level(logging.INFO):
        report = listen_to(source, fake_pipeline(), config)
    records = jsonl(tmp_path / "state" / "events.jsonl")
    assert report.event_count == len(records) == 4
    assert 1 <= sum("audio" in r for r in records) < 4
    assert len(error_lines(caplog, "cannot save event audio.*Read-only file system")) == 1


def test_the_event_log_on_a_full_disk_loses_no_line_it_keeps_and_resumes(
    tmp_path: Path, mounts: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    disk = mounts(64)
    filler = fill(disk, leave_kb=4)  # one page: about 15 records
    audio = alarms(RATE, 30, loud=1.5)
    freed_at = len(blocks_of(audio, 1600)) * 5 // 6

    def on_block(index: int) -> None:
        if index == freed_at:
            filler.unlink()

    source = FakeSource(blocks_of(audio, 1600), rate_hz=RATE, on_block=on_block)
    config = EdgeConfig(events=EventConfig(log=str(disk / "events.jsonl")))
    with caplog.at_level(logging.INFO):
        report = listen_to(source, fake_pipeline(), config, source_name="mic:" + "x" * 100)
    lines = (disk / "events.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole JSON: no torn record
    assert report.event_count == 30 and 0 < report.events_lost < 30
    assert len(records) == 30 - report.events_lost
    assert len(error_lines(caplog, r"cannot write the event log .*No space left")) == 1
    assert any("writable again" in r.getMessage() for r in caplog.records)
    starts = [r["start_seconds"] for r in records]
    assert starts == sorted(starts) and starts[-1] > 120  # the last events made it after the space came back


def test_enospc_without_root_record_and_event_log_keep_valid_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same two guarantees with os.write failing after a byte budget (any user, any file system)."""
    import edge.audio
    import edge.events

    real_write = os.write
    budget = {"bytes": 20_000}

    def write_with_budget(fd: int, data: Any) -> int:
        if budget["bytes"] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        chunk = bytes(data)[: budget["bytes"]]
        budget["bytes"] -= len(chunk)
        return real_write(fd, chunk)

    monkeypatch.setattr(edge.audio.os, "write", write_with_budget)
    result = record(FakeSource(blocks_of(0.5 * np.ones(RATE, np.float32), 1000), rate_hz=RATE), tmp_path / "a.wav",
                    seconds=1, subtype="PCM_16")
    info = sf.info(str(tmp_path / "a.wav"))
    assert result.error and info.subtype == "PCM_16" and info.frames == (20_000 - 44) // 2
    monkeypatch.setattr(edge.audio.os, "write", real_write)

    budget["bytes"] = 350  # two records of ~160 bytes, and part of a third
    caplog.clear()
    monkeypatch.setattr(edge.events.os, "write", write_with_budget)
    with caplog.at_level(logging.ERROR), EventLog(tmp_path / "events.jsonl") as log:
        results = [log.write({"label": "clock_alarm", "start_seconds": i, "padding": "x" * 100}) for i in range(5)]
    assert results == [True, True, False, False, False] and log.lost == 3
    lines = (tmp_path / "events.jsonl").read_text().splitlines()
    assert [json.loads(line)["start_seconds"] for line in lines] == [0, 1]
    assert len(caplog.records) == 1


def test_an_event_log_deleted_or_rotated_while_listening_is_recreated(tmp_path: Path) -> None:
    """Appending to a deleted (or logrotate-renamed) file would lose every later event silently."""
    path = tmp_path / "state" / "events.jsonl"
    with EventLog(path) as log:
        log.write({"label": "a"})
        path.unlink()
        log.write({"label": "b"})
        path.rename(tmp_path / "events.jsonl.1")
        log.write({"label": "c"})  # renamed and nothing new at the path yet: written on where it went
        shutil.rmtree(tmp_path / "state")
        log.write({"label": "d"})
    assert [r["label"] for r in jsonl(path)] == ["d"]
    assert [r["label"] for r in jsonl(tmp_path / "events.jsonl.1")] == ["b", "c"]  # what logrotate moved stays whole
    assert log.count == 4 and log.lost == 0


def test_an_event_written_between_logrotates_rename_and_create_is_kept_where_events_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate's `create` renames the log, then makes the new one with O_EXCL: a listener that made
    the file itself in between would have it set aside as a .backup that nobody reads."""
    import edge.events

    path = tmp_path / "events.jsonl"
    with EventLog(path) as log:
        log.write({"label": "a"})
        path.rename(tmp_path / "events.jsonl.1")  # logrotate: rename ...
        log.write({"label": "b"})  # ... an event in between ...
        assert not path.exists()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # ... create, which must not fail
        os.close(fd)
        log.write({"label": "c"})
        path.rename(tmp_path / "events.jsonl.2")  # renamed by hand, and no new file ever comes
        log.write({"label": "d"})
        monkeypatch.setattr(edge.events, "ROTATION_GRACE_SECONDS", 0.0)
        log.write({"label": "e"})
    assert [r["label"] for r in jsonl(tmp_path / "events.jsonl.1")] == ["a", "b"]
    assert [r["label"] for r in jsonl(tmp_path / "events.jsonl.2")] == ["c", "d"]
    assert [r["label"] for r in jsonl(path)] == ["e"]


def test_a_vanished_save_folder_is_recreated_and_never_crashes(tmp_path: Path) -> None:
    saver = EventAudioSaver(tmp_path / "clips", rate_hz=RATE)
    from edge.detect import Event

    saver.feed(0.1 * np.ones(3 * RATE, np.float32))
    shutil.rmtree(tmp_path / "clips")
    path = saver.save(Event("clock_alarm", 1.0, 2.0, 0.9, 0.8))
    assert path is not None and sf.info(str(path)).frames > 0


# --- SIGTERM / SIGINT at any point ----------------------------------------------------------

FAKE_SOUNDDEVICE = r'''
"""A stand-in for the sounddevice module, found first on PYTHONPATH: one real-time input
(1 s of silence, then 3 s of a 1 kHz beep, repeated). At exit it reports the last state each
mock GPIO pin was driven to, whatever ended the process."""
import atexit
import gc
import sys
import threading
import time
from types import SimpleNamespace

import numpy as np

RATE = 48000
default = SimpleNamespace(device=[0, 0])


class PortAudioError(Exception):
    pass


class InputStream:
    def __init__(self, *, blocksize, callback, finished_callback, **kwargs):
        self.blocksize, self.callback, self.running = blocksize, callback, threading.Event()

    def start(self):
        self.running.set()
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        position, due = 0, time.monotonic()
        while self.running.is_set():
            t = (position + np.arange(self.blocksize)) / RATE
            beeping = (t % 4.0) >= 1.0
            block = np.where(beeping, 0.5 * np.sin(2 * np.pi * 1000 * t), 0.0).astype(np.float32)
            self.callback(block[:, None], self.blocksize, None, SimpleNamespace(input_overflow=False))
            position += self.blocksize
            due += self.blocksize / RATE
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self):
        self.running.clear()

    close = stop


def query_devices():
    return [{"name": "Realtime Fake Mic", "max_input_channels": 1, "default_samplerate": 48000.0, "hostapi": 0}]


def query_hostapis():
    return [{"name": "ALSA"}]


def check_input_settings(**kwargs):
    pass


@atexit.register
def _report_pins():
    mock = sys.modules.get("gpiozero.pins.mock")
    if mock is None:
        return
    for pin in [o for o in gc.get_objects() if isinstance(o, mock.MockPin)]:
        states = getattr(pin, "states", [])
        print(f"FINAL-PIN {pin.info.name} {'on' if states and states[-1].state else 'off'}", file=sys.stderr,
              flush=True)
'''


IMPORTING_MARKER = "PAUSED importing edge.cli"

PAUSE_WHILE_IMPORTING = r'''
"""Run `python -m edge` so that the import of edge.cli stops half-way (after edge/__main__ has set its
SIGTERM handler, before edge.cli exists), prints a marker on stderr, and waits there for a signal."""
import runpy
import signal
import sys

MARKER = __MARKER__


class PauseAtEdgeCli:
    def find_spec(self, name, path=None, target=None):
        if name == "edge.cli":
            print(MARKER, file=sys.stderr, flush=True)
            while True:
                signal.pause()  # returns only if a handler returns; ours raise KeyboardInterrupt
        return None


sys.meta_path.insert(0, PauseAtEdgeCli())
runpy.run_module("edge", run_name="__main__", alter_sys=True)
'''


def paused_while_importing_the_cli(command: list[str]) -> list[str]:
    """`python -m edge ARGS` -> the same run, stopped while importing edge.cli until a signal arrives."""
    assert command[1:3] == ["-m", "edge"], command
    return [command[0], "-c", PAUSE_WHILE_IMPORTING.replace("__MARKER__", repr(IMPORTING_MARKER)), *command[3:]]


@pytest.fixture(scope="module")
def fake_audio_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for `python -m edge` capturing from the fake real-time microphone."""
    folder = tmp_path_factory.mktemp("fakes")
    (folder / "sounddevice.py").write_text(FAKE_SOUNDDEVICE, encoding="utf-8")
    return {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{REPO}"}


def check_left_clean(state: Path, stdout: str, stderr: str) -> None:
    """LEDs off, the event log whole JSON lines, saved clips valid WAVs, no temporary files."""
    assert all(line.endswith(" off") for line in re.findall(r"^FINAL-PIN .*$", stderr, re.MULTILINE)), stderr
    assert all(line.split()[-1].startswith("off") for line in re.findall(r"^gpio .*$", stdout, re.MULTILINE)), stdout
    if (state / "events.jsonl").exists():
        jsonl(state / "events.jsonl")
    for clip in (state / "clips").glob("*") if (state / "clips").exists() else []:
        assert clip.suffix == ".wav", clip
        assert sf.info(str(clip)).frames > 0
    assert not list(state.rglob("*.tmp"))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("moment", ["importing", "model-loaded", "listening", "led-lit"])
def test_a_signal_at_any_point_of_listen_exits_0_with_leds_off_and_files_valid(
    fake_audio_env: dict[str, str], tiny_model_dir: Path, tmp_path: Path, signum: int, moment: str
) -> None:
    state = tmp_path / "state"
    command = edge_command("listen", "--model-dir", str(tiny_model_dir), "--pin", "beep=17", "--status-pin", "24",
                           "--mock-gpio", "--verbose", "--event-log", str(state / "events.jsonl"),
                           "--save-events", str(state / "clips"))
    if moment == "importing":
        command = paused_while_importing_the_cli(command)
    listener = Running(command, fake_audio_env)
    if moment == "importing":
        listener.wait_for_line(IMPORTING_MARKER, timeout=60)  # the child now waits, mid-import, for the signal
    elif moment == "model-loaded":
        listener.wait_for_line(r"model .* labels", timeout=120)
    elif moment == "listening":
        listener.wait_for_line("listening on input", timeout=120)
    else:
        listener.wait_for_line("listening on input", timeout=120)
        listener.wait_for_line(">>> beep started", timeout=30, stream="stdout")
    listener.process.send_signal(signum)
    code, stdout, stderr = listener.finish(timeout=60)
    assert code == 0 and "Traceback" not in stderr, stderr[-3000:]
    check_left_clean(state, stdout, stderr)
    if moment == "led-lit":
        assert "FINAL-PIN GPIO17 off" in stderr and "gpio beep pin 17: off@0.00 on@" in stdout
        assert len(jsonl(state / "events.jsonl")) == 1 and len(list((state / "clips").glob("*.wav"))) == 1


def growing_take_bytes(folder: Path, name: str) -> int:
    """Size of the WAV `name` being recorded in `folder` under its temporary name (edge.audio.WavWriter); 0 if none."""
    sizes = [0]
    for path in folder.glob(f".{name}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):  # renamed into place meanwhile
            sizes.append(path.stat().st_size)
    return max(sizes)


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    """Poll a condition nothing announces (a file growing on disk) until it holds; AssertionError(what) after timeout."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.02)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_during_record_leaves_a_valid_wav_of_what_was_captured(
    fake_audio_env: dict[str, str], tmp_path: Path, signum: int
) -> None:
    output = tmp_path / "take.wav"
    recorder = Running(edge_command("record", str(output), "--seconds", "30"), fake_audio_env)
    recorder.wait_for_line("recording 30.0 s", timeout=60)
    # Signalled once the take holds over 1 s of float32 samples (its header is under 100 bytes).
    wait_until(lambda: growing_take_bytes(tmp_path, "take.wav") > 100 + 4 * RATE, timeout=30,
               what="the recording never reached 1 s")
    recorder.process.send_signal(signum)
    code, stdout, stderr = recorder.finish(timeout=60)
    assert code == 0 and "Traceback" not in stderr, stderr
    info = sf.info(str(output))
    assert info.samplerate == RATE and 1.0 < info.duration < 30.0, info
    assert f"take.wav: {info.duration:.2f} s at {RATE} Hz" in stdout and "(interrupted)" in stdout, stdout
    assert [p.name for p in tmp_path.iterdir()] == ["take.wav"]



# --- training interrupted --------------------------------------------------------------------


class CountingEmbedder:
    """A YAMNet stand-in for the cache: embedding = the patch's mean; raises KeyboardInterrupt on call `die_at`."""

    weights_sha256 = "ab" * 32

    def __init__(self, die_at: Optional[int] = None) -> None:
        self.calls = 0
        self.patches = 0
        self.die_at = die_at

    def embed_patches(self, patches: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        self.patches += len(patches)
        means = np.repeat(patches.mean(axis=1, keepdims=True), DEFAULT_PARAMS.embedding_size, axis=1)
        return means.astype(np.float32), np.zeros((len(patches), DEFAULT_PARAMS.yamnet_classes), np.float32)


def clips(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"clip{index:02d}.wav"
        sf.write(str(path), np.full(2 * RATE, (index + 1) / 100, np.float32), RATE, subtype="FLOAT")
        paths.append(path)
    return paths


def test_an_interrupted_embedding_run_leaves_a_valid_cache_that_the_rerun_reuses(tmp_path: Path) -> None:
    pytest.importorskip("tqdm")
    paths = clips(tmp_path / "audio", 12)
    per_clip = DEFAULT_PARAMS.patches_in(2 * RATE)  # 4 patches: batches of 2 clips
    dying = CountingEmbedder(die_at=4)
    with pytest.raises(KeyboardInterrupt):
        embeddings.embed_files(paths, dying, cache_root=tmp_path / "cache", batch_patches=2 * per_clip,
                               progress=False)
    cache_dir = next((tmp_path / "cache").iterdir())
    assert sorted(p.suffix for p in cache_dir.iterdir()) == [".npz"] * 6  # 3 whole batches, no temporary files
    rerun = CountingEmbedder()
    results = embeddings.embed_files(paths, rerun, cache_root=tmp_path / "cache", batch_patches=2 * per_clip,
                                     progress=False)
    assert rerun.patches == 6 * per_clip  # only the 6 clips the first run did not finish
    fresh = embeddings.embed_files(paths, CountingEmbedder(), cache_root=None, progress=False)
    for cached, computed in zip(results, fresh):
        np.testing.assert_array_equal(cached.embeddings, computed.embeddings)


def test_a_torn_cache_entry_is_computed_again_not_trusted(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tqdm")
    paths = clips(tmp_path / "audio", 3)
    embeddings.embed_files(paths, CountingEmbedder(), cache_root=tmp_path / "cache", progress=False)
    entry = sorted(next((tmp_path / "cache").iterdir()).iterdir())[0]
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])  # a crash mid-write by a non-atomic writer
    again = CountingEmbedder()
    with caplog.at_level(logging.WARNING):
        embeddings.embed_files(paths, again, cache_root=tmp_path / "cache", progress=False)
    assert again.patches == DEFAULT_PARAMS.patches_in(2 * RATE) and "unreadable" in caplog.text
    assert embeddings.EmbeddingCache(tmp_path / "cache", weights_sha256=again.weights_sha256).load(entry.stem)


def test_an_interrupt_while_storing_a_cache_entry_leaves_no_partial_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C after the entry's bytes are written but before it is renamed into place."""
    pytest.importorskip("tqdm")
    paths = clips(tmp_path / "audio", 2)
    real_savez = np.savez

    def savez_then_die(stream: Any, **arrays: Any) -> None:
        real_savez(stream, **arrays)
        stream.flush()
        raise KeyboardInterrupt

    monkeypatch.setattr(embeddings.np, "savez", savez_then_die)
    with pytest.raises(KeyboardInterrupt):
        embeddings.embed_files(paths, CountingEmbedder(), cache_root=tmp_path / "cache", progress=False)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    monkeypatch.setattr(embeddings.np, "savez", real_savez)
    rerun = CountingEmbedder()
    embeddings.embed_files(paths, rerun, cache_root=tmp_path / "cache", progress=False)
    assert rerun.patches == 2 * DEFAULT_PARAMS.patches_in(2 * RATE)


@pytest.fixture(scope="module")
def trained_head_module() -> Any:
    pytest.importorskip("tensorflow")
    return head


def small_head(module: Any, *, seed: int) -> Any:
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    return module.TrainedHead(
        model=module.build_head(3, hidden_units=8), labels=["knock", "clap", "other"], background_label="other",
        params=DEFAULT_PARAMS, train_config=module.TrainConfig(hidden_units=8), yamnet_weights_sha256="ab" * 32,
        embedding_size=DEFAULT_PARAMS.embedding_size,
    )


def test_an_interrupted_head_save_leaves_the_previous_model_intact(
    trained_head_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = trained_head_module
    model_dir = tmp_path / "model"
    module.save_head(small_head(module, seed=1), model_dir)
    before = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    probe = np.random.default_rng(0).standard_normal((4, DEFAULT_PARAMS.embedding_size)).astype(np.float32)
    expected = module.load_head(model_dir).predict(probe)

    newer = small_head(module, seed=2)
    real_save = type(newer.model).save

    def save_then_die(self: Any, path: Any, *args: Any, **kwargs: Any) -> None:
        real_save(self, path, *args, **kwargs)
        raise KeyboardInterrupt  # e.g. Ctrl-C right after the new weights were written

    monkeypatch.setattr(type(newer.model), "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        module.save_head(newer, model_dir)
    assert {p.name: p.read_bytes() for p in model_dir.iterdir()} == before  # no staging dir left either
    np.testing.assert_allclose(module.load_head(model_dir).predict(probe), expected, atol=1e-6)


@pytest.mark.parametrize("dies_after_replace", [1, 2])
def test_an_interrupt_between_the_renames_of_a_head_save_keeps_a_matching_loadable_pair(
    trained_head_module: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dies_after_replace: int
) -> None:
    """save_head moves the content-named model in, then replaces head.json: a crash between the two
    must leave the previous head loadable; a crash after both, the new one (never a mix)."""
    module = trained_head_module
    model_dir = tmp_path / "model"
    probe = np.random.default_rng(0).standard_normal((4, DEFAULT_PARAMS.embedding_size)).astype(np.float32)
    older, newer = small_head(module, seed=1), small_head(module, seed=2)
    module.save_head(older, model_dir)
    expected = {1: older.predict(probe), 2: newer.predict(probe)}[dies_after_replace]
    real_replace = os.replace
    calls = {"n": 0}

    def replace_then_die(source: Any, target: Any) -> None:
        calls["n"] += 1
        real_replace(source, target)
        if calls["n"] == dies_after_replace:
            raise KeyboardInterrupt

    monkeypatch.setattr(module.os, "replace", replace_then_die)
    with pytest.raises(KeyboardInterrupt):
        module.save_head(newer, model_dir)
    monkeypatch.setattr(module.os, "replace", real_replace)
    loaded = module.load_head(model_dir)
    np.testing.assert_allclose(loaded.predict(probe), expected, atol=1e-6)
    assert not np.allclose(older.predict(probe), newer.predict(probe), atol=1e-3)  # the two heads differ
    module.save_head(newer, model_dir)  # the next save cleans up what the interrupted one left
    assert sorted(p.name for p in model_dir.iterdir()) == sorted([module.HEAD_METADATA_FILE, module.head_model_path(model_dir).name])


# --- privacy and safety on the device -------------------------------------------------------


def test_saving_event_audio_is_off_by_default_so_no_audio_is_written(tmp_path: Path) -> None:
    example = cli.load_config(REPO / "scripts" / "oido.toml")
    assert EdgeConfig().events.save_dir is None and example.events.save_dir is None
    config = EdgeConfig(state_dir=tmp_path / "state")
    report = listen_to(FakeSource(blocks_of(alarms(RATE, 2), 1600), rate_hz=RATE), fake_pipeline(), config)
    assert report.event_count == 2
    written = [p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()]
    assert written == [Path("state/events.jsonl")]
    assert "audio" not in jsonl(tmp_path / "state" / "events.jsonl")[0]


def test_saved_event_audio_is_deleted_beyond_the_retention_days_even_at_start(tmp_path: Path) -> None:
    clips_dir = tmp_path / "clips"
    clips_dir.mkdir()
    now = time.time()
    for days, name in ((10, "oido-20250101T000000000-a.wav"), (3, "oido-20250108T000000000-b.wav"),
                       (0, "oido-20250111T000000000-c.wav")):
        path = clips_dir / name
        path.write_bytes(b"RIFF")
        os.utime(path, (now - days * 86400, now - days * 86400))
    (clips_dir / "notes.txt").write_text("not ours")
    EventAudioSaver(clips_dir, rate_hz=RATE, keep_days=7)  # a lowered retention applies at start
    assert sorted(p.name for p in clips_dir.iterdir()) == ["notes.txt", "oido-20250108T000000000-b.wav",
                                                           "oido-20250111T000000000-c.wav"]
    saver = EventAudioSaver(clips_dir, rate_hz=RATE, keep_days=2)
    assert saver.enforce_budget(now=now + 86400 * 0.5) == []  # c is half a day old
    assert sorted(p.name for p in clips_dir.iterdir()) == ["notes.txt", "oido-20250111T000000000-c.wav"]


def test_a_long_listen_keeps_no_per_window_history(tmp_path: Path) -> None:
    """run_stream used to keep every window decision: ~0.5 KB per 1.5 s, 30 MB a day on the device."""
    report = listen_to(FakeSource(blocks_of(alarms(RATE, 3), 1600), rate_hz=RATE), fake_pipeline(),
                       EdgeConfig(state_dir=tmp_path))
    assert report.window_count > 10 and report.event_count == 3
    assert report.windows == [] and report.records == [] and report.patch_probabilities == []


def test_listen_writes_only_under_its_state_directory(fake_audio_env: dict[str, str], tiny_model_dir: Path,
                                                     tmp_path: Path) -> None:
    """Every file the listener opens for writing, creates, renames or deletes lies in its state directory.

    Run under strace with the appliance's configuration (event log and saved audio in the state dir, as the
    systemd unit's StateDirectory); the config file and the model are only read.
    """
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed")
    state = tmp_path / "var-lib-oido"
    etc = tmp_path / "etc-oido"
    etc.mkdir()
    config = etc / "oido.toml"
    config.write_text(
        f'model_dir = "{tiny_model_dir}"\nstate_dir = "{state}"\n[leds]\nstatus = 24\n[leds.pins]\nbeep = 17\n'
        f'[events]\nsave_dir = "{state / "events"}"\n', encoding="utf-8")
    state.mkdir()
    trace = tmp_path / "trace.txt"
    env = {**fake_audio_env, "PYTHONDONTWRITEBYTECODE": "1", "STATE_DIRECTORY": str(state)}
    result = subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e",
         "trace=open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,truncate,chmod,fchmodat",
         *edge_command("listen", "--config", str(config), "--mock-gpio", "--duration", "6")],
        capture_output=True, text=True, timeout=300, env=env, cwd=state,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list((state / "events").glob("*.wav"))) >= 1 and (state / "events.jsonl").exists()
    writes = []
    for line in trace.read_text().splitlines():
        call = re.match(r"\d+\s+(\w+)\((.*)\)\s+=\s+(-?\d+)", line)
        if not call:
            continue
        name, arguments = call.group(1), call.group(2)
        if name in ("open", "openat") and not re.search(r"O_WRONLY|O_RDWR|O_CREAT|O_TRUNC", arguments):
            continue
        for path in re.findall(r'"([^"]*)"', arguments):
            if path.startswith("/") and not path.startswith(("/dev/", "/proc/")):
                writes.append((name, path))
    outside = [(name, path) for name, path in writes if path != str(state) and not path.startswith(f"{state}/")]
    assert writes and not outside, outside[:20]
