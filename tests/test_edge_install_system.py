"""scripts/install_pi.sh as it runs on a Pi: as root, into /, with the user `oido` and `runuser`.

tests/test_edge_install.py stages the install under a directory. This test runs the branch that
staging skips: the system user and its groups, the start-up check run as that user through
`runuser`, and the decision to (re)start the service or not. Two commands are stood in for by
PATH shims that record their arguments: systemctl (there is no systemd as PID 1 here) and
apt-get (Debian's workstation archive has no python3-lgpio, and CI installs the rest itself).
The rest is real: useradd, usermod, runuser, the venv from Debian's python3, the pip install,
and the installed `oido-edge listen --check` reading /etc/oido and /opt/oido as `oido`, and
finding the virtual microphone.

It changes this machine (a user, /opt/oido, /etc/oido, a unit, a logrotate rule) and removes
them after, so it runs only where asked: OIDO_SYSTEM_TESTS=1, as root, on a machine where
none of them exists yet (.ci/run's fresh machine).
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import REPO, shipped_model_dir  # noqa: E402
from fixtures.virtual_mic import virtual_mic_env  # noqa: E402

INSTALLER = REPO / "scripts" / "install_pi.sh"
USER = "oido"
UNIT = "oido-edge.service"
INSTALLED = [Path("/opt/oido"), Path("/etc/oido"), Path("/etc/systemd/system") / UNIT, Path("/etc/logrotate.d/oido-edge")]
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


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
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
    if not Path("/usr/bin/python3").is_file():
        pytest.skip("needs Debian's /usr/bin/python3, as on Raspberry Pi OS")
    present = [str(p) for p in INSTALLED if p.exists()] + ([f"user {USER}"] if _user_exists(USER) else [])
    if present:
        pytest.skip(f"Oído is installed on this machine ({', '.join(present)}): this test would replace it")
    groups_before = {name for name in GROUPS if _group_exists(name)}
    shims = tmp_path_factory.mktemp("shims")
    for name in ("systemctl", "apt-get"):
        (shims / name).write_text(SHIM)
        (shims / name).chmod(0o755)
    env = {**shared_mic, "PATH": f"{shims}{os.pathsep}{os.environ['PATH']}", "OIDO_SHIM_LOG": str(shims / "calls.log")}
    env.pop("PYTHONPATH", None)  # the installed command must run its own copy of the code, not this checkout
    try:
        yield env
    finally:
        if _user_exists(USER):
            subprocess.run(["userdel", USER], capture_output=True, timeout=60)
        for name in set(GROUPS) - groups_before:
            if _group_exists(name):
                subprocess.run(["groupdel", name], capture_output=True, timeout=60)
        for path in INSTALLED:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


def install(env: dict[str, str], *options: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """One installer run as root into /; (its output, the systemctl and apt-get calls it made)."""
    log = Path(env["OIDO_SHIM_LOG"])
    log.unlink(missing_ok=True)
    # Run from a folder only root may enter, as `sudo scripts/install_pi.sh` runs from a Pi's home
    # (0700 on bookworm): the check, as oido, must not depend on the folder it was started from.
    home = Path(env["OIDO_SHIM_LOG"]).parent / "home"
    home.mkdir(mode=0o700, exist_ok=True)
    result = subprocess.run(["bash", str(INSTALLER), "--model-dir", str(shipped_model_dir()), "--python", "/usr/bin/python3",
                             *options], capture_output=True, text=True, timeout=900, env=env, cwd=home)  # fmt: skip
    assert result.returncode == 0, f"install_pi.sh failed:\n{result.stdout}\n{result.stderr}"
    calls = log.read_text().splitlines() if log.exists() else []
    return result, calls


def test_first_install_makes_the_user_checks_as_it_and_starts_the_service(system):
    result, calls = install(system)
    # apt was asked for what the Pi needs, among them the lgpio the venv's gpiozero uses.
    apt = [c for c in calls if c.startswith("apt-get ")]
    assert apt[0] == "apt-get update -qq" and "python3-lgpio" in apt[1] and "libportaudio2" in apt[1], apt
    user = pwd.getpwnam(USER)
    assert user.pw_shell == "/usr/sbin/nologin" and user.pw_dir == "/var/lib/oido"
    for name in GROUPS:
        assert USER in grp.getgrnam(name).gr_mem, name
    # The check ran as oido through runuser: it read /etc/oido and /opt/oido and found the microphone.
    assert "check passed" in result.stdout, result.stdout + result.stderr
    assert "LEDs: crying_baby GPIO17" in result.stdout
    assert [c for c in calls if c.startswith("systemctl ")] == [
        "systemctl daemon-reload", f"systemctl enable {UNIT}", f"systemctl restart {UNIT}"]  # fmt: skip
    assert f"started: journalctl -u {UNIT} -f" in result.stdout
    assert Path("/etc/systemd/system", UNIT).read_bytes() == (REPO / "scripts" / UNIT).read_bytes()
    # What the unit runs, as its user: oido can run the installed command.
    version = subprocess.run(["runuser", "-u", USER, "--", "/opt/oido/venv/bin/oido-edge", "--help"],
                             capture_output=True, text=True, timeout=120, cwd="/")  # fmt: skip
    assert version.returncode == 0 and "listen" in version.stdout, version.stderr


def test_a_rerun_whose_check_fails_leaves_the_running_service_alone(system):
    config = Path("/etc/oido/oido.toml")
    config.write_text(config.read_text(encoding="utf-8").replace("water_drops = 23", "kettle = 23"), encoding="utf-8")
    result, calls = install(system)
    assert "keeping the existing /etc/oido/oido.toml" in result.stdout
    assert "names class 'kettle', which is not one of the labels" in result.stderr
    assert "the check above failed" in result.stderr
    # Enabled, never restarted: a running service keeps the model it loaded until the fix.
    assert [c for c in calls if c.startswith("systemctl ")] == ["systemctl daemon-reload", f"systemctl enable {UNIT}"]
    assert "not (re)started: the check failed" in result.stdout
    for name in GROUPS:  # the user was kept, with its groups (usermod on a rerun)
        assert USER in grp.getgrnam(name).gr_mem, name


def test_the_check_runs_as_oido_so_a_config_only_root_can_read_fails_it(system):
    """A config saved by an editor that keeps it owner-only: root could read it, the service could
    not. The check, run as oido, says so at install time instead of in the journal later."""
    config = Path("/etc/oido/oido.toml")
    config.chmod(0o600)
    try:
        result, calls = install(system)
    finally:
        config.chmod(0o644)
    assert "the check above failed" in result.stderr
    assert f"cannot be read by user {USER}" in result.stderr and f"sudo chmod 644 {config}" in result.stderr, result.stderr
    assert f"systemctl restart {UNIT}" not in calls


def test_no_start_installs_and_enables_without_starting(system):
    config = Path("/etc/oido/oido.toml")
    config.write_text(config.read_text(encoding="utf-8").replace("kettle = 23", "water_drops = 23"), encoding="utf-8")
    result, calls = install(system, "--no-start")
    assert "check passed" in result.stdout, result.stderr
    assert [c for c in calls if c.startswith("systemctl ")] == ["systemctl daemon-reload", f"systemctl enable {UNIT}"]
    assert f"installed; start it with: systemctl start {UNIT}" in result.stdout
