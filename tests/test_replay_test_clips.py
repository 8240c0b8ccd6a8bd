"""scripts/replay_test_clips.py: held-out clips through the Pi's pipeline onto mock LED pins.

A model of the user's own classes (the fixture head: beep, speech, other) must light its own LEDs
with the example config, whose pins name only the four default classes; a missing model or data
set is one line naming the fix, from any working directory.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from edge.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "replay_test_clips.py"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import TINY_BACKGROUND, TINY_LABELS, fake_model_dir  # noqa: E402

DEFAULT_PINS = {"crying_baby": 17, "clock_alarm": 27, "toilet_flush": 22, "water_drops": 23}
"""scripts/oido.toml's [leds.pins]."""


@pytest.fixture(scope="module")
def script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("replay_test_clips", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_own_classes_get_free_pins_and_configured_ones_keep_theirs(script: ModuleType) -> None:
    pins = script.pins_for_labels(DEFAULT_PINS, TINY_LABELS, background_label=TINY_BACKGROUND, reserved=[24])
    assert pins == {"beep": 4, "speech": 5}  # free pins from 4 up (2 and 3 are pulled up); none for "other"
    mixed = script.pins_for_labels({"beep": 4, "crying_baby": 5}, TINY_LABELS, background_label=None)
    assert mixed == {"beep": 4, "speech": 6, "other": 7}
    assert script.pins_for_labels(DEFAULT_PINS, list(DEFAULT_PINS) + ["other"], background_label="other") == DEFAULT_PINS
    with pytest.raises(ConfigError, match=r"\[leds.pins\]"):
        script.pins_for_labels({}, [f"class{n}" for n in range(30)], background_label=None)


def test_outside_the_repository_root_a_missing_model_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"replay_test_clips.py: error: model/manifest.json not found (looked for in {tmp_path}): export a model "
        "with oido-convert, or run from the repository root, or pass --model-dir DIR"
    ]


def test_missing_test_data_is_one_line_naming_prepare(script: ModuleType, tmp_path: Path, capsys) -> None:
    fake_model_dir(tmp_path / "model")
    status = script.main(["--model-dir", str(tmp_path / "model"), "--data-dir", str(tmp_path / "data")])
    assert status == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'data' / 'testData.json'} not found" in err and "oido-train prepare" in err and "--data-dir" in err


def beep_and_quiet_data(data_dir: Path) -> Path:
    """A prepared data folder of two fold-5 clips: a 1 kHz beep (class beep) and silence (class other)."""
    soundfile = pytest.importorskip("soundfile")

    rate = 16000
    t = np.arange(3 * rate) / rate
    beep = np.concatenate([np.zeros(2 * rate), 0.5 * np.sin(2 * np.pi * 1000 * t), np.zeros(3 * rate)])
    audio = data_dir / "audio"
    audio.mkdir(parents=True)
    soundfile.write(str(audio / "beep.wav"), beep.astype(np.float32), rate)
    soundfile.write(str(audio / "quiet.wav"), np.zeros(5 * rate, np.float32), rate)
    entries = [{"fileName": "beep.wav", "className": "beep"}, {"fileName": "quiet.wav", "className": "other"}]
    (data_dir / "testData.json").write_text(json.dumps(entries))
    return data_dir


def test_a_model_of_your_own_classes_lights_its_own_led_with_the_example_config(
    script: ModuleType, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("gpiozero")
    beep_and_quiet_data(tmp_path / "data")
    report = tmp_path / "report.json"

    status = script.main(["--model-dir", str(tiny_model_dir), "--data-dir", str(tmp_path / "data"), "--report", str(report)])

    assert status == 0
    out, err = capsys.readouterr()
    clips = {row["file"]: row for row in json.loads(report.read_text())["clips"]}
    assert clips["beep.wav"]["lit"] == ["beep"] and clips["beep.wav"]["ok"]
    assert clips["quiet.wav"]["lit"] == [] and clips["quiet.wav"]["ok"]
    assert "BAD" not in out
    assert "no pin for beep, speech; mock pins beep=4, speech=5 stand in" in err

    # --threshold reaches the pipeline's detector, over the model's thresholds, as on the Pi
    manifest = json.loads((tiny_model_dir / "manifest.json").read_text())
    assert json.loads(report.read_text())["thresholds"] == (manifest.get("thresholds") or {})
    status = script.main(["--model-dir", str(tiny_model_dir), "--data-dir", str(tmp_path / "data"), "--report", str(report),
                          "--threshold", "speech=0.999"])  # fmt: skip
    assert status == 0 and json.loads(report.read_text())["thresholds"]["speech"] == 0.999


def test_a_threshold_experiment_keeps_the_models_own_report_and_a_new_report_folder_is_made(
    script: ModuleType, tiny_model_dir: Path, tmp_path: Path, capsys
) -> None:
    pytest.importorskip("gpiozero")
    data_dir = beep_and_quiet_data(tmp_path / "data")
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir, symlinks=True)
    (model_dir / "replay_report.json").write_text("the model's own report")

    assert script.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--threshold", "beep=0.9"]) == 0

    assert (model_dir / "replay_report.json").read_text() == "the model's own report"
    experiment = model_dir / "replay_report_thresholds.json"
    assert json.loads(experiment.read_text())["thresholds"]["beep"] == 0.9
    assert f"report: {experiment}" in capsys.readouterr().out

    report = tmp_path / "reports" / "new" / "replay.json"
    assert script.main(["--model-dir", str(model_dir), "--data-dir", str(data_dir), "--report", str(report)]) == 0
    assert json.loads(report.read_text())["totals"]["target_clips"] == 1


def test_a_report_path_that_is_a_folder_is_refused_before_the_replay(
    script: ModuleType, tmp_path: Path, capsys
) -> None:
    fake_model_dir(tmp_path / "model")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "testData.json").write_text("[]")

    status = script.main(["--model-dir", str(tmp_path / "model"), "--data-dir", str(tmp_path / "data"),
                          "--report", str(tmp_path)])  # fmt: skip

    assert status == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1
    assert f"--report {tmp_path} is a folder: give a file name" in err
