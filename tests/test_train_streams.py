"""Evaluation streams (train.streams): layout, spec files, rendering, cached patches vs the edge pipeline, scoring.

Fast: numpy + soundfile, synthetic clips, a fake YAMNet and head; no TensorFlow.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")

from edge.audio import write_wav  # noqa: E402
from edge.detect import Detector, DetectorConfig  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from edge.pipeline import StreamingPipeline  # noqa: E402
from train.streams import (  # noqa: E402
    AudioLibrary,
    Detection,
    SourceClip,
    StreamError,
    StreamOptions,
    StreamPatches,
    StreamSpec,
    active_power,
    active_span,
    build_stream,
    check_against_pipeline,
    detect_events,
    embed_stream,
    render_stream,
    run_pipeline,
    score_stream,
    sweep_thresholds,
    with_background,
)

RATE = DEFAULT_PARAMS.sample_rate_hz
HOP = DEFAULT_PARAMS.hop_samples
PATCH = DEFAULT_PARAMS.patch_samples
LABELS = ("beep", "other")
BEEP_HZ = 1000.0
CLIP_SECONDS = 2.0


def tone(seconds: float, *, hz: float = BEEP_HZ, level: float = 0.3, lead_seconds: float = 0.0) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    wave = (level * np.sin(2 * math.pi * hz * t)).astype(np.float32)
    wave[: round(lead_seconds * RATE)] = 0.0
    return wave


def noise(seconds: float, *, level: float = 0.05, seed: int = 0) -> np.ndarray:
    return (level * np.random.default_rng(seed).standard_normal(round(seconds * RATE))).astype(np.float32)


@pytest.fixture()
def clips(tmp_path: Path) -> tuple[list[SourceClip], list[SourceClip]]:
    """3 beep targets (one with 0.3 s of leading silence) and 5 noise non-targets, 2 s each."""
    targets, others = [], []
    for i in range(3):
        path = write_wav(tmp_path / f"beep{i}.wav", tone(CLIP_SECONDS, lead_seconds=0.3 if i == 0 else 0.0), rate_hz=RATE)
        targets.append(SourceClip(path, "target", "beep", "beep"))
    for i in range(5):
        path = write_wav(tmp_path / f"noise{i}.wav", noise(CLIP_SECONDS, seed=i), rate_hz=RATE)
        others.append(SourceClip(path, "nontarget", None, "hiss" if i % 2 else "rumble"))
    return targets, others


class ToneYamnet:
    """Fake YAMNet: embedding[0] = fraction of the patch's energy near 1 kHz; counts its patches."""

    weights_sha256 = "f" * 64

    def __init__(self) -> None:
        self.calls = 0

    def run(self, patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        spectrum = np.abs(np.fft.rfft(patch.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(patch), 1.0 / RATE)
        total = spectrum.sum()
        share = float(spectrum[np.abs(freqs - BEEP_HZ) < 50].sum() / total) if total > 0 else 0.0
        embedding = np.zeros(DEFAULT_PARAMS.embedding_size, np.float32)
        embedding[0] = share
        return embedding, np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32)

    def embed_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        outputs = [self.run(p) for p in patches]
        return np.stack([e for e, _ in outputs]), np.stack([s for _, s in outputs])


class ShareHead:
    """Fake head: P(beep) = tone share of the patch."""

    def run(self, embeddings: np.ndarray) -> np.ndarray:
        beep = np.clip(np.asarray(embeddings, np.float32)[:, 0], 0.0, 1.0)
        return np.stack([beep, 1.0 - beep], axis=1).astype(np.float32)


CONFIG = DetectorConfig(thresholds={"beep": 0.5}, background_label="other", min_patches=1, of_patches=1)


def test_same_seed_gives_the_same_stream_and_another_seed_another(clips) -> None:
    targets, others = clips
    first = build_stream(targets, others, seed=3)
    again = build_stream(targets, others, seed=3)
    other = build_stream(targets, others, seed=4)
    assert first.to_dict() == again.to_dict()
    assert first.sha256() == again.sha256()
    assert [c.start_sample for c in first.clips] != [c.start_sample for c in other.clips]


def test_every_clip_plays_once_without_overlap_and_targets_sit_between_other_sounds(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    assert sorted(Path(c.file).name for c in spec.clips) == sorted(Path(s.path).name for s in targets + others)
    ordered = sorted(spec.clips, key=lambda c: c.start_sample)
    for before, after in zip(ordered, ordered[1:]):
        assert after.start_sample >= before.end_sample
    roles = [c.role for c in ordered]
    assert all(not (a == b == "target") for a, b in zip(roles, roles[1:]))
    assert spec.num_samples >= ordered[-1].end_sample


def test_clip_offsets_are_not_on_the_patch_grid(clips) -> None:
    targets, others = clips
    phases = {c.start_sample % HOP for seed in range(3) for c in build_stream(targets, others, seed=seed).clips}
    assert len(phases) > 10


def test_onset_skips_leading_silence() -> None:
    first, end = active_span(tone(1.0, lead_seconds=0.3))
    assert first == pytest.approx(0.3 * RATE, abs=0.025 * RATE)
    assert end == pytest.approx(RATE, abs=0.025 * RATE)
    assert active_span(np.zeros(RATE, np.float32)) == (0, 0)


def test_target_onset_in_the_spec_includes_the_leading_silence(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    lead = next(c for c in spec.targets if Path(c.file).name == "beep0.wav")
    assert lead.onset_sample - lead.start_sample == pytest.approx(0.3 * RATE, abs=0.025 * RATE)


def test_spec_round_trips_through_json_and_its_hash_ignores_labels(clips, tmp_path: Path) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=1)
    path = spec.save(tmp_path / "stream.spec.json")
    loaded = StreamSpec.load(path)
    assert loaded.to_dict() == spec.to_dict()
    relabelled = StreamSpec.from_dict({**spec.to_dict(), "recipe": {"note": "other text"}})
    assert relabelled.sha256() == spec.sha256()


def test_bad_spec_files_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StreamError, match="bad.json"):
        StreamSpec.load(bad)
    bad.write_text(json.dumps({"format": "something else"}))
    with pytest.raises(StreamError, match="bad.json"):
        StreamSpec.load(bad)


def test_rendering_places_each_clip_at_its_offset(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=2)
    audio = render_stream(spec)
    library = AudioLibrary()
    assert len(audio) == spec.num_samples
    for clip in spec.clips:
        np.testing.assert_array_equal(audio[clip.start_sample : clip.end_sample], library.waveform(clip.file))


def test_rendering_refuses_a_clip_whose_bytes_changed(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    write_wav(spec.clips[0].file, noise(CLIP_SECONDS, seed=99), rate_hz=RATE)
    with pytest.raises(StreamError, match=Path(spec.clips[0].file).name):
        render_stream(spec)


def test_background_is_mixed_under_each_target_at_the_asked_snr(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others[:2], seed=0)
    beds = [SourceClip(o.path, "bed", None, o.category) for o in others[2:]]
    mixed = with_background(spec, beds, snr_db=10.0, seed=0)
    library = AudioLibrary()
    bed_clips = [c for c in mixed.clips if c.role == "bed"]
    assert len(bed_clips) == len(spec.targets)
    for target, bed in zip(sorted(spec.targets, key=lambda c: c.start_sample), sorted(bed_clips, key=lambda c: c.start_sample)):
        assert bed.start_sample == target.start_sample and bed.num_samples <= target.num_samples
        signal = active_power(library.waveform(target.file))
        background = active_power(library.waveform(bed.file)) * 10 ** (bed.gain_db / 10)
        assert 10 * math.log10(signal / background) == pytest.approx(10.0, abs=1e-3)
    assert mixed.nontarget_seconds == spec.nontarget_seconds


def test_detection_time_is_the_end_of_the_patch_that_starts_the_event() -> None:
    probabilities = np.array([[0.1, 0.9]] * 3 + [[0.9, 0.1]] * 4 + [[0.1, 0.9]] * 6, np.float32)
    starts = np.arange(len(probabilities)) * HOP
    config = CONFIG.with_changes(min_patches=2, of_patches=3, hold_seconds=0.5)
    events = detect_events(probabilities, _patches_at(starts), labels=LABELS, config=config, num_samples=len(starts) * HOP + PATCH)
    assert len(events) == 1
    event = events[0]
    assert event.start_seconds == pytest.approx(3 * HOP / RATE)
    assert event.detected_seconds == pytest.approx((4 * HOP + PATCH) / RATE)
    assert event.end_seconds == pytest.approx((6 * HOP + PATCH) / RATE)


def _patches_at(starts: np.ndarray, levels_dbfs: np.ndarray | None = None) -> StreamPatches:
    count = len(starts)
    levels = np.full(count, -20.0, np.float32) if levels_dbfs is None else np.asarray(levels_dbfs, np.float32)
    return StreamPatches(np.asarray(starts, np.int64), np.zeros((count, 1024), np.float32), np.zeros((count, 521), np.float32), levels)


def test_patches_quieter_than_the_silent_level_cannot_start_an_event() -> None:
    probabilities = np.array([[0.1, 0.9]] * 2 + [[0.95, 0.05]] * 3 + [[0.1, 0.9]] * 4, np.float32)
    starts = np.arange(len(probabilities)) * HOP
    quiet = DEFAULT_PARAMS.silent_patch_dbfs - 1.0
    loud = DEFAULT_PARAMS.silent_patch_dbfs + 1.0
    num_samples = len(starts) * HOP + PATCH
    heard = detect_events(probabilities, _patches_at(starts, [loud] * 9), labels=LABELS, config=CONFIG, num_samples=num_samples)
    assert [e.label for e in heard] == ["beep"]
    silent = detect_events(probabilities, _patches_at(starts, [quiet] * 9), labels=LABELS, config=CONFIG, num_samples=num_samples)
    assert silent == []


def _detection(label: str, start: float, heard: float) -> Detection:
    return Detection(label, start, heard, heard + 1.0, 0.9, 0.9)


def test_scoring_counts_hits_latency_false_events_and_confusions(clips) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    first, second = sorted(spec.targets, key=lambda c: c.start_sample)[:2]
    quiet = sorted(spec.nontargets, key=lambda c: c.start_sample)[0]
    onset = first.onset_sample / RATE
    detections = [
        _detection("beep", first.start_sample / RATE, onset + 0.7),  # hit, 0.7 s after onset
        _detection("beep", first.start_sample / RATE + 1.0, onset + 1.4),  # the same sound again
        _detection("other_target", second.start_sample / RATE, second.start_sample / RATE + 0.5),  # confusion
        _detection("beep", quiet.start_sample / RATE + 0.2, quiet.start_sample / RATE + 1.1),  # false event
    ]
    score = score_stream(spec, detections, labels=("beep", "other_target", "other"))
    outcome = {Path(t.file).name: t for t in score.targets}
    hit = outcome[Path(first.file).name]
    assert hit.detected and hit.latency_seconds == pytest.approx(0.7) and hit.extra_events == 1
    assert outcome[Path(second.file).name].wrong_labels == ("other_target",)
    assert score.recall("beep") == (1, 3)
    assert [(d.label, category) for d, category in score.false_events] == [("beep", quiet.category)]
    # The confusion lit the wrong LED: a false event of its own label, as much as the one outside the targets.
    assert score.false_events_of("beep") == 1 and score.false_events_of("other_target") == 1
    assert score.false_per_hour == pytest.approx(2 * 3600.0 / spec.nontarget_seconds)
    summary = score.summary()
    assert summary["overall"]["false_events"] == 2 and summary["overall"]["confusions"] == 1
    assert len(summary["missed"]) == 2
    excluded = score_stream(spec, detections, labels=("beep", "other_target", "other"), exclude_categories=[quiet.category])
    assert excluded.false_events == () and excluded.false_events_of(None) == 1
    assert excluded.nontarget_seconds < spec.nontarget_seconds


def test_a_detection_before_the_measured_onset_has_latency_zero_not_below(clips) -> None:
    """beep0 opens with 0.3 s of silence (the onset is after it); an event heard in that lead-in
    (a head firing on a fainter start) is in time, at latency 0, and never pulls the median below 0."""
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    lead = next(c for c in spec.targets if Path(c.file).name == "beep0.wav")
    start, onset = lead.start_sample / RATE, lead.onset_sample / RATE
    score = score_stream(spec, [_detection("beep", start, onset - 0.2)], labels=("beep", "other"))
    outcome = next(t for t in score.targets if Path(t.file).name == "beep0.wav")
    assert outcome.detected and outcome.latency_seconds == 0.0 and score.recall("beep", in_time=True) == (1, 3)


def test_the_hindsight_grid_reaches_thresholds_low_enough_for_targets_under_loud_noise() -> None:
    from train.openset import HINDSIGHT_GRID

    assert min(HINDSIGHT_GRID) < 0.001 and max(HINDSIGHT_GRID) > 0.99999
    assert list(HINDSIGHT_GRID) == sorted(set(HINDSIGHT_GRID))


def test_cached_patches_give_what_the_streaming_pipeline_gives(clips, tmp_path: Path) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=5)
    yamnet = ToneYamnet()
    patches = embed_stream(spec, yamnet, cache_dir=tmp_path / "cache")
    assert len(patches) == DEFAULT_PARAMS.patches_in(spec.num_samples)
    np.testing.assert_array_equal(patches.start_samples, np.arange(len(patches)) * HOP)
    probabilities = ShareHead().run(patches.embeddings)
    detections = detect_events(probabilities, patches, labels=LABELS, config=CONFIG, num_samples=spec.num_samples)
    for block in (1023, 4096):
        pipeline = StreamingPipeline(ToneYamnet(), ShareHead(), labels=LABELS, detector=Detector(CONFIG, labels=LABELS))
        run = run_pipeline(pipeline, render_stream(spec), block_samples=block)
        check_against_pipeline((probabilities, patches.start_samples, detections), run)
    assert score_stream(spec, detections, labels=LABELS).recall("beep") == (3, 3)
    tampered = probabilities.copy()
    tampered[5, 0] += 0.01
    with pytest.raises(RuntimeError, match="differ"):
        check_against_pipeline((tampered, patches.start_samples, detections), run)


def test_stream_patches_are_cached_and_reused(clips, tmp_path: Path) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    yamnet = ToneYamnet()
    first = embed_stream(spec, yamnet, cache_dir=tmp_path)
    calls = yamnet.calls
    again = embed_stream(spec, yamnet, cache_dir=tmp_path)
    assert yamnet.calls == calls
    np.testing.assert_array_equal(first.embeddings, again.embeddings)
    np.testing.assert_array_equal(first.rms_dbfs, again.rms_dbfs)


def test_a_higher_threshold_never_adds_false_events(clips, tmp_path: Path) -> None:
    targets, others = clips
    spec = build_stream(targets, others, seed=0)
    patches = embed_stream(spec, ToneYamnet(), cache_dir=None)
    rng = np.random.default_rng(0)
    beep = np.clip(ShareHead().run(patches.embeddings)[:, 0] + rng.uniform(0, 0.6, len(patches)), 0, 1)
    probabilities = np.stack([beep, 1 - beep], axis=1).astype(np.float32)
    config = CONFIG.with_changes(release_fraction=1.0, hold_seconds=0.0)  # short events: spikes stay apart
    points = sweep_thresholds([(spec, probabilities, patches)], labels=LABELS, config=config,
                              thresholds=[0.3, 0.5, 0.7, 0.9, 0.99])  # fmt: skip
    false = [p.total_false for p in points]
    assert false == sorted(false, reverse=True) and false[0] > 0
    # Missed targets are NOT monotonic: at a low threshold a false event that runs into a target
    # swallows it (one event, attributed before the target starts), so fewer may be missed higher up.


def test_sweep_plot_is_written(clips, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from train.streams import SweepPoint, plot_sweep

    points = [
        SweepPoint(t, {"beep": m}, {"beep": 3}, {"beep": f}, 3600.0)
        for t, m, f in [(0.5, 0, 4), (0.7, 1, 1), (0.9, 2, 0)]
    ]
    png = plot_sweep(points, tmp_path / "sweep.png", chosen={"beep": 0.7}, target_false_per_hour=2.0)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = plot_sweep(points, tmp_path / "again.png", chosen={"beep": 0.7}, target_false_per_hour=2.0)
    assert again.read_bytes() == png.read_bytes()  # the same figures draw the same image
    ceiling = plot_sweep(points, tmp_path / "ceiling.png", chosen={"beep": 0.7}, target_false_per_hour=2.0,
                         ceiling=[(0.0, 2), (1.0, 1), (4.0, 0)], shipped=(1.0, 1))  # fmt: skip
    assert ceiling.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and ceiling.read_bytes() != png.read_bytes()


def test_stream_options_reject_impossible_gaps() -> None:
    with pytest.raises(ValueError, match="gap"):
        StreamOptions(min_gap_seconds=1.0, max_gap_seconds=0.5)
