"""The microphone path: MicrophoneSource against a scripted sounddevice, then the real one.

The first group passes a fake sounddevice module (hardware is passed in) to check overflow
counting, reopening with back-off, and device choice. The `mic` group runs the real
PortAudio capture through PulseAudio's ALSA "pulse" device, with a null sink as a virtual
microphone (scripts/virtual_mic.sh) and an ESC-50 clip played into it with paplay.
"""

from __future__ import annotations

import logging
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Optional

import numpy as np
import pytest

from edge.resample import can_resample
from edge.sources import DeviceError, Gap, MicrophoneSource, list_input_devices, resolve_input_device

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import PINS, REPO, esc50_clip, shipped_model_dir  # noqa: E402
from fixtures.virtual_mic import Running, edge_command, microphone_removed, play  # noqa: E402


# --- a scripted sounddevice ---


class FakeStream:
    """Delivers its scripted blocks synchronously on start(), then optionally reports the stream finished."""

    def __init__(self, sd: "FakeSoundDevice", *, device: int, samplerate: float, channels: int, dtype: str,
                 blocksize: int, callback: Callable[..., None], finished_callback: Callable[[], None]) -> None:
        self.sd = sd
        self.samplerate = samplerate
        self.blocksize = blocksize
        self.channels = channels
        self.callback = callback
        self.finished_callback = finished_callback
        self.closed = False

    def start(self) -> None:
        behaviour = self.sd.next_behaviour()
        if isinstance(behaviour, BaseException):
            raise behaviour
        blocks, overflow_at, then_fail = behaviour
        for index in range(blocks):
            indata = np.full((self.blocksize, self.channels), index / 100.0, np.float32)
            status = SimpleNamespace(input_overflow=index in overflow_at)
            self.callback(indata, self.blocksize, None, status)
        if then_fail:
            self.finished_callback()

    def stop(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class FakeSoundDevice:
    """Just enough of the sounddevice module: devices, check_input_settings, InputStream."""

    def __init__(self, behaviours: list[Any], *, devices: Optional[list[dict[str, Any]]] = None,
                 rates: tuple[int, ...] = (16000, 44100, 48000)) -> None:
        self._behaviours = list(behaviours)
        self.devices = devices if devices is not None else [
            {"name": "bcm2835 Headphones", "max_input_channels": 0, "default_samplerate": 48000.0, "hostapi": 0},
            {"name": "USB PnP Sound Device: Audio (hw:2,0)", "max_input_channels": 1,
             "default_samplerate": 44100.0, "hostapi": 0},
            {"name": "pulse", "max_input_channels": 32, "default_samplerate": 44100.0, "hostapi": 0},
        ]
        self.rates = rates
        self.default = SimpleNamespace(device=[1, 0])
        self.streams: list[FakeStream] = []
        self.reinitialised = 0

    def next_behaviour(self) -> Any:
        return self._behaviours.pop(0) if self._behaviours else (0, (), False)

    def query_devices(self) -> list[dict[str, Any]]:
        return self.devices

    def query_hostapis(self) -> list[dict[str, Any]]:
        return [{"name": "ALSA"}]

    def check_input_settings(self, *, device: int, samplerate: float, channels: int, dtype: str) -> None:
        if int(samplerate) not in self.rates:
            raise ValueError("Invalid sample rate [PaErrorCode -9997]")

    def InputStream(self, **kwargs: Any) -> FakeStream:  # noqa: N802 - sounddevice's name
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream

    def _terminate(self) -> None:
        self.reinitialised += 1

    def _initialize(self) -> None:
        pass


def collect(source: MicrophoneSource, *, until: Callable[[list[Any]], bool]) -> list[Any]:
    items: list[Any] = []
    for item in source.blocks():
        items.append(item)
        if until(items):
            source.stop()
    return items


def test_overflows_are_counted_and_logged_never_raised(caplog):
    sd = FakeSoundDevice([(6, {1, 4}, False)])
    mic = MicrophoneSource("USB", None, 0.1, 1, sd=sd)
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        items = collect(mic, until=lambda items: len(items) == 6)
    mic.close()
    assert mic.overflows == 2 and len(items) == 6
    assert all(isinstance(b, np.ndarray) and b.dtype == np.float32 and b.shape == (4410, 1) for b in items)
    assert any("overflow" in r.getMessage() for r in caplog.records)


def test_a_failed_stream_is_reopened_with_back_off_and_a_gap_is_reported():
    opening_error = OSError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
    sd = FakeSoundDevice([(3, (), True), opening_error, opening_error, (2, (), False)])
    faults: list[str] = []
    recoveries: list[bool] = []
    mic = MicrophoneSource(1, 16000, 0.05, 1, sd=sd, on_fault=faults.append,
                           on_recover=lambda: recoveries.append(True),
                           backoff_initial_seconds=0.001, backoff_max_seconds=0.004)
    items = collect(mic, until=lambda items: sum(isinstance(i, np.ndarray) for i in items) == 5)
    mic.close()
    kinds = ["gap" if isinstance(i, Gap) else "block" for i in items]
    assert kinds == ["block"] * 3 + ["gap"] + ["block"] * 2
    assert len(faults) == 1 and recoveries == [True] and mic.reopens == 1
    assert sd.reinitialised == 3  # PortAudio re-listed devices before each attempt (a re-plugged USB mic)
    assert all(stream.closed for stream in sd.streams)


def test_a_stream_that_goes_silent_is_treated_as_gone():
    sd = FakeSoundDevice([(2, (), False), (1, (), False)])
    mic = MicrophoneSource("pulse", 48000, 0.1, 1, sd=sd, stall_seconds=0.2, backoff_initial_seconds=0.001)
    items = collect(mic, until=lambda items: sum(isinstance(i, np.ndarray) for i in items) == 3)
    assert isinstance(items[2], Gap) and "no audio" in items[2].reason


def test_stop_ends_the_iteration_while_waiting_for_audio():
    sd = FakeSoundDevice([(0, (), False)])
    mic = MicrophoneSource("pulse", 48000, 0.1, 1, sd=sd)
    timer = threading.Timer(0.2, mic.stop)
    timer.start()
    assert list(mic.blocks()) == []
    timer.join()


def test_device_is_chosen_by_name_part_or_index_and_rate_defaults_to_the_devices():
    sd = FakeSoundDevice([])
    assert resolve_input_device("usb", sd=sd).index == 1
    assert resolve_input_device("2", sd=sd).name == "pulse"
    assert resolve_input_device(None, sd=sd).index == 1  # the default input
    mic = MicrophoneSource("USB PnP", None, 0.1, 1, sd=sd).open()
    assert mic.rate_hz == 44100
    mic.close()


def test_missing_device_lists_the_available_inputs():
    with pytest.raises(DeviceError) as error:
        resolve_input_device("Blue Yeti", sd=FakeSoundDevice([]))
    message = str(error.value)
    assert "Blue Yeti" in message and "USB PnP Sound Device" in message and "pulse" in message
    assert "bcm2835 Headphones" not in message  # an output only
    with pytest.raises(DeviceError, match="no audio input with index 7"):
        resolve_input_device(7, sd=FakeSoundDevice([]))


def test_unsupported_rate_says_which_rate_to_use():
    mic = MicrophoneSource("USB", 22050, 0.1, 1, sd=FakeSoundDevice([], rates=(44100,)))
    with pytest.raises(DeviceError, match="22050 Hz.*default rate is 44100 Hz.*--rate"):
        mic.open()


def test_devices_listing_reports_supported_rates():
    devices = list_input_devices(sd=FakeSoundDevice([], rates=(44100, 48000)))
    assert [d.name for d in devices] == ["USB PnP Sound Device: Audio (hw:2,0)", "pulse"]
    assert dict(devices[0].supported_rates_hz) == {16000: False, 44100: True, 48000: True}


def test_a_failed_stream_yields_its_gap_at_once_not_after_the_reopen():
    """The consumer must hear of the outage while the device is still gone (it ends the open events
    and turns their LEDs off), not minutes later when a reopen finally succeeds."""
    refused = OSError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")
    sd = FakeSoundDevice([(3, (), True)] + [refused] * 50)
    faults: list[str] = []
    mic = MicrophoneSource(1, 16000, 0.05, 1, sd=sd, on_fault=faults.append, backoff_initial_seconds=0.001,
                           backoff_max_seconds=0.002)
    streams_at_gap = []
    items = []
    for item in mic.blocks():
        items.append(item)
        if isinstance(item, Gap):
            streams_at_gap.append(len(sd.streams))
            assert faults == ["the stream stopped"]  # the status LED shows the fault before the Gap arrives
            mic.stop()  # stopped during the outage: the iteration ends without waiting for the device
        elif len(sd.streams) > 20:
            mic.stop()  # (the old code only yields after a successful reopen: end the test instead of hanging)
    mic.close()
    assert ["gap" if isinstance(i, Gap) else "block" for i in items] == ["block"] * 3 + ["gap"]
    assert streams_at_gap == [1] and mic.reopens == 0  # no reopen was tried before the Gap


def test_a_device_that_opens_but_delivers_nothing_is_retried_ever_more_slowly_until_audio_flows(caplog):
    """A stream that starts but stays silent is not a recovery: the back-off keeps doubling, on_recover
    waits for the first block, and only then is the back-off reset."""
    silent = (0, (), False)
    sd = FakeSoundDevice([(2, (), False), silent, silent, silent, (1, (), True), (1, (), False)])
    faults: list[str] = []
    recoveries: list[int] = []
    mic = MicrophoneSource("pulse", 48000, 0.1, 1, sd=sd, stall_seconds=0.0, backoff_initial_seconds=0.01,
                           backoff_max_seconds=0.08, on_fault=faults.append,
                           on_recover=lambda: recoveries.append(len(sd.streams)))
    with caplog.at_level(logging.WARNING, logger="edge.sources"):
        items = collect(mic, until=lambda items: sum(isinstance(i, np.ndarray) for i in items) == 4)
    mic.close()
    kinds = ["gap" if isinstance(i, Gap) else "block" for i in items]
    assert kinds == ["block", "block", "gap", "block", "gap", "block"]
    assert faults == ["no audio for 0 s", "the stream stopped"]  # once per outage, not once per silent reopen
    assert recoveries == [5, 6]  # when the 5th and 6th streams delivered audio, not when streams 2-4 opened
    waits = [float(w) for w in re.findall(r"(?:reopening in|next try in) ([\d.]+) s", caplog.text)]
    assert waits == [0.01, 0.02, 0.04, 0.08, 0.01]  # doubling to the maximum; reset once audio flowed
    assert caplog.text.count("audio flows again") == 2 and mic.reopens == 5


def test_dropped_blocks_yield_one_gap_before_the_next_block(monkeypatch):
    """Blocks lost to a full queue are not spliced over (stream time would run early by the loss); once
    dropping, the source drops until the queue is half empty, so a slow consumer loses one stretch (one Gap)."""
    import edge.sources

    monkeypatch.setattr(edge.sources, "QUEUE_SECONDS", 0.5)  # 5 blocks of 0.1 s: queueing resumes at 2
    sd = FakeSoundDevice([(8, (), False)])  # delivered at once: blocks 0-4 queued, 5-7 dropped

    def deliver(index: int) -> None:
        sd.streams[0].callback(np.full((4410, 1), index / 100.0, np.float32), 4410, None, None)

    mic = MicrophoneSource("USB", 44100, 0.1, 1, sd=sd)
    items = []
    for item in mic.blocks():
        items.append(item)
        if len(items) == 1:
            deliver(8)  # 4 still queued: dropped too
        if len(items) == 5:  # the consumer caught up
            deliver(9)
            deliver(10)
        if len(items) == 8:
            mic.stop()
    mic.close()
    assert mic.dropped_blocks == 4
    assert [round(float(i[0, 0]) * 100) if isinstance(i, np.ndarray) else "gap" for i in items] == [
        0, 1, 2, 3, 4, "gap", 9, 10]
    assert "4 block(s) dropped" in items[5].reason


def test_each_block_carries_the_wall_time_its_callback_ran():
    times = iter([1000.0, 1000.1, 1000.2])
    mic = MicrophoneSource("USB", 44100, 0.1, 1, sd=FakeSoundDevice([(3, (), False)]), wall_clock=lambda: next(times))
    assert mic.block_capture_time is None
    seen = []
    for _ in mic.blocks():
        seen.append(mic.block_capture_time)
        if len(seen) == 3:
            mic.stop()
    mic.close()
    assert seen == [1000.0, 1000.1, 1000.2]


class RefCountedPortAudio(FakeSoundDevice):
    """sounddevice's PortAudio initialisation as it is: `_initialized` counts them, the first re-initialisation
    fails (a transient host error) and terminating an uninitialised PortAudio raises. `counted=False`
    hides the counter, as an older sounddevice would."""

    def __init__(self, behaviours: list[Any], *, counted: bool, on_refusal: Callable[[], None]) -> None:
        super().__init__(behaviours)
        self.count = 1
        self.counted = counted
        self.initialise_calls = 0
        self.refusals = 0
        self.on_refusal = on_refusal

    def __getattr__(self, name: str) -> Any:
        if name == "_initialized" and self.counted:
            return self.count
        raise AttributeError(name)

    def _terminate(self) -> None:
        if self.count == 0:
            self.refusals += 1
            if self.refusals == 5:
                self.on_refusal()  # (the old code refuses forever: end the test instead of hanging)
            raise RuntimeError("Error terminating PortAudio: PortAudio not initialized [PaErrorCode -10000]")
        self.count -= 1

    def _initialize(self) -> None:
        self.initialise_calls += 1
        if self.initialise_calls == 1:
            raise RuntimeError("Error initializing PortAudio: Unanticipated host error")
        self.count += 1


@pytest.mark.parametrize("counted", [True, False], ids=["sounddevice-counts", "no-counter"])
def test_a_failed_portaudio_reinitialisation_does_not_stop_later_reopens(counted):
    stop: list[Callable[[], None]] = []
    sd = RefCountedPortAudio([(2, (), True), (1, (), False)], counted=counted, on_refusal=lambda: stop[0]())
    mic = MicrophoneSource("USB", 44100, 0.1, 1, sd=sd, backoff_initial_seconds=0.001, backoff_max_seconds=0.002)
    stop.append(mic.stop)
    items = collect(mic, until=lambda items: sum(isinstance(i, np.ndarray) for i in items) == 3)
    mic.close()
    assert ["gap" if isinstance(i, Gap) else "block" for i in items] == ["block", "block", "gap", "block"]
    assert mic.reopens == 1 and sd.initialise_calls == 2 and sd.count == 1


@pytest.mark.parametrize("requested", [96001, None], ids=["--rate", "device-default"])
def test_a_rate_the_resampler_cannot_convert_is_refused_naming_the_setting_and_standard_rates(requested):
    devices = [{"name": "USB Audio (plughw)", "max_input_channels": 1, "default_samplerate": 96001.0, "hostapi": 0}]
    sd = FakeSoundDevice([], devices=devices, rates=(16000, 44100, 48000, 96001))  # plughw accepts any rate
    sd.default = SimpleNamespace(device=[0, 0])
    mic = MicrophoneSource(None, requested, 0.1, 1, sd=sd)
    refusal = r"96001 Hz.* cannot be resampled.*--rate or \[audio\] rate_hz = one of 16000, 44100, 48000"
    with pytest.raises(DeviceError, match=refusal):
        mic.open()
    assert sd.streams == []  # refused before the stream opens
    assert not can_resample(96001, 16000) and can_resample(44100, 16000) and can_resample(48000, 16000)


# --- the real capture path, through a PulseAudio virtual microphone ---


def normalised_correlation_peak(recorded: np.ndarray, reference: np.ndarray) -> float:
    """Max over lags of the normalised cross-correlation (1.0 = a shifted copy)."""
    size = 1 << int(np.ceil(np.log2(len(recorded) + len(reference))))
    spectrum = np.fft.rfft(recorded, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)
    lag = int(np.argmax(np.abs(correlation)))
    segment = np.roll(np.pad(recorded, (0, size - len(recorded))), -lag)[: len(reference)]
    denominator = np.linalg.norm(segment) * np.linalg.norm(reference)
    return float(abs(np.dot(segment, reference)) / denominator) if denominator else 0.0


@pytest.mark.mic
def test_record_through_the_virtual_mic_captures_the_played_clip(virtual_mic, tmp_path):
    import soundfile

    from edge.audio import read_audio

    clip = esc50_clip("clock_alarm")
    output = tmp_path / "captured.wav"
    recorder = Running(edge_command("record", str(output), "--device", "pulse", "--rate", "48000",
                                    "--seconds", "12"), virtual_mic, REPO)
    # 12 s for a 5 s clip: on a loaded machine paplay may start seconds after the recorder is ready
    recorder.wait_for_line("recording 12.0 s", timeout=60)
    assert play(clip, virtual_mic).returncode == 0
    returncode, stdout, stderr = recorder.finish(timeout=60)
    assert returncode == 0, stderr
    info = soundfile.info(str(output))
    assert info.samplerate == 16000 and info.channels == 1 and info.subtype == "FLOAT"
    assert info.frames == pytest.approx(12 * 16000, abs=16)
    recorded, _ = soundfile.read(str(output), dtype="float32")
    reference = read_audio(clip)  # the clip at 16 kHz
    assert normalised_correlation_peak(recorded, reference) > 0.9


@pytest.mark.mic
def test_listen_check_names_what_listen_would_use_without_opening_the_microphone(virtual_mic, tiny_model_dir, tmp_path):
    config = tmp_path / "oido.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[leds]\nstatus = 24\n[leds.pins]\nbeep = 17\n', encoding="utf-8")
    result = subprocess.run(edge_command("listen", "--check", "--config", str(config), "--model-dir", str(tiny_model_dir),
                                         "--device", "pulse", "--rate", "48000"),
                            env=virtual_mic, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"model: {tiny_model_dir}: labels beep, speech, other;") and "1 patch(es)" in lines[0]
    assert re.fullmatch(r"input: \d+ 'pulse' \(ALSA\) at 48000 Hz, resampled to 16000 Hz", lines[1]), lines[1]
    assert lines[2] == "LEDs: beep GPIO17; status GPIO24 (`oido-edge leds` lights them in turn)"
    assert lines[3] == f"event log: {tmp_path / 'state' / 'events.jsonl'}; event audio: off"
    assert lines[4] == f"check passed: `systemctl restart oido-edge` applies {config}"
    assert not (tmp_path / "state").exists()  # a check writes nothing


@pytest.mark.mic
def test_sigterm_during_record_leaves_a_valid_wav_of_what_was_captured(virtual_mic, tmp_path):
    import soundfile

    output = tmp_path / "data" / "kettle"
    recorder = Running(edge_command("record", "--dataset", str(tmp_path / "data"), "--label", "kettle",
                                    "--device", "pulse", "--rate", "44100", "--seconds", "60", "--pcm16"),
                       virtual_mic, REPO)
    recorder.wait_for_line("recording 60.0 s", timeout=60)
    play(esc50_clip("water_drops"), virtual_mic)  # about 5 s of audio, then stop
    recorder.process.send_signal(signal.SIGTERM)
    returncode, stdout, stderr = recorder.finish(timeout=60)
    assert returncode == 0, stderr
    [take] = output.glob("*_0000.wav")  # <session>_0000.wav: the first take of this run's session
    info = soundfile.info(str(take))
    assert info.samplerate == 16000 and info.subtype == "PCM_16"
    assert 4.0 < info.duration < 30.0
    assert "(interrupted)" in stdout


def write_beep(path: Path, *, rate_hz: int = 44100) -> Path:
    """2 s silence, 3 s of a 0.5-amplitude 1 kHz tone, 2 s silence, as 16-bit PCM at rate_hz."""
    import soundfile

    t = np.arange(3 * rate_hz) / rate_hz
    audio = np.concatenate([np.zeros(2 * rate_hz), 0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(2 * rate_hz)])
    soundfile.write(str(path), audio.astype(np.float32), rate_hz, subtype="PCM_16")
    return path


@pytest.mark.mic
def test_listen_on_the_virtual_mic_lights_the_beep_led_through_real_yamnet(virtual_mic, tiny_model_dir, tmp_path):
    """The whole appliance path: PortAudio at 48 kHz -> resampler -> YAMNet asset + head -> LED and log."""
    events = tmp_path / "events.jsonl"
    saved = tmp_path / "saved"
    listener = Running(edge_command("listen", "--model-dir", str(tiny_model_dir), "--device", "pulse",
                                    "--rate", "48000", "--duration", "10", "--pin", "beep=17", "--pin", "speech=27",
                                    "--status-pin", "24", "--mock-gpio", "--event-log", str(events),
                                    "--save-events", str(saved)),
                       virtual_mic, REPO)
    listener.wait_for_line("listening on input", timeout=120)
    assert play(write_beep(tmp_path / "beep.wav"), virtual_mic).returncode == 0
    returncode, stdout, stderr = listener.finish(timeout=120)
    assert returncode == 0, stderr
    import json

    import soundfile

    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["label"] for r in records] == ["beep"], (records, stderr)
    assert 2.0 < records[0]["duration_seconds"] < 6.0
    changes = pin_changes(stdout)
    assert changes["beep"] == [False, True, False]
    assert changes["speech"] == [False]
    assert changes["status"][-1] is False and True in changes["status"]  # blinked while alive, off at exit
    clip = Path(records[0]["audio"])
    assert clip.parent == saved and soundfile.info(str(clip)).samplerate == 48000


@pytest.mark.mic
def test_a_vanished_microphone_is_reopened_and_recording_goes_on(virtual_mic, tmp_path):
    import soundfile

    output = tmp_path / "gap.wav"
    recorder = Running(edge_command("record", str(output), "--device", "pulse", "--rate", "48000",
                                    "--seconds", "6"), virtual_mic, REPO)
    recorder.wait_for_line("recording 6.0 s", timeout=60)
    with microphone_removed(virtual_mic):  # PortAudio's stream dies and the first reopen attempts fail
        recorder.wait_for_line("reopening the audio input failed", timeout=30)
    recorder.wait_for_line("audio input reopened", timeout=60)
    returncode, stdout, stderr = recorder.finish(timeout=60)
    assert returncode == 0, stderr
    assert soundfile.info(str(output)).frames == pytest.approx(6 * 16000, abs=16)


def pin_changes(stdout: str) -> dict[str, list[bool]]:
    """Parse `gpio <name> pin <n>: off@0.00 on@3.41 off@7.88` lines printed by --mock-gpio."""
    changes = {}
    for match in re.finditer(r"^gpio (\S+) pin \S+: (.*)$", stdout, re.MULTILINE):
        changes[match.group(1)] = [item.startswith("on@") for item in match.group(2).split()]
    return changes


@pytest.mark.mic
@pytest.mark.slow
@pytest.mark.parametrize("label", ["crying_baby", "clock_alarm"])
def test_listen_on_the_virtual_mic_lights_the_led_of_the_played_clip(virtual_mic, tmp_path, label):
    model_dir = shipped_model_dir()
    events = tmp_path / "events.jsonl"
    listener = Running(edge_command("listen", "--config", str(REPO / "scripts" / "oido.toml"),
                                    "--model-dir", str(model_dir), "--device", "pulse", "--rate", "48000",
                                    "--duration", "9", "--mock-gpio", "--event-log", str(events)),
                       virtual_mic, REPO)
    listener.wait_for_line("listening on input", timeout=120)
    play(esc50_clip(label), virtual_mic)
    returncode, stdout, stderr = listener.finish(timeout=120)
    assert returncode == 0, stderr
    import json

    records = [json.loads(line) for line in events.read_text().splitlines()]
    # A clip may hold several bursts (an alarm's rings): each may be an event, all of its class.
    assert records and {r["label"] for r in records} == {label}, records
    assert records[0]["source"] == "mic:pulse" and "start_utc" in records[0]
    changes = pin_changes(stdout)
    assert changes[label][0] is False and True in changes[label] and changes[label][-1] is False
    for other in PINS:
        if other != label and other in changes:
            assert changes[other] == [False], f"{other} lit while playing {label}"


@pytest.mark.mic
def test_sigterm_stops_listen_cleanly_with_every_led_off(virtual_mic, tiny_model_dir, tmp_path):
    listener = Running(edge_command("listen", "--model-dir", str(tiny_model_dir), "--device", "pulse",
                                    "--pin", "beep=17", "--pin", "speech=27", "--status-pin", "24", "--mock-gpio",
                                    "--event-log", str(tmp_path / "events.jsonl")), virtual_mic, REPO)
    listener.wait_for_line("listening on input", timeout=120)
    play(write_beep(tmp_path / "beep.wav"), virtual_mic)  # lights the beep LED; SIGTERM comes while it is lit
    listener.process.send_signal(signal.SIGTERM)
    returncode, stdout, stderr = listener.finish(timeout=60)
    assert returncode == 0, stderr
    assert "SIGTERM received" in stderr
    changes = pin_changes(stdout)
    assert set(changes) == {"beep", "speech", "status"}
    assert all(states[-1] is False for states in changes.values())
    assert (tmp_path / "events.jsonl").exists()


class LateMicrophone(FakeSoundDevice):
    """Lists no input until PortAudio has been re-initialised `after` times (a USB microphone plugged in late)."""

    def __init__(self, *args: Any, after: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.after = after

    def query_devices(self) -> list[dict[str, Any]]:
        return self.devices if self.reinitialised >= self.after else []


def test_a_microphone_missing_at_start_is_waited_for_with_back_off_until_it_appears(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sd = LateMicrophone([(2, (), False)], after=3)
    waiting: list[str] = []
    mic = MicrophoneSource(None, sd=sd, backoff_initial_seconds=0.001, backoff_max_seconds=0.004)
    with caplog.at_level("WARNING", logger="edge.sources"):
        assert mic.open_when_available(on_waiting=waiting.append)
    assert len(waiting) == 1 and "no audio input devices found" in waiting[0]
    assert mic.device is not None and mic.device.name.startswith("USB PnP") and mic.rate_hz == 44100
    assert sd.reinitialised == 3 and len(sd.streams) == 1
    assert caplog.text.count("waiting for the audio input") == 1  # each reason once, not once per try
    assert caplog.text.count("audio input found after waiting") == 1
    items = collect(mic, until=lambda items: len(items) == 2)
    assert [len(item) for item in items] == [4410, 4410]
    mic.close()


def test_stopping_while_waiting_for_a_missing_microphone_returns_at_once() -> None:
    sd = LateMicrophone([], after=10**9)
    mic = MicrophoneSource(None, sd=sd, backoff_initial_seconds=30.0)
    assert not mic.open_when_available(on_waiting=lambda why: mic.stop())  # stop() as a SIGTERM would
    assert sd.streams == []
