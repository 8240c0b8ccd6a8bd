"""The shipped model on a Raspberry Pi's instruction set: scripts/arm64_check.sh replays golden
clips (`python -m convert check`) under qemu-aarch64, with Debian bookworm's arm64 Python and the
aarch64 ai-edge-litert wheel, as a Pi 4 (Cortex-A72) and a Pi 5 (Cortex-A76, int8 dot products),
then `oido-edge replay` of a 44.1 kHz crying baby (resampled in stream) with the example config's
pins on gpiozero's MockFactory.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.assets import REPO, esc50_clip, shipped_model_dir  # noqa: E402

CLIPS = 6  # emulated, a golden clip takes about 3 s (1.8 s for all 104 natively): a few per CPU


@pytest.mark.slow
def test_golden_decisions_hold_on_emulated_pi4_and_pi5_cpus(tmp_path: Path):
    if shutil.which("qemu-aarch64-static") is None:
        pytest.skip("qemu-aarch64-static is not installed (apt-get install qemu-user-static)")
    model_dir = shipped_model_dir()
    clip = esc50_clip("crying_baby")
    result = subprocess.run(  # outside the repository: --data-dir's default is the repository's data/
        ["bash", str(REPO / "scripts" / "arm64_check.sh"), "--cpu", "both", "--limit", str(CLIPS),
         "--model-dir", str(model_dir),
         "--", "replay", str(clip), "--mock-gpio", "--summary-only", "--config", str(REPO / "scripts" / "oido.toml"),
         "--model-dir", str(model_dir)],
        capture_output=True, text=True, timeout=1800, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "== pi4 (cortex-a72, emulated)" in out and "== pi5 (cortex-a76, emulated)" in out
    assert out.count("python 3.11.") == 2 and out.count(" on aarch64") == 2
    assert out.count(f"{CLIPS}/{CLIPS} decisions equal to golden.json") == 2, out
    assert out.count(f"{clip}: crying_baby") == 2, out
    lit = re.findall(r"gpio (\w+) pin \d+: off@0\.00 on@", out)
    assert lit.count("crying_baby") == 2 and lit.count("status") == 2 and len(lit) == 4, lit


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--limit"], "--limit needs a value"),
        (["--cpu"], "--cpu needs a value"),
        (["--model-dir", "--limit", "3"], "--model-dir needs a value"),
        (["--limit", "0"], "--limit 0: give a whole number of clips from 1 up"),
        (["--limit", "-3"], "--limit -3: give a whole number of clips from 1 up"),
    ],
)
def test_a_flag_without_its_value_or_a_limit_below_one_is_refused_before_any_setup(args, message):
    result = subprocess.run(["bash", str(REPO / "scripts" / "arm64_check.sh"), *args],
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == f"arm64_check.sh: {message}" + ("" if "needs" not in message else " (see --help)") + "\n"
