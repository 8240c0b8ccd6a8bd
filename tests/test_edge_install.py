"""scripts/install_pi.sh, run for real: staged under a directory (--root) on this machine, since
it is not a Pi (no python3-lgpio from apt, no systemd as PID 1).

The staging run does what the Pi install does except apt, the user and systemctl: it builds the
venv and pip installs .[edge] into it, checks the new model with the installed config (its
`listen --check`, with the virtual microphone) and only then swaps it in, and installs the
logrotate rule and the unit. Then the installed `oido-edge`, with the installed config and model,
replays a held-out crying baby and lights that class's pin, and systemd checks the installed unit.

The installer's own decisions (the order of check and swap, the architecture guard, its usage
errors) are also run fast, against a stand-in venv whose `oido-edge listen --check` passes or
fails as the test says; and scripts/setup.sh with the scripts that follow it (test.sh,
run_default.sh) against a stand-in python3, with or without PEP 668's EXTERNALLY-MANAGED marker.
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


def install(root: Path, model_dir: Path, *options: str, env: dict[str, str] | None = None,
            status: int = 0) -> subprocess.CompletedProcess:
    """One staged installer run; asserts its exit status (0 unless told)."""
    python = [] if "--python" in options else pi_like_python()
    result = subprocess.run(["bash", str(INSTALLER), "--root", str(root), "--model-dir", str(model_dir), *python, *options],
                            capture_output=True, text=True, timeout=900, env=env)  # fmt: skip
    assert result.returncode == status, f"install_pi.sh exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def mic_env(virtual_mic: dict[str, str]) -> dict[str, str]:
    """The environment for installer runs: the virtual microphone for the installer's check to find
    (it swaps a model in only when the check passes), and no PYTHONPATH (the installed command
    must run its own copy of the code, not this checkout)."""
    return {key: value for key, value in virtual_mic.items() if key != "PYTHONPATH"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, mic_env: dict[str, str]) -> tuple[Path, Path, subprocess.CompletedProcess]:
    """(staging root, the model it was given, the first install's output)."""
    model_dir = shipped_model_dir()
    if shutil.which("python3") is None:
        pytest.skip("no python3 on PATH for the installer's venv")
    root = tmp_path_factory.mktemp("pi-root")
    return root, model_dir, install(root, model_dir, env=mic_env)


def test_installer_stages_the_appliance_files(staged):
    root, model_dir, result = staged
    assert f"staged under {root}" in result.stdout
    # The installer's check ran on the new model, before the swap, and passed.
    assert "== check: oido-edge listen --check" in result.stdout and "check passed" in result.stdout
    assert f"model: {root}/opt/oido/model.new: labels" in result.stdout
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
def test_installer_run_again_keeps_the_config_and_replaces_the_model(staged, mic_env):
    """A second run, with a microphone (the virtual one) for the installer's check to find."""
    root, model_dir, _ = staged
    config = root / "etc" / "oido" / "oido.toml"
    edited = config.read_text().replace("water_drops = 23", "water_drops = 5")
    config.write_text(edited)
    stale = root / "opt" / "oido" / "model" / "stale-from-the-last-model.txt"
    stale.write_text("left by the previous model")
    result = install(root, model_dir, env=mic_env)
    assert "keeping the existing" in result.stdout
    assert "check passed" in result.stdout and "LEDs: crying_baby GPIO17" in result.stdout
    assert "water_drops GPIO5" in result.stdout  # the check read the kept, edited config
    assert config.read_text() == edited
    assert not stale.exists()
    assert digest(root / "opt/oido/model/head.tflite") == digest(model_dir / "head.tflite")


def test_a_switch_to_the_legacy_runtime_runs_the_appliance_on_tflite_runtime(staged, mic_env, tmp_path):
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
    install(root, model_dir, env=mic_env)
    install(root, model_dir, "--extra", "edge-legacy", env=mic_env)
    clip = esc50_clip("crying_baby")
    result = replay_installed(root, clip)
    assert "via tflite_runtime" in result.stderr
    assert f"{clip}: crying_baby" in result.stdout
    venv_python = str(root / "opt/oido/venv/bin/python")
    numpy_version = subprocess.run([venv_python, "-c", "import numpy; print(numpy.__version__)"],
                                   capture_output=True, text=True, timeout=60, cwd=root).stdout
    assert numpy_version.startswith("1."), numpy_version
    assert subprocess.run([venv_python, "-m", "pip", "show", "ai-edge-litert"], capture_output=True).returncode != 0


def test_a_new_model_the_kept_config_disagrees_with_is_not_swapped_in(staged, mic_env, tmp_path):
    """A retrained model without a class the kept config gives a pin: the installer's check names
    the line, the new model is not swapped in, and the installer fails. The service would load
    the installed model at its next start: it must stay the one the config agrees with."""
    root, model_dir, _ = staged
    retrained = tmp_path / "retrained"
    retrained.mkdir()
    for name in ("yamnet.tflite", "head.tflite"):
        shutil.copyfile(model_dir / name, retrained / name)
    manifest = (model_dir / "manifest.json").read_text(encoding="utf-8")
    (retrained / "manifest.json").write_text(manifest.replace('"water_drops"', '"dripping"'), encoding="utf-8")
    config = root / "etc" / "oido" / "oido.toml"
    kept_config = config.read_bytes()
    installed = {name: digest(root / "opt/oido/model" / name) for name in ("manifest.json", "yamnet.tflite", "head.tflite")}
    result = install(root, retrained, env=mic_env, status=1)
    assert f"model: {root}/opt/oido/model.new" not in result.stdout  # the check failed before it printed the model
    assert "names class 'water_drops', which is not one of the labels" in result.stderr
    assert "the check above failed" in result.stderr
    assert f"the previous model is still installed in {root}/opt/oido/model" in result.stderr
    assert {name: digest(root / "opt/oido/model" / name) for name in installed} == installed
    assert not (root / "opt/oido/model.new").exists() and not (root / "opt/oido/model.old").exists()
    assert config.read_bytes() == kept_config


# --- the installer's decisions, fast: a stand-in venv, no pip, no TF-Lite, no microphone

FAKE_BASE_PYTHON = r"""#!/bin/sh
# Stands in for the Python install_pi.sh makes its venv from: its pointer size, and `-m venv DIR`.
case "$1" in
    -c) echo "${FAKE_POINTER_BITS:-64}" ;;
    -m)
        for target in "$@"; do :; done
        mkdir -p "$target/bin"
        cp "$FAKE_VENV/python" "$FAKE_VENV/oido-edge" "$target/bin/"
        ;;
    *) exit 1 ;;
esac
"""
FAKE_VENV_PYTHON = r"""#!/bin/sh
# The venv's python: every pip command succeeds, and `pip show` finds no other runtime.
[ "$3" = show ] && exit 1
exit 0
"""
FAKE_OIDO_EDGE = r"""#!/bin/sh
# The venv's oido-edge: `listen --check` fails on a model holding fails-the-check, naming why.
echo "oido-edge $*" >> "$FAKE_LOG"
model=""
while [ $# -gt 0 ]; do
    [ "$1" = --model-dir ] && model="$2"
    shift
done
if [ -e "$model/fails-the-check" ]; then
    echo "ERROR edge.cli: $(cat "$model/fails-the-check")" >&2
    exit 2
fi
echo "model: $model: labels a, b"
echo "check passed"
"""


def executable(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(0o755)
    return path


@pytest.fixture
def stand_in(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """(the --python option of a stand-in Python whose venvs hold a stand-in oido-edge, the
    environment: FAKE_LOG records each oido-edge call; a shims/ folder first on PATH)."""
    venv = tmp_path / "fake-venv"
    venv.mkdir()
    executable(venv / "python", FAKE_VENV_PYTHON)
    executable(venv / "oido-edge", FAKE_OIDO_EDGE)
    python = executable(tmp_path / "fake-python3", FAKE_BASE_PYTHON)
    shims = tmp_path / "shims"
    shims.mkdir()
    env = {**os.environ, "FAKE_VENV": str(venv), "FAKE_LOG": str(tmp_path / "calls.log"),
           "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    return ["--python", str(python)], env


def fake_model(folder: Path, version: str, *, check_fails: str | None = None) -> Path:
    """A model folder the installer accepts (the three files, by name); `check_fails`: what the
    stand-in check says when it fails on this model."""
    folder.mkdir(parents=True)
    for name in ("manifest.json", "yamnet.tflite", "head.tflite"):
        (folder / name).write_text(f"{name} of {version}", encoding="utf-8")
    if check_fails is not None:
        (folder / "fails-the-check").write_text(check_fails, encoding="utf-8")
    return folder


def installed_model(root: Path) -> dict[str, str]:
    model = root / "opt" / "oido" / "model"
    return {path.name: path.read_text(encoding="utf-8") for path in sorted(model.iterdir())} if model.is_dir() else {}


def test_a_rerun_whose_check_fails_keeps_the_previous_model_and_a_fixed_rerun_swaps_it_in(stand_in, tmp_path):
    python, env = stand_in
    root = tmp_path / "pi-root"
    install(root, fake_model(tmp_path / "v1", "v1"), *python, env=env)
    assert installed_model(root)["head.tflite"] == "head.tflite of v1"
    config = root / "etc" / "oido" / "oido.toml"
    config.write_text(config.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    kept_config = config.read_bytes()

    bad = fake_model(tmp_path / "v2", "v2", check_fails="oido.toml:49: [leds.pins] names class 'kettle'")
    result = install(root, bad, *python, env=env, status=1)
    # The check ran on the new model, before the swap; the old one is untouched.
    last_check = Path(env["FAKE_LOG"]).read_text(encoding="utf-8").splitlines()[-1]
    assert f"--model-dir {root}/opt/oido/model.new" in last_check and f"--config {config}" in last_check
    assert "--wait-for-input" in last_check.split()  # as the unit runs: a microphone plugged in later is no failure
    assert "names class 'kettle'" in result.stderr and "the check above failed" in result.stderr
    assert f"the previous model is still installed in {root}/opt/oido/model" in result.stderr
    assert "run this installer again" in result.stderr
    assert installed_model(root)["head.tflite"] == "head.tflite of v1"
    assert not (root / "opt/oido/model.new").exists() and not (root / "opt/oido/model.old").exists()
    assert config.read_bytes() == kept_config
    assert "staged under" not in result.stdout  # it stopped before the unit

    install(root, fake_model(tmp_path / "v3", "v3"), *python, env=env)
    assert installed_model(root) == {name: f"{name} of v3" for name in ("head.tflite", "manifest.json", "yamnet.tflite")}
    assert config.read_bytes() == kept_config


def test_a_first_install_whose_check_fails_installs_no_model_and_no_unit(stand_in, tmp_path):
    python, env = stand_in
    root = tmp_path / "pi-root"
    result = install(root, fake_model(tmp_path / "v1", "v1", check_fails="no audio input devices found"), *python,
                     env=env, status=1)  # fmt: skip
    assert "no model was installed" in result.stderr
    assert not (root / "opt/oido/model").exists() and not (root / "opt/oido/model.new").exists()
    assert not (root / "etc/systemd/system" / UNIT).exists()
    # The config is in place, for the user to fix before the rerun.
    assert (root / "etc/oido/oido.toml").read_bytes() == (REPO / "scripts/oido.toml").read_bytes()


def test_a_swap_cut_short_by_an_earlier_run_gets_its_previous_model_back(stand_in, tmp_path):
    """Power lost between the two renames of the swap: model.old is the only model there is."""
    python, env = stand_in
    root = tmp_path / "pi-root"
    install(root, fake_model(tmp_path / "v1", "v1"), *python, env=env)
    (root / "opt/oido/model").rename(root / "opt/oido/model.old")
    result = install(root, fake_model(tmp_path / "v2", "v2", check_fails="bad"), *python, env=env, status=1)
    assert "the previous model is still installed" in result.stderr
    assert installed_model(root)["head.tflite"] == "head.tflite of v1"
    assert not (root / "opt/oido/model.old").exists()


@pytest.mark.parametrize(
    "kernel, userland, pointer_bits, refused",
    [("aarch64", "armhf", "64", "armhf (dpkg --print-architecture; uname -m says aarch64) is not supported"),
     ("aarch64", "arm64", "32", "a 32-bit Python"),
     ("aarch64", "arm64", "64", None)],
)  # fmt: skip
def test_a_32_bit_userland_is_refused_before_anything_even_under_a_64_bit_kernel(stand_in, tmp_path, kernel, userland,
                                                                                  pointer_bits, refused):  # fmt: skip
    """32-bit Raspberry Pi OS on a Pi 4 or 5 boots a 64-bit kernel: uname says aarch64, the
    userland (dpkg's architecture, the Python) is armhf; no TF-Lite runtime has wheels for it."""
    python, env = stand_in
    shims = Path(env["PATH"].split(os.pathsep)[0])
    executable(shims / "uname", f"#!/bin/sh\necho {kernel}\n")
    executable(shims / "dpkg", f'#!/bin/sh\n[ "$1" = --print-architecture ] && echo {userland}\n')
    env["FAKE_POINTER_BITS"] = pointer_bits
    root = tmp_path / "pi-root"
    result = install(root, fake_model(tmp_path / "v1", "v1"), *python, env=env, status=0 if refused is None else 1)
    if refused is None:
        assert installed_model(root)
    else:
        assert refused in result.stderr and "Raspberry Pi OS (64-bit)" in result.stderr
        assert not (root / "opt").exists() and not (root / "etc").exists()


@pytest.mark.parametrize("options", [["--model-dir"], ["--extra"], ["--python"], ["--root"], ["--model-dir", "--no-start"],
                                     ["--model-dir", ""]])  # fmt: skip
def test_an_option_without_its_value_is_a_usage_error(options, tmp_path):
    result = subprocess.run(["bash", str(INSTALLER), *options], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"install_pi.sh: {options[0]} needs a value (see --help)" in result.stderr
    assert "unbound variable" not in result.stderr


# --- the unit


def unit_sections(text: str) -> dict[str, dict[str, list[str]]]:
    """section -> key -> values of a systemd unit (keys may repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
        elif line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            current.setdefault(key, []).append(value)
    return sections


def test_the_unit_gives_up_on_a_fault_every_start_hits_but_retries_a_late_microphone():
    """Restart=on-failure alone restarts a bad config every RestartSec forever. The start limit
    must be reachable (bursts of failed starts, each RestartSec plus up to 10 s to fail, fit in
    the interval) and must not give up on a transient fault within half a minute. A microphone
    missing at boot never counts: the unit's listen waits for it (--wait-for-input)."""
    unit = unit_sections((REPO / "scripts" / UNIT).read_text(encoding="utf-8"))
    assert "StartLimitIntervalSec" not in unit["Service"] and "StartLimitBurst" not in unit["Service"]
    interval = int(unit["Unit"]["StartLimitIntervalSec"][0])
    burst = int(unit["Unit"]["StartLimitBurst"][0])
    restart = int(unit["Service"]["RestartSec"][0])
    assert unit["Service"]["Restart"] == ["on-failure"]
    assert burst * (restart + 10) <= interval
    assert burst * restart >= 30
    assert "--wait-for-input" in unit["Service"]["ExecStart"][0].split()


def test_the_unit_leaves_the_sound_and_gpio_devices_visible():
    """No device allow-list: ProtectClock= on systemd before PR #25075 (bullseye's 247) implies
    DeviceAllow=char-rtc, which hides /dev/snd and /dev/gpiochip* from the service."""
    service = unit_sections((REPO / "scripts" / UNIT).read_text(encoding="utf-8"))["Service"]
    for key in ("ProtectClock", "PrivateDevices", "DeviceAllow", "DevicePolicy"):
        assert key not in service, key


# --- scripts/setup.sh and the scripts that follow it: which Python they install into and run

FAKE_PYTHON3 = '''#!{executable}
"""Stands in for python3 (and, copied by `-m venv`, for a venv's python): records every call;
`-m` commands (pip, pytest, train, ...) succeed; `-c` code runs for real, with the stdlib folder
FAKE_STDLIB (where a test puts EXTERNALLY-MANAGED, or not), and with the project not installed
unless FAKE_INSTALLED=1 (its import of tensorflow fails)."""
import os
import shutil
import sys
import sysconfig
from pathlib import Path

me = Path(sys.argv[0])
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as log:
    log.write(" ".join([str(me), *args]) + "\\n")
if args[:2] == ["-m", "venv"]:
    venv = Path(args[-1])
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = fake\\n")
    shutil.copy(me, venv / "bin" / "python")
elif args[:1] == ["-c"]:
    if "tensorflow" in args[1] and os.environ.get("FAKE_INSTALLED") != "1":
        sys.exit(1)
    if not (me.parent.parent / "pyvenv.cfg").exists():
        sys.prefix = sys.base_prefix
    else:
        sys.prefix = str(me.parent.parent)
    real_get_path = sysconfig.get_path
    sysconfig.get_path = lambda name, *more: os.environ["FAKE_STDLIB"] if name == "stdlib" else real_get_path(name, *more)
    if "tensorflow" not in args[1]:
        sys.argv = ["-c", *args[2:]]
        exec(compile(args[1], "<string>", "exec"))
'''


@pytest.fixture
def workstation(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """(a checkout holding copies of setup.sh, test.sh and run_default.sh, with stand-ins for the
    Pi environments' scripts and a model; the environment: a stand-in python3 and dpkg first on
    PATH, FAKE_STDLIB an empty stdlib folder, FAKE_LOG the record of every Python call)."""
    checkout = tmp_path / "checkout"
    (checkout / "scripts").mkdir(parents=True)
    for script in ("setup.sh", "test.sh", "run_default.sh"):
        shutil.copyfile(REPO / "scripts" / script, checkout / "scripts" / script)
    for script in ("edge_env.sh", "legacy_env.sh"):
        executable(checkout / "scripts" / script, "#!/bin/sh\nexit 0\n")
    (checkout / "model").mkdir()
    (checkout / "model" / "manifest.json").write_text("{}", encoding="utf-8")
    shims = tmp_path / "shims"
    shims.mkdir()
    executable(shims / "python3", FAKE_PYTHON3.format(executable=sys.executable))
    executable(shims / "dpkg", "#!/bin/sh\nexit 0\n")  # every system package is there already
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHON", "VIRTUAL_ENV")}
    env.update(PATH=f"{shims}{os.pathsep}{os.environ['PATH']}", FAKE_STDLIB=str(stdlib), FAKE_LOG=str(tmp_path / "calls.log"))
    return checkout, env


def run_script(checkout: Path, script: str, env: dict[str, str], status: int = 0) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run one of the checkout's scripts; (its output, the Python calls it made, as 'PYTHON ARGS...')."""
    log = Path(env["FAKE_LOG"])
    log.unlink(missing_ok=True)
    result = subprocess.run(["bash", str(checkout / "scripts" / script)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == status, f"{script} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result, log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def test_setup_makes_a_venv_where_python3_is_externally_managed_and_every_script_uses_it(workstation):
    """Debian 12, Ubuntu 23.04+: pip refuses to install into the system's python3 (PEP 668)."""
    checkout, env = workstation
    (Path(env["FAKE_STDLIB"]) / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n", encoding="utf-8")
    venv_python = checkout / ".venv" / "bin" / "python"
    result, calls = run_script(checkout, "setup.sh", env)
    assert f"python3 -m venv {checkout}/.venv" in "\n".join(calls)
    assert f"{venv_python} -m pip install -q -e .[train,edge,test]" in calls
    assert not [call for call in calls if " -m pip install -q -e" in call and not call.startswith(str(venv_python))]
    assert re.search(rf"^setup: ready: Python [\d.]+ at {re.escape(str(venv_python))} \(a venv, since python3 is externally "
                     r"managed\)$", result.stdout, re.M), result.stdout  # fmt: skip

    _, calls = run_script(checkout, "setup.sh", env)  # again: the venv is reused
    assert not [call for call in calls if "-m venv" in call]
    _, calls = run_script(checkout, "test.sh", env)
    assert f"{venv_python} -m pytest -q" in calls
    _, calls = run_script(checkout, "run_default.sh", {**env, "OIDO_SKIP_SETUP": "1"})
    steps = [call for call in calls if " -m train" in call or " -m convert" in call or "replay_test_clips" in call]
    assert len(steps) == 7 and all(call.startswith(f"{venv_python} ") for call in steps), calls


@pytest.mark.parametrize("installed", [False, True])
def test_setup_installs_into_python3_where_pip_may_and_the_tests_run_there(workstation, installed):
    """A python3 pip installs into (CI's; a pyenv or a container's own), or one the project is
    already installed in (.ci/run's pip, even if the marker is there): no venv, and test.sh runs
    the tests with that python3."""
    checkout, env = workstation
    python3 = env["PATH"].split(os.pathsep)[0] + "/python3"
    if installed:
        env["FAKE_INSTALLED"] = "1"
        (Path(env["FAKE_STDLIB"]) / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n", encoding="utf-8")
    result, calls = run_script(checkout, "setup.sh", env)
    assert not (checkout / ".venv").exists()
    pip_installs = [call for call in calls if "-m pip install" in call]
    assert pip_installs == ([] if installed else [f"{python3} -m pip install -q -e .[train,edge,test]"])
    assert "at python3 (python3 on PATH)" in result.stdout
    _, calls = run_script(checkout, "test.sh", env)
    assert f"{python3} -m pytest -q" in calls


def test_an_explicit_python_wins_over_the_checkouts_venv(workstation, tmp_path):
    checkout, env = workstation
    (Path(env["FAKE_STDLIB"]) / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n", encoding="utf-8")
    run_script(checkout, "setup.sh", env)  # makes .venv
    chosen = tmp_path / "chosen" / "bin" / "python"
    chosen.parent.mkdir(parents=True)
    shutil.copy(env["PATH"].split(os.pathsep)[0] + "/python3", chosen)
    (chosen.parent.parent / "pyvenv.cfg").write_text("home = fake\n")  # a venv of the user's own
    env["PYTHON"] = str(chosen)
    result, calls = run_script(checkout, "test.sh", env)
    assert f"{chosen} -m pip install -q -e .[train,edge,test]" in calls and f"{chosen} -m pytest -q" in calls
    assert f"at {chosen} ($PYTHON)" in result.stdout
    assert not [call for call in calls if call.startswith(str(checkout / ".venv"))]


def test_setup_refuses_an_explicit_python_that_is_externally_managed_naming_the_way_out(workstation):
    checkout, env = workstation
    (Path(env["FAKE_STDLIB"]) / "EXTERNALLY-MANAGED").write_text("[externally-managed]\n", encoding="utf-8")
    env["PYTHON"] = "python3"
    result, calls = run_script(checkout, "setup.sh", env, status=1)
    assert "setup: python3 is externally managed (PEP 668)" in result.stderr and "unset PYTHON" in result.stderr
    assert not [call for call in calls if "-m pip" in call or "-m venv" in call]
