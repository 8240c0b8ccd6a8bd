"""The embedding cache (train.embeddings): computed once, reused, robust to damage and interruption.

A counting stand-in replaces YAMNet (no TensorFlow): its "embedding" of a patch is a fixed
function of the patch, so cached and recomputed values can be compared exactly.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")

from edge.audio import write_wav  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from train.embeddings import (  # noqa: E402
    MODEL_DIR_CHARS,
    SILENCE_DBFS,
    EmbeddingCache,
    embed_files,
    file_sha256,
    patch_rms_dbfs,
)

RATE = DEFAULT_PARAMS.sample_rate_hz
REPO = Path(__file__).resolve().parents[1]


class CountingEmbedder:
    """Stands in for YAMNet: counts the patches it is asked to embed."""

    def __init__(self, weights_sha256: str = "a1" * 32, *, fail_after_calls: int | None = None, numerics: str = "") -> None:
        self.weights_sha256 = weights_sha256
        self.numerics = numerics
        self.calls = 0
        self.patches = 0
        self.fail_after_calls = fail_after_calls

    def embed_patches(self, patches: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        self.calls += 1
        self.patches += len(patches)
        embeddings = np.tile(patches[:, :64], (1, DEFAULT_PARAMS.embedding_size // 64))
        scores = np.abs(patches[:, : DEFAULT_PARAMS.yamnet_classes])
        return embeddings.astype(np.float32), scores.astype(np.float32)


def make_clips(folder: Path, count: int, *, seconds: float = 1.0) -> list[Path]:
    """`count` distinct noise clips as 16 kHz float WAVs."""
    rng = np.random.default_rng(7)
    paths = []
    for index in range(count):
        path = folder / f"clip{index}.wav"
        write_wav(path, 0.1 * rng.standard_normal(int(seconds * RATE)).astype(np.float32), rate_hz=RATE)
        paths.append(path)
    return paths


def cache_entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.npz"))


def test_a_five_second_clip_gives_ten_patch_embeddings_and_scores(tmp_path: Path) -> None:
    (path,) = make_clips(tmp_path, 1, seconds=5.0)
    (clip,) = embed_files([path], CountingEmbedder(), cache_root=tmp_path / "cache")
    assert clip.embeddings.shape == (10, DEFAULT_PARAMS.embedding_size)
    assert clip.scores.shape == (10, DEFAULT_PARAMS.yamnet_classes)
    assert clip.embeddings.dtype == np.float32
    assert clip.audio_sha256 == file_sha256(path)


def test_patch_levels_follow_the_edge_formula_and_silence_is_the_floor(tmp_path: Path) -> None:
    waveform = np.zeros(5 * RATE, np.float32)
    waveform[: RATE // 2] = 0.5  # a DC level: RMS 0.5 -> -6.02 dBFS in the first patch
    path = tmp_path / "half.wav"
    write_wav(path, waveform, rate_hz=RATE)
    (clip,) = embed_files([path], CountingEmbedder(), cache_root=tmp_path / "cache")
    assert clip.rms_dbfs.shape == (10,)
    first_patch = waveform[: DEFAULT_PARAMS.patch_samples]
    assert clip.rms_dbfs[0] == pytest.approx(20 * np.log10(np.sqrt(np.mean(first_patch.astype(np.float64) ** 2))), abs=1e-4)
    assert clip.rms_dbfs[-1] == SILENCE_DBFS
    np.testing.assert_array_equal(patch_rms_dbfs(np.zeros((2, 8))), [SILENCE_DBFS, SILENCE_DBFS])
    (cached,) = embed_files([path], CountingEmbedder(), cache_root=tmp_path / "cache")
    np.testing.assert_array_equal(cached.rms_dbfs, clip.rms_dbfs)


def test_second_run_computes_nothing_and_returns_the_same_values(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 4)
    first_embedder = CountingEmbedder()
    first = embed_files(paths, first_embedder, cache_root=tmp_path / "cache", batch_patches=3)
    assert first_embedder.patches == 4 * DEFAULT_PARAMS.patches_in(RATE)
    second_embedder = CountingEmbedder()
    second = embed_files(paths, second_embedder, cache_root=tmp_path / "cache")
    assert second_embedder.calls == 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.embeddings, b.embeddings)
        np.testing.assert_array_equal(a.scores, b.scores)


def test_entries_live_under_the_weights_hash_and_are_keyed_by_audio_content(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 2)
    embedder = CountingEmbedder("b2" * 32)
    embed_files(paths, embedder, cache_root=tmp_path / "cache")
    expected = {tmp_path / "cache" / ("b2" * 32)[:MODEL_DIR_CHARS] / f"{file_sha256(p)}.npz" for p in paths}
    assert set(cache_entries(tmp_path / "cache")) == expected
    # a renamed copy of a clip is the same content: nothing to compute
    renamed = tmp_path / "renamed.wav"
    renamed.write_bytes(paths[0].read_bytes())
    again = CountingEmbedder("b2" * 32)
    embed_files([renamed], again, cache_root=tmp_path / "cache")
    assert again.calls == 0


def test_other_yamnet_weights_compute_everything_again(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 2)
    embed_files(paths, CountingEmbedder("c3" * 32), cache_root=tmp_path / "cache")
    other = CountingEmbedder("d4" * 32)
    embed_files(paths, other, cache_root=tmp_path / "cache")
    assert other.patches == 2 * DEFAULT_PARAMS.patches_in(RATE)


def test_embeddings_made_with_other_numerics_are_never_mixed_with_the_defaults(tmp_path: Path) -> None:
    # e.g. TensorFlow at 2 threads rounds differently from 1 thread: same weights, other folder
    paths = make_clips(tmp_path, 2)
    embed_files(paths, CountingEmbedder("e5" * 32), cache_root=tmp_path / "cache")
    threaded = CountingEmbedder("e5" * 32, numerics="tf-threads-2")
    embed_files(paths, threaded, cache_root=tmp_path / "cache")
    assert threaded.patches == 2 * DEFAULT_PARAMS.patches_in(RATE)
    folders = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert folders == [("e5" * 32)[:MODEL_DIR_CHARS], ("e5" * 32)[:MODEL_DIR_CHARS] + "-tf-threads-2"]
    again = CountingEmbedder("e5" * 32, numerics="tf-threads-2")
    embed_files(paths, again, cache_root=tmp_path / "cache")
    assert again.calls == 0


@pytest.mark.parametrize(("threads", "numerics"), [(1, ""), (0, "tf-threads-auto")])
def test_the_training_yamnet_names_its_tensorflow_thread_count_unless_it_is_one(tmp_path: Path, threads: int, numerics: str) -> None:
    pytest.importorskip("tensorflow")
    weights = tmp_path / "weights.tflite"
    weights.write_bytes(b"stand-in: the model is only built when an embedding is computed")
    script = (
        "import sys; from train.cli import _configure_threads; from train.core import LazyYamnet; "
        f"_configure_threads({threads}); import tensorflow; "
        f"print(repr(LazyYamnet(weights_path={str(weights)!r}).numerics))"
    )
    # a fresh process: TensorFlow's thread count is fixed once it has started
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == repr(numerics)


def test_a_truncated_cache_entry_is_recomputed_and_replaced(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 3)
    first = embed_files(paths, CountingEmbedder(), cache_root=tmp_path / "cache")
    damaged = tmp_path / "cache" / ("a1" * 32)[:MODEL_DIR_CHARS] / f"{file_sha256(paths[1])}.npz"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    embedder = CountingEmbedder()
    second = embed_files(paths, embedder, cache_root=tmp_path / "cache")
    assert embedder.patches == DEFAULT_PARAMS.patches_in(RATE)  # only the damaged clip
    np.testing.assert_array_equal(first[1].embeddings, second[1].embeddings)
    cache = EmbeddingCache(tmp_path / "cache", weights_sha256="a1" * 32)
    assert cache.load(file_sha256(paths[1])) is not None


def test_an_entry_made_with_other_front_end_params_is_recomputed(tmp_path: Path) -> None:
    (path,) = make_clips(tmp_path, 1)
    other_params = DEFAULT_PARAMS.with_changes(mel_bands=32)
    EmbeddingCache(tmp_path / "cache", weights_sha256="a1" * 32, params=other_params).store(
        file_sha256(path), np.ones((2, 1024), np.float32), np.ones((2, 521), np.float32), np.zeros(2, np.float32)
    )
    embedder = CountingEmbedder()
    embed_files([path], embedder, cache_root=tmp_path / "cache")
    assert embedder.calls == 1


def test_an_interrupted_run_leaves_only_complete_entries_and_the_rerun_reuses_them(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 5)
    patches_per_clip = DEFAULT_PARAMS.patches_in(RATE)
    with pytest.raises(KeyboardInterrupt):
        embed_files(paths, CountingEmbedder(fail_after_calls=2), cache_root=tmp_path / "cache", batch_patches=patches_per_clip)
    entries = cache_entries(tmp_path / "cache")
    assert len(entries) == 2
    assert not [p for p in (tmp_path / "cache").rglob("*") if p.is_file() and p.suffix != ".npz"]
    cache = EmbeddingCache(tmp_path / "cache", weights_sha256="a1" * 32)
    assert all(cache.load(entry.stem) is not None for entry in entries)
    rerun = CountingEmbedder()
    embed_files(paths, rerun, cache_root=tmp_path / "cache", batch_patches=patches_per_clip)
    assert rerun.patches == 3 * patches_per_clip


def test_without_a_cache_root_nothing_is_written(tmp_path: Path) -> None:
    paths = make_clips(tmp_path, 1)
    embed_files(paths, CountingEmbedder(), cache_root=None)
    assert not cache_entries(tmp_path)


def test_progress_stays_quiet_when_stderr_is_not_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    embed_files(make_clips(tmp_path, 2), CountingEmbedder(), cache_root=tmp_path / "cache")
    assert capsys.readouterr().err == ""


def test_an_unreadable_audio_file_is_a_value_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav")
    with pytest.raises(ValueError, match="broken.wav"):
        embed_files([broken], CountingEmbedder(), cache_root=tmp_path / "cache")
