"""Polyphase resampler: ratios, streaming == batch bit for bit, flat passband, no aliasing, soxr agreement."""

from __future__ import annotations


import numpy as np
import pytest

from edge.resample import StreamingResampler, output_length, rational_ratio, resample

try:  # property tests need hypothesis; the rest of the file runs without it
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

TARGET = 16000
from fixtures.assets import ESC50_AUDIO  # noqa: E402
SNR_VS_SOXR_DB = 50.0


def tone(frequency_hz: float, rate_hz: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


def sweep(rate_hz: int, seconds: float, low_hz: float = 50.0, high_hz: float = 7000.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    phase = 2 * np.pi * (low_hz * t + (high_hz - low_hz) * t**2 / (2 * seconds))
    return (0.5 * np.sin(phase)).astype(np.float32)


def gain_db(y: np.ndarray, amplitude: float, trim: int) -> float:
    core = y[trim:-trim].astype(np.float64)
    return 20 * np.log10(np.sqrt(2 * np.mean(core**2)) / amplitude + 1e-300)


def snr_db(reference: np.ndarray, test: np.ndarray) -> float:
    n = min(len(reference), len(test))
    error = test[:n].astype(np.float64) - reference[:n]
    return 10 * np.log10(np.sum(reference[:n].astype(np.float64) ** 2) / np.sum(error**2))


def stream(x: np.ndarray, from_hz: int, block_sizes: list[int]) -> np.ndarray:
    resampler = StreamingResampler(from_hz, TARGET)
    out, start, i = [], 0, 0
    while start < len(x):
        size = block_sizes[i % len(block_sizes)]
        out.append(resampler.push(x[start : start + size]))
        start += size
        i += 1
    out.append(resampler.flush())
    return np.concatenate(out)


@pytest.mark.parametrize(
    ("from_hz", "to_hz", "ratio"),
    [(44100, 16000, (160, 441)), (48000, 16000, (1, 3)), (8000, 16000, (2, 1)), (16000, 16000, (1, 1))],
)
def test_ratio_is_reduced_by_the_gcd(from_hz: int, to_hz: int, ratio: tuple[int, int]) -> None:
    assert rational_ratio(from_hz, to_hz) == ratio


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError, match="positive integers"):
        rational_ratio(0, 16000)


@pytest.mark.parametrize("from_hz", [44100, 48000, 8000, 22050])
def test_output_length_is_the_rounded_ratio(from_hz: int) -> None:
    x = np.zeros(12345, np.float32)
    assert len(resample(x, from_hz, TARGET)) == output_length(12345, from_hz, TARGET) == round(12345 * TARGET / from_hz)


def test_same_rate_is_a_copy() -> None:
    x = tone(440, TARGET, 0.1)
    y = resample(x, TARGET, TARGET)
    np.testing.assert_array_equal(x, y)
    assert y is not x


@pytest.mark.parametrize("from_hz", [44100, 48000, 8000])
@pytest.mark.parametrize("block_samples", [160, 1023, 1024, 16000])
def test_streaming_equals_batch_exactly(from_hz: int, block_samples: int) -> None:
    x = np.random.default_rng(from_hz).standard_normal(int(from_hz * 1.3)).astype(np.float32) * 0.3
    np.testing.assert_array_equal(stream(x, from_hz, [block_samples]), resample(x, from_hz, TARGET))


if given is not None:

    @settings(max_examples=25, deadline=None)
    @given(
        from_hz=st.sampled_from([44100, 48000, 32000]),
        num_samples=st.integers(min_value=0, max_value=20000),
        block_sizes=st.lists(st.integers(min_value=1, max_value=6000), min_size=1, max_size=6),
    )
    def test_streaming_equals_batch_for_any_block_split(from_hz: int, num_samples: int, block_sizes: list[int]) -> None:
        x = np.random.default_rng(num_samples).standard_normal(num_samples).astype(np.float32)
        np.testing.assert_array_equal(stream(x, from_hz, block_sizes), resample(x, from_hz, TARGET))

else:  # pragma: no cover

    @pytest.mark.skip(reason="needs hypothesis")
    def test_streaming_equals_batch_for_any_block_split() -> None:
        pass


def test_reset_forgets_the_previous_stream() -> None:
    resampler = StreamingResampler(48000, TARGET)
    resampler.push(np.ones(5000, np.float32))
    resampler.reset()
    x = tone(1000, 48000, 0.5)
    np.testing.assert_array_equal(np.concatenate([resampler.push(x), resampler.flush()]), resample(x, 48000, TARGET))


@pytest.mark.parametrize("from_hz", [44100, 48000])
def test_passband_is_flat(from_hz: int) -> None:
    for frequency in (100, 1000, 3000, 5000, 7000):
        y = resample(tone(frequency, from_hz, 0.5), from_hz, TARGET)
        assert abs(gain_db(y, 0.5, trim=1000)) < 0.01, frequency


@pytest.mark.parametrize("from_hz", [44100, 48000])
def test_frequencies_above_the_new_nyquist_are_rejected(from_hz: int) -> None:
    for frequency in (8100, 9000, 12000, 20000):
        y = resample(tone(frequency, from_hz, 0.5), from_hz, TARGET)
        assert gain_db(y, 0.5, trim=1000) < -90, frequency


def test_upsampling_leaves_no_images() -> None:
    y = resample(tone(3000, 8000, 0.5), 8000, TARGET)
    spectrum = np.abs(np.fft.rfft(y[1000:-1000] * np.hanning(len(y) - 2000)))
    frequencies = np.fft.rfftfreq(len(y) - 2000, 1 / TARGET)
    image = spectrum[(frequencies > 4500)].max()
    assert 20 * np.log10(image / spectrum.max()) < -90


def test_full_scale_input_is_not_clipped() -> None:
    square = np.sign(tone(1000, 44100, 0.2, amplitude=1.0)).astype(np.float32)
    y = resample(square, 44100, TARGET)
    assert np.max(np.abs(y)) > 1.0  # Gibbs overshoot survives: computed in float, never clipped


@pytest.mark.parametrize("from_hz", [44100, 48000])
def test_sine_sweep_matches_soxr(from_hz: int) -> None:
    soxr = pytest.importorskip("soxr")
    x = sweep(from_hz, 3.0)
    assert snr_db(soxr.resample(x, from_hz, TARGET), resample(x, from_hz, TARGET)) >= SNR_VS_SOXR_DB


def test_real_clip_matches_soxr() -> None:
    soxr = pytest.importorskip("soxr")
    soundfile = pytest.importorskip("soundfile")
    clips = sorted(ESC50_AUDIO.glob("*.wav"))[:2] if ESC50_AUDIO.is_dir() else []
    if not clips:
        pytest.skip(f"no ESC-50 clips in {ESC50_AUDIO}")
    for clip in clips:
        x, rate_hz = soundfile.read(str(clip), dtype="float32")
        assert snr_db(soxr.resample(x, rate_hz, TARGET), resample(x, rate_hz, TARGET)) >= SNR_VS_SOXR_DB, clip.name
