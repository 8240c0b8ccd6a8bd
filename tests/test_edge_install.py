"""scripts/install_pi.sh, run for real: staged under a directory (--root) on this machine, since
it is not a Pi (no python3-lgpio from apt, no systemd as PID 1).

The staging run does what the Pi install does except apt, the user and systemctl: it builds the
venv and pip installs .[edge] into it, swaps the model in, installs the config, the logrotate
rule and the unit. Then the installed `oido-edge`, with the installed config and model, replays a
held-out crying baby and lights that class's pin, passes its own start-up check (`listen --check`,
with the virtual microphone), and systemd checks the installed unit.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import PINS, REPO, esc50_clip, shipped_model_dir  # noqa: E402
from fixtures.installer import INSTALLER, UNIT, pi_like_python  # noqa: E402

pytestmark = pytest.mark.slow


def install(root: Path, model_dir: Path, *options: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(["bash", str(INSTALLER), "--root", str(root), "--model-dir", str(model_dir), *pi_like_python(),
                             *options], capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert result.returncode == 0, f"install_pi.sh failed:\n{result.stdout}\n{result.stderr}"
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(staging root, the model it was given, the first install's output)."""
    model_dir = shipped_model_dir()
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH for the installer's venv")
    root = tmp_path_factory.mktemp("pi-root")
    return root, model_dir, install(root, model_dir)


def test_installer_stages_the_appliance_files(staged):
    root, model_dir, result = staged
    assert f"staged under {root}" in result.stdout
    # The installer's check ran; whether it passes depends on this machine having a microphone.
    assert "== check: oido-edge listen --check" in result.stdout
    assert ("check passed" in result.stdout) != ("the check above failed" in result.stderr)
    for installed, source in [
        ("etc/oido/oido.toml", "scripts/oido.toml"),
        (f"etc/systemd/system/{UNIT}", f"scripts/{UNIT}"),
        ("etc/logrotate.d/oido-edge", "scripts/oido-edge.logrotate"),
    ]:
        assert (root / installed).read_bytes() == (REPO / source).read_bytes(), installed
        assert (root / installed).stat().st_mode & 0o777 == 0o644, installed
    model = root / "opt" / "oido" / "model"
    for name in ("manifest.json", "yamnet.tflite", "head.tflite"):
        assert not (model / name).is_symlink(), f"{name} must be a real file on the Pi"
        assert digest(model / name) == digest(model_dir / name), name
    assert not (root / "opt" / "oido" / "model.new").exists() and not (root / "opt" / "oido" / "model.old").exists()
    # The unit's ExecStart exists, in a venv that sees the system's packages (apt's lgpio).
    exec_start = re.search(r"^ExecStart=(\S+)", (REPO / "scripts" / UNIT).read_text(), re.M).group(1)
    assert os.access(root / exec_start.lstrip("/"), os.X_OK), exec_start
    venv_config = (root / "opt" / "oido" / "venv" / "pyvenv.cfg").read_text()
    assert re.search(r"include-system-site-packages\s*=\s*true", venv_config)
    if pi_like_python():
        assert re.search(r"^home\s*=\s*/usr/bin$", venv_config, re.M), venv_config


def replay_installed(root: Path, clip: Path) -> subprocess.CompletedProcess:
    """The installed command, config and model, as the unit runs them, on one clip."""
    result = subprocess.run(
        [str(root / "opt/oido/venv/bin/oido-edge"), "replay", str(clip), "--config", str(root / "etc/oido/oido.toml"),
         "--model-dir", str(root / "opt/oido/model"), "--mock-gpio", "--summary-only"],
        capture_output=True, text=True, timeout=300, cwd=root,
    )
    assert result.returncode == 0, result.stderr
    return result


def test_installed_appliance_lights_the_pin_of_a_heard_class(staged):
    root, _, _ = staged
    clip = esc50_clip("crying_baby")
    result = replay_installed(root, clip)
    assert "via ai_edge_litert" in result.stderr
    assert f"{clip}: crying_baby" in result.stdout
    pins = dict(re.findall(r"gpio (\w+) pin \d+: (.*)", result.stdout))
    assert "on@" in pins.pop("status"), result.stdout  # the installed config's status LED
    assert set(pins) == set(PINS), result.stdout  # and its [leds.pins]
    assert "on@" in pins["crying_baby"]
    assert all("on@" not in history for label, history in pins.items() if label != "crying_baby"), pins
    # It ran the installed copy of the code, not this checkout.
    origin = subprocess.run([str(root / "opt/oido/venv/bin/python"), "-c", "import edge; print(edge.__file__)"],
                            capture_output=True, text=True, timeout=60, cwd=root)
    assert Path(origin.stdout.strip()).is_relative_to(root / "opt" / "oido" / "venv"), origin.stdout


@pytest.mark.mic
def test_installed_appliance_passes_its_own_start_up_check(staged, virtual_mic):
    """`listen --check` of the installed command with the installed config: the model, the pins
    against its labels, and an input device (the virtual microphone stands in for the Pi's)."""
    root, _, _ = staged
    result = subprocess.run(
        [str(root / "opt/oido/venv/bin/oido-edge"), "listen", "--check", "--config", str(root / "etc/oido/oido.toml"),
         "--model-dir", str(root / "opt/oido/model"), "--device", "pulse"],
        capture_output=True, text=True, timeout=120, cwd=root, env=virtual_mic,
    )
    assert result.returncode == 0, result.stderr
    assert "LEDs: crying_baby GPIO17, clock_alarm GPIO27, toilet_flush GPIO22, water_drops GPIO23; status GPIO24" in result.stdout
    assert "event log: /var/lib/oido/events.jsonl" in result.stdout and "check passed" in result.stdout


def test_installed_unit_passes_systemd_verify(staged, tmp_path):
    """systemd's own check of the unit (unknown keys, bad values, a missing ExecStart), with the
    ExecStart pointed into the staging root; it prints nothing for a good unit."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    root, _, _ = staged
    unit = (root / "etc" / "systemd" / "system" / UNIT).read_text()
    checked = tmp_path / UNIT
    checked.write_text(unit.replace("ExecStart=/opt/oido/", f"ExecStart={root}/opt/oido/"))
    result = subprocess.run(["systemd-analyze", "verify", str(checked)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), result.stdout + result.stderr


@pytest.mark.mic
def test_installer_run_again_keeps_the_config_and_replaces_the_model(staged, virtual_mic):
    """A second run, with a microphone (the virtual one) for the installer's check to find."""
    root, model_dir, _ = staged
    config = root / "etc" / "oido" / "oido.toml"
    edited = config.read_text().replace("water_drops = 23", "water_drops = 5")
    config.write_text(edited)
    stale = root / "opt" / "oido" / "model" / "stale-from-the-last-model.txt"
    stale.write_text("left by the previous model")
    result = install(root, model_dir, env=virtual_mic)
    assert "keeping the existing" in result.stdout
    assert "check passed" in result.stdout and "LEDs: crying_baby GPIO17" in result.stdout
    assert "water_drops GPIO5" in result.stdout  # the check read the kept, edited config
    assert config.read_text() == edited
    assert not stale.exists()
    assert digest(root / "opt/oido/model/head.tflite") == digest(model_dir / "head.tflite")


def test_a_switch_to_the_legacy_runtime_runs_the_appliance_on_tflite_runtime(staged, tmp_path):
    """Rerun with --extra edge-legacy (older Pi images): tflite-runtime 2.14 and numpy<2 replace
    ai-edge-litert in the same venv, and the installed command hears the same crying baby."""
    python = pi_like_python()
    if not python:  # python3 here is this checkout's, whose own site holds ai-edge-litert: it would win
        pytest.skip("needs Debian's /usr/bin/python3 with venv (python3-venv), as on Raspberry Pi OS")
    version = subprocess.run([python[-1], "-c", "import sys; print(sys.version_info[1])"],
                             capture_output=True, text=True).stdout.strip()
    if int(version) > 11:
        pytest.skip("tflite-runtime 2.14 has no wheel for Python 3.12+")
    _, model_dir, _ = staged
    root = tmp_path / "pi-root"
    install(root, model_dir)
    install(root, model_dir, "--extra", "edge-legacy")
    clip = esc50_clip("crying_baby")
    result = replay_installed(root, clip)
    assert "via tflite_runtime" in result.stderr
    assert f"{clip}: crying_baby" in result.stdout
    venv_python = str(root / "opt/oido/venv/bin/python")
    numpy_version = subprocess.run([venv_python, "-c", "import numpy; print(numpy.__version__)"],
                                   capture_output=True, text=True, timeout=60, cwd=root).stdout
    assert numpy_version.startswith("1."), numpy_version
    assert subprocess.run([venv_python, "-m", "pip", "show", "ai-edge-litert"], capture_output=True).returncode != 0


def test_installer_reports_a_kept_config_that_the_new_model_rejects(staged, tmp_path):
    """An old config naming a class the new model lacks: the installer's check names the line, and
    the install still completes (on a Pi it would leave the service enabled but not started)."""
    _, model_dir, _ = staged
    root = tmp_path / "pi-root"
    config = root / "etc" / "oido" / "oido.toml"
    config.parent.mkdir(parents=True)
    config.write_text((REPO / "scripts" / "oido.toml").read_text(encoding="utf-8").replace("water_drops = 23", "kettle = 23"),
                      encoding="utf-8")
    result = install(root, model_dir)
    assert "keeping the existing" in result.stdout
    assert "names class 'kettle', which is not one of the labels" in result.stderr
    assert "the check above failed" in result.stderr and "check passed" not in result.stdout
