"""The edge package runs where TensorFlow does not exist (the Pi): proven with TensorFlow made unimportable.

A subprocess installs an import blocker for tensorflow, keras, tensorflow_hub and the
workstation packages (train, convert), then imports every edge module and runs
`oido-edge --help` and `oido-edge devices`.
"""

from __future__ import annotations

import ast
import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = textwrap.dedent(
    """
    import importlib.abc
    import sys

    BLOCKED = ("tensorflow", "keras", "tensorflow_hub", "tf_keras", "train", "convert")

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked: the edge must not need it)")
            return None

    sys.meta_path.insert(0, Blocker())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    """
)


def run_blocked(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )


def test_the_blocker_really_blocks_tensorflow():
    result = run_blocked("import tensorflow\n")
    assert result.returncode != 0 and "blocked" in result.stderr


def cli_command_modules() -> set[str]:
    """The edge modules edge/cli.py imports, at the top or inside its commands (most lazily)."""
    tree = ast.parse((REPO / "edge" / "cli.py").read_text(encoding="utf-8"))
    return {node.module for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "edge"}


def test_every_edge_module_imports_without_tensorflow_and_without_opening_audio():
    result = run_blocked(
        """
        import importlib, json, pkgutil, sys
        import edge
        names = sorted(m.name for m in pkgutil.iter_modules(edge.__path__) if m.name != "__main__")
        for name in names:
            importlib.import_module(f"edge.{name}")
        heavy = sorted(m for m in ("tensorflow", "keras", "sounddevice", "train", "convert") if m in sys.modules)
        print(json.dumps({"imported": sorted(m for m in sys.modules if m.startswith("edge.")), "heavy": heavy}))
        """
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert outcome["heavy"] == [], outcome
    imported = set(outcome["imported"])
    every_module = {f"edge.{path.stem}" for path in (REPO / "edge").glob("*.py") if path.stem not in ("__init__", "__main__")}
    assert every_module <= imported, sorted(every_module - imported)
    # The CLI and every module its commands import are among them.
    assert "edge.cli" in imported and {"edge.listen", "edge.record", "edge.sources", "edge.leds"} <= cli_command_modules()
    assert cli_command_modules() <= imported, sorted(cli_command_modules() - imported)


def test_help_and_devices_work_without_tensorflow():
    result = run_blocked(
        """
        import sys
        from edge.cli import main
        try:
            main(["--help"])
        except SystemExit as exit_:
            assert exit_.code == 0, exit_.code
        assert "sounddevice" not in sys.modules, "--help must not load PortAudio"
        code = main(["devices"])
        print("devices exit", code)
        sys.exit(code)
        """
    )
    assert "usage: oido-edge" in result.stdout
    assert "Traceback" not in result.stderr
    if sounddevice_loads():
        assert result.returncode == 0, result.stderr
        # Either a table of inputs or the "no inputs" hint: both are a working command.
        assert "index" in result.stdout or "no audio input devices" in result.stdout
    else:
        # Without sounddevice/PortAudio (a bare TF-Lite venv) devices fails cleanly, with the fix.
        assert result.returncode == 1 and ("pip install" in result.stderr or "libportaudio2" in result.stderr)


def sounddevice_loads() -> bool:
    """Whether sounddevice imports here (it raises OSError when PortAudio is missing)."""
    try:
        importlib.import_module("sounddevice")
    except (ImportError, OSError):
        return False
    return True


def test_python_dash_m_edge_is_the_console_script():
    result = subprocess.run(
        [sys.executable, "-m", "edge", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0 and "usage: oido-edge" in result.stdout
