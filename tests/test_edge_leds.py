"""edge.leds through gpiozero's MockFactory: pin states and their history.

The last tests replay audio through the real StreamingPipeline (fake models, then the real
YAMNet + head when a model directory is available) and check which LED lit.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

pytest.importorskip("gpiozero")
from gpiozero import LED  # noqa: E402
from gpiozero.pins.mock import MockFactory  # noqa: E402

from edge.detect import Detector, DetectorConfig  # noqa: E402
from edge.leds import (  # noqa: E402
    LedBank, NullLedBank, light_each_in_turn, open_led_bank, pin_history, status_blink_seconds,
)
from edge.listen import run_stream  # noqa: E402
from edge.pipeline import StreamingPipeline  # noqa: E402
from edge.sources import FakeSource, FileSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import PINS, esc50_clip, shipped_model_dir  # noqa: E402
from fixtures.edge_models import LoudIsClockAlarm, LoudnessYamnet  # noqa: E402

STATUS_PIN = 24
LABELS = ["crying_baby", "clock_alarm", "toilet_flush", "water_drops", "other"]


@pytest.fixture
def factory():
    factory = MockFactory()
    yield factory
    factory.reset()


def states(factory: MockFactory, pin: int) -> list[bool]:
    return [bool(s.state) for s in factory.pin(pin).states]


def wait_for(condition: Callable[[], bool], *, timeout: float = 5.0) -> None:
    """Poll a condition set by gpiozero's blink thread (it offers nothing to wait on)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.005)


def test_on_and_off_light_only_that_led_and_record_the_history(factory):
    with LedBank(PINS, pin_factory=factory) as bank:
        bank.on("clock_alarm")
        assert bank.is_lit("clock_alarm") and not bank.is_lit("crying_baby")
        bank.off("clock_alarm")
    assert states(factory, 27) == [False, True, False]
    for label, pin in PINS.items():
        if label != "clock_alarm":
            assert states(factory, pin) == [False]


def test_labels_without_a_pin_are_ignored(factory):
    with LedBank(PINS, pin_factory=factory) as bank:
        bank.on("other")
        bank.off("other")
        assert not bank.is_lit("other")
    assert all(states(factory, pin) == [False] for pin in PINS.values())


def test_all_off_and_close_turn_every_led_off_and_free_the_pins(factory):
    bank = LedBank(PINS, pin_factory=factory)
    bank.on("crying_baby")
    bank.on("water_drops")
    bank.all_off()
    assert states(factory, 17) == [False, True, False]
    bank.on("toilet_flush")
    bank.close()
    bank.close()  # twice is fine
    assert states(factory, 22) == [False, True, False]
    bank.on("toilet_flush")  # after close: ignored, no error
    LED(22, pin_factory=factory).close()  # the pin was released


def test_a_pin_that_fails_on_close_leaves_no_other_led_lit_or_held(factory, monkeypatch, caplog):
    bank = LedBank(PINS, status_pin=STATUS_PIN, pin_factory=factory)
    for label in PINS:
        bank.on(label)
    bank.status_alive()

    def lost_chip_handle(state: bool) -> None:
        raise OSError("lgpio: bad handle")

    monkeypatch.setattr(factory.pin(PINS["crying_baby"]), "_set_state", lost_chip_handle)
    with caplog.at_level(logging.WARNING, logger="edge.leds"), pytest.raises(OSError, match="bad handle"):
        bank.close()
    for label, pin in PINS.items():
        if label != "crying_baby":
            assert states(factory, pin)[-1] is False, label
            LED(pin, pin_factory=factory).close()  # released
    assert not factory.pin(STATUS_PIN).state and bank.status_mode == "off"
    LED(STATUS_PIN, pin_factory=factory).close()
    assert "LED crying_baby: off() failed: OSError: lgpio: bad handle" in caplog.text
    bank.close()  # the second close has nothing left to do and raises nothing


@pytest.fixture
def blinks(monkeypatch) -> list[tuple[str, float, float, bool]]:
    """Every LED.blink() request, as (pin name e.g. "GPIO24", on_time, off_time, background); gpiozero still blinks."""
    requested: list[tuple[str, float, float, bool]] = []
    real_blink = LED.blink

    def recording_blink(self, *args, **kwargs):
        call = inspect.signature(real_blink).bind(self, *args, **kwargs)
        call.apply_defaults()
        arguments = call.arguments
        requested.append((self.pin.info.name, arguments["on_time"], arguments["off_time"], arguments["background"]))
        return real_blink(self, *args, **kwargs)

    monkeypatch.setattr(LED, "blink", recording_blink)
    return requested


def test_status_blink_is_the_half_period_while_alive_and_four_times_faster_on_a_fault():
    assert status_blink_seconds("alive", blink_seconds=0.5) == (0.5, 0.5)
    assert status_blink_seconds("fault", blink_seconds=0.5) == (0.125, 0.125)
    with pytest.raises(ValueError, match="'off'"):
        status_blink_seconds("off", blink_seconds=0.5)


def test_status_led_blinks_while_alive_and_four_times_faster_on_a_fault(factory, blinks):
    with LedBank(PINS, status_pin=STATUS_PIN, pin_factory=factory, blink_seconds=0.08) as bank:
        pin = factory.pin(STATUS_PIN)
        bank.status_alive()
        assert bank.status_mode == "alive" and blinks == [("GPIO24", 0.08, 0.08, True)]
        wait_for(lambda: [bool(s.state) for s in pin.states][:4] == [False, True, False, True])  # it blinks
        bank.status_alive()  # already alive: the blink goes on undisturbed
        bank.status_fault()
        assert bank.status_mode == "fault" and blinks[1:] == [("GPIO24", 0.02, 0.02, True)]
        pin.clear_states()
        wait_for(lambda: len(pin.states) >= 4)  # three changes since: still blinking
        bank.status_fault()
        assert len(blinks) == 2
        bank.status_off()
        assert bank.status_mode == "off" and not pin.state
    assert not pin.state  # close() leaves the status LED off


def test_busy_pin_gives_one_warning_and_a_null_bank_that_keeps_working(factory, caplog):
    holder = LED(17, pin_factory=factory)  # another program has the pin
    with caplog.at_level(logging.WARNING, logger="edge.leds"):
        bank = open_led_bank(PINS, status_pin=STATUS_PIN, pin_factory=factory)
    assert isinstance(bank, NullLedBank)
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "running without LEDs" in warnings[0].getMessage()
    bank.on("crying_baby")
    bank.status_alive()
    bank.close()
    holder.close()
    # The partly built bank released the pins it had claimed before failing.
    LED(27, pin_factory=factory).close()


def test_no_pi_gives_one_warning_and_a_null_bank(caplog):
    model = Path("/proc/device-tree/model")
    if model.exists() and "raspberry" in model.read_text(errors="ignore").lower():
        pytest.skip("on a Raspberry Pi the default pin factory works")
    with caplog.at_level(logging.WARNING):
        bank = open_led_bank(PINS, status_pin=STATUS_PIN)
    assert isinstance(bank, NullLedBank)
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1


class Watched(threading.Event):
    """A stop event whose every wait() notes which class LEDs are lit and the status LED's mode."""

    def __init__(self, bank: LedBank, *, stop_after: int = 0) -> None:
        super().__init__()
        self.bank, self.stop_after, self.seen = bank, stop_after, []

    def wait(self, timeout=None) -> bool:
        self.seen.append((sorted(label for label in self.bank.labels if self.bank.is_lit(label)), self.bank.status_mode))
        if self.stop_after and len(self.seen) >= self.stop_after:
            self.set()
        return self.is_set()


def test_the_wiring_check_lights_each_led_alone_in_turn_then_the_status_led(factory):
    said = []
    with LedBank(PINS, status_pin=STATUS_PIN, pin_factory=factory) as bank:
        watch = Watched(bank)
        lit = light_each_in_turn(bank, PINS, status_pin=STATUS_PIN, seconds=0.0, rounds=2, stop=watch, say=said.append)
        one_round = [([label], "off") for label in PINS] + [([], "alive")]
        assert watch.seen == one_round * 2 and lit == 10
        assert said[0] == "crying_baby: GPIO17 on for 0 s" and said[4] == "status: GPIO24 blinking for 0 s"
        assert not any(bank.is_lit(label) for label in PINS) and bank.status_mode == "off"
    for pin in PINS.values():
        assert states(factory, pin) == [False, True, False, True, False]


def test_the_wiring_check_stops_at_once_when_asked(factory):
    with LedBank(PINS, status_pin=STATUS_PIN, pin_factory=factory) as bank:
        watch = Watched(bank, stop_after=2)
        assert light_each_in_turn(bank, PINS, status_pin=STATUS_PIN, seconds=10.0, stop=watch, say=lambda _: None) == 2
        assert not any(bank.is_lit(label) for label in PINS)
    assert states(factory, PINS["toilet_flush"]) == [False]


def test_no_pins_configured_gives_a_null_bank_silently(caplog):
    with caplog.at_level(logging.WARNING):
        assert isinstance(open_led_bank({}), NullLedBank)
    assert not caplog.records


def test_pin_history_reports_changes_in_time_order(factory):
    with LedBank({"crying_baby": 17}, pin_factory=factory) as bank:
        bank.on("crying_baby")
        bank.off("crying_baby")
        history = pin_history(bank)
    times = [t for t, _ in history["crying_baby"]]
    assert [s for _, s in history["crying_baby"]] == [False, True, False]
    assert times == sorted(times)


# --- LEDs driven by the streaming pipeline ---


def fake_pipeline(input_rate_hz: int) -> StreamingPipeline:
    detector = Detector(DetectorConfig(background_label="other"), labels=LABELS)
    return StreamingPipeline(LoudnessYamnet(), LoudIsClockAlarm(LABELS), labels=LABELS, detector=detector,
                             input_rate_hz=input_rate_hz)


def test_a_loud_stretch_lights_only_the_clock_alarm_led_once(factory):
    rate = 48000
    rng = np.random.default_rng(0)
    audio = np.concatenate([np.zeros(3 * rate), 0.3 * rng.standard_normal(4 * rate), np.zeros(4 * rate)])
    blocks = [audio[i : i + 4800].astype(np.float32) for i in range(0, len(audio), 4800)]
    with LedBank(PINS, pin_factory=factory) as bank:
        report = run_stream(FakeSource(blocks, rate_hz=rate), fake_pipeline(rate), leds=bank)
    assert report.labels_detected == ["clock_alarm"]
    assert states(factory, PINS["clock_alarm"]) == [False, True, False]
    for label in ("crying_baby", "toilet_flush", "water_drops"):
        assert states(factory, PINS[label]) == [False]
    record = report.records[0]
    assert 2.0 < record["start_seconds"] < 4.0 and 6.5 < record["end_seconds"] < 9.0


def test_silence_lights_nothing(factory):
    rate = 16000
    with LedBank(PINS, pin_factory=factory) as bank:
        report = run_stream(FakeSource([np.zeros(rate, np.float32)] * 8, rate_hz=rate), fake_pipeline(rate),
                            leds=bank)
    assert report.records == [] and len(report.windows) > 0
    assert all(states(factory, pin) == [False] for pin in PINS.values())


def test_leds_go_off_when_the_stream_fails_mid_event(factory):
    rate = 16000
    loud = [0.3 * np.ones(rate, np.float32)] * 4
    source = FakeSource(loud + loud, rate_hz=rate, faults={5: RuntimeError("device unplugged")})
    with LedBank(PINS, pin_factory=factory) as bank:
        with pytest.raises(RuntimeError, match="unplugged"):
            run_stream(source, fake_pipeline(rate), leds=bank)
        assert states(factory, PINS["clock_alarm"]) == [False, True, False]


# --- the real models ---


def write_beep(path: Path, *, rate_hz: int = 44100) -> Path:
    """2 s silence, 3 s of a 0.5-amplitude 1 kHz tone, 3 s silence, as 16-bit PCM at rate_hz."""
    import soundfile

    t = np.arange(3 * rate_hz) / rate_hz
    audio = np.concatenate([np.zeros(2 * rate_hz), 0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(3 * rate_hz)])
    soundfile.write(str(path), audio.astype(np.float32), rate_hz, subtype="PCM_16")
    return path


def test_replayed_beep_lights_only_the_beep_led_through_real_yamnet(factory, tiny_model_dir, tmp_path):
    from edge.listen import replay_source
    from edge.pipeline import load_pipeline

    base = load_pipeline(tiny_model_dir)
    clip = write_beep(tmp_path / "beep.wav")
    with LedBank({"beep": 17, "speech": 27}, status_pin=STATUS_PIN, pin_factory=factory) as bank:
        bank.status_alive()
        summary = replay_source(FileSource(clip, block_seconds=0.1), base, leds=bank, name="beep")
    assert summary.report.labels_detected == ["beep"]
    record = summary.report.records[0]
    assert 1.0 < record["start_seconds"] < 3.0 and 4.5 < record["end_seconds"] < 7.0
    assert states(factory, 17) == [False, True, False]
    assert states(factory, 27) == [False]
    assert not factory.pin(STATUS_PIN).state


@pytest.mark.slow
@pytest.mark.parametrize("label", ["crying_baby", "clock_alarm"])
def test_replayed_esc50_clip_lights_only_its_led(factory, label):
    from edge.listen import replay_source
    from edge.pipeline import load_pipeline

    model_dir = shipped_model_dir()
    base = load_pipeline(model_dir)
    pins = {name: pin for name, pin in PINS.items() if name in base.labels}
    with LedBank(pins, pin_factory=factory) as bank:
        summary = replay_source(FileSource(esc50_clip(label), block_seconds=0.064), base, leds=bank, name=label)
    assert summary.label == label
    history = states(factory, PINS[label])
    assert history[0] is False and True in history and history[-1] is False
    for other, pin in pins.items():
        if other != label:
            assert states(factory, pin) == [False], f"{other} lit for a {label} clip"
