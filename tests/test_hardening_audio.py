"""Hardening: whatever audio arrives, the reader, the resampler and the streaming front end give a defined result.

Already covered elsewhere (not repeated here):
- streaming framer == batch framer for any block split:
  test_edge_framing.py::test_streaming_equals_batch_for_any_block_split
- streaming resampler == batch for any block split:
  test_edge_resample.py::test_streaming_equals_batch_for_any_block_split
- NaN/Inf samples become 0 with a warning naming the file:
  test_edge_audio.py::test_nan_and_inf_become_zero_with_a_warning
- 0-byte, text named .wav, truncated header, no samples: test_edge_audio.py (AudioError naming the file)

The contract of read_audio (edge/audio.py docstring, and train/prepare.py keeps the same): float32 mono,
finite, >= 1 sample at the target rate; integer PCM is in [-1, 1] as read, and after a rate change may
overshoot by at most edge.resample.peak_gain (band-limiting; kept, never clipped).
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from edge.audio import read_audio  # noqa: E402
from edge.detect import Detector, DetectorConfig  # noqa: E402
from edge.errors import AudioError, OidoError  # noqa: E402
from edge.framing import waveform_to_patches  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from edge.pipeline import StreamingPipeline, classify_clip  # noqa: E402
from edge.resample import (  # noqa: E402
    DEFAULT_FILTER,
    MAX_FILTER_TAPS,
    StreamingResampler,
    _PhaseTablePlan,
    filter_taps,
    output_length,
    peak_gain,
    rational_ratio,
    resample,
)
from edge.sources import FileSource  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import TINY_LABELS  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RATE = DEFAULT_PARAMS.sample_rate_hz
COMMON_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 96000)
INTEGER_SUBTYPES = {"WAV": ("PCM_U8", "PCM_16", "PCM_24", "PCM_32"), "FLAC": ("PCM_S8", "PCM_16", "PCM_24")}
FLOAT_SUBTYPES = ("FLOAT", "DOUBLE")


def write(path: Path, samples: np.ndarray, rate_hz: int, *, subtype: str, fmt: str = "WAV") -> Path:
    soundfile.write(str(path), samples, rate_hz, subtype=subtype, format=fmt)
    return path


# --- the reader: any rate, channel count and bit depth ---


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rate_hz=st.sampled_from(COMMON_RATES),
    channels=st.integers(1, 6),
    fmt_subtype=st.sampled_from([(f, s) for f, subs in INTEGER_SUBTYPES.items() for s in subs]
                                + [("WAV", s) for s in FLOAT_SUBTYPES]),
    frames=st.integers(1, 3000),
    full_scale=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_rate_channels_and_depth_read_as_16k_mono_float32_within_the_overshoot_bound(
    tmp_path: Path, rate_hz: int, channels: int, fmt_subtype: tuple[str, str], frames: int, full_scale: bool,
    seed: int,
) -> None:
    fmt, subtype = fmt_subtype
    rng = np.random.default_rng(seed)
    if full_scale:  # the worst case for overshoot: +-1 square-ish noise
        samples = rng.choice(np.array([-1.0, 1.0]), size=(frames, channels))
    else:
        samples = rng.uniform(-1.0, 1.0, size=(frames, channels))
    path = write(tmp_path / f"clip-{seed}.{fmt.lower()}", samples.astype(np.float64), rate_hz, subtype=subtype, fmt=fmt)
    expected_length = output_length(frames, rate_hz, RATE)
    if expected_length == 0:
        with pytest.raises(AudioError, match=f"{path.name}.*less than one sample"):
            read_audio(path)
        return
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1 and len(waveform) == expected_length
    assert np.all(np.isfinite(waveform))
    as_read, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = as_read.mean(axis=1, dtype=np.float64).astype(np.float32)
    bound = 1.0 if rate_hz == RATE else peak_gain(rate_hz, RATE)
    assert float(np.max(np.abs(waveform))) <= bound * max(1.0, float(np.max(np.abs(mono)))) + 1e-6
    np.testing.assert_allclose(waveform, mono if rate_hz == RATE else resample(mono, rate_hz, RATE), atol=1e-6)


def test_overshoot_of_real_full_scale_audio_is_small_and_kept_like_prepare(tmp_path: Path) -> None:
    """A clipped recording at 44.1 kHz: the 16 kHz result exceeds 1 by a few percent, never clipped."""
    t = np.arange(44100) / 44100
    clipped = np.clip(3.0 * np.sin(2 * np.pi * 997 * t), -1.0, 1.0)
    waveform = read_audio(write(tmp_path / "clipped.wav", clipped, 44100, subtype="PCM_16"))
    peak = float(np.max(np.abs(waveform)))
    assert 1.0 < peak < 1.2 < peak_gain(44100, RATE)
    try:
        from train.prepare import to_model_waveform
    except ImportError:  # the Pi-side environments have no soxr
        return
    kept = to_model_waveform(clipped.astype(np.float32), 44100)
    assert float(np.max(np.abs(kept))) > 1.0  # train/prepare.py keeps its overshoot too (soxr)


@pytest.mark.parametrize("rate_hz", [7999, 22051, 44056, 44101])
def test_odd_sample_rates_are_resampled_with_bounded_memory(tmp_path: Path, rate_hz: int) -> None:
    """44101 Hz needed a 16000 x 88202 matrix (10.5 GiB) before: it must now run under a 1.5 GiB cap."""
    path = write(tmp_path / f"odd-{rate_hz}.wav", 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate_hz) / rate_hz),
                 rate_hz, subtype="PCM_16")
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))\n"
        "from edge.audio import read_audio\n"
        f"w = read_audio({str(path)!r})\n"
        "print(len(w), float(abs(w).max()))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "OPENBLAS_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    length, peak = result.stdout.split()
    assert int(length) == output_length(rate_hz, rate_hz, RATE) and 0.45 < float(peak) < 0.55


def test_odd_rate_matches_soxr() -> None:
    soxr = pytest.importorskip("soxr")
    rate_hz = 44101
    t = np.arange(2 * rate_hz) / rate_hz
    x = (0.4 * np.sin(2 * np.pi * 440 * t) + 0.3 * np.sin(2 * np.pi * 5000 * t)).astype(np.float32)
    ours, reference = resample(x, rate_hz, RATE), soxr.resample(x, rate_hz, RATE)
    middle = slice(1000, len(reference) - 1000)
    error = ours[middle] - reference[middle]
    snr_db = 10 * np.log10(np.sum(reference[middle] ** 2) / np.sum(error**2))
    assert len(ours) == len(reference) and snr_db > 50


def test_a_rate_needing_an_absurd_filter_is_refused_naming_the_file(tmp_path: Path) -> None:
    rate_hz = 96001  # 16413541 taps
    assert filter_taps(rate_hz, RATE) > MAX_FILTER_TAPS
    path = write(tmp_path / "exotic.wav", np.zeros(100), rate_hz, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"exotic\.wav: sample rate 96001 Hz cannot be converted.*standard rate"):
        read_audio(path)


@pytest.mark.parametrize("from_hz", [8000, 44100, 48000])
def test_the_tap_table_plan_equals_the_dense_plan(from_hz: int) -> None:
    """The plan odd rates use, checked against the one common rates use, on the same ratio."""
    rng = np.random.default_rng(from_hz)
    x = rng.uniform(-1, 1, 2 * from_hz + 17).astype(np.float32)
    table = StreamingResampler(from_hz, RATE)
    table._plan = _PhaseTablePlan(*rational_ratio(from_hz, RATE), DEFAULT_FILTER)
    table.reset()
    pieces = [table.push(x[i : i + 1000]) for i in range(0, len(x), 1000)] + [table.flush()]
    np.testing.assert_allclose(np.concatenate(pieces), resample(x, from_hz, RATE), atol=3e-6)
    assert table.peak_gain == pytest.approx(peak_gain(from_hz, RATE), rel=1e-6)


ODD_RATE = 7999
"""A rate the tap-table plan serves (up 16000 / down 7999)."""
_odd_resamplers: list[StreamingResampler] = []


@settings(max_examples=15, deadline=None, derandomize=True)
@given(num_samples=st.integers(0, 20000), block_sizes=st.lists(st.integers(1, 9000), min_size=1, max_size=6))
def test_odd_rate_streaming_equals_batch_for_any_block_split(num_samples: int, block_sizes: list[int]) -> None:
    if not _odd_resamplers:  # two resamplers, built once (0.5 s each): flush() resets them for the next example
        _odd_resamplers.extend(StreamingResampler(ODD_RATE, RATE) for _ in range(2))
    streaming, batch = _odd_resamplers
    assert isinstance(streaming._plan, _PhaseTablePlan)
    x = np.sin(np.arange(num_samples) * 0.37).astype(np.float32)
    pieces, start, index = [], 0, 0
    while start < num_samples:
        size = block_sizes[index % len(block_sizes)]
        pieces.append(streaming.push(x[start : start + size]))
        start, index = start + size, index + 1
    pieces.append(streaming.flush())
    expected = np.concatenate([batch.push(x), batch.flush()])  # what resample() does, in one block
    np.testing.assert_array_equal(np.concatenate(pieces), expected)
    assert len(expected) == output_length(num_samples, ODD_RATE, RATE)


# --- the streaming front end: the microphone path equals the file path ---


class PatchRecorder:
    """Fake YAMNet that keeps every patch it is given."""

    def __init__(self) -> None:
        self.patches: list[np.ndarray] = []

    def run(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.patches.append(patch.copy())
        return np.zeros(DEFAULT_PARAMS.embedding_size, np.float32), np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32)


class Uniform:
    def run(self, embeddings: np.ndarray) -> np.ndarray:
        return np.full((len(embeddings), len(TINY_LABELS)), 1 / len(TINY_LABELS), np.float32)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(
    rate_hz=st.sampled_from((16000, 22050, 44100, 48000)),
    channels=st.integers(1, 3),
    seconds=st.floats(0.01, 2.5),
    block_sizes=st.lists(st.integers(1, 6000), min_size=1, max_size=5),
    seed=st.integers(0, 1000),
)
def test_pipeline_patches_equal_batch_framing_of_the_resampled_mono_for_any_blocks(
    rate_hz: int, channels: int, seconds: float, block_sizes: list[int], seed: int
) -> None:
    audio = np.random.default_rng(seed).uniform(-1, 1, (max(1, round(seconds * rate_hz)), channels)).astype(np.float32)
    yamnet = PatchRecorder()
    pipeline = StreamingPipeline(yamnet, Uniform(), labels=TINY_LABELS, input_rate_hz=rate_hz,
                                 detector=Detector(DetectorConfig(background_label="other"), labels=TINY_LABELS))
    start, index = 0, 0
    while start < len(audio):
        size = block_sizes[index % len(block_sizes)]
        pipeline.push(audio[start : start + size])
        start, index = start + size, index + 1
    pipeline.flush()
    mono = audio.mean(axis=1, dtype=np.float64).astype(np.float32) if channels > 1 else audio[:, 0]
    expected = waveform_to_patches(resample(mono, rate_hz, RATE) if rate_hz != RATE else mono)
    np.testing.assert_array_equal(np.stack(yamnet.patches), expected)


# --- degenerate audio: each gives a defined result ---


def test_a_one_sample_file_at_16k_gives_one_padded_patch(tmp_path: Path) -> None:
    waveform = read_audio(write(tmp_path / "one.wav", np.array([0.5]), RATE, subtype="FLOAT"))
    assert waveform.tolist() == [0.5]
    patches = waveform_to_patches(waveform)
    assert patches.shape == (1, DEFAULT_PARAMS.patch_samples) and patches[0, 0] == 0.5 and not patches[0, 1:].any()


def test_a_file_shorter_than_one_output_sample_is_an_audio_error(tmp_path: Path) -> None:
    """1 sample at 44.1 kHz is 0.36 samples at 16 kHz: it used to come back as an empty array."""
    path = write(tmp_path / "blip.wav", np.array([0.5]), 44100, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"blip\.wav: 1 sample\(s\) at 44100 Hz is less than one sample at 16000 Hz"):
        read_audio(path)


def test_an_mp3_named_wav_is_decoded_by_its_content(tmp_path: Path) -> None:
    if "MP3" not in soundfile.available_formats():
        pytest.skip("this libsndfile has no MP3 support")
    buffer = io.BytesIO()
    soundfile.write(buffer, 0.5 * np.sin(2 * np.pi * 440 * np.arange(44100) / 44100), 44100, format="MP3")
    path = tmp_path / "song.wav"
    path.write_bytes(buffer.getvalue())
    waveform = read_audio(path)
    assert waveform.dtype == np.float32 and abs(len(waveform) - RATE) < RATE // 10
    assert 0.4 < float(np.max(np.abs(waveform))) < 0.6


def test_truncated_data_is_an_audio_error_for_reader_and_replay(tmp_path: Path) -> None:
    """A WAV cut short reads as whatever frames are there (1000 of 16000 here) without a word from
    libsndfile: read_audio and replay's FileSource both name it, as prepare does. Its header is
    sound, so FileSource opens it and raises from blocks(): replay skips it and plays the rest."""
    path = write(tmp_path / "cut.wav", np.full(16000, 0.25), RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[: 44 + 2 * 1000 + 1])  # header + 1000.5 frames
    with pytest.raises(AudioError, match=r"cut\.wav: cut short: its header promises 29999 more bytes"):
        read_audio(path)
    source = FileSource(path, block_seconds=0.05)
    assert source.cut_short is not None
    with pytest.raises(AudioError, match=r"cut\.wav: cut short: .*copy it again"):
        next(iter(source.blocks()))


def test_a_corrupt_flac_body_is_an_audio_error_for_reader_and_replay(tmp_path: Path) -> None:
    path = write(tmp_path / "broken.flac", np.random.default_rng(0).uniform(-1, 1, 48000), 48000,
                 subtype="PCM_16", fmt="FLAC")
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    try:
        waveform = read_audio(path)
    except AudioError as error:
        assert "broken.flac" in str(error)
    else:
        assert waveform.dtype == np.float32 and np.all(np.isfinite(waveform))
    source = FileSource(path, block_seconds=0.05)
    with pytest.raises(AudioError, match=r"broken\.flac: unreadable after \d+\.\d+ s"):
        for _ in source.blocks():
            pass


def test_a_mis_scaled_float_file_is_kept_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    samples = np.round(32767 * 0.5 * np.sin(np.arange(8000) / 10.0))  # int16 values stored as float
    path = write(tmp_path / "misscaled.wav", samples, RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="edge.audio"):
        waveform = read_audio(path)
    assert float(np.max(np.abs(waveform))) == pytest.approx(16384, abs=1)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "misscaled.wav" in warnings[0] and "mis-scaled" in warnings[0]


def test_float_garbage_that_overflows_in_the_resampler_comes_back_finite(tmp_path: Path) -> None:
    samples = np.full(4410, 3.0e38, np.float32)
    samples[::2] = -3.0e38
    waveform = read_audio(write(tmp_path / "garbage.wav", samples, 44100, subtype="FLOAT"))
    assert len(waveform) == 1600 and np.all(np.isfinite(waveform))


def degenerate(kind: str) -> np.ndarray:
    n = 3 * RATE
    if kind == "all-zero":
        return np.zeros(n, np.float32)
    if kind == "dc":
        return np.full(n, 0.7, np.float32)
    if kind == "clipped":
        return np.clip(5 * np.sin(2 * np.pi * 300 * np.arange(n) / RATE), -1, 1).astype(np.float32)
    if kind == "one-sample":
        return np.array([1.0], np.float32)
    if kind == "overshoot":  # beyond full scale, as resampled full-scale audio can be
        return (1.3 * np.sin(2 * np.pi * 1000 * np.arange(n) / RATE)).astype(np.float32)
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["all-zero", "dc", "clipped", "one-sample", "overshoot"])
def test_degenerate_audio_through_real_yamnet_gives_finite_probabilities(real_models: tuple, kind: str) -> None:
    yamnet, head = real_models
    pipeline = StreamingPipeline(yamnet, head, labels=TINY_LABELS,
                                 detector=Detector(DetectorConfig(background_label="other"), labels=TINY_LABELS))
    result = classify_clip(pipeline, degenerate(kind), block_samples=1000)
    assert len(result.patches) == DEFAULT_PARAMS.patches_in(len(degenerate(kind)))
    assert np.all(np.isfinite(result.probabilities))
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-3)
    assert all(np.all(np.isfinite(p.yamnet_scores)) for p in result.patches)
    if kind == "all-zero":
        assert result.events == () and all(p.rms_dbfs == -200.0 for p in result.patches)


# --- fuzzing the WAV/FLAC path ---


def load_fuzzer():
    import importlib.util

    spec = importlib.util.spec_from_file_location("fuzz_audio", REPO / "scripts" / "fuzz_audio.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


def test_the_fuzzer_reports_a_crash_when_the_reader_misbehaves(tmp_path: Path) -> None:
    """The harness itself can fail: a target raising a non-project error is a crash; OidoError is not."""
    fuzz_audio = load_fuzzer()

    def flaky(path: Path) -> str:
        if path.stat().st_size % 3 == 0:
            raise RuntimeError("libsndfile said no")
        raise OidoError(f"{path}: refused")

    report = fuzz_audio.fuzz(examples=30, seed=1, target=flaky, workdir=tmp_path)
    assert report.examples == 30 and report.crashes and report.project_errors
    assert all("libsndfile said no" in crash.what for crash in report.crashes)


def test_fuzzing_the_wav_and_flac_path_for_a_fixed_budget_finds_no_crash(tmp_path: Path) -> None:
    """CI budget: 400 mutated WAV/FLAC/raw inputs (about 20 s), address space capped at 3 GiB."""
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "fuzz_audio.py"), "--examples", "400", "--seconds", "60",
         "--seed", "0", "--crashes-dir", str(tmp_path / "crashes")],
        capture_output=True, text=True, timeout=600, cwd=REPO, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"},
    )
    summary = [line for line in result.stdout.splitlines() if line.startswith("fuzz_audio:")]
    assert result.returncode == 0, (summary, result.stderr[-4000:])
    assert summary and " 0 crash(es)" in summary[0] and "400 inputs" in summary[0], summary
