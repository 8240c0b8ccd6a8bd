"""read_audio / write_wav: any subtype, rate and channel count in; clear errors; atomic writes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

soundfile = pytest.importorskip("soundfile")

from edge.audio import missing_audio_bytes, read_audio, write_wav  # noqa: E402
from edge.errors import AudioError  # noqa: E402
from edge.resample import resample  # noqa: E402

RATE = 16000


def tone(rate_hz: int, seconds: float = 0.5, frequency_hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate_hz * seconds)) / rate_hz
    return (0.5 * np.sin(2 * np.pi * frequency_hz * t)).astype(np.float32)


@pytest.mark.parametrize(
    ("subtype", "suffix", "tolerance"),
    [("PCM_U8", ".wav", 1 / 64), ("PCM_16", ".wav", 1e-4), ("PCM_24", ".wav", 1e-6), ("FLOAT", ".wav", 0.0),
     ("PCM_16", ".flac", 1e-4)],
)
def test_every_subtype_reads_as_float_in_unit_range(tmp_path: Path, subtype: str, suffix: str, tolerance: float) -> None:
    x = tone(RATE)
    path = tmp_path / f"clip{suffix}"
    soundfile.write(str(path), x, RATE, subtype=subtype)
    y = read_audio(path)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) <= tolerance + 1e-7


def test_stereo_becomes_the_channel_mean(tmp_path: Path) -> None:
    left, right = tone(RATE), tone(RATE, frequency_hz=1000)
    path = tmp_path / "stereo.wav"
    soundfile.write(str(path), np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    np.testing.assert_allclose(read_audio(path), (left + right) / 2, atol=1e-7)


@pytest.mark.parametrize("rate_hz", [44100, 48000, 8000])
def test_other_rates_are_resampled_to_16k(tmp_path: Path, rate_hz: int) -> None:
    x = tone(rate_hz)
    path = tmp_path / "clip.wav"
    soundfile.write(str(path), x, rate_hz, subtype="FLOAT")
    y = read_audio(path)
    np.testing.assert_array_equal(y, resample(x, rate_hz, RATE))
    assert len(y) == RATE // 2


def test_nan_and_inf_become_zero_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x = tone(RATE)
    x[[10, 20, 30]] = [np.nan, np.inf, -np.inf]
    path = tmp_path / "bad.wav"
    soundfile.write(str(path), x, RATE, subtype="FLOAT")
    with caplog.at_level(logging.WARNING, logger="edge.audio"):
        y = read_audio(path)
    assert np.all(np.isfinite(y)) and y[10] == y[20] == y[30] == 0.0
    assert "3 NaN/Inf" in caplog.text and "bad.wav" in caplog.text


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match="nope.wav.*not found"):
        read_audio(tmp_path / "nope.wav")


def test_zero_byte_file_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="empty.wav.*0 bytes") as error:
        read_audio(path)
    assert error.value.path == str(path)
    assert isinstance(error.value, ValueError)


def test_mislabeled_file_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioError, match="notes.wav.*not readable audio"):
        read_audio(path)


def test_truncated_header_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    soundfile.write(str(path), tone(RATE), RATE, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(AudioError, match="cut.wav"):
        read_audio(path)


def test_missing_audio_bytes_reads_libsndfiles_header_dump() -> None:
    assert missing_audio_bytes("RIFF : 96036 (should be 992)\nWAVE\ndata : 96000 (should be 956)\nEnd\n") == 95044
    assert missing_audio_bytes("FORM : 96046 (should be 1000)\n SSND : 96008 (should be 954)\n") == 95054  # AIFF
    assert missing_audio_bytes("data : 96000\nEnd\n") == 0  # whole
    assert missing_audio_bytes("data : 4294967295 (should be 956)\n") == 0  # "length unknown": streamed to a pipe


@pytest.mark.parametrize("fmt, suffix", [("WAV", ".wav"), ("AIFF", ".aiff")])
def test_a_copy_cut_short_is_an_audio_error_naming_the_file_and_the_fix(tmp_path: Path, fmt: str, suffix: str) -> None:
    """`head -c 1000 clip.wav > cut.wav`: libsndfile reads the frames there without complaint."""
    whole = tmp_path / f"whole{suffix}"
    soundfile.write(str(whole), tone(RATE, seconds=3.0), RATE, subtype="PCM_16", format=fmt)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:1000])
    assert 0 < soundfile.info(str(cut)).frames < 500  # what libsndfile alone makes of it
    with pytest.raises(AudioError, match=rf"cut{suffix}: cut short: its header promises \d+ more bytes of audio than "
                                         r"the file holds \(an interrupted copy\?\); copy it again") as error:
        read_audio(cut)
    assert error.value.path == str(cut)
    assert len(read_audio(whole)) == 3 * RATE


def test_file_without_samples_is_an_audio_error(tmp_path: Path) -> None:
    path = tmp_path / "silent.wav"
    soundfile.write(str(path), np.zeros(0, np.float32), RATE, subtype="PCM_16")
    with pytest.raises(AudioError, match="silent.wav.*no audio samples"):
        read_audio(path)


@pytest.mark.parametrize("subtype", ["FLOAT", "PCM_16"])
def test_write_wav_round_trips(tmp_path: Path, subtype: str) -> None:
    x = tone(RATE)
    path = write_wav(tmp_path / "out.wav", x, rate_hz=RATE, subtype=subtype)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.channels, info.subtype) == (RATE, 1, subtype)
    np.testing.assert_allclose(read_audio(path), x, atol=0 if subtype == "FLOAT" else 1e-4)


def test_write_wav_replaces_atomically_and_leaves_no_temp_files(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    path.write_bytes(b"old")
    write_wav(path, tone(RATE), rate_hz=RATE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.wav"]
    assert soundfile.info(str(path)).frames == RATE // 2


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.wav"
    path.write_bytes(b"old")
    with pytest.raises(ValueError, match="NaN"):
        write_wav(path, np.array([0.0, np.nan], np.float32), rate_hz=RATE)
    with pytest.raises(ValueError, match="subtype"):
        write_wav(path, tone(RATE), rate_hz=RATE, subtype="PCM_24")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


def test_pcm16_clips_out_of_range_samples_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="edge.audio"):
        path = write_wav(tmp_path / "loud.wav", np.array([1.5, -2.0, 0.5], np.float32), rate_hz=RATE, subtype="PCM_16")
    assert "clipping" in caplog.text
    y = read_audio(path)
    assert y[0] == pytest.approx(1.0, abs=1e-4) and y[1] == -1.0
