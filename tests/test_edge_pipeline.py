"""StreamingPipeline and classify_clip: block-size invariance, one event per sound, windows, real models."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np
import pytest

from edge.detect import Detector, DetectorConfig
from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS
from edge.listen import pipeline_for_rate
from edge.pipeline import (
    SILENCE,
    ClipResult,
    StepOutput,
    StreamingPipeline,
    classify_clip,
    decide,
    load_pipeline,
    window_mean,
    window_patch_indices,
)
from edge.resample import resample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import TINY_LABELS, real_model_dir  # noqa: E402

RATE = DEFAULT_PARAMS.sample_rate_hz
BLOCK_SIZES = [160, 1023, 1024, 16000]
LOUD_RMS = 0.05


class LevelYamnet:
    """Fake YAMNet: the embedding is the patch's RMS level repeated; counts its runs."""

    def __init__(self) -> None:
        self.patches: List[np.ndarray] = []

    def run(self, patch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        self.patches.append(patch.copy())
        rms = float(np.sqrt(np.mean(np.square(patch, dtype=np.float64))))
        return np.full(DEFAULT_PARAMS.embedding_size, rms, np.float32), np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32)


class LoudIsBeep:
    """Fake head over TINY_LABELS: loud patches are "beep" (0.9), the rest "other"."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, embeddings: np.ndarray) -> np.ndarray:
        self.calls += 1
        loud = embeddings[:, 0] > LOUD_RMS
        beep = np.where(loud, 0.9, 0.02)
        return np.stack([beep, np.full_like(beep, 0.03), 1 - beep - 0.03], axis=1).astype(np.float32)


def fake_pipeline(input_rate_hz: int = RATE) -> StreamingPipeline:
    detector = Detector(DetectorConfig(background_label="other"), labels=TINY_LABELS)
    return StreamingPipeline(
        LevelYamnet(), LoudIsBeep(), labels=TINY_LABELS, detector=detector, input_rate_hz=input_rate_hz
    )


def beep_in_silence(rate_hz: int = RATE, *, before: float = 2.0, beep: float = 3.0, after: float = 3.0) -> np.ndarray:
    t = np.arange(int(beep * rate_hz)) / rate_hz
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    return np.concatenate([np.zeros(int(before * rate_hz)), tone, np.zeros(int(after * rate_hz))]).astype(np.float32)


def feed(pipeline: StreamingPipeline, waveform: np.ndarray, block_samples: int) -> List[StepOutput]:
    outputs = [pipeline.push(waveform[i : i + block_samples]) for i in range(0, len(waveform), block_samples)]
    outputs.append(pipeline.flush())
    return outputs


def summary(outputs: Sequence[StepOutput]) -> tuple:
    """Everything observable, comparable across block sizes."""
    patches = [(p.index, p.start_sample, p.probabilities.tolist()) for o in outputs for p in o.patches]
    windows = [(w.index, w.end_sample, w.patch_indices, w.label, w.mean_probabilities.tolist()) for o in outputs for w in o.windows]
    started = [(e.label, e.start_seconds) for o in outputs for e in o.started]
    ended = [(e.label, e.start_seconds, e.end_seconds, e.peak_score, e.mean_score) for o in outputs for e in o.ended]
    return patches, windows, started, ended


# --- fake models: pure numpy ---


@pytest.mark.parametrize("block_samples", BLOCK_SIZES)
def test_same_detections_whatever_the_block_size(block_samples: int) -> None:
    waveform = beep_in_silence()
    reference = summary(feed(fake_pipeline(), waveform, len(waveform)))
    assert summary(feed(fake_pipeline(), waveform, block_samples)) == reference


def test_one_continuous_sound_gives_exactly_one_event_soon_after_onset() -> None:
    pipeline = fake_pipeline()
    waveform = beep_in_silence(before=2.0, beep=3.0)
    started_at = []
    outputs = []
    for i in range(0, len(waveform), 160):
        out = pipeline.push(waveform[i : i + 160])
        outputs.append(out)
        started_at += [pipeline.stream_seconds for _ in out.started]
    outputs.append(pipeline.flush())
    ended = [e for o in outputs for e in o.ended]
    assert [e.label for e in ended] == ["beep"]
    assert len(started_at) == 1 and started_at[0] - 2.0 <= 1.5
    assert 1.0 <= ended[0].start_seconds <= 2.0
    assert 5.0 <= ended[0].end_seconds <= 5.0 + DEFAULT_PARAMS.patch_seconds


def test_silence_lights_nothing() -> None:
    outputs = feed(fake_pipeline(), np.zeros(8 * RATE, np.float32), 1024)
    _, windows, started, ended = summary(outputs)
    assert started == [] and ended == []
    assert windows and all(w[3] == "other" for w in windows)


def test_each_patch_runs_through_yamnet_and_head_exactly_once() -> None:
    pipeline = fake_pipeline()
    waveform = beep_in_silence()
    outputs = feed(pipeline, waveform, 1023)
    patches = [p for o in outputs for p in o.patches]
    assert len(patches) == DEFAULT_PARAMS.patches_in(len(waveform))
    assert [p.index for p in patches] == list(range(len(patches)))
    assert len(pipeline.yamnet.patches) == pipeline.head.calls == len(patches)  # type: ignore[attr-defined]


def test_windows_average_the_cached_patches_inside_them() -> None:
    waveform = beep_in_silence()  # 8 s: windows end at 3, 4.5, 6, 7.5 s
    outputs = feed(fake_pipeline(), waveform, 1024)
    patches = {p.index: p for o in outputs for p in o.patches}
    windows = [w for o in outputs for w in o.windows]
    params = DEFAULT_PARAMS
    assert [w.end_sample for w in windows] == [params.window_samples + k * params.decision_hop_samples for k in range(4)]
    assert windows[0].patch_indices == (0, 1, 2, 3, 4)
    for w in windows:
        assert w.patch_indices == tuple(window_patch_indices(w.index))
        for i in w.patch_indices:  # wholly inside the window
            start = patches[i].start_sample
            assert w.end_sample - params.window_samples <= start and start + params.patch_samples <= w.end_sample
        # Only audible patches vote (all of them when none is): the silence around the beep does not.
        voting = [i for i in w.patch_indices if patches[i].rms_dbfs >= params.silent_patch_dbfs] or list(w.patch_indices)
        expected = np.mean([patches[i].probabilities for i in voting], axis=0)
        np.testing.assert_allclose(w.mean_probabilities, expected, rtol=1e-6)
        rows = np.stack([patches[i].probabilities for i in w.patch_indices])
        audible = [patches[i].rms_dbfs >= params.silent_patch_dbfs for i in w.patch_indices]
        assert w.label == TINY_LABELS[decide(rows, audible)]
    # Window 0 (0-3 s) holds 2 s of digital silence and the first second of the beep.
    assert [w.label for w in windows] == ["beep", "beep", "beep", "beep"]
    first = windows[0]
    assert sum(patches[i].rms_dbfs < params.silent_patch_dbfs for i in first.patch_indices) >= 2
    everything = np.mean([patches[i].probabilities for i in first.patch_indices], axis=0)
    assert TINY_LABELS[int(np.argmax(everything))] == "other"  # what averaging the silence in would say


def test_silent_patches_do_not_vote_unless_every_patch_is_silent() -> None:
    rows = np.array([[0.2, 0.1, 0.7], [0.9, 0.05, 0.05], [0.2, 0.1, 0.7]], np.float32)
    assert decide(rows) == 2
    assert decide(rows, [False, True, False]) == 0
    assert decide(rows, [False, False, False]) == 2
    with pytest.raises(ValueError, match="one flag per patch"):
        decide(rows, [True, False])
    pipeline = fake_pipeline()
    result = classify_clip(pipeline, np.zeros(4 * RATE, np.float32))
    assert all(p.rms_dbfs < DEFAULT_PARAMS.silent_patch_dbfs for p in result.patches)
    assert result.label == TINY_LABELS[decide(result.probabilities)] and not result.events


def test_a_window_without_an_audible_patch_says_silence_not_a_class() -> None:
    """Digital silence used to get a window (and clip) decision that looked real ("other" here,
    toilet_flush with the shipped model). Its label stays decide()'s argmax for evaluation."""
    result = classify_clip(fake_pipeline(), np.zeros(4 * RATE, np.float32))
    assert result.windows and all(w.silent and w.shown_label == SILENCE for w in result.windows)
    assert all(w.label == TINY_LABELS[decide(result.probabilities[list(w.patch_indices)])] for w in result.windows)
    assert result.silent and result.shown_label == SILENCE and result.label == TINY_LABELS[decide(result.probabilities)]
    assert result.events == ()  # nor does silence start an event

    beep = classify_clip(fake_pipeline(), beep_in_silence(before=4.0, beep=3.0, after=1.0))
    shown = [w.shown_label for w in beep.windows]  # windows end at 3, 4.5, 6, 7.5 s
    assert shown == [SILENCE, "beep", "beep", "beep"] and not beep.silent and beep.shown_label == "beep"
    assert [w.silent for w in beep.windows] == [True, False, False, False]


def test_a_shorter_window_with_more_overlap_decides_more_often_over_the_patches_inside_it() -> None:
    """The tutorial's NUM_SECONDS and OVERLAP_FACTOR, changed where the pipeline is built for a
    rate: 2 s windows overlapping by 0.75 decide every 0.5 s instead of every 1.5 s."""
    params = DEFAULT_PARAMS.with_changes(window_seconds=2.0, overlap=0.75)
    assert params.decision_hop_samples == RATE // 2 and params.window_patches == 3
    pipeline = pipeline_for_rate(fake_pipeline(), RATE, params=params)
    assert pipeline.params == params and pipeline.detector.params == params
    waveform = beep_in_silence(before=2.0, beep=3.0, after=3.0)  # 8 s
    outputs = feed(pipeline, waveform, 1023)
    windows = [w for o in outputs for w in o.windows]
    assert [w.end_sample for w in windows] == [2 * RATE + k * RATE // 2 for k in range(13)]  # 2, 2.5, ..., 8 s
    patches = {p.index: p for o in outputs for p in o.patches}
    for w in windows:
        assert w.patch_indices == tuple(window_patch_indices(w.index, params=params)) and len(w.patch_indices) <= 3
        for i in w.patch_indices:  # wholly inside the 2 s window
            start = patches[i].start_sample
            assert w.end_sample - 2 * RATE <= start and start + params.patch_samples <= w.end_sample
    # Events come from patches, not windows: the same one event as with the default windows.
    default = feed(fake_pipeline(), waveform, 1023)
    assert summary(outputs)[2:] == summary(default)[2:] and len(summary(default)[3]) == 1
    assert len([w for o in default for w in o.windows]) == 4


def test_stereo_is_averaged_to_mono() -> None:
    waveform = beep_in_silence()
    stereo = np.stack([waveform * 2, np.zeros_like(waveform)], axis=1)
    assert summary(feed(fake_pipeline(), stereo, 1024)) == summary(feed(fake_pipeline(), waveform, 1024))


def test_48k_input_is_resampled_in_stream() -> None:
    waveform_48k = beep_in_silence(48000)
    pipeline = fake_pipeline(48000)
    outputs = feed(pipeline, waveform_48k, 1024)
    patches, _, _, ended = summary(outputs)
    assert len(patches) == DEFAULT_PARAMS.patches_in(len(resample(waveform_48k, 48000, RATE)))
    assert [e[0] for e in ended] == ["beep"]
    fed = np.concatenate(pipeline.yamnet.patches)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(fed[: DEFAULT_PARAMS.patch_samples], resample(waveform_48k, 48000, RATE)[: DEFAULT_PARAMS.patch_samples])
    assert summary(feed(fake_pipeline(48000), waveform_48k, 16000)) == summary(outputs)


def test_reset_mid_stream_starts_over() -> None:
    waveform = beep_in_silence()
    pipeline = fake_pipeline()
    pipeline.push(np.ones(30000, np.float32) * 0.5)
    pipeline.reset()
    assert pipeline.samples_seen == 0 and pipeline.detector.active_labels == ()
    assert summary(feed(pipeline, waveform, 1024)) == summary(feed(fake_pipeline(), waveform, 1024))


def test_flush_closes_an_event_still_sounding_at_the_end() -> None:
    outputs = feed(fake_pipeline(), beep_in_silence(before=1.0, beep=3.0, after=0.0), 1024)
    ended = [e for e in outputs[-1].ended]
    assert [e.label for e in ended] == ["beep"]
    assert ended[0].end_seconds == pytest.approx(4.0)


def test_rms_level_is_reported_per_patch() -> None:
    outputs = feed(fake_pipeline(), beep_in_silence(before=1.0, beep=2.0, after=0.0), 16000)
    levels = [p.rms_dbfs for o in outputs for p in o.patches]
    assert levels[0] == -200.0  # digital silence
    assert max(levels) == pytest.approx(20 * np.log10(0.3 / np.sqrt(2)), abs=0.05)


def test_int16_blocks_are_scaled_like_float() -> None:
    waveform = beep_in_silence()
    pcm = np.round(waveform * 32768).astype(np.int16)
    assert summary(feed(fake_pipeline(), pcm, 1024))[3] == summary(feed(fake_pipeline(), pcm / 32768.0, 1024))[3]


def test_an_empty_stream_ends_with_nothing() -> None:
    pipeline = fake_pipeline(48000)
    pipeline.push(np.zeros(0, np.float32))
    out = pipeline.flush()
    assert out.patches == () and out.windows == () and out.ended == ()
    with pytest.raises(ValueError, match="non-empty waveform"):
        classify_clip(pipeline, np.zeros(0, np.float32))


def test_changing_channel_count_mid_stream_is_refused() -> None:
    pipeline = fake_pipeline()
    pipeline.push(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="keep the channel count fixed"):
        pipeline.push(np.zeros((100, 1), np.float32))


def test_a_head_with_other_labels_is_refused() -> None:
    pipeline = StreamingPipeline(LevelYamnet(), LoudIsBeep(), labels=("beep", "other"))
    with pytest.raises(ConfigError, match="expected \\(1, 2\\)"):
        pipeline.push(np.zeros(DEFAULT_PARAMS.patch_samples, np.float32))


def test_classify_clip_uses_the_streaming_path_and_decides_by_mean() -> None:
    pipeline = fake_pipeline()
    waveform = beep_in_silence(before=0.5, beep=4.0, after=0.5)
    result = classify_clip(pipeline, waveform, block_samples=1023)
    assert isinstance(result, ClipResult)
    assert result.probabilities.shape == (DEFAULT_PARAMS.patches_in(len(waveform)), len(TINY_LABELS))
    assert result.label == "beep" and result.label_index == decide(result.probabilities)
    assert result.score == pytest.approx(result.probabilities[:, 0].mean())
    assert [e.label for e in result.events] == ["beep"] and all(e.end_seconds is not None for e in result.events)
    again = classify_clip(pipeline, waveform, block_samples=16000)
    np.testing.assert_array_equal(again.probabilities, result.probabilities)


def test_window_mean_equals_numpy_mean_bit_for_bit() -> None:
    # The window decision must not depend on how the mean is computed.
    rng = np.random.default_rng(3)
    for labels in (1, 5, 11, 521):
        for count in range(1, 9):
            for scale in (1.0, 1e-3, 1e-7):
                rows = [(rng.random(labels) * scale).astype(np.float32) for _ in range(count)]
                expected = np.mean(rows, axis=0, dtype=np.float64).astype(np.float32)
                assert window_mean(rows).dtype == np.float32
                np.testing.assert_array_equal(window_mean(rows), expected)


def test_float32_blocks_with_nan_or_inf_are_cleaned_like_any_other_block() -> None:
    waveform = beep_in_silence()
    waveform[5000] = np.nan
    waveform[40000:40010] = np.inf
    waveform[70000] = -np.inf
    fast = summary(feed(fake_pipeline(), waveform, 1600))  # float32 mono blocks: the direct path
    general = summary(feed(fake_pipeline(), waveform.astype(np.float64), 1600))  # through the full conversion
    cleaned = summary(feed(fake_pipeline(), np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0), 1600))
    assert fast == general == cleaned


def test_decide_is_argmax_of_the_mean_over_patches() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.3, 0.7]], np.float32)
    assert decide(probabilities) == 1
    with pytest.raises(ValueError, match="patches >= 1"):
        decide(np.zeros((0, 2)))


# --- real models: the YAMNet asset + the tiny head fixture ---


def real_pipeline(models: tuple, input_rate_hz: int = RATE) -> StreamingPipeline:
    yamnet, head = models
    detector = Detector(DetectorConfig(background_label="other"), labels=TINY_LABELS)
    return StreamingPipeline(yamnet, head, labels=TINY_LABELS, detector=detector, input_rate_hz=input_rate_hz)


def test_real_models_give_one_beep_event_whatever_the_block_size(real_models: tuple) -> None:
    waveform = beep_in_silence(before=2.0, beep=3.0, after=2.0)
    results = [summary(feed(real_pipeline(real_models), waveform, size)) for size in BLOCK_SIZES]
    assert all(r == results[0] for r in results[1:])
    _, _, started, ended = results[0]
    assert [e[0] for e in ended] == ["beep"]
    label, start, end, peak, _ = ended[0]
    assert 1.0 <= start <= 2.0 + 1.5 and 5.0 <= end <= 5.0 + DEFAULT_PARAMS.patch_seconds and peak > 0.5


def test_real_models_light_nothing_on_silence(real_models: tuple) -> None:
    result = classify_clip(real_pipeline(real_models), np.zeros(5 * RATE, np.float32), block_samples=1024)
    assert result.events == () and result.label == "other"


def test_yamnet_cannot_tell_a_patch_at_the_silent_level_from_digital_silence(real_models: tuple) -> None:
    """Why patches under Params.silent_patch_dbfs do not vote: YAMNet hears nothing in them."""
    yamnet, _ = real_models
    silence, _ = yamnet.run(np.zeros(DEFAULT_PARAMS.patch_samples, np.float32))
    noise = np.random.default_rng(0).standard_normal(DEFAULT_PARAMS.patch_samples)

    def cosine_to_silence(level_dbfs: float) -> float:
        embedding, _ = yamnet.run((noise * 10 ** (level_dbfs / 20)).astype(np.float32))
        return float(embedding @ silence / (np.linalg.norm(embedding) * np.linalg.norm(silence)))

    assert cosine_to_silence(DEFAULT_PARAMS.silent_patch_dbfs) > 0.99
    assert cosine_to_silence(DEFAULT_PARAMS.silent_patch_dbfs + 30.0) < 0.5


def test_real_models_report_per_patch_timings(real_models: tuple) -> None:
    result = classify_clip(real_pipeline(real_models), beep_in_silence(before=0.0, beep=2.0, after=0.0))
    assert result.label == "beep"
    assert all(p.yamnet_seconds > 0 and p.head_seconds > 0 for p in result.patches)


def test_load_pipeline_runs_an_exported_model_dir(tmp_path: Path, real_models: tuple) -> None:
    real_model_dir(tmp_path)
    pipeline = load_pipeline(tmp_path, input_rate_hz=44100, detector_overrides={"hold_seconds": 0.5})
    assert pipeline.labels == TINY_LABELS and pipeline.detector.config.hold_seconds == 0.5
    assert pipeline.detector.config.background_label == "other"
    result = classify_clip(pipeline, beep_in_silence(44100, before=0.5, beep=2.5, after=0.5))
    assert result.label == "beep" and [e.label for e in result.events] == ["beep"]


@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.5, 0.9])
def test_the_shortest_window_allowed_holds_a_whole_patch_wherever_it_starts(overlap: float) -> None:
    """Params refuses windows shorter than a patch plus a hop: at exactly that, every window (on any
    decision grid) still holds one whole patch, so none is skipped; a hair shorter, some would be."""
    params = DEFAULT_PARAMS.with_changes(window_seconds=1.455, overlap=overlap)
    assert all(len(window_patch_indices(k, params=params)) >= 1 for k in range(500))
    with pytest.raises(ValueError, match="shorter than one YAMNet patch plus one hop"):
        DEFAULT_PARAMS.with_changes(window_seconds=1.45)
