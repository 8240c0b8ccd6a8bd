"""scripts/install_pi.sh as it runs on a Pi: as root, into /, with the user `oido` and `runuser`.

tests/test_edge_install.py stages the install under a directory. This test runs the branch that
staging skips: the system user and its groups, the start-up check run as that user through
`runuser`, and the decision to (re)start the service or not. Two commands are stood in for by
PATH shims that record their arguments: systemctl (there is no systemd as PID 1 here) and
apt-get (Debian bookworm's archive has no python3-lgpio, Raspberry Pi OS's has; CI installs the
rest itself). The rest is real: useradd, usermod, runuser, the venv from Debian's python3, the
pip install, the installed `oido-edge listen --check` reading /etc/oido and /opt/oido as `oido`
and finding the virtual microphone, and the unit's own command run by hand as its user.

It changes this machine (a user, /opt/oido, /etc/oido, a unit, a logrotate rule) and removes
them after, so it runs only where asked: OIDO_SYSTEM_TESTS=1, as root, on a machine where
none of them exists yet (.ci/run's fresh machine).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import PINS, REPO, esc50_clip, shipped_model_dir  # noqa: E402
from fixtures.installer import INSTALLER, UNIT, pi_like_python  # noqa: E402
from fixtures.virtual_mic import Running, play, virtual_mic_env  # noqa: E402

USER = "oido"
STATE = Path("/var/lib/oido")
"""The unit's StateDirectory: systemd makes it at start, owned by oido; the test stands in for that."""
INSTALLED = [Path("/opt/oido"), Path("/etc/oido"), Path("/etc/systemd/system") / UNIT, Path("/etc/logrotate.d/oido-edge"), STATE]
GROUPS = ("gpio", "audio")
SHIM = """#!/bin/sh
echo "$(basename "$0") $*" >> "$OIDO_SHIM_LOG"
"""

pytestmark = [
    pytest.mark.slow, pytest.mark.mic, pytest.mark.system,
    pytest.mark.skipif(os.environ.get("OIDO_SYSTEM_TESTS") != "1",
                       reason="changes the system (user oido, /opt/oido, /etc/oido): set OIDO_SYSTEM_TESTS=1 to run it"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the installer's system branch runs as root"),
]  # fmt: skip


def _known(lookup: Callable[[str], object], name: str) -> bool:
    """Whether the user (pwd.getpwnam) or group (grp.getgrnam) `name` exists."""
    try:
        lookup(name)
    except KeyError:
        return False
    return True


@pytest.fixture(scope="module")
def shared_mic() -> Iterator[dict[str, str]]:
    """A virtual microphone whose socket every local user can reach (the check runs as `oido`)."""
    yield from virtual_mic_env(shared_dir="/tmp/oido-pulse-shared")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, shared_mic: dict[str, str]) -> Iterator[dict[str, str]]:
    """The environment for installer runs (shims first on PATH); removes what the installs made."""
    for tool in ("runuser", "useradd", "usermod", "groupadd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    if not pi_like_python():
        pytest.skip("needs Debian's /usr/bin/python3 with venv (python3-venv), as on Raspberry Pi OS")
    present = [str(p) for p in INSTALLED if p.exists()] + ([f"user {USER}"] if _known(pwd.getpwnam, USER) else [])
    if present:
        pytest.skip(f"Oído is installed on this machine ({', '.join(present)}): this test would replace it")
    groups_before = {name for name in GROUPS if _known(grp.getgrnam, name)}
    shims = tmp_path_factory.mktemp("shims")
    for name in ("systemctl", "apt-get"):
        (shims / name).write_text(SHIM)
        (shims / name).chmod(0o755)
    env = {**shared_mic, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "OIDO_SHIM_LOG": str(shims / "calls.log")}
    env.pop("PYTHONPATH", None)  # the installed command must run its own copy of the code, not this checkout
    try:
        yield env
    finally:
        if _known(pwd.getpwnam, USER):
            subprocess.run(["userdel", USER], capture_output=True, timeout=60)
        for name in set(GROUPS) - groups_before:
            if _known(grp.getgrnam, name):
                subprocess.run(["groupdel", name], capture_output=True, timeout=60)
        for path in INSTALLED:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def install(env: dict[str, str], *options: str, status: int = 0) -> tuple[subprocess.CompletedProcess, list[str]]:
    """One installer run as root into /, exiting with `status`; (its output, the systemctl and
    apt-get calls it made)."""
    log = Path(env["OIDO_SHIM_LOG"])
    log.unlink(missing_ok=True)
    # Run from a folder only root may enter, as `sudo scripts/install_pi.sh` runs from a Pi's home
    # (0700 on bookworm): the check, as oido, must not depend on the folder it was started from.
    home = Path(env["OIDO_SHIM_LOG"]).parent / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(["bash", str(INSTALLER), "--model-dir", str(shipped_model_dir()), *pi_like_python(), *options],
                            capture_output=True, text=True, timeout=900, env=env, cwd=home)  # fmt: skip
    assert result.returncode == status, f"install_pi.sh exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


@pytest.fixture(scope="module")
def first_install(system: dict[str, str]) -> tuple[subprocess.CompletedProcess, list[str]]:
    """The installer's first run on this machine (every test below starts from it)."""
    return install(system)


def test_first_install_makes_the_user_checks_as_it_and_starts_the_service(first_install):
    result, calls = first_install
    # apt was asked for what the Pi needs, among them the lgpio the venv's gpiozero uses.
    apt = [c for c in calls if c.startswith("apt-get ")]
    assert apt[0] == "apt-get update -qq" and "python3-lgpio" in apt[1] and "libportaudio2" in apt[1], apt
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_dir == "/var/lib/oido"
    for name in GROUPS:
        assert USER in grp.getgrnam(name).gr_mem, name
    # The check ran as oido through runuser: it read /etc/oido and the new model (before the swap)
    # and found the microphone.
    assert "check passed" in result.stdout, result.stdout + result.stderr
    assert "model: /opt/oido/model.new: labels" in result.stdout and "LEDs: crying_baby GPIO17" in result.stdout
    assert not Path("/opt/oido/model.new").exists()
    # reset-failed: a service that gave up (its start limit) would refuse the restart.
    assert [c for c in calls if c.startswith("systemctl ")] == [
        "systemctl daemon-reload", f"systemctl enable {UNIT}", f"systemctl reset-failed {UNIT}",
        f"systemctl restart {UNIT}"]  # fmt: skip
    assert f"started: journalctl -u {UNIT} -f" in result.stdout
    assert Path("/etc/systemd/system", UNIT).read_bytes() == (REPO / "scripts" / UNIT).read_bytes()
    # What the unit runs, as its user: oido can run the installed command.
    version = subprocess.run(["runuser", "-u", USER, "--", "/opt/oido/venv/bin/oido-edge", "--help"],
                             capture_output=True, text=True, timeout=120, cwd="/")  # fmt: skip
    assert version.returncode == 0 and "listen" in version.stdout, version.stderr


def unit_settings() -> dict[str, list[str]]:
    """The installed unit's [Service] settings: key -> values (Environment= may come more than once)."""
    settings: dict[str, list[str]] = {}
    for line in Path("/etc/systemd/system", UNIT).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_the_service_command_as_its_user_hears_a_crying_baby_and_logs_it(system, first_install):
    """What systemd would start, started by hand: the unit's ExecStart, as its User, in its
    WorkingDirectory (the StateDirectory, made as systemd makes it) with its Environment, for 9 s
    (--duration) with mock pins. A crying baby played into the microphone lights GPIO17 only,
    and the event lands in /var/lib/oido/events.jsonl, where `oido-edge events` finds it."""
    settings = unit_settings()
    user = pwd.getpwnam(settings["User"][0])
    STATE.mkdir(mode=0o750)
    os.chown(STATE, user.pw_uid, user.pw_gid)
    env = dict(system)
    for assignment in settings["Environment"]:
        key, value = assignment.split("=", 1)
        env[key] = value.replace("%S", "/var/lib")
    command = settings["ExecStart"][0].split() + ["--duration", "9", "--mock-gpio"]
    listener = Running(["runuser", "-u", user.pw_name, "--", *command], env, cwd=STATE)
    listener.wait_for_line("listening on input", timeout=120)
    assert play(esc50_clip("crying_baby"), env).returncode == 0
    returncode, stdout, stderr = listener.finish(timeout=120)
    assert returncode == 0, stderr
    lit = {label for label, history in re.findall(r"^gpio (\S+) pin \S+: (.*)$", stdout, re.M) if "on@" in history}
    assert lit & set(PINS) == {"crying_baby"}, stdout
    log = STATE / "events.jsonl"
    assert log.stat().st_uid == user.pw_uid
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert records and {r["label"] for r in records} == {"crying_baby"}, records
    history = subprocess.run(["/opt/oido/venv/bin/oido-edge", "events", "--config", "/etc/oido/oido.toml"],
                             capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert history.returncode == 0 and "crying_baby" in history.stdout, history.stdout + history.stderr
    # Another user (the Pi's own login, here `nobody`) is told how to read it, not shown a traceback.
    refused = subprocess.run(["runuser", "-u", "nobody", "--", "/opt/oido/venv/bin/oido-edge", "events", "--config",
                              "/etc/oido/oido.toml"], capture_output=True, text=True, timeout=120, env=env, cwd="/")  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "/var/lib/oido: permission denied" in refused.stderr
    assert "sudo /opt/oido/venv/bin/oido-edge events" in refused.stderr and "Traceback" not in refused.stderr


def installed_files(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (the model may hold sub-folders, e.g. tutorial/) -> its bytes."""
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def test_a_rerun_whose_check_fails_leaves_the_model_and_the_service_alone(system, first_install):
    config = Path("/etc/oido/oido.toml")
    example = (REPO / "scripts" / "oido.toml").read_text(encoding="utf-8")
    config.write_text(example.replace("water_drops = 23", "kettle = 23"), encoding="utf-8")
    model = installed_files(Path("/opt/oido/model"))
    result, calls = install(system, status=1)
    assert "keeping the existing /etc/oido/oido.toml" in result.stdout
    assert "names class 'kettle', which is not one of the labels" in result.stderr
    assert "the check above failed" in result.stderr
    # No swap, no systemctl: the installed model stays the one a restart or a reboot loads.
    assert "the previous model is still installed in /opt/oido/model" in result.stderr
    assert installed_files(Path("/opt/oido/model")) == model
    assert not Path("/opt/oido/model.new").exists()
    assert [c for c in calls if c.startswith("systemctl ")] == []
    for name in GROUPS:  # the user was kept, with its groups (usermod on a rerun)
        assert USER in grp.getgrnam(name).gr_mem, name


def test_the_check_runs_as_oido_so_a_config_only_root_can_read_fails_it(system, first_install):
    """A config saved by an editor that keeps it owner-only: root could read it, the service could
    not. The check, run as oido, says so at install time instead of in the journal later."""
    config = Path("/etc/oido/oido.toml")
    shutil.copyfile(REPO / "scripts" / "oido.toml", config)
    config.chmod(0o600)
    try:
        result, calls = install(system, status=1)
    finally:
        config.chmod(0o644)
    assert "the check above failed" in result.stderr
    assert f"cannot be read by user {USER}" in result.stderr and f"sudo chmod 644 {config}" in result.stderr, result.stderr
    assert f"systemctl restart {UNIT}" not in calls


def test_no_start_installs_and_enables_without_starting(system, first_install):
    shutil.copyfile(REPO / "scripts" / "oido.toml", "/etc/oido/oido.toml")
    result, calls = install(system, "--no-start")
    assert "check passed" in result.stdout, result.stderr
    assert [c for c in calls if c.startswith("systemctl ")] == ["systemctl daemon-reload", f"systemctl enable {UNIT}"]
    assert f"installed; start it with: systemctl start {UNIT}" in result.stdout
