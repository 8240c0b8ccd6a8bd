"""edge.config: the TOML file, its validation messages, and flag overrides."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from edge.config import (
    ConfigError,
    EdgeConfig,
    check_labels,
    known_keys,
    load_config,
    parse_config,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "scripts" / "oido.toml"
LABELS = ["crying_baby", "clock_alarm", "toilet_flush", "water_drops", "other"]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "oido.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_maps_the_four_classes_and_status_to_the_documented_pins():
    config = load_config(EXAMPLE)
    assert dict(config.leds.pins) == {"crying_baby": 17, "clock_alarm": 27, "toilet_flush": 22, "water_drops": 23}
    assert config.leds.status_pin == 24
    assert config.model_dir == Path("/opt/oido/model")
    assert config.event_log_target() == "/var/lib/oido/events.jsonl"
    check_labels(config, LABELS)


def test_defaults_without_a_file_are_valid_and_light_nothing():
    config = EdgeConfig()
    assert config.leds.pins == {} and config.leds.status_pin is None
    assert config.audio.device is None and config.audio.rate_hz is None


def test_unknown_key_names_the_file_the_line_and_the_known_keys(tmp_path):
    path = write(tmp_path, "model_dir = 'm'\n\n[audio]\nblock_seconds = 0.1\ndevcie = 'USB'\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}:5:" in message
    assert "devcie" in message and "'device'" in message


def test_a_config_this_user_cannot_read_says_whose_it_is_and_the_fix(tmp_path, monkeypatch):
    path = write(tmp_path, "model_dir = 'm'\n")
    real_read_text = Path.read_text

    def owner_only(self, *args, **kwargs):  # root reads any file: a chmod 600 alone proves nothing here
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", owner_only)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: the configuration file cannot be read by user ")
    assert f"sudo chmod 644 {path}" in message


def test_unknown_top_level_key_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"oido.toml:1: unknown key 'modeldir'"):
        load_config(write(tmp_path, "modeldir = 'x'\n"))


def test_pin_used_twice_names_both_classes(tmp_path):
    path = write(tmp_path, "[leds.pins]\ncrying_baby = 17\nclock_alarm = 17\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}:3:" in message and "used twice" in message and "crying_baby" in message


def test_status_pin_may_not_share_a_class_pin(tmp_path):
    with pytest.raises(ConfigError, match="used twice"):
        load_config(write(tmp_path, "[leds]\nstatus = 17\n[leds.pins]\ncrying_baby = 17\n"))


@pytest.mark.parametrize("pin", ["1", "28", "-3", "true", "'17'"])
def test_pin_outside_bcm_2_to_27_is_rejected_with_the_fix(tmp_path, pin):
    with pytest.raises(ConfigError, match=r"oido.toml:2: .*crying_baby") as error:
        load_config(write(tmp_path, f"[leds.pins]\ncrying_baby = {pin}\n"))
    assert "2 to 27" in str(error.value) or "integer" in str(error.value)


@pytest.mark.parametrize("value", ["1.5", "-0.1", "0.0"])
def test_threshold_outside_unit_interval_is_rejected(tmp_path, value):
    path = write(tmp_path, f"[detection.thresholds]\n# a comment\ncrying_baby = {value}\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:3: [detection.thresholds] crying_baby = {value} is outside (0, 1]")):
        load_config(path)


def test_veto_score_outside_zero_to_one_is_rejected_with_its_line(tmp_path):
    with pytest.raises(ConfigError, match=r":2: .*Music = 1.5; a veto is a YAMNet score in \(0, 1\], or 0 to turn it off"):
        load_config(write(tmp_path, "[detection.veto]\nMusic = 1.5\n"))


def test_default_threshold_outside_unit_interval_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r":2: \[detection\] threshold"):
        load_config(write(tmp_path, "[detection]\nthreshold = 2\n"))


def test_wrong_type_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r":2: \[audio\] rate_hz = '48k' must be an integer"):
        load_config(write(tmp_path, "[audio]\nrate_hz = '48k'\n"))


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[leds\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid TOML"):
        load_config(path)


def test_missing_file_says_where_an_example_is(tmp_path):
    with pytest.raises(ConfigError, match="scripts/oido.toml"):
        load_config(tmp_path / "nope.toml")


def test_class_not_in_the_model_is_reported_with_the_line_and_the_labels(tmp_path):
    path = write(tmp_path, "[leds.pins]\ncrying_baby = 17\ncrying_bby = 27\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as error:
        check_labels(config, LABELS, model_dir=Path("model"))
    message = str(error.value)
    assert f"{path}:3:" in message and "crying_bby" in message and "clock_alarm" in message


def test_threshold_for_a_class_not_in_the_model_is_reported(tmp_path):
    config = load_config(write(tmp_path, "[detection.thresholds]\nbarking = 0.5\n"))
    with pytest.raises(ConfigError, match=":2: .*barking"):
        check_labels(config, LABELS)


def test_a_flag_naming_a_class_the_model_lacks_is_blamed_on_the_command_line_not_the_file(tmp_path):
    config = load_config(write(tmp_path, "[leds.pins]\ncrying_baby = 17\n"))
    with pytest.raises(ConfigError) as error:
        check_labels(config.with_overrides(pins={"kettle": 5}), LABELS)
    assert str(error.value).startswith("command line: --pin kettle=5: names class 'kettle', which is not one of")
    with pytest.raises(ConfigError) as error:
        check_labels(config.with_overrides(thresholds={"kettle": 0.5}), LABELS)
    assert str(error.value).startswith("command line: --threshold kettle=0.5: names class 'kettle'")
    in_file = load_config(write(tmp_path, "[leds.pins]\nkettle = 17\n")).with_overrides(pins={"crying_baby": 5})
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path / 'oido.toml'))}:2: \[leds.pins\] names class 'kettle'"):
        check_labels(in_file, LABELS)


AUDIOSET = tuple(f"class {i}" for i in range(519)) + ("Speech", "Music")


@pytest.mark.parametrize("score", ["0.75", "0"])  # 0 (off) too: the veto it meant to turn off would stay on
def test_a_misspelt_veto_class_names_the_file_and_line_and_the_closest_classes(tmp_path, score):
    path = write(tmp_path, f"[detection]\nthreshold = 0.5\n\n[detection.veto]\nSpeech = 0.8\nMusci = {score}\n")
    config = load_config(path)
    with pytest.raises(ConfigError) as error:
        check_labels(config, LABELS, audioset_classes=AUDIOSET)
    assert str(error.value) == (
        f"{path}:6: [detection.veto] 'Musci' is not one of YAMNet's 521 AudioSet classes; did you mean ['Music']?"
    )
    check_labels(config, LABELS)  # without YAMNet's class names the veto is not checked here


def test_a_flag_threshold_for_every_label_beats_the_files_per_class_thresholds(tmp_path):
    from edge.detect import DetectorConfig
    from edge.listen import detector_config_for

    config = load_config(write(tmp_path, "[detection.thresholds]\ncrying_baby = 0.6\nwater_drops = 0.65\n"))
    model = DetectorConfig(thresholds={"crying_baby": 0.99, "clock_alarm": 0.98}, background_label="other")
    everywhere = config.with_overrides(threshold=0.7)
    assert everywhere.detection.threshold == 0.7 and everywhere.detection.thresholds == {}
    assert {label: detector_config_for(model, everywhere).threshold_for(label) for label in LABELS[:4]} == {
        "crying_baby": 0.7, "clock_alarm": 0.7, "toilet_flush": 0.7, "water_drops": 0.7}
    one_more = config.with_overrides(threshold=0.7, thresholds={"clock_alarm": 0.8})
    assert dict(detector_config_for(model, one_more).thresholds) == {"clock_alarm": 0.8}
    only_one = config.with_overrides(thresholds={"clock_alarm": 0.8})  # no flag for every label: the file's stay
    assert dict(detector_config_for(model, only_one).thresholds) == {"crying_baby": 0.6, "clock_alarm": 0.8,
                                                                     "water_drops": 0.65}


def test_relative_paths_are_relative_to_the_file(tmp_path):
    config = load_config(write(tmp_path, "model_dir = 'model'\n[events]\nsave_dir = 'clips'\nlog = '-'\n"))
    assert config.model_dir == tmp_path / "model"
    assert config.events.save_dir == tmp_path / "clips"
    assert config.event_log_target() == "-"


def test_flags_override_the_file(tmp_path):
    config = load_config(EXAMPLE).with_overrides(
        model_dir=Path("other"),
        device="pulse",
        rate_hz=48000,
        threshold=0.7,
        thresholds={"crying_baby": 0.9},
        status_pin=5,
        pins={"water_drops": 6},
    )
    assert config.model_dir == Path("other")
    assert config.audio.device == "pulse" and config.audio.rate_hz == 48000
    assert config.detection.threshold == 0.7 and config.detection.thresholds["crying_baby"] == 0.9
    assert config.leds.status_pin == 5 and config.leds.pins["water_drops"] == 6
    assert config.leds.pins["crying_baby"] == 17


def test_flag_pin_clashing_with_the_file_is_rejected():
    with pytest.raises(ConfigError, match="used twice"):
        load_config(EXAMPLE).with_overrides(pins={"water_drops": 17})


def test_state_dir_comes_from_systemd_when_not_configured(tmp_path):
    config = EdgeConfig()
    assert config.resolved_state_dir({"STATE_DIRECTORY": "/var/lib/oido"}) == Path("/var/lib/oido")
    assert config.event_log_target({"STATE_DIRECTORY": "/var/lib/oido"}) == "/var/lib/oido/events.jsonl"
    assert config.resolved_state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "oido"


def test_every_documented_key_appears_in_the_example():
    text = EXAMPLE.read_text(encoding="utf-8")
    for table, keys in known_keys().items():
        if table:
            assert f"[{table}]" in text
        for key in keys:
            assert key in text, f"scripts/oido.toml does not mention {table}.{key}"


def test_config_parses_from_text_without_a_file():
    config = parse_config("[audio]\ndevice = 2\n")
    assert config.audio.device == 2 and config.path is None


# --- the appliance: systemd unit and install script ---

SERVICE = REPO / "scripts" / "oido-edge.service"
SCRIPTS = sorted((REPO / "scripts").glob("*.sh"))


def unit_entries(text: str) -> dict[str, dict[str, list[str]]]:
    """INI-ish parse of a systemd unit: section -> key -> values (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None and "=" in line, f"{SERVICE}:{number}: not 'Key=value' in a section: {raw!r}"
        key, value = line.split("=", 1)
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_service_runs_listen_as_an_unprivileged_user_with_only_its_state_dir_writable():
    unit = unit_entries(SERVICE.read_text(encoding="utf-8"))
    service = unit["Service"]
    assert service["ExecStart"] == ["/opt/oido/venv/bin/oido-edge listen --config /etc/oido/oido.toml --wait-for-input"]
    assert service["User"] == ["oido"]
    assert set(service["SupplementaryGroups"][0].split()) == {"gpio", "audio"}
    assert service["StateDirectory"] == ["oido"]
    assert service["Restart"] == ["on-failure"]
    assert service["ProtectSystem"] == ["strict"]
    assert service["ReadWritePaths"] == ["%S/oido"]  # = /var/lib/oido, the StateDirectory
    assert service["WorkingDirectory"] == ["%S/oido"]  # lgpio writes its pipes in the working directory
    assert unit["Install"]["WantedBy"] == ["multi-user.target"]


def test_service_file_passes_systemd_analyze_verify(tmp_path):
    import shutil
    import subprocess

    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (the key check above still ran)")
    # verify insists the ExecStart binary exists: point it at one that does.
    unit = tmp_path / SERVICE.name
    unit.write_text(SERVICE.read_text().replace("/opt/oido/venv/bin/oido-edge", shutil.which("true") or "/bin/true"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=120)
    complaints = [line for line in result.stderr.splitlines() if SERVICE.name in line]
    assert result.returncode == 0 and not complaints, result.stderr


def test_logrotate_rotates_the_event_log_and_listen_writes_on_in_a_new_file(tmp_path, caplog):
    """The installed /etc/logrotate.d/oido-edge, run by the real logrotate on a copy pointed at a
    temporary log, against the EventLog listen writes through."""
    import grp
    import os
    import pwd
    import shutil
    import subprocess

    from edge.events import EventLog

    config = (REPO / "scripts" / "oido-edge.logrotate").read_text(encoding="utf-8")
    assert "/var/lib/oido/events.jsonl {" in config  # the service's StateDirectory
    if shutil.which("logrotate") is None:
        pytest.skip("logrotate is not installed (apt install logrotate)")
    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    log_path = tmp_path / "state" / "events.jsonl"
    here = tmp_path / "oido-edge.logrotate"
    here.write_text(config.replace("/var/lib/oido/events.jsonl", str(log_path)).replace(" oido oido", f" {user} {group}"),
                    encoding="utf-8")  # fmt: skip
    events = EventLog(log_path)
    for index in range(2):
        assert events.write({"label": "clock_alarm", "index": index})
    result = subprocess.run(["logrotate", "--force", "--state", str(tmp_path / "logrotate.state"), str(here)],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 0, result.stderr
    with caplog.at_level("INFO", logger="edge.events"):
        assert events.write({"label": "clock_alarm", "index": 2})
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", f"event log {log_path} was rotated; writing the new one")]  # routine: no warning
    rotated = [json.loads(line)["index"] for line in (tmp_path / "state" / "events.jsonl.1").read_text().splitlines()]
    current = [json.loads(line)["index"] for line in log_path.read_text().splitlines()]
    assert (rotated, current) == ([0, 1], [2])


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse_and_pass_shellcheck(script):
    import shutil
    import subprocess

    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert script.stat().st_mode & 0o111, f"{script} is not executable"
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (bash -n passed)")
    result = subprocess.run(["shellcheck", str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    "script, usage",
    [("install_pi.sh", "sudo scripts/install_pi.sh [--model-dir DIR]"), ("legacy_env.sh", "scripts/legacy_env.sh --edge [--venv DIR]"),
     ("arm64_check.sh", "bash scripts/arm64_check.sh [--cpu pi4|pi5|both]")],
)
def test_script_help_prints_its_header_comment_and_no_code(script, usage):
    import subprocess

    path = REPO / "scripts" / script
    result = subprocess.run(["bash", str(path), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = path.read_text(encoding="utf-8").splitlines()[1:]  # after the #! line
    header = lines[: next(number for number, line in enumerate(lines) if not line.startswith("#"))]
    assert result.stdout.splitlines() == [line[2:] if line.startswith("# ") else line[1:] for line in header]
    assert usage in result.stdout
    assert "set -euo pipefail" not in result.stdout


def test_install_script_refuses_a_32_bit_pi_before_doing_anything(tmp_path):
    """No TF-Lite runtime has armv7l wheels: a 32-bit Raspberry Pi OS is told so, not left with pip's
    'no matching distribution' after apt and the user are done."""
    import subprocess

    shims = tmp_path / "bin"
    shims.mkdir()
    (shims / "uname").write_text("#!/bin/sh\necho armv7l\n", encoding="utf-8")
    (shims / "uname").chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(REPO / "scripts" / "install_pi.sh"), "--root", str(tmp_path / "root")],
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "armv7l is not supported" in result.stderr and "Raspberry Pi OS (64-bit)" in result.stderr
    assert not (tmp_path / "root" / "opt").exists()


def test_install_script_installs_what_the_service_and_config_expect():
    text = (REPO / "scripts" / "install_pi.sh").read_text(encoding="utf-8")
    for needed in ("python3-venv", "python3-lgpio", "libportaudio2", "libsndfile1", "--system-site-packages",
                   "/opt/oido/venv", "extra=edge", "/opt/oido/model", "/etc/oido", "oido.toml", "useradd",
                   "gpio,audio", "systemctl enable"):
        assert needed in text, f"install_pi.sh does not mention {needed}"


# --- window decisions: [detection] window_seconds and overlap ---


def test_window_and_overlap_come_from_the_detection_table_and_flags_beat_them(tmp_path):
    from edge.config import window_params
    from edge.params import DEFAULT_PARAMS

    assert window_params(DEFAULT_PARAMS, load_config(EXAMPLE)) is DEFAULT_PARAMS  # commented out: the model's
    config = load_config(write(tmp_path, "[detection]\nwindow_seconds = 2\noverlap = 0.75\n"))
    assert (config.detection.window_seconds, config.detection.overlap) == (2.0, 0.75)
    params = window_params(DEFAULT_PARAMS, config)
    assert (params.window_seconds, params.overlap, params.decision_hop_seconds) == (2.0, 0.75, 0.5)
    assert params.with_changes(window_seconds=3.0, overlap=0.5) == DEFAULT_PARAMS  # nothing else changed
    flagged = config.with_overrides(window_seconds=4.0)
    assert (flagged.detection.window_seconds, flagged.detection.overlap) == (4.0, 0.75)
    assert window_params(DEFAULT_PARAMS, config.with_overrides(overlap=0.0)).decision_hop_seconds == 2.0


@pytest.mark.parametrize("text, line, why", [
    ("window_seconds = 0.5", 3, r"\[detection\] window_seconds = 0.5: window_seconds=0.5 is shorter than one YAMNet patch plus one hop \(1.455 s\)"),
    # 1.0 s holds a whole patch only where a patch happens to start near the window's start: most windows decide nothing
    ("window_seconds = 1.0", 3, r"\[detection\] window_seconds = 1.0: window_seconds=1 is shorter than one YAMNet patch plus one hop"),
    # a window keeps every patch until it decides: a day-long one grows without bound, 1e308 overflowed
    ("window_seconds = 1e308", 3, r"\[detection\] window_seconds = 1e\+308: window_seconds=1e\+308 is longer than 60 s"),
    ("window_seconds = nan", 3, r"\[detection\] window_seconds = nan: window_seconds must be a finite number"),
    ("overlap = 1", 3, r"\[detection\] overlap = 1.0: overlap must be in \[0, 1\)"),
    ("overlap = -0.25", 3, r"\[detection\] overlap = -0.25: overlap must be in \[0, 1\)"),
    ("overlap = '0.5'", 3, r"\[detection\] overlap = '0.5' must be an integer or a number"),
])
def test_a_window_shorter_than_a_patch_or_an_overlap_outside_0_1_names_the_line(tmp_path, text, line, why):
    path = write(tmp_path, f"[detection]\nthreshold = 0.5\n{text}\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}:{line}: {why}"):
        load_config(path)


def test_a_bad_window_flag_is_blamed_on_the_command_line_not_the_file(tmp_path):
    config = load_config(write(tmp_path, "[detection]\nwindow_seconds = 2\n"))
    with pytest.raises(ConfigError, match=r"^command line: --overlap 1: overlap must be in \[0, 1\)"):
        config.with_overrides(overlap=1.0)
    with pytest.raises(ConfigError, match=r"^command line: --window-seconds 0.9: window_seconds=0.9 is shorter"):
        config.with_overrides(window_seconds=0.9)
