"""Training augmentation (train.augment): speed and spectral tilt of the mixed target copies."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")
pytest.importorskip("soxr")

from edge.audio import write_wav  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from train.augment import MixOptions, _plan_key, change_speed, plan_mixes, render_mix, tilt  # noqa: E402
from train.streams import AudioLibrary  # noqa: E402

RATE = DEFAULT_PARAMS.sample_rate_hz


def tone(frequency_hz: float, seconds: float = 1.0, level: float = 0.3) -> np.ndarray:
    return (level * np.sin(2 * np.pi * frequency_hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def peak_frequency(waveform: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(waveform * np.hanning(len(waveform))))
    return float(np.fft.rfftfreq(len(waveform), 1.0 / RATE)[int(np.argmax(spectrum))])


def level_db(waveform: np.ndarray) -> float:
    return float(10 * np.log10(np.mean(np.square(waveform[RATE // 10 : -RATE // 10]))))


def test_a_faster_copy_is_shorter_and_higher() -> None:
    faster = change_speed(tone(1000.0), 1.1, sample_rate_hz=RATE)
    assert len(faster) == round(RATE / 1.1)
    assert abs(peak_frequency(faster) - 1100.0) < 5.0
    slower = change_speed(tone(1000.0), 0.9, sample_rate_hz=RATE)
    assert abs(peak_frequency(slower) - 900.0) < 5.0


def test_tilt_raises_highs_and_lowers_lows_by_its_slope_per_octave() -> None:
    for frequency, octaves in ((2000.0, 1.0), (500.0, -1.0), (1000.0, 0.0)):
        before = tone(frequency)
        after = tilt(before, 6.0, sample_rate_hz=RATE)
        assert level_db(after) - level_db(before) == pytest.approx(6.0 * octaves, abs=0.3)
    assert np.array_equal(tilt(tone(500.0), 0.0, sample_rate_hz=RATE), tone(500.0).astype(np.float64))


@pytest.fixture()
def clips(tmp_path: Path) -> tuple[list[Path], list[Path], AudioLibrary]:
    target, background = tmp_path / "beep.wav", tmp_path / "hum.wav"
    write_wav(target, np.concatenate([tone(1000.0, 1.0), np.zeros(RATE, np.float32)]), rate_hz=RATE)
    write_wav(background, tone(150.0, 2.0, 0.1), rate_hz=RATE)
    return [target], [background], AudioLibrary()


def test_neutral_speed_and_tilt_draw_nothing_and_keep_the_old_cache_keys(clips) -> None:
    targets, backgrounds, library = clips
    plain = plan_mixes(targets, backgrounds, options=MixOptions(copies=3, seed=4), library=library)
    assert all(p.speed == 1.0 and p.tilt_db_per_octave == 0.0 for p in plain)
    assert all("speed" not in _plan_key(p) and "tilt_db_per_octave" not in _plan_key(p) for p in plain)
    varied = plan_mixes(targets, backgrounds, options=MixOptions(copies=3, seed=4, speed=(0.9, 1.1), tilt_db_per_octave=(-3, 3)), library=library)
    assert [p.snr_db for p in varied][:1] == [p.snr_db for p in plain][:1]  # the first draws come in the same order
    assert all(0.9 <= p.speed <= 1.1 and -3 <= p.tilt_db_per_octave <= 3 for p in varied)
    assert len({p.speed for p in varied}) == 3
    assert all(_plan_key(p) == asdict(p) for p in varied)


def test_a_rendered_copy_holds_the_sped_up_target_over_its_background(clips) -> None:
    targets, backgrounds, library = clips
    (plan,) = plan_mixes(targets, backgrounds, options=MixOptions(copies=1, background_probability=1.0, speed=(1.2, 1.2)), library=library)
    mixture, target_part, bed = render_mix(plan, library=library)
    assert len(mixture) == plan.shift_samples + 2 * round(RATE / 1.2)  # 2 s at the resampled rate
    assert np.allclose(mixture, target_part + bed, atol=1e-6)
    assert abs(peak_frequency(target_part) - 1200.0) < 5.0
    assert abs(peak_frequency(bed) - 150.0) < 5.0


def test_options_refuse_reversed_or_absurd_ranges() -> None:
    with pytest.raises(ValueError, match="speed"):
        MixOptions(speed=(1.1, 0.9))
    with pytest.raises(ValueError, match="speed"):
        MixOptions(speed=(0.2, 1.0))
    with pytest.raises(ValueError, match="tilt"):
        MixOptions(tilt_db_per_octave=(3.0, -3.0))


def test_a_negative_number_of_copies_is_refused_naming_its_flag() -> None:
    with pytest.raises(ValueError, match=r"copies \(--mix-copies\) and background_copies \(--mix-background-copies\)"):
        MixOptions(copies=-1)
