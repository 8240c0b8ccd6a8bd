"""oido-edge: argument handling, the listen/replay core (run_stream), record, the event log and saved audio.

Models are faked here (a loud patch is "clock_alarm") so the wiring is tested without an
exported model; the last test replays real clips when one is available.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edge import cli
from edge.config import EventConfig
from edge.detect import Detector, DetectorConfig, Event
from edge.events import EventAudioSaver, EventLog, event_record
from edge.listen import ConsoleView, pipeline_for_rate, run_stream
from edge.params import DEFAULT_PARAMS
from edge.pipeline import StreamingPipeline
from edge.record import new_session_id, next_dataset_path, record, record_session
from edge.sources import FakeSource, Gap

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import REPO, esc50_clip, shipped_model_dir  # noqa: E402
from fixtures.edge_models import LoudIsClockAlarm, LoudnessYamnet  # noqa: E402

EXAMPLE_CONFIG = REPO / "scripts" / "oido.toml"
LABELS = ["crying_baby", "clock_alarm", "toilet_flush", "water_drops", "other"]


def fake_pipeline(input_rate_hz: int = DEFAULT_PARAMS.sample_rate_hz) -> StreamingPipeline:
    detector = Detector(DetectorConfig(background_label="other"), labels=LABELS)
    return StreamingPipeline(LoudnessYamnet(), LoudIsClockAlarm(LABELS), labels=LABELS, detector=detector,
                             input_rate_hz=input_rate_hz)


def loud_then_quiet(rate: int, *, quiet_seconds: float = 3, loud_seconds: float = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([
        np.zeros(round(quiet_seconds * rate)),
        0.3 * rng.standard_normal(round(loud_seconds * rate)),
        np.zeros(round(quiet_seconds * rate)),
    ]).astype(np.float32)


def blocks_of(audio: np.ndarray, size: int) -> list[np.ndarray]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


def config_in(tmp_path: Path) -> Path:
    """The example config with its paths moved under tmp_path."""
    text = EXAMPLE_CONFIG.read_text(encoding="utf-8")
    text = text.replace('state_dir = "/var/lib/oido"', f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "oido.toml"
    path.write_text(text, encoding="utf-8")
    return path


# --- arguments ---


@pytest.mark.parametrize("command", [[], ["listen"], ["replay"], ["record"], ["leds"], ["events"], ["devices"]])
def test_help_works_for_every_command(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main([*command, "--help"])
    assert exit_.value.code == 0
    assert "usage: oido-edge" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["listen", "replay"])
def test_threshold_help_says_the_models_thresholds_are_per_label_from_its_manifest(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: no words broken at hyphens
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    threshold_help = " ".join(capsys.readouterr().out.split()).split("--threshold [LABEL=]P ")[-1]
    assert "(0.6)" not in threshold_help  # the models' thresholds are per label (e.g. 0.98-0.9998)
    assert "per-label thresholds from its manifest.json" in threshold_help
    assert f"{DetectorConfig.default_threshold:g} if it has none" in threshold_help
    assert "the first of: this flag, the config file, the manifest" in threshold_help


def test_bad_config_exits_2_with_the_file_and_line_and_no_traceback(tmp_path, capsys):
    bad = tmp_path / "oido.toml"
    bad.write_text("[leds.pins]\ncrying_baby = 99\n")
    assert cli.main(["listen", "--config", str(bad)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err and "2 to 27" in err and "Traceback" not in err


def test_bad_threshold_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["replay", "x.wav", "--threshold", "crying_baby=high"])
    assert exit_.value.code == 2
    assert "LABEL=PROBABILITY" in capsys.readouterr().err


def test_threshold_flags_override_the_config(tmp_path):
    args = cli.build_parser().parse_args(
        ["listen", "--config", str(config_in(tmp_path)), "--threshold", "0.6", "--threshold", "clock_alarm=0.8",
         "--pin", "crying_baby=5", "--device", "3"]
    )
    config = cli.load_edge_config(args)
    assert config.detection.threshold == 0.6 and config.detection.thresholds == {"clock_alarm": 0.8}
    assert config.leds.pins["crying_baby"] == 5 and config.audio.device == 3


def test_a_threshold_flag_for_every_label_drops_the_files_per_class_thresholds(tmp_path):
    config = check_config(tmp_path, "[detection.thresholds]", "crying_baby = 0.6")
    args = cli.build_parser().parse_args(["listen", "--config", str(config), "--threshold", "0.7",
                                          "--threshold", "clock_alarm=0.8"])
    loaded = cli.load_edge_config(args)
    assert loaded.detection.threshold == 0.7 and loaded.detection.thresholds == {"clock_alarm": 0.8}


@pytest.mark.parametrize("command", ["listen", "replay"])
def test_window_and_overlap_flags_beat_the_config_files_detection_table(tmp_path, command):
    config = check_config(tmp_path, "[detection]", "window_seconds = 4", "overlap = 0.25")
    files = ["x.wav"] if command == "replay" else []
    from_file = cli.load_edge_config(cli.build_parser().parse_args([command, *files, "--config", str(config)]))
    assert (from_file.detection.window_seconds, from_file.detection.overlap) == (4.0, 0.25)
    flagged = cli.load_edge_config(cli.build_parser().parse_args(
        [command, *files, "--config", str(config), "--window-seconds", "2", "--overlap", "0.75"]))
    assert (flagged.detection.window_seconds, flagged.detection.overlap) == (2.0, 0.75)
    assert flagged.flags[("detection", "overlap")] == "--overlap 0.75"


def window_ends(out: str) -> list[float]:
    """End times (s) of replay's window lines."""
    return [float(line.split()[0]) for line in out.splitlines() if " window " in line]


def test_replay_window_settings_space_the_decisions_and_flags_beat_the_file(tmp_path, monkeypatch, capsys):
    """The tutorial's NUM_SECONDS and OVERLAP_FACTOR from the config or the command line, applied to
    the model's params where its pipeline is built (the models themselves are untouched)."""
    import soundfile

    import edge.pipeline

    monkeypatch.setattr(edge.pipeline, "load_pipeline", lambda model_dir, **options: fake_pipeline())
    clip = tmp_path / "alarm.wav"
    soundfile.write(str(clip), loud_then_quiet(16000), 16000)  # 10 s
    config = config_in(tmp_path)
    assert cli.main(["replay", str(clip), "--config", str(config)]) == cli.EXIT_OK
    assert window_ends(capsys.readouterr().out) == [3.0, 4.5, 6.0, 7.5, 9.0]  # the manifest's: 3 s every 1.5 s
    assert cli.main(["replay", str(clip), "--config", str(config), "--window-seconds", "2", "--overlap", "0.75"]) == 0
    assert window_ends(capsys.readouterr().out) == [2.0 + 0.5 * k for k in range(17)]  # 2 s every 0.5 s
    config.write_text(config.read_text(encoding="utf-8").replace("# window_seconds = 3.0", "window_seconds = 4")
                      .replace("# overlap = 0.5", "overlap = 0"), encoding="utf-8")
    assert cli.main(["replay", str(clip), "--config", str(config)]) == cli.EXIT_OK
    assert window_ends(capsys.readouterr().out) == [4.0, 8.0]
    assert cli.main(["replay", str(clip), "--config", str(config), "--overlap", "0.5"]) == cli.EXIT_OK
    assert window_ends(capsys.readouterr().out) == [4.0, 6.0, 8.0, 10.0]


def test_a_window_shorter_than_a_patch_or_an_overlap_of_1_is_refused_before_loading_any_model(tmp_path, capsys):
    for flags, why in ((["--overlap", "1"], "command line: --overlap 1: overlap must be in [0, 1)"),
                       (["--window-seconds", "0.5"], "command line: --window-seconds 0.5: window_seconds=0.5 is "
                                                      "shorter than one YAMNet patch plus one hop (1.455 s)")):
        code = cli.main(["replay", "x.wav", "--model-dir", str(tmp_path / "no-model"), *flags])
        err = capsys.readouterr().err
        assert code == cli.EXIT_USAGE and why in err and "manifest" not in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        cli.main(["listen", "--overlap", "half"])
    assert exit_.value.code == cli.EXIT_USAGE and "'half' is not a number" in capsys.readouterr().err


def test_replay_of_a_missing_file_names_it_before_loading_any_model(tmp_path, capsys):
    missing = tmp_path / "nope.wav"
    assert cli.main(["replay", str(missing), "--model-dir", str(tmp_path)]) == cli.EXIT_USAGE
    assert f"{missing}: audio file not found" in capsys.readouterr().err


def test_replay_of_a_folder_plays_every_audio_file_under_it_in_name_order(tmp_path, fake_models, capsys):
    import soundfile

    takes = tmp_path / "mydata"
    (takes / "kettle").mkdir(parents=True)
    soundfile.write(str(takes / "kettle" / "b.flac"), loud_then_quiet(48000), 48000)
    soundfile.write(str(takes / "kettle" / "a.wav"), np.zeros(16000, np.float32), 16000)
    (takes / "notes.txt").write_text("not audio")
    assert cli.main(["replay", str(takes), "--config", str(config_in(tmp_path)), "--summary-only"]) == cli.EXIT_OK
    summary = [line for line in capsys.readouterr().out.splitlines() if line.startswith((str(takes), "2 files"))]
    assert [line.split(":")[0] for line in summary[:-1]] == [str(takes / "kettle" / "a.wav"), str(takes / "kettle" / "b.flac")]
    assert summary[0] == f"{takes / 'kettle' / 'a.wav'}: silence; no events" and "clock_alarm" in summary[1]
    assert summary[-1] == "2 files: decided clock_alarm 1, silence 1; files that lit each label: clock_alarm 1; 1 lit nothing"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["replay", str(empty), "--config", str(config_in(tmp_path))]) != cli.EXIT_OK
    assert f"{empty}: the folder holds no" in capsys.readouterr().err


def test_replay_goes_on_past_a_file_corrupt_after_its_header_and_exits_1(tmp_path, fake_models, capsys):
    """A FLAC cut short (a Pi that lost power while saving an event) fails only mid-file: the files
    around it still play and count, the broken one is named, and the exit status says so."""
    import soundfile

    takes = tmp_path / "events"
    takes.mkdir()
    soundfile.write(str(takes / "a.wav"), loud_then_quiet(16000), 16000)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 5 * 16000).astype(np.float32)
    soundfile.write(str(tmp_path / "whole.flac"), noise, 16000, subtype="PCM_16")
    whole = (tmp_path / "whole.flac").read_bytes()
    (takes / "b.flac").write_bytes(whole[: len(whole) // 2])
    soundfile.write(str(takes / "c.wav"), np.zeros(16000, np.float32), 16000)
    assert cli.main(["replay", str(takes), "--config", str(config_in(tmp_path)), "--summary-only"]) == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert f"{takes / 'a.wav'}: clock_alarm" in captured.out and f"{takes / 'c.wav'}: silence" in captured.out
    assert "2 files: decided clock_alarm 1, silence 1" in captured.out
    assert f"1 file(s) could not be read to the end and are not counted above: {takes / 'b.flac'}" in captured.out
    assert f"{takes / 'b.flac'}: unreadable after" in captured.err and "skipped, the other files go on" in captured.err


def test_replay_skips_a_wav_copy_cut_short_naming_it_and_exits_1(tmp_path, fake_models, capsys):
    """`head -c 1000 clip.wav > cut.wav`: libsndfile reads the 478 frames there without complaint, so
    replay used to print a decision for it and exit 0. Its header promises 3 s: it is an incomplete copy."""
    import soundfile

    takes = tmp_path / "takes"
    takes.mkdir()
    soundfile.write(str(takes / "a.wav"), loud_then_quiet(16000), 16000, subtype="PCM_16")
    soundfile.write(str(tmp_path / "whole.wav"), loud_then_quiet(16000, seed=1), 16000, subtype="PCM_16")
    (takes / "b.wav").write_bytes((tmp_path / "whole.wav").read_bytes()[:1000])
    assert cli.main(["replay", str(takes), "--config", str(config_in(tmp_path)), "--summary-only"]) == cli.EXIT_FAILURE
    captured = capsys.readouterr()
    assert f"{takes / 'a.wav'}: clock_alarm" in captured.out and f"{takes / 'b.wav'}:" not in captured.out
    assert f"1 file(s) could not be read to the end and are not counted above: {takes / 'b.wav'}" in captured.out
    assert re.search(rf"{re.escape(str(takes / 'b.wav'))}: cut short: its header promises \d+ more bytes of audio "
                     r"than the file holds .*copy it again.*skipped, the other files go on", captured.err)
    alone = cli.main(["replay", str(takes / "b.wav"), "--config", str(config_in(tmp_path))])
    captured = capsys.readouterr()
    assert alone == cli.EXIT_FAILURE and " window " not in captured.out and "cut short" in captured.err


def test_replay_names_every_unreadable_file_before_loading_any_model(tmp_path, capsys):
    folder = tmp_path / "takes"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        (folder / name).write_bytes(b"not audio")
    assert cli.main(["replay", str(folder), str(tmp_path / "missing.wav"), "--model-dir", str(tmp_path / "no-model")]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "3 of 3 files cannot be read" in err
    assert all(str(path) in err for path in (folder / "a.wav", folder / "b.wav", tmp_path / "missing.wav"))
    assert "manifest" not in err  # no model was looked for


def test_leds_lights_every_configured_pin_in_turn(tmp_path, capsys):
    assert cli.main(["leds", "--config", str(config_in(tmp_path)), "--mock-gpio", "--seconds", "0.01"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines()[:5] == [
        "crying_baby: GPIO17 on for 0.01 s", "clock_alarm: GPIO27 on for 0.01 s", "toilet_flush: GPIO22 on for 0.01 s",
        "water_drops: GPIO23 on for 0.01 s", "status: GPIO24 blinking for 0.01 s",
    ]
    for name, pin in [("crying_baby", 17), ("clock_alarm", 27), ("toilet_flush", 22), ("water_drops", 23), ("status", 24)]:
        history = re.search(rf"gpio {name} pin {pin}: (.*)", out).group(1).split()
        assert [change.split("@")[0] for change in history][:2] == ["off", "on"] and history[-1].startswith("off@")


def test_leds_without_gpio_or_without_pins_is_an_error(tmp_path, capsys):
    model = Path("/proc/device-tree/model")
    if model.exists() and "raspberry" in model.read_text(errors="ignore").lower():
        pytest.skip("on a Raspberry Pi the default pin factory works")
    assert cli.main(["leds", "--config", str(config_in(tmp_path)), "--seconds", "0.01"]) == cli.EXIT_FAILURE
    assert "cannot drive the GPIO pins" in capsys.readouterr().err
    bare = tmp_path / "bare.toml"
    bare.write_text("[leds]\n", encoding="utf-8")
    assert cli.main(["leds", "--config", str(bare), "--mock-gpio"]) == cli.EXIT_USAGE
    assert "no LED pins to check" in capsys.readouterr().err


def test_listen_check_stops_at_a_pin_the_model_lacks_or_an_unwritable_event_log(tiny_model_dir, tmp_path, capsys,
                                                                                  monkeypatch):
    config = tmp_path / "oido.toml"
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[leds.pins]\nbeep = 17\nkettle = 27\n', encoding="utf-8")
    assert cli.main(["listen", "--check", "--config", str(config), "--model-dir", str(tiny_model_dir)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{config}:4: [leds.pins] names class 'kettle'" in err

    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: PickyMicrophone(name="USB mic"))
    config.write_text(f'state_dir = "{tmp_path / "state"}"\n[leds.pins]\nbeep = 17\n', encoding="utf-8")
    assert cli.main(["listen", "--check", "--config", str(config), "--model-dir", str(tiny_model_dir)]) == cli.EXIT_OK
    assert "input: 0 'USB mic' (ALSA) at 44100 Hz, resampled to 16000 Hz" in capsys.readouterr().out
    monkeypatch.setattr(cli.os, "access", lambda path, mode: False)  # as the service's user would find it
    assert cli.main(["listen", "--check", "--config", str(config), "--model-dir", str(tiny_model_dir)]) == cli.EXIT_OK
    capsys.readouterr()  # no state folder yet: listen (or systemd) makes it at start
    (tmp_path / "state").mkdir()
    assert cli.main(["listen", "--check", "--config", str(config), "--model-dir", str(tiny_model_dir)]) == cli.EXIT_USAGE
    assert (f"the event log {tmp_path / 'state' / 'events.jsonl'} cannot be written: {tmp_path / 'state'} is not writable"
            in capsys.readouterr().err)


class PickyMicrophone:
    """sounddevice with one USB microphone (index 0) that captures `rates_hz` only (None: any rate),
    with at most `channels` channels, as sd.check_input_settings reports it."""

    def __init__(self, *, name: str = "USB PnP Sound Device", rates_hz=(44100,), channels: int = 1,
                 default_rate_hz: int = 44100) -> None:
        self.name, self.rates_hz, self.channels, self.default_rate_hz = name, rates_hz, channels, default_rate_hz
        self.default = SimpleNamespace(device=[0, 0])
        self.asked: list[dict] = []

    def query_devices(self):
        return [{"name": self.name, "max_input_channels": self.channels, "hostapi": 0,
                 "default_samplerate": float(self.default_rate_hz)}]

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs):
        self.asked.append(kwargs)
        if self.rates_hz is not None and kwargs["samplerate"] not in self.rates_hz:
            raise RuntimeError("Invalid sample rate [PaErrorCode -9997]")
        if kwargs["channels"] > self.channels:
            raise RuntimeError("Invalid number of channels [PaErrorCode -9998]")


def check_config(tmp_path: Path, *lines: str) -> Path:
    """A config for `listen --check` with the fake models: state under tmp_path, then `lines`."""
    path = tmp_path / "oido.toml"
    path.write_text("\n".join([f'state_dir = "{tmp_path / "state"}"', *lines, ""]), encoding="utf-8")
    return path


@pytest.fixture
def usb_mic_at_44100(monkeypatch) -> PickyMicrophone:
    import edge.sources

    microphone = PickyMicrophone()
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: microphone)
    return microphone


def test_listen_check_refuses_a_rate_the_microphone_does_not_take_naming_the_setting_and_its_rates(
    tmp_path, fake_models, usb_mic_at_44100, capsys
):
    config = check_config(tmp_path, "[audio]", "rate_hz = 48000", "channels = 1")
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{config}:3: [audio] rate_hz = 48000: audio input 0 'USB PnP Sound Device' cannot capture 1 channel(s) " \
           "at 48000 Hz (Invalid sample rate [PaErrorCode -9997]); it takes 44100 Hz" in err
    assert {"device": 0, "samplerate": 48000, "channels": 1, "dtype": "float32"} in usb_mic_at_44100.asked
    assert "check passed" not in capsys.readouterr().out

    assert cli.main(["listen", "--check", "--config", str(config), "--rate", "16000"]) == cli.EXIT_USAGE
    assert "command line: --rate 16000: audio input 0" in capsys.readouterr().err

    assert cli.main(["listen", "--check", "--config", str(config), "--rate", "44100"]) == cli.EXIT_OK
    assert "check passed" in capsys.readouterr().out


def test_listen_check_refuses_more_channels_than_the_microphone_has(tmp_path, fake_models, usb_mic_at_44100, capsys):
    config = check_config(tmp_path, "[audio]", "channels = 2")
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{config}:3: [audio] channels = 2: audio input 0 'USB PnP Sound Device' cannot capture 2 channels" in err
    assert "set channels = 1" in err


def test_listen_check_refuses_a_rate_the_resampler_cannot_convert_without_a_traceback(
    tmp_path, fake_models, monkeypatch, capsys
):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: PickyMicrophone(rates_hz=None))
    config = check_config(tmp_path, "[audio]", "rate_hz = 96001")
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{config}:3: [audio] rate_hz = 96001: audio at 96001 Hz cannot be resampled to the model's 16000 Hz" in err
    assert "Traceback" not in err
    assert cli.main(["listen", "--check", "--config", str(config), "--rate", "44101"]) == cli.EXIT_OK  # odd but workable


def test_listen_check_refuses_an_event_audio_folder_that_cannot_be_made_or_written(
    tmp_path, fake_models, usb_mic_at_44100, monkeypatch, capsys
):
    (tmp_path / "afile").write_text("")
    config = check_config(tmp_path, "[events]", f'save_dir = "{tmp_path / "afile" / "events"}"')
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    assert (f'{config}:3: [events] save_dir = "{tmp_path / "afile" / "events"}": event audio cannot be saved there: '
            f"{tmp_path / 'afile'} is a file, not a folder" in capsys.readouterr().err)

    (tmp_path / "clips").mkdir()
    assert cli.main(["listen", "--check", "--config", str(config), "--save-events", str(tmp_path / "clips")]) == 0
    assert f"event audio: {tmp_path / 'clips'} (at most" in capsys.readouterr().out
    monkeypatch.setattr(cli.os, "access", lambda path, mode: path != tmp_path / "clips")  # the service user's view
    assert cli.main(["listen", "--check", "--config", str(config), "--save-events", str(tmp_path / "clips")]) == 2
    assert (f"command line: --save-events {tmp_path / 'clips'}: event audio cannot be saved there: "
            f"{tmp_path / 'clips'} is not writable by this user" in capsys.readouterr().err)


def test_listen_check_by_another_user_than_the_services_says_to_run_it_as_the_service_user(
    tmp_path, fake_models, usb_mic_at_44100, monkeypatch, capsys
):
    config = check_config(tmp_path)
    state = tmp_path / "state"
    real_exists = Path.exists

    def no_way_in(self, *args, **kwargs):  # /var/lib/oido is the service user's, mode 0750 (root sees all)
        if self.parent == state:
            raise PermissionError(13, "Permission denied", str(self))
        return real_exists(self, *args, **kwargs)

    monkeypatch.setattr(Path, "exists", no_way_in)
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"the event log {state / 'events.jsonl'} cannot be checked" in err and "Traceback" not in err
    assert f"run the check as the service user: sudo -u oido /opt/oido/venv/bin/oido-edge listen --check --config {config}" in err


def test_listen_check_names_the_line_of_a_misspelt_veto_class(tmp_path, usb_mic_at_44100, capsys):
    config = check_config(tmp_path, f'model_dir = "{shipped_model_dir()}"', "[detection.veto]", "Musci = 0.75")
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    assert (f"{config}:4: [detection.veto] 'Musci' is not one of YAMNet's 521 AudioSet classes; did you mean ['Music'"
            in capsys.readouterr().err)


def _logged(label: str, start: datetime, seconds: float = 2.0) -> dict:
    from edge.detect import Event
    from edge.events import event_record

    event = Event(label=label, start_seconds=0.0, end_seconds=seconds, peak_score=0.97, mean_score=0.9)
    return event_record(event, stream_start_time=start.timestamp(), source="mic:USB")


def test_events_counts_per_day_and_lists_the_latest_across_rotated_logs(tmp_path, capsys):
    """The log as listen writes it (EventLog) and as logrotate leaves it: events.jsonl.1, then gzipped."""
    import datetime as dt
    import gzip

    from edge.events import EventLog, history_text, read_event_logs

    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
    log_path = tmp_path / "events.jsonl"
    with gzip.open(tmp_path / "events.jsonl.2.gz", "wt", encoding="utf-8") as old:
        old.write(json.dumps(_logged("crying_baby", now - dt.timedelta(days=9))) + "\n")
    with EventLog(tmp_path / "events.jsonl.1") as rotated:
        rotated.write(_logged("water_drops", now - dt.timedelta(days=2, hours=1)))
    with EventLog(log_path) as current:
        current.write(_logged("crying_baby", now - dt.timedelta(hours=3), seconds=3.25))
        current.write(_logged("crying_baby", now - dt.timedelta(hours=2)))
    with log_path.open("a", encoding="utf-8") as torn:
        torn.write('{"label": "cut of\n')  # a line cut short by a power cut
    records, bad, files = read_event_logs(log_path)
    assert [path.name for path in files] == ["events.jsonl.2.gz", "events.jsonl.1", "events.jsonl"]
    assert [r["label"] for r in records] == ["crying_baby", "water_drops", "crying_baby", "crying_baby"] and bad == 1
    text = history_text(records, days=7, last=2, now=now, tz=dt.timezone.utc).splitlines()
    assert text[0] == "3 event(s) in the last 7 day(s)"
    assert text[1].split() == ["day", "(UTC)", "crying_baby", "water_drops"]
    assert [line.split() for line in text[2:4]] == [["2026-12-05", "0", "1"], ["2026-12-07", "2", "0"]]
    assert text[4] == "the last 2:"
    assert text[5].split()[:5] == ["2026-12-07", "09:00:00", "UTC", "crying_baby", "3.2"]  # 3.25 s, oldest first
    assert text[6].split()[1] == "10:00:00" and len(text) == 7

    assert cli.main(["events", "--event-log", str(log_path), "--utc", "--days", "36500"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert captured.out.startswith(f"{log_path} and 2 rotated file(s): 4 event(s) in all\n4 event(s) in the last 36500 day(s)")
    assert "1 line(s) that are not event records were skipped" in captured.err
    assert cli.main(["events", "--event-log", str(tmp_path / "none.jsonl")]) == cli.EXIT_OK
    assert "no events logged yet" in capsys.readouterr().out


def test_events_of_a_log_this_user_may_not_read_says_to_use_sudo(tmp_path, capsys, monkeypatch):
    """/var/lib/oido is the service user's (0750): `oido-edge events` without sudo cannot list it. Root
    reads any folder, so the refusal is stood in for here; tests/test_edge_install_system.py runs
    the real one as another user."""
    import edge.events

    log_path = tmp_path / "state" / "events.jsonl"
    log_path.parent.mkdir()
    log_path.write_text("")

    def refused(path):
        raise PermissionError(13, "Permission denied", str(path.parent))

    monkeypatch.setattr(edge.events, "event_log_files", refused)
    assert cli.main(["events", "--event-log", str(log_path)]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{log_path.parent}: permission denied: the event log is the service user's" in err
    assert "sudo " in err and " events" in err


def test_a_rotated_file_this_user_may_not_read_stops_the_count(tmp_path, monkeypatch):
    """A file skipped for permissions would make every count short without saying so: it is an error."""
    import builtins

    from edge.events import read_event_logs

    log_path = tmp_path / "events.jsonl"
    log_path.write_text("")
    (tmp_path / "events.jsonl.1").write_text("")
    real_open = builtins.open

    def owner_only(file, *args, **kwargs):
        if str(file).endswith(".jsonl.1"):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", owner_only)
    with pytest.raises(PermissionError):
        read_event_logs(log_path)


def test_record_needs_an_output_or_a_dataset(capsys):
    assert cli.main(["record", "--dataset", "d"]) == cli.EXIT_USAGE
    assert "--label" in capsys.readouterr().err
    assert cli.main(["record"]) == cli.EXIT_USAGE


def test_a_global_threshold_replaces_the_models_per_label_thresholds():
    from edge.config import parse_config
    from edge.listen import detector_config_for

    model = DetectorConfig(thresholds={"crying_baby": 0.4, "clock_alarm": 0.7}, default_threshold=0.5)
    both = parse_config("[detection]\nthreshold = 0.8\n[detection.thresholds]\nwater_drops = 0.3\n")
    config = detector_config_for(model, both)
    assert [config.threshold_for(label) for label in LABELS[:4]] == [0.8, 0.8, 0.8, 0.3]
    one = detector_config_for(model, parse_config("[detection.thresholds]\nclock_alarm = 0.9\n"))
    assert one.threshold_for("crying_baby") == 0.4 and one.threshold_for("clock_alarm") == 0.9
    assert detector_config_for(model, parse_config("")) == model


def test_the_config_file_changes_or_turns_off_single_entries_of_the_models_veto():
    from edge.config import parse_config
    from edge.listen import detector_config_for

    model = DetectorConfig(veto={"Music": 0.75, "Speech": 0.8})
    config = detector_config_for(model, parse_config('[detection.veto]\nSpeech = 0\n"Child speech, kid speaking" = 0.9\n'))
    assert dict(config.veto) == {"Music": 0.75, "Child speech, kid speaking": 0.9}
    assert detector_config_for(model, parse_config("")) == model


class FakeClock:
    """A monotonic clock that moves only when slept on or told to (`advance`)."""

    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_file_source_paces_each_block_to_the_clock_only_when_asked(tmp_path):
    import soundfile

    from edge.sources import FileSource

    clip = tmp_path / "short.wav"
    soundfile.write(str(clip), np.zeros(int(0.4 * 8000), np.float32), 8000)
    clock = FakeClock()
    blocks = list(FileSource(clip, block_seconds=0.05, clock=clock, sleep=clock.sleep).blocks())
    assert sum(len(b) for b in blocks) == 3200 and blocks[0].shape == (400, 1)
    assert clock.sleeps == [] and clock.now == 100.0  # as fast as possible: never waits

    clock = FakeClock()
    source = FileSource(clip, block_seconds=0.05, realtime=True, clock=clock, sleep=clock.sleep)
    yielded_at = []
    for block in source.blocks():
        yielded_at.append(clock.now - 100.0)
        clock.advance(0.02)  # the consumer's work counts against the next wait
    # Each block is yielded when the audio up to its end has played: 0.05, 0.10, ... 0.40 s.
    assert yielded_at == pytest.approx([0.05 * k for k in range(1, 9)], abs=1e-9)
    assert clock.sleeps[0] == pytest.approx(0.05) and clock.sleeps[1:] == pytest.approx([0.03] * 7)

    clock = FakeClock()
    late = FileSource(clip, block_seconds=0.05, realtime=True, clock=clock, sleep=clock.sleep)
    for index, block in enumerate(late.blocks()):
        clock.advance(0.32 if index == 0 else 0.0)  # a consumer that fell behind catches up without waits
    assert clock.sleeps == pytest.approx([0.05, 0.03])  # blocks 2-7 were due already (0.37 s); the last is waited for

    stopping = FileSource(clip, block_seconds=0.05, realtime=True)  # the real wait: stop() cuts it short
    items = stopping.blocks()
    next(items)
    stopping.stop()
    assert list(items) == []


# --- the CLI wired to fakes ---


@pytest.fixture
def fake_models(monkeypatch):
    monkeypatch.setattr(cli, "_load_base_pipeline", lambda config: fake_pipeline())


def test_replay_prints_windows_events_and_the_mock_pin_history(tmp_path, fake_models, capsys):
    import soundfile

    clip = tmp_path / "alarm.wav"
    soundfile.write(str(clip), loud_then_quiet(44100), 44100, subtype="FLOAT")
    events = tmp_path / "events.jsonl"
    code = cli.main(["replay", str(clip), "--config", str(config_in(tmp_path)), "--mock-gpio",
                     "--event-log", str(events)])
    out = capsys.readouterr().out
    assert code == 0
    assert "window" in out and ">>> clock_alarm started" in out and "<<< clock_alarm ended" in out
    assert "gpio clock_alarm pin 27: off@0.00 on@" in out
    assert "gpio crying_baby pin 17: off@0.00\n" in out
    assert "gpio pin changes, in wall-clock seconds" in out  # not audio time: the file played as fast as it could
    records = [json.loads(line) for line in events.read_text().splitlines()]
    assert [r["label"] for r in records] == ["clock_alarm"] and records[0]["source"] == str(clip)


def test_replay_patches_prints_every_patch_against_its_thresholds_and_why_silence_cannot_count(
    tmp_path, fake_models, capsys
):
    import soundfile

    clip = tmp_path / "alarm.wav"
    audio = loud_then_quiet(16000)
    soundfile.write(str(clip), audio, 16000, subtype="FLOAT")
    assert cli.main(["replay", str(clip), "--config", str(config_in(tmp_path)), "--patches"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if " patch " in line]
    assert len(lines) == DEFAULT_PARAMS.patches_in(len(audio))
    assert [int(line.split()[3]) for line in lines] == list(range(len(lines)))
    loud = [int(line.split()[3]) for line in lines if "clock_alarm 0.900*/0.5" in line]  # at or over its threshold
    silent = [int(line.split()[3]) for line in lines if "no evidence (silent: -200.0 dBFS < -90)" in line]
    params = DEFAULT_PARAMS
    padded = np.pad(audio, (0, len(lines) * params.hop_samples + params.patch_samples))
    noisy = [k for k in range(len(lines)) if np.any(padded[k * params.hop_samples : k * params.hop_samples + params.patch_samples])]
    # Each patch is one or the other: over its threshold where it holds any of the noise, silent where it holds only zeros.
    assert loud == noisy and silent == sorted(set(range(len(lines))) - set(noisy)) and loud and silent
    assert all("other 0.900" in lines[k] and "*" not in lines[k] for k in silent)  # the background class has no threshold


def test_replay_and_the_live_view_say_silence_for_a_window_without_an_audible_patch(tmp_path, fake_models,
                                                                                     monkeypatch, capsys):
    """3 s of digital zeros used to print `window 0 toilet_flush` with the shipped model (here: other)."""
    import soundfile

    import edge.sources

    clip = tmp_path / "zeros.wav"
    soundfile.write(str(clip), np.zeros(3 * 16000, np.float32), 16000)
    assert cli.main(["replay", str(clip), "--config", str(config_in(tmp_path))]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if " window " in line] == [
        "    3.00 s  window    0  silence          | no audible patch"]
    assert f"{clip}: silence; no events" in out and "other" not in out

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: FakeSoundDevice(np.zeros(5 * 48000, np.float32)))
    assert cli.main(["listen", "--config", str(config_in(tmp_path)), "--duration", "4.5", "--no-leds", "--verbose"]) == 0
    windows = [line for line in capsys.readouterr().out.splitlines() if " window " in line]
    assert len(windows) == 2 and all(line.endswith("silence          | no audible patch") for line in windows)
    assert not (tmp_path / "state" / "events.jsonl").exists() or not (tmp_path / "state" / "events.jsonl").read_text()


class FakeSoundDevice:
    """One input (index 0, "Fake USB Mic", 48 kHz) whose stream delivers `audio` on start()."""

    def __init__(self, audio: np.ndarray) -> None:
        self.audio = audio
        self.default = SimpleNamespace(device=[0, 0])

    def query_devices(self):
        return [{"name": "Fake USB Mic", "max_input_channels": 1, "default_samplerate": 48000.0, "hostapi": 0}]

    def query_hostapis(self):
        return [{"name": "ALSA"}]

    def check_input_settings(self, **kwargs):
        pass

    def InputStream(self, *, blocksize, callback, **kwargs):  # noqa: N802 - sounddevice's name
        audio = self.audio

        class Stream:
            def start(self) -> None:
                for block in blocks_of(audio, blocksize):
                    callback(block[:, None], len(block), None, SimpleNamespace(input_overflow=False))

            def stop(self) -> None:
                pass

            def close(self) -> None:
                pass

        return Stream()


def test_listen_with_a_fake_microphone_logs_the_event_and_turns_the_led_off(tmp_path, fake_models, monkeypatch,
                                                                            capsys):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice",
                        lambda: FakeSoundDevice(loud_then_quiet(48000, quiet_seconds=1.0, loud_seconds=2.5)))
    config = config_in(tmp_path)
    code = cli.main(["listen", "--config", str(config), "--duration", "4.5", "--mock-gpio", "--verbose"])
    out = capsys.readouterr().out
    assert code == 0
    records = [json.loads(line) for line in (tmp_path / "state" / "events.jsonl").read_text().splitlines()]
    assert [r["label"] for r in records] == ["clock_alarm"]
    assert records[0]["source"] == "mic:Fake USB Mic" and records[0]["start_utc"].endswith("Z")
    assert "gpio clock_alarm pin 27: off@0.00 on@" in out and out.count("gpio ") == 5
    assert "window" in out  # --verbose shows the live view in a pipe


def test_listen_as_a_service_prints_one_line_per_event_start_and_end_and_no_windows(
    tmp_path, fake_models, monkeypatch, capsys
):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice",
                        lambda: FakeSoundDevice(loud_then_quiet(48000, quiet_seconds=1.0, loud_seconds=2.5)))
    assert cli.main(["listen", "--config", str(config_in(tmp_path)), "--duration", "4.5", "--no-leds"]) == 0
    out = capsys.readouterr().out  # a pipe, as under systemd: journald reads these lines
    events = [line for line in out.splitlines() if ">>>" in line or "<<<" in line]
    assert len(events) == 2 and events[0].endswith(">>> clock_alarm started")
    assert "<<< clock_alarm ended after" in events[1] and "window" not in out


# --- run_stream ---


def test_duration_stops_after_that_much_audio():
    rate = 16000
    source = FakeSource(blocks_of(np.zeros(10 * rate, np.float32), 1000), rate_hz=rate)
    report = run_stream(source, fake_pipeline(), duration_seconds=4.25)
    assert report.input_seconds == 4.25 and not report.stopped


def test_same_events_whatever_the_block_size():
    rate = 48000
    audio = loud_then_quiet(rate)
    results = []
    for size in (160, 1023, 4800, 48000):
        report = run_stream(FakeSource(blocks_of(audio, size), rate_hz=rate), fake_pipeline(rate))
        results.append(report.records)
    assert all(records == results[0] for records in results) and len(results[0]) == 1


def test_a_gap_ends_open_events_and_stream_time_continues():
    rate = 16000
    loud = 0.3 * np.random.default_rng(1).standard_normal(4 * rate).astype(np.float32)
    blocks = blocks_of(loud, 8000) * 2
    source = FakeSource(blocks, rate_hz=rate, faults={8: Gap("device unplugged")})
    console_lines: list[str] = []
    console = ConsoleView(SimpleNamespace(write=console_lines.append, flush=lambda: None))
    report = run_stream(source, fake_pipeline(), console=console)
    assert report.gaps == 1 and [r["label"] for r in report.records] == ["clock_alarm", "clock_alarm"]
    first, second = report.records
    assert first["end_seconds"] <= 4.0 and second["start_seconds"] >= 4.0
    assert any("audio gap (device unplugged)" in line for line in console_lines)


def test_stop_ends_the_run_and_is_reported():
    rate = 16000
    source = FakeSource([np.zeros(rate, np.float32)] * 10, rate_hz=rate,
                        on_block=lambda i: source.stop() if i == 3 else None)
    report = run_stream(source, fake_pipeline())
    assert report.stopped and report.input_seconds == 3


def test_rate_mismatch_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="pipeline_for_rate"):
        run_stream(FakeSource([np.zeros(10)], rate_hz=48000), fake_pipeline(16000))
    assert pipeline_for_rate(fake_pipeline(), 48000).input_rate_hz == 48000


# --- event log and saved audio ---


def test_event_log_appends_one_json_line_per_event(tmp_path):
    path = tmp_path / "state" / "events.jsonl"
    event = Event("crying_baby", 1.5, 4.25, 0.97123, 0.8)
    for _ in range(2):
        with EventLog(path) as log:
            log.write(event_record(event, offset_seconds=10.0, stream_start_time=0.0, source="mic:x"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 2
    assert records[0] == {
        "label": "crying_baby", "start_seconds": 11.5, "end_seconds": 14.25, "duration_seconds": 2.75,
        "peak_score": 0.9712, "mean_score": 0.8, "start_utc": "1970-01-01T00:00:11.500Z",
        "end_utc": "1970-01-01T00:00:14.250Z", "source": "mic:x",
    }


def test_saved_event_audio_has_pre_roll_and_respects_keep_and_budget(tmp_path):
    rate = 8000
    saver = EventAudioSaver(tmp_path / "clips", rate_hz=rate, keep=3, budget_mb=1.0, pre_roll_seconds=0.5,
                            max_clip_seconds=2.0)
    ramp = (np.arange(20 * rate) / (20 * rate)).astype(np.float32)
    for block in blocks_of(ramp, 1000):
        saver.feed(block)
    (tmp_path / "clips" / "keep-me.wav").write_bytes(b"not ours")
    paths = [saver.save(Event("water_drops", 15.0 + i * 0.1, 16.0 + i * 0.1, 0.9, 0.8), wall_time=1_000.0 + i)
             for i in range(5)]
    import soundfile

    audio, file_rate = soundfile.read(str(paths[-1]), dtype="float32")
    assert file_rate == rate and len(audio) == round(1.5 * rate)
    assert audio[0] == pytest.approx(ramp[round(14.9 * rate)], abs=1e-4)  # start - pre-roll
    remaining = sorted(p.name for p in (tmp_path / "clips").iterdir())
    assert remaining == sorted([p.name for p in paths[-3:]] + ["keep-me.wav"])
    # A tiny budget keeps only what fits (and never touches other files).
    saver.budget_bytes = os.path.getsize(paths[-1]) + 10
    saver.enforce_budget()
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == sorted([paths[-1].name, "keep-me.wav"])


def test_saver_defaults_come_from_the_config():
    saver_defaults = EventConfig()
    assert saver_defaults.keep > 0 and saver_defaults.budget_mb > 0


# --- record ---


def test_dataset_takes_are_named_by_session_and_numbered_on_from_the_folders_last_take(tmp_path):
    assert next_dataset_path(tmp_path, "kettle", session="20240501-143012") == (
        tmp_path / "kettle" / "20240501-143012_0000.wav")
    (tmp_path / "kettle").mkdir()
    for name in ("0000.wav", "0003.wav", "20240430-090000_0005.wav", "notes.wav", "hall_99.flac"):
        (tmp_path / "kettle" / name).write_bytes(b"")
    assert next_dataset_path(tmp_path, "kettle", session="20240501-143012") == (
        tmp_path / "kettle" / "20240501-143012_0006.wav")
    with pytest.raises(ValueError, match="--label"):
        next_dataset_path(tmp_path, "../etc")


def test_a_session_started_in_the_same_second_as_one_under_another_label_gets_its_own_name(tmp_path):
    started = datetime(2024, 5, 1, 14, 30, 12)
    assert new_session_id(tmp_path, now=started) == "20240501-143012"
    (tmp_path / "door").mkdir()
    (tmp_path / "door" / "20240501-143012_0000.wav").write_bytes(b"")
    assert new_session_id(tmp_path, now=started) == "20240501-143012b"  # not door's group
    (tmp_path / "kettle").mkdir()
    (tmp_path / "kettle" / "20240501-143012b_0000.wav").write_bytes(b"")
    assert new_session_id(tmp_path, now=started) == "20240501-143012c"


def test_a_session_cuts_one_continuous_capture_into_its_takes(tmp_path):
    import soundfile

    rate = 16000
    ramp = (np.arange(4 * rate) / (4 * rate)).astype(np.float32)  # each sample says where it came from
    results = record_session(FakeSource(blocks_of(ramp, 1000), rate_hz=rate), tmp_path, "kettle", seconds=1.0,
                             takes=3, now=datetime(2024, 5, 1, 14, 30, 12))
    assert [r.path for r in results] == [tmp_path / "kettle" / f"20240501-143012_{n:04d}.wav" for n in range(3)]
    takes = [soundfile.read(str(r.path), dtype="float32")[0] for r in results]
    assert np.array_equal(np.concatenate(takes), ramp[: 3 * rate])  # no sample lost or repeated between takes
    assert not any(r.interrupted for r in results)


def test_recording_into_a_dataset_never_overwrites_its_files(tmp_path):
    rate = 16000
    old = {"kettle/0000.wav": b"old take", "kettle/0001.wav": b"old take 2",
           "kettle/20240501-143012_0002.wav": b"same second", "door/20240501-143012_0000.wav": b"other label"}
    for name, content in old.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 3 * rate).astype(np.float32)
    results = record_session(FakeSource(blocks_of(noise, 1600), rate_hz=rate), tmp_path, "kettle", seconds=1.0,
                             takes=2, now=datetime(2024, 5, 1, 14, 30, 12))
    assert [r.path.name for r in results] == ["20240501-143012b_0003.wav", "20240501-143012b_0004.wav"]
    assert {name: (tmp_path / name).read_bytes() for name in old} == old
    assert len(list(tmp_path.rglob("*.wav"))) == len(old) + 2


def test_record_count_writes_one_session_per_run_and_refuses_count_for_a_single_wav(tmp_path, monkeypatch, capsys):
    import edge.sources

    noise = np.random.default_rng(1).uniform(-0.5, 0.5, 4 * 48000).astype(np.float32)
    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: FakeSoundDevice(noise))
    for _ in range(2):
        assert cli.main(["record", "--dataset", str(tmp_path / "mydata"), "--label", "kettle", "--seconds", "1",
                         "--count", "3"]) == cli.EXIT_OK
    printed = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    names = sorted(path.name for path in (tmp_path / "mydata" / "kettle").iterdir())
    assert sorted(Path(line).name for line in printed) == names and len(names) == 6
    sessions = [name.rsplit("_", 1)[0] for name in names]
    assert len(set(sessions[:3])) == len(set(sessions[3:])) == 1 and sessions[0] != sessions[3]
    assert [name.rsplit("_", 1)[1] for name in names] == [f"{n:04d}.wav" for n in range(6)]
    assert cli.main(["record", str(tmp_path / "one.wav"), "--count", "2"]) == cli.EXIT_USAGE
    assert "--count 2 needs --dataset" in capsys.readouterr().err


@pytest.fixture
def microphone_must_not_open(monkeypatch):
    import edge.sources

    def refuse(self):
        raise AssertionError("the microphone was opened before the take was known to be writable")

    monkeypatch.setattr(edge.sources.MicrophoneSource, "open", refuse)


@pytest.mark.parametrize("name", ["take.mp3", "take.flac", "take"])
def test_record_refuses_a_name_other_than_wav_before_the_microphone_opens(tmp_path, microphone_must_not_open,
                                                                          capsys, name):
    """WAV data under take.mp3 was lost to prepare (it ignores .mp3), and under take.flac misnamed."""
    assert cli.main(["record", str(tmp_path / name), "--seconds", "1"]) == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert f"{tmp_path / name}: record writes WAV files; name it {tmp_path / 'take.wav'}" in err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="record writes WAV files"):
        record(FakeSource([np.zeros(1600, np.float32)], rate_hz=16000), tmp_path / name, seconds=0.1)
    assert list(tmp_path.iterdir()) == []
    from edge.record import check_output_path

    assert check_output_path(tmp_path / "TAKE.WAV") == tmp_path / "TAKE.WAV"  # any case


def test_record_refuses_a_bad_label_before_the_microphone_opens(tmp_path, microphone_must_not_open, capsys):
    assert cli.main(["record", "--dataset", str(tmp_path / "mydata"), "--label", "../x"]) == cli.EXIT_USAGE
    assert "--label '../x' contains a path separator" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_record_names_a_folder_it_cannot_make_before_the_microphone_opens(tmp_path, microphone_must_not_open, capsys):
    (tmp_path / "notes.txt").write_text("a file, not a folder")
    under_a_file = tmp_path / "notes.txt" / "takes"
    for arguments, folder in (([str(under_a_file / "x.wav")], under_a_file),
                              (["--dataset", str(under_a_file), "--label", "kettle"], under_a_file / "kettle")):
        assert cli.main(["record", *arguments]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert f"{folder}: cannot make the folder to record into (a file is in the way); give a path in a folder " in err
        assert "Traceback" not in err
    if Path("/proc/self").is_dir():  # a folder nobody can make, root included
        assert cli.main(["record", "/proc/nope/x.wav"]) == cli.EXIT_USAGE
        assert "/proc/nope: cannot make the folder to record into (No such file or directory)" in capsys.readouterr().err


def test_record_makes_a_missing_output_folder_before_the_microphone_opens(tmp_path, monkeypatch, capsys):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: FakeSoundDevice(np.zeros(2 * 48000, np.float32)))
    take = tmp_path / "new" / "folder" / "take.wav"
    assert cli.main(["record", str(take), "--seconds", "1"]) == cli.EXIT_OK
    assert take.is_file() and f"{take}: 1.00 s at 16000 Hz" in capsys.readouterr().out


def test_record_resamples_the_capture_to_16k_mono(tmp_path):
    import soundfile

    rate = 48000
    stereo = np.stack([np.full(3 * rate, 0.25), np.full(3 * rate, 0.75)], axis=1).astype(np.float32)
    result = record(FakeSource(blocks_of(stereo, 4800), rate_hz=rate), tmp_path / "a.wav", seconds=2.0)
    audio, file_rate = soundfile.read(str(result.path), dtype="float32")
    info = soundfile.info(str(result.path))
    assert file_rate == 16000 and info.subtype == "FLOAT" and info.channels == 1
    assert len(audio) == 2 * 16000 and not result.interrupted
    assert np.allclose(audio[1000:-1000], 0.5, atol=1e-3)


@pytest.mark.parametrize("take, peak_dbfs, problem", [
    ("sine", 20 * np.log10(0.3), None),
    ("silence", -np.inf, "is silent"),
    ("hiss", 20 * np.log10(1e-5), "is silent"),  # -100 dBFS: under what YAMNet hears
    ("clipped", 0.0, "clipped"),
])
def test_record_reports_each_takes_peak_and_warns_of_a_silent_or_clipped_take(tmp_path, take, peak_dbfs, problem):
    rate = 48000
    time_s = np.arange(2 * rate) / rate
    sine = np.sin(2 * np.pi * 440 * time_s)
    audio = {"sine": 0.3 * sine, "silence": 0 * sine, "hiss": 1e-5 * np.sign(sine),
             "clipped": np.clip(3 * sine, -1, 1)}[take].astype(np.float32)
    result = record(FakeSource(blocks_of(audio, 4800), rate_hz=rate), tmp_path / f"{take}.wav", seconds=2.0)
    assert result.peak_dbfs == pytest.approx(peak_dbfs, abs=0.01)
    found = result.level_problem()
    assert (found is None) if problem is None else (problem in found and str(result.path) in found)


def test_record_command_prints_the_peak_and_warns_of_a_silent_take(tmp_path, monkeypatch, capsys):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: FakeSoundDevice(np.zeros(2 * 48000, np.float32)))
    assert cli.main(["record", str(tmp_path / "muted.wav"), "--seconds", "1"]) == cli.EXIT_OK
    captured = capsys.readouterr()
    assert "peak -inf dBFS" in captured.out
    assert f"WARNING edge.cli: {tmp_path / 'muted.wav'} is silent" in captured.err


def test_interrupted_record_writes_a_valid_wav_of_what_was_captured(tmp_path):
    import soundfile

    rate = 16000
    source = FakeSource(blocks_of(np.full(10 * rate, 0.1, np.float32), 1600), rate_hz=rate)
    source._on_block = lambda i: source.stop() if i == 24 else None
    result = record(source, tmp_path / "b.wav", seconds=10, subtype="PCM_16")
    assert result.interrupted and soundfile.info(str(result.path)).frames == 24 * 1600
    crashing = FakeSource(blocks_of(np.full(10 * rate, 0.1, np.float32), 1600), rate_hz=rate,
                          faults={5: KeyboardInterrupt()})
    with pytest.raises(KeyboardInterrupt):
        record(crashing, tmp_path / "c.wav", seconds=10)
    assert soundfile.info(str(tmp_path / "c.wav")).frames == 5 * 1600


# --- the real models ---


def test_replay_in_a_subprocess_runs_real_yamnet_and_drives_mock_leds(tiny_model_dir, tmp_path):
    import soundfile

    rate = 48000
    t = np.arange(3 * rate) / rate
    beep = np.concatenate([np.zeros(2 * rate), 0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(2 * rate)])
    stereo = np.stack([beep, beep], axis=1).astype(np.float32)  # any rate, any channels
    clip = tmp_path / "beep.flac"
    soundfile.write(str(clip), stereo, rate)
    silence = tmp_path / "silence.wav"
    soundfile.write(str(silence), np.zeros(5 * 16000, np.float32), 16000)
    result = subprocess.run(
        [sys.executable, "-m", "edge", "replay", str(clip), str(silence), "--model-dir", str(tiny_model_dir),
         "--pin", "beep=17", "--pin", "speech=27", "--mock-gpio"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert ">>> beep started" in out and "<<< beep ended" in out
    assert f"{clip}: " in out and "beep " in out.split(f"{clip}: ")[-1].splitlines()[0]
    assert f"{silence}: silence; no events" in out
    assert "gpio beep pin 17: off@0.00 on@" in out and "gpio speech pin 27: off@0.00\n" in out
    on_off = re.search(r"gpio beep pin 17: (.*)", out).group(1).split()
    assert [s.split("@")[0] for s in on_off] == ["off", "on", "off"]


@pytest.mark.slow
def test_replay_cli_classifies_real_clips_in_a_subprocess(tmp_path):
    model_dir = shipped_model_dir()
    clips = [esc50_clip("crying_baby"), esc50_clip("clock_alarm")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-m", "edge", "replay", *map(str, clips), "--model-dir", str(model_dir), "--summary-only",
         "--mock-gpio", "--config", str(config_in(tmp_path))],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert f"{clips[0]}: crying_baby" in result.stdout and f"{clips[1]}: clock_alarm" in result.stdout


def test_an_interrupt_at_start_up_that_passed_through_c_code_still_exits_0(tmp_path: Path) -> None:
    """A KeyboardInterrupt raised inside C-run Python code (PyRun_*, as an extension's import can do)
    makes CPython end a `python -m` process BY SIGINT however it is handled: systemd would call a
    clean stop at start-up a failure. Run as a module, like `python -m edge`."""
    import textwrap

    (tmp_path / "interrupted_start.py").write_text(textwrap.dedent(
        """
        import ctypes, sys
        import edge.cli as cli

        def build_parser():
            ctypes.pythonapi.PyRun_String.restype = ctypes.py_object
            ctypes.pythonapi.PyRun_String(b"raise KeyboardInterrupt", 257, ctypes.py_object({}), ctypes.py_object({}))

        cli.build_parser = build_parser
        sys.exit(cli.main(None if len(sys.argv) == 1 else sys.argv[1:]))
        """
    ))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "interrupted_start"], capture_output=True, text=True, timeout=120,
                            cwd=str(tmp_path), env=env)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])


class UnpluggedMicrophone(PickyMicrophone):
    """No input device at all: a USB microphone not plugged in yet."""

    def query_devices(self):
        return []


def test_listen_check_reports_a_missing_microphone_and_passes_only_with_wait_for_input(
    tmp_path, fake_models, monkeypatch, capsys
):
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", UnpluggedMicrophone)
    config = check_config(tmp_path)
    assert cli.main(["listen", "--check", "--config", str(config)]) == cli.EXIT_USAGE
    assert "no audio input devices found" in capsys.readouterr().err

    assert cli.main(["listen", "--check", "--wait-for-input", "--config", str(config)]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "input: none now (no audio input devices found" in out and "--wait-for-input waits for it" in out
    assert "check passed" in out
    # What can be checked without the device still is: a rate the resampler cannot convert.
    assert cli.main(["listen", "--check", "--wait-for-input", "--config", str(config), "--rate", "96001"]) == 2
    assert "command line: --rate 96001" in capsys.readouterr().err


def test_a_portaudio_failure_is_one_error_line_and_exit_1_not_a_traceback(monkeypatch, capsys):
    import edge.sources

    class PortAudioError(Exception):  # sounddevice's own is no OSError
        pass

    class BrokenPortAudio(PickyMicrophone):
        def query_devices(self):
            raise PortAudioError("Error querying device -1")

    monkeypatch.setattr(edge.sources, "import_sounddevice", BrokenPortAudio)
    assert cli.main(["devices"]) == cli.EXIT_FAILURE
    err = capsys.readouterr().err
    assert "the audio system failed: Error querying device -1" in err and "Traceback" not in err


@pytest.mark.parametrize("torn", [b'{"label": "crying_baby", "start_sec', b"\x00" * 64])
def test_after_a_power_cut_the_next_event_is_not_glued_onto_the_torn_line(tmp_path, torn):
    """The torn last line (no newline, or a NUL run ext4 never filled) is skipped alone: the event
    the restarted listener writes next is read whole."""
    import datetime as dt

    from edge.events import read_event_logs

    now = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.timezone.utc)
    log_path = tmp_path / "events.jsonl"
    with EventLog(log_path) as before:
        before.write(_logged("crying_baby", now - dt.timedelta(hours=2)))
    with log_path.open("ab") as handle:
        handle.write(torn)
    with EventLog(log_path) as after:  # the service restarted after the power cut
        after.write(_logged("clock_alarm", now))
    records, bad, _ = read_event_logs(log_path)
    assert [r["label"] for r in records] == ["crying_baby", "clock_alarm"]
    assert bad == (1 if torn.strip(b"\x00") else 0)


def test_each_listed_event_names_its_own_time_zone_across_a_dst_change():
    import datetime as dt

    from zoneinfo import ZoneInfo

    from edge.events import history_text

    berlin = ZoneInfo("Europe/Berlin")
    now = dt.datetime(2026, 10, 27, 12, 0, tzinfo=dt.timezone.utc)
    records = [_logged("crying_baby", dt.datetime(2026, 10, 24, 12, 0, tzinfo=dt.timezone.utc)),  # summer time
               _logged("crying_baby", dt.datetime(2026, 10, 26, 12, 0, tzinfo=dt.timezone.utc))]  # winter time
    lines = history_text(records, days=7, last=2, now=now, tz=berlin).splitlines()
    assert lines[-2].split()[1:3] == ["14:00:00", "CEST"] and lines[-1].split()[1:3] == ["13:00:00", "CET"]


@pytest.mark.parametrize("days", ["nan", "inf", "1e6"])
def test_events_refuses_a_number_of_days_it_cannot_count_back(days, capsys):
    with pytest.raises(SystemExit) as usage:
        cli.main(["events", "--days", days])
    assert usage.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_no_pre_roll_from_before_a_gap_and_no_clip_left_half_written(tmp_path):
    rate = 8000
    clips = tmp_path / "clips"
    clips.mkdir()
    unfinished = clips / ".oido-20261201T000000000-crying_baby.wav.4iop_fng.tmp"  # the listener died mid-save
    unfinished.write_bytes(b"RIFF" + b"\0" * 100)
    saver = EventAudioSaver(clips, rate_hz=rate, keep=3, budget_mb=1.0, pre_roll_seconds=1.0, max_clip_seconds=5.0)
    assert not unfinished.exists()
    saver.feed(np.full(3 * rate, 0.5, np.float32))  # before the microphone outage
    saver.mark_origin()  # the Gap: stream time restarts here
    saver.feed(np.full(3 * rate, -0.25, np.float32))
    path = saver.save(Event("crying_baby", 0.2, 1.5, 0.9, 0.8), wall_time=1_000.0)
    import soundfile

    audio, _ = soundfile.read(str(path), dtype="float32")
    assert len(audio) == round(1.5 * rate) and np.all(audio < 0)  # from the gap on, none of the older audio


def test_a_budget_smaller_than_one_clip_keeps_the_newest_clip_and_says_so(tmp_path, caplog):
    rate = 48000
    with caplog.at_level("WARNING", logger="edge.events"):
        saver = EventAudioSaver(tmp_path / "clips", rate_hz=rate, keep=5, budget_mb=0.5, pre_roll_seconds=1.0,
                                max_clip_seconds=5.0)  # 6 s at 48 kHz is 0.58 MB
    assert "holds less than one event clip of up to 6 s at 48000 Hz" in caplog.text
    saver.feed(np.full(8 * rate, 0.1, np.float32))
    first = saver.save(Event("crying_baby", 1.0, 6.0, 0.9, 0.8), wall_time=1_000.0)
    assert first is not None and first.exists()  # written, and not deleted at once for being over budget
    second = saver.save(Event("crying_baby", 2.0, 7.0, 0.9, 0.8), wall_time=1_001.0)
    assert second.exists() and not first.exists()


def test_record_leaves_no_empty_class_folder_when_the_microphone_cannot_open(tmp_path, monkeypatch, capsys):
    """An empty dataset/<label>/ folder stops `oido-train prepare` ("class has no clips"): one made
    for takes that never came (here: no such device) is removed again; a folder that held a take is kept."""
    import edge.sources

    monkeypatch.setattr(edge.sources, "import_sounddevice", lambda: FakeSoundDevice(np.zeros(2 * 48000, np.float32)))
    dataset = tmp_path / "ds"
    code = cli.main(["record", "--dataset", str(dataset), "--label", "kettle", "--seconds", "1",
                     "--device", "no-such-microphone"])
    assert code != cli.EXIT_OK and "no-such-microphone" in capsys.readouterr().err
    assert not dataset.exists()  # ds/ and ds/kettle/ were both made for the take, and both are gone
    assert cli.main(["record", "--dataset", str(dataset), "--label", "kettle", "--seconds", "1"]) == cli.EXIT_OK
    assert len(list((dataset / "kettle").glob("*.wav"))) == 1
    code = cli.main(["record", "--dataset", str(dataset), "--label", "kettle", "--seconds", "1",
                     "--device", "no-such-microphone"])
    assert code != cli.EXIT_OK and len(list((dataset / "kettle").glob("*.wav"))) == 1  # the earlier take stays
