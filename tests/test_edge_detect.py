"""Detector on synthetic per-patch probabilities (pure numpy): events, smoothing, hysteresis, hold."""

from __future__ import annotations

import dataclasses
from collections import deque
from typing import List, Optional, Sequence, Tuple

import numpy as np
import pytest

from edge.detect import Detector, DetectorConfig, Event, threshold_text
from edge.errors import ConfigError
from edge.params import DEFAULT_PARAMS
from edge.pipeline import PatchResult

LABELS = ("clock_alarm", "water_drops", "other")
HOP_SECONDS = DEFAULT_PARAMS.hop_seconds
PATCH_SECONDS = DEFAULT_PARAMS.patch_seconds


def patch(index: int, alarm: float = 0.0, drops: float = 0.0) -> PatchResult:
    probabilities = np.array([alarm, drops, max(0.0, 1.0 - alarm - drops)], np.float32)
    return PatchResult(
        index=index,
        start_sample=index * DEFAULT_PARAMS.hop_samples,
        probabilities=probabilities,
        yamnet_scores=np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32),
        rms_dbfs=-20.0,
    )


def run(
    detector: Detector, alarm: Sequence[float], drops: Optional[Sequence[float]] = None, *, close: bool = True
) -> Tuple[List[Event], List[Event]]:
    """Feed a probability track; return (all started, all ended) events."""
    drops = drops if drops is not None else [0.0] * len(alarm)
    started: List[Event] = []
    ended: List[Event] = []
    for i, (a, d) in enumerate(zip(alarm, drops)):
        new, done = detector.update(patch(i, a, d))
        started += new
        ended += done
    if close:
        ended += detector.close(len(alarm) * DEFAULT_PARAMS.hop_samples + DEFAULT_PARAMS.patch_samples)
    return started, ended


def detector(**changes: object) -> Detector:
    config = DetectorConfig(background_label="other").with_changes(**changes)
    return Detector(config, labels=LABELS)


def test_one_continuous_sound_gives_exactly_one_event() -> None:
    alarm = [0.0] * 4 + [0.9] * 10 + [0.0] * 6
    started, ended = run(detector(), alarm)
    assert [e.label for e in started] == ["clock_alarm"]
    assert len(ended) == 1
    event = ended[0]
    assert event.label == "clock_alarm"
    assert event.start_seconds == pytest.approx(4 * HOP_SECONDS)
    assert event.end_seconds == pytest.approx(13 * HOP_SECONDS + PATCH_SECONDS)
    assert event.peak_score == pytest.approx(0.9)
    assert event.mean_score == pytest.approx(0.9)


def test_event_starts_on_the_second_positive_patch_of_three() -> None:
    d = detector()
    assert d.update(patch(0, 0.9)) == ([], [])
    started, _ = d.update(patch(1, 0.9))
    assert len(started) == 1 and started[0].end_seconds is None
    assert started[0].start_seconds == 0.0
    assert d.active_labels == ("clock_alarm",)


def test_silence_lights_nothing() -> None:
    started, ended = run(detector(), [0.0] * 30)
    assert started == [] and ended == []


def test_the_background_label_never_produces_events() -> None:
    d = detector()
    started: List[Event] = []
    for i in range(20):
        started += d.update(patch(i))[0]  # "other" at probability 1.0 throughout
    assert started == []


def test_a_single_patch_blip_is_smoothed_away() -> None:
    started, _ = run(detector(), [0.0, 0.0, 0.95, 0.0, 0.0, 0.0, 0.95, 0.0, 0.0])
    assert started == []


def test_k_of_n_counts_non_consecutive_patches() -> None:
    started, _ = run(detector(min_patches=2, of_patches=3), [0.0, 0.8, 0.0, 0.8, 0.0])
    assert len(started) == 1
    assert started[0].start_seconds == pytest.approx(1 * HOP_SECONDS)


def test_hysteresis_keeps_one_event_through_dips_above_release() -> None:
    alarm = [0.8, 0.8, 0.4, 0.3, 0.45, 0.35, 0.8, 0.3, 0.0, 0.0, 0.0, 0.0]
    started, ended = run(detector(hold_seconds=0.0, release_threshold=0.25), alarm)
    assert len(started) == 1 and len(ended) == 1
    assert ended[0].end_seconds == pytest.approx(7 * HOP_SECONDS + PATCH_SECONDS)
    assert ended[0].peak_score == pytest.approx(0.8)


def test_without_hold_a_dip_below_release_ends_the_event() -> None:
    alarm = [0.8, 0.8, 0.8, 0.0, 0.8, 0.8, 0.8]
    started, ended = run(detector(hold_seconds=0.0), alarm)
    assert len(started) == 2 and len(ended) == 2


def test_hold_bridges_short_gaps_so_leds_do_not_flicker() -> None:
    alarm = [0.8, 0.8, 0.8, 0.0, 0.0, 0.8, 0.8, 0.8]  # 2 quiet patches = 0.96 s
    started, ended = run(detector(hold_seconds=1.0), alarm)
    assert len(started) == 1 and len(ended) == 1
    assert ended[0].end_seconds == pytest.approx(7 * HOP_SECONDS + PATCH_SECONDS)


def test_a_gap_longer_than_hold_gives_two_events() -> None:
    alarm = [0.8, 0.8, 0.8] + [0.0] * 4 + [0.8, 0.8, 0.8]
    started, ended = run(detector(hold_seconds=1.0), alarm)
    assert len(started) == 2 and len(ended) == 2
    assert ended[0].end_seconds <= ended[1].start_seconds


def test_event_ends_once_hold_has_passed_after_the_last_sustaining_patch() -> None:
    d = detector(hold_seconds=1.0)
    for i in range(3):
        d.update(patch(i, 0.9))
    ends = [(i, d.update(patch(i, 0.0))[1]) for i in range(3, 8)]
    first_end = next(i for i, ended in ends if ended)
    assert (first_end - 2) * HOP_SECONDS > 1.0 >= (first_end - 3) * HOP_SECONDS


def test_labels_are_detected_independently() -> None:
    alarm = [0.0, 0.0, 0.6, 0.6, 0.6, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0]
    drops = [0.0, 0.0, 0.0, 0.0, 0.35, 0.35, 0.35, 0.35, 0.0, 0.0, 0.0]
    _, ended = run(detector(thresholds={"water_drops": 0.3}), alarm, drops)
    assert sorted(e.label for e in ended) == ["clock_alarm", "water_drops"]


def test_per_class_thresholds_override_the_default() -> None:
    alarm = [0.45] * 6
    assert run(detector(), alarm)[0] == []
    assert len(run(detector(thresholds={"clock_alarm": 0.4}), alarm)[0]) == 1


def test_close_ends_active_events_at_the_stream_end() -> None:
    d = detector()
    for i in range(5):
        d.update(patch(i, 0.9))
    end_sample = 4 * DEFAULT_PARAMS.hop_samples + 100
    ended = d.close(end_sample)
    assert len(ended) == 1
    assert ended[0].end_seconds == pytest.approx(end_sample / DEFAULT_PARAMS.sample_rate_hz)
    assert d.active_labels == ()


def test_reset_forgets_history_and_active_events() -> None:
    d = detector()
    d.update(patch(0, 0.9))
    d.reset()
    assert d.update(patch(1, 0.9)) == ([], [])  # the earlier positive patch no longer counts
    for i in range(2, 4):
        d.update(patch(i, 0.9))
    d.reset()
    assert d.active_labels == () and d.close() == []


def test_peak_and_mean_cover_the_event_patches() -> None:
    _, ended = run(detector(hold_seconds=0.0), [0.6, 0.8, 1.0, 0.7, 0.0, 0.0])
    assert ended[0].peak_score == pytest.approx(1.0)
    assert ended[0].mean_score == pytest.approx(np.mean([0.6, 0.8, 1.0, 0.7]))


def _patches_of(event: Event, track: Sequence[float]) -> List[float]:
    """The event's scores by definition: its onset patch .. its last sustaining patch, as the
    detector reads them (float32 probabilities)."""
    first = round(event.start_seconds * DEFAULT_PARAMS.sample_rate_hz) // DEFAULT_PARAMS.hop_samples
    assert event.end_seconds is not None
    last_start = round(event.end_seconds * DEFAULT_PARAMS.sample_rate_hz) - DEFAULT_PARAMS.patch_samples
    last = last_start // DEFAULT_PARAMS.hop_samples
    return [float(np.float32(score)) for score in track[first : last + 1]]


@pytest.mark.parametrize("changes", [{}, {"min_patches": 1, "of_patches": 1, "hold_seconds": 3.0}])
def test_peak_and_mean_equal_those_of_the_event_patches_on_a_random_track(changes: dict) -> None:
    rng = np.random.default_rng(7)
    track: List[float] = []
    while len(track) < 3000:  # loud and quiet stretches, so events have dips held over and gaps that end them
        low, high = (0.3, 1.0) if rng.random() < 0.5 else (0.0, 0.3)
        track += list(rng.uniform(low, high, int(rng.integers(1, 25))))
    _, ended = run(detector(**changes), track, close=False)
    assert len(ended) > 20
    for event in ended:
        scores = _patches_of(event, track)
        assert event.peak_score == max(scores)  # exactly: the same floats, summed in the same order
        assert event.mean_score == sum(scores) / len(scores)


def test_a_day_long_event_keeps_the_detector_state_the_same_size() -> None:
    d = detector(min_patches=1, of_patches=1, hold_seconds=1.0)
    state = d._states["clock_alarm"]
    held_patches = int(1.0 * DEFAULT_PARAMS.sample_rate_hz // DEFAULT_PARAMS.hop_samples) + 1
    largest = 0
    track = [0.9, 0.8, 0.1, 0.1, 0.95, 0.2] * 30000  # 180,000 patches (a day) of one event with short dips
    for i, score in enumerate(track):
        started, ended = d.update(patch(i, score))
        assert ended == [] and (i == 0) == bool(started)
        largest = max(largest, sum(len(v) for v in vars(state).values() if isinstance(v, (list, deque))))
    assert largest <= held_patches + d.config.of_patches
    (event,) = d.close()
    assert event.peak_score == pytest.approx(0.95) and event.mean_score == pytest.approx(np.mean(track[:-1]))


@pytest.mark.parametrize(
    "changes, setting",
    [
        ({"thresholds": {"clock_alarm": 1.5}}, "clock_alarm"),
        ({"thresholds": {"clock_alarm": True}}, "clock_alarm"),
        ({"default_threshold": 0.0}, "default_threshold"),
        ({"default_threshold": float("nan")}, "default_threshold"),
        ({"min_patches": 4, "of_patches": 3}, "min_patches"),
        ({"min_patches": 2.0}, "min_patches"),
        ({"min_patches": True}, "min_patches"),
        ({"of_patches": 3.0}, "of_patches"),
        ({"hold_seconds": -1.0}, "hold_seconds"),
        ({"hold_seconds": float("nan")}, "hold_seconds"),
        ({"hold_seconds": float("inf")}, "hold_seconds"),
        ({"hold_seconds": "1"}, "hold_seconds"),
        ({"release_threshold": 2.0}, "release_threshold"),
        ({"release_threshold": float("nan")}, "release_threshold"),
        ({"release_fraction": float("inf")}, "release_fraction"),
        ({"veto": {"Music": float("nan")}}, "Music"),
    ],
)
def test_invalid_settings_raise_config_error_naming_the_setting(changes: dict, setting: str) -> None:
    with pytest.raises(ConfigError, match=setting):
        DetectorConfig(**changes)
    with pytest.raises(ConfigError, match=f"manifest.json.*{setting}"):
        DetectorConfig.from_dict(changes, source="model/manifest.json")


def test_whole_number_patch_counts_of_any_integer_type_are_plain_ints() -> None:
    config = DetectorConfig(min_patches=np.int64(2), of_patches=np.int64(3))
    assert type(config.min_patches) is int and type(config.of_patches) is int


def test_thresholds_for_unknown_labels_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown label"):
        Detector(DetectorConfig(thresholds={"doorbell": 0.5}), labels=LABELS)
    with pytest.raises(ConfigError, match="background_label"):
        Detector(DetectorConfig(background_label="noise"), labels=LABELS)


def test_from_dict_names_the_source_and_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="edge.toml.*hold_secs"):
        DetectorConfig.from_dict({"hold_secs": 1.0}, source="edge.toml [detector]")
    config = DetectorConfig.from_dict({"hold_seconds": 2.0, "thresholds": {"clock_alarm": 0.7}})
    assert config.threshold_for("clock_alarm") == 0.7 and config.threshold_for("water_drops") == 0.5
    assert DetectorConfig.from_dict(config.to_dict()) == config


def test_release_threshold_never_exceeds_onset() -> None:
    config = DetectorConfig(thresholds={"clock_alarm": 0.3}, release_threshold=0.4)
    assert config.release_for("clock_alarm") == 0.3
    assert DetectorConfig(release_fraction=0.5).release_for("x") == 0.25


# --- veto: YAMNet's own AudioSet scores keep a patch from counting ---

AUDIOSET = tuple(f"class {i}" for i in range(DEFAULT_PARAMS.yamnet_classes - 2)) + ("Speech", "Music")


def heard(index: int, alarm: float, music: float) -> PatchResult:
    """A patch whose head says clock_alarm with `alarm` while YAMNet hears Music at `music`."""
    scores = np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32)
    scores[AUDIOSET.index("Music")] = music
    return PatchResult(
        index=index,
        start_sample=index * DEFAULT_PARAMS.hop_samples,
        probabilities=np.array([alarm, 0.0, 1.0 - alarm], np.float32),
        yamnet_scores=scores,
        rms_dbfs=-20.0,
    )


def test_a_vetoed_patch_cannot_start_an_event_and_a_quieter_veto_score_does_not_veto() -> None:
    config = DetectorConfig(background_label="other", min_patches=1, of_patches=1, veto={"Music": 0.75})
    vetoed = Detector(config, labels=LABELS, audioset_classes=AUDIOSET)
    assert vetoed.update(heard(0, 0.99, 0.8)) == ([], [])
    assert vetoed.update(heard(1, 0.99, 0.75)) == ([], [])  # at the veto score: vetoed too
    started, _ = vetoed.update(heard(2, 0.99, 0.74))
    assert [e.label for e in started] == ["clock_alarm"]
    plain = Detector(config.with_changes(veto={}), labels=LABELS)
    assert [e.label for e in plain.update(heard(0, 0.99, 0.8))[0]] == ["clock_alarm"]


def test_a_vetoed_patch_does_not_sustain_an_active_event() -> None:
    config = DetectorConfig(background_label="other", min_patches=1, of_patches=1, hold_seconds=0.0, veto={"Music": 0.5})
    detector = Detector(config, labels=LABELS, audioset_classes=AUDIOSET)
    started, _ = detector.update(heard(0, 0.99, 0.0))
    assert len(started) == 1
    _, ended = detector.update(heard(1, 0.99, 0.9))  # music drowns it: no evidence, the event ends
    assert [e.label for e in ended] == ["clock_alarm"]


def test_no_evidence_says_why_a_patch_cannot_count() -> None:
    config = DetectorConfig(background_label="other", veto={"Music": 0.75})
    detector = Detector(config, labels=LABELS, audioset_classes=AUDIOSET)
    assert detector.no_evidence(heard(0, 0.99, 0.74)) is None
    assert detector.no_evidence(heard(0, 0.99, 0.81)) == "vetoed: Music 0.81 >= 0.75"
    silent = dataclasses.replace(heard(0, 0.99, 0.81), rms_dbfs=-131.2)
    assert detector.no_evidence(silent) == "silent: -131.2 dBFS < -90"  # silence is checked first
    assert Detector(config.with_changes(veto={}), labels=LABELS).no_evidence(heard(0, 0.99, 0.99)) is None


def test_a_veto_needs_yamnets_class_names_and_a_class_yamnet_has() -> None:
    config = DetectorConfig(veto={"Music": 0.75})
    with pytest.raises(ConfigError, match="class names are not known"):
        Detector(config, labels=LABELS)
    with pytest.raises(ConfigError, match=r"'Musik'.*did you mean \['Music'\]"):
        Detector(DetectorConfig(veto={"Musik": 0.75}), labels=LABELS, audioset_classes=AUDIOSET)
    with pytest.raises(ConfigError, match="veto score"):
        DetectorConfig(veto={"Music": 1.5})
    assert DetectorConfig.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    "value, text",
    [(0.5, "0.5"), (0.98594, "0.9859"), (0.9999546, "0.99995"), (0.9999939, "0.99999"), (1.0, "1"), (0.0, "0"), (1e-7, "1e-07")],
)
def test_threshold_text_never_rounds_a_threshold_below_one_up_to_one(value: float, text: str) -> None:
    assert threshold_text(value) == text
    assert (float(text) < 1.0) == (value < 1.0)
