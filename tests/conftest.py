"""Shared test hygiene."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _restore_root_logging() -> Iterator[None]:
    """A CLI's main() configures the root logger on the stderr pytest captured for that test;
    left in place, that handler writes to a closed stream in every later test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


@pytest.fixture(scope="module")
def virtual_mic() -> Iterator[dict[str, str]]:
    """Environment for subprocesses that capture from the virtual microphone (PULSE_SERVER set);
    skips where PulseAudio is missing (tests/fixtures/virtual_mic.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixtures.virtual_mic import virtual_mic_env

    yield from virtual_mic_env()


@pytest.fixture(scope="module")
def real_models() -> tuple:
    """(YamnetTflite of the YAMNet asset, HeadTflite of the tiny head fixture); skips where the
    asset or a TF-Lite runtime is missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from edge.runtime import available_backend
    from fixtures.edge_models import ASSET_YAMNET, TINY_HEAD

    if available_backend() is None:
        pytest.skip("no TF-Lite runtime installed")
    if not ASSET_YAMNET.is_file():
        pytest.skip(f"YAMNet asset missing: {ASSET_YAMNET}")
    from edge.head import HeadTflite
    from edge.yamnet import YamnetTflite

    return YamnetTflite(ASSET_YAMNET), HeadTflite(TINY_HEAD)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real YAMNet asset + the fixture head over ("beep", "speech", "other"), built once;
    skips where the asset or a TF-Lite runtime is missing."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fixtures.edge_models import ASSET_YAMNET, real_model_dir

    if not ASSET_YAMNET.is_file():
        pytest.skip(f"YAMNet asset not found at {ASSET_YAMNET}")
    model_dir = tmp_path_factory.mktemp("tiny_model")
    try:
        real_model_dir(model_dir)
    except (ImportError, RuntimeError) as error:  # no TF-Lite runtime here
        pytest.skip(f"cannot load the TF-Lite models: {error}")
    return model_dir
