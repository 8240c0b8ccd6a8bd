"""Framing into YAMNet patches: YAMNet's padding, and streaming == batch for any block split."""

from __future__ import annotations

import numpy as np
import pytest

from edge.framing import StreamingFramer, waveform_to_patches
from edge.params import DEFAULT_PARAMS

try:  # property tests need hypothesis; the rest of the file runs without it
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # pragma: no cover
    given = None

PATCH = DEFAULT_PARAMS.patch_samples
HOP = DEFAULT_PARAMS.hop_samples
RATE = DEFAULT_PARAMS.sample_rate_hz


def ramp(num_samples: int) -> np.ndarray:
    """Distinct sample values, so any misplaced sample shows."""
    return ((np.arange(num_samples) + 1) / (num_samples + 1)).astype(np.float32)


def stream(waveform: np.ndarray, block_sizes: list[int]) -> np.ndarray:
    framer = StreamingFramer()
    patches, start, i = [], 0, 0
    while start < len(waveform):
        size = block_sizes[i % len(block_sizes)]
        patches.append(framer.push(waveform[start : start + size]))
        start += size
        i += 1
    patches.append(framer.flush())
    return np.concatenate(patches)


def test_five_second_clip_gives_ten_patches_like_yamnet() -> None:
    patches = waveform_to_patches(ramp(5 * RATE))
    assert patches.shape == (10, PATCH)
    assert patches.dtype == np.float32


def test_patch_k_covers_k_hops_on_and_the_end_is_zero_padded() -> None:
    waveform = ramp(5 * RATE)
    patches = waveform_to_patches(waveform)
    for k in range(9):
        np.testing.assert_array_equal(patches[k], waveform[k * HOP : k * HOP + PATCH])
    tail = waveform[9 * HOP :]
    np.testing.assert_array_equal(patches[9, : len(tail)], tail)
    assert not patches[9, len(tail) :].any()


@pytest.mark.parametrize(
    ("num_samples", "expected"),
    [(0, 1), (1, 1), (PATCH - 1, 1), (PATCH, 1), (PATCH + 1, 2), (PATCH + HOP, 2), (PATCH + HOP + 1, 3)],
)
def test_patch_count_matches_params_patches_in(num_samples: int, expected: int) -> None:
    assert DEFAULT_PARAMS.patches_in(num_samples) == expected
    assert len(waveform_to_patches(ramp(num_samples))) == expected


def test_without_end_padding_only_whole_patches_are_returned() -> None:
    assert waveform_to_patches(ramp(PATCH - 1), pad_end=False).shape == (0, PATCH)
    assert len(waveform_to_patches(ramp(PATCH + 2 * HOP + 5), pad_end=False)) == 3


def test_stereo_input_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match="average the channels"):
        waveform_to_patches(np.zeros((100, 2), np.float32))


@pytest.mark.parametrize("block_samples", [160, 1023, 1024, 16000])
def test_streaming_framer_equals_batch_framer(block_samples: int) -> None:
    waveform = ramp(5 * RATE + 123)
    np.testing.assert_array_equal(stream(waveform, [block_samples]), waveform_to_patches(waveform))


if given is not None:

    @settings(max_examples=40, deadline=None)
    @given(
        num_samples=st.integers(min_value=0, max_value=PATCH + 4 * HOP + 7),
        block_sizes=st.lists(st.integers(min_value=1, max_value=3 * HOP), min_size=1, max_size=8),
    )
    def test_streaming_equals_batch_for_any_block_split(num_samples: int, block_sizes: list[int]) -> None:
        waveform = ramp(num_samples)
        np.testing.assert_array_equal(stream(waveform, block_sizes), waveform_to_patches(waveform))

else:  # pragma: no cover

    @pytest.mark.skip(reason="needs hypothesis")
    def test_streaming_equals_batch_for_any_block_split() -> None:
        pass


def test_patches_are_emitted_as_soon_as_they_are_complete() -> None:
    framer = StreamingFramer()
    assert len(framer.push(ramp(PATCH - 1))) == 0
    assert len(framer.push(ramp(1))) == 1
    assert len(framer.push(ramp(HOP - 1))) == 0
    assert len(framer.push(ramp(1))) == 1


def test_reset_clears_buffered_audio() -> None:
    framer = StreamingFramer()
    framer.push(np.ones(PATCH - 10, np.float32))
    framer.reset()
    fresh = ramp(2 * PATCH)
    patches = np.concatenate([framer.push(fresh), framer.flush()])
    np.testing.assert_array_equal(patches, waveform_to_patches(fresh))


def test_flush_ends_the_stream_and_starts_a_new_one() -> None:
    framer = StreamingFramer()
    pushed = framer.push(np.ones(3 * HOP, np.float32))
    assert len(pushed) + len(framer.flush()) == DEFAULT_PARAMS.patches_in(3 * HOP)
    assert framer.samples_seen == 0
    second = ramp(PATCH + 10)
    np.testing.assert_array_equal(np.concatenate([framer.push(second), framer.flush()]), waveform_to_patches(second))


def test_streaming_equals_batch_when_the_buffer_wraps_and_grows() -> None:
    # Many small blocks (the held samples move back to the buffer's front again and again),
    # then blocks longer than the buffer (it grows), then small ones again.
    waveform = ramp(40 * HOP + 123)
    sizes = [1600] * 60 + [5 * PATCH, 7 * PATCH + 3] + [1023] * 40 + [1, 2, 3]
    framer = StreamingFramer()
    pushed, start = [], 0
    for size in sizes:
        pushed.append(framer.push(waveform[start : start + size]))
        start += size
    assert start >= len(waveform)
    pushed.append(framer.flush())
    np.testing.assert_array_equal(np.concatenate(pushed), waveform_to_patches(waveform))
