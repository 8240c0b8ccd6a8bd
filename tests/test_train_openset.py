"""Open-set recipe and calibration (train.openset): threshold choice, patch labels, saved thresholds, heads.

The core tests need numpy (+ soundfile for the synthetic stream); the head tests skip without TensorFlow.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")

from edge.audio import write_wav  # noqa: E402
from edge.detect import DetectorConfig  # noqa: E402
from edge.params import DEFAULT_PARAMS  # noqa: E402
from train.openset import (  # noqa: E402
    CALIBRATION_GRID,
    Calibration,
    ClipData,
    OpenSetRecipe,
    StreamFactory,
    StreamModel,
    Task,
    _LabelSpace,
    choose_thresholds,
    clip_category,
    hindsight,
    hindsight_text,
    detector_from_metadata,
    detector_settings,
    label_stream_patches,
    quiet_mask,
    training_set,
    write_thresholds,
)
from train.embeddings import patch_rms_dbfs  # noqa: E402
from train.streams import AudioLibrary, SweepPoint  # noqa: E402

RATE = DEFAULT_PARAMS.sample_rate_hz
HOP = DEFAULT_PARAMS.hop_samples
LABELS = ("beep", "other")
EMBEDDING = DEFAULT_PARAMS.embedding_size


# --------------------------------------------------------------------------- threshold choice


def rows(*entries: tuple[float, int, int]) -> list[tuple[float, int, int, int]]:
    """(threshold, missed, false events) -> curve rows with 10 targets."""
    return [(t, m, 10, f) for t, m, f in entries]


def test_thresholds_miss_the_fewest_targets_within_the_false_event_budget() -> None:
    curves = {
        "a": rows((0.5, 0, 3), (0.7, 1, 1), (0.9, 3, 0)),
        "b": rows((0.5, 0, 2), (0.7, 2, 0), (0.9, 5, 0)),
    }
    # one hour at 1/h: one false event allowed in total -> a at 0.7 (1 miss, 1 false), b at 0.7 (2 misses)
    assert choose_thresholds(curves, hours=1.0, target_false_per_hour=1.0) == {"a": 0.7, "b": 0.7}
    # no false event allowed: a must go to 0.9
    assert choose_thresholds(curves, hours=0.5, target_false_per_hour=1.0) == {"a": 0.9, "b": 0.7}


def test_among_equally_good_thresholds_the_highest_is_kept() -> None:
    curves = {"a": rows((0.5, 0, 1), (0.6, 0, 0), (0.7, 0, 0), (0.8, 2, 0))}
    assert choose_thresholds(curves, hours=1.0, target_false_per_hour=0.5) == {"a": 0.7}


def test_threshold_position_moves_a_threshold_within_its_plateau_in_logit_space() -> None:
    # 0.5 .. 0.9 give the same figures (0 missed, 0 false): logit -0.0 .. 2.197
    curves = {"a": rows((0.3, 0, 2), (0.5, 0, 0), (0.7, 0, 0), (0.9, 0, 0), (0.95, 3, 0))}
    chosen = {p: choose_thresholds(curves, hours=1.0, target_false_per_hour=0.5, position=p)["a"] for p in (1.0, 0.5, 0.0)}
    assert chosen[1.0] == 0.9 and chosen[0.0] == 0.5
    assert chosen[0.5] == pytest.approx(1.0 / (1.0 + math.exp(-math.log(9.0) / 2.0)))  # 0.75: the logit midpoint
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        choose_thresholds(curves, hours=1.0, target_false_per_hour=0.5, position=1.5)
    from train.cli import parse_args
    from train.openset_cli import _experiment_from_args

    assert _experiment_from_args(parse_args(["fit-openset"])).threshold_position == 1.0
    assert _experiment_from_args(parse_args(["loco", "--threshold-position", "0.5"])).threshold_position == 0.5


def test_a_class_that_cannot_meet_the_budget_gets_its_highest_threshold() -> None:
    curves = {"a": rows((0.5, 0, 4), (0.9, 1, 2))}
    assert choose_thresholds(curves, hours=1.0, target_false_per_hour=1.0) == {"a": 0.9}


def test_a_false_event_no_threshold_avoids_still_counts_against_the_budget() -> None:
    # a fires once even at its highest threshold; b could spend one false event to miss 2 fewer
    curves = {"a": rows((0.5, 0, 3), (0.9, 1, 1)), "b": rows((0.5, 0, 1), (0.9, 2, 0))}
    # a budget of one: a's unavoidable event uses it, so b must stay at no false event
    assert choose_thresholds(curves, hours=1.0, target_false_per_hour=1.0) == {"a": 0.9, "b": 0.9}
    # a budget of two leaves b its event
    assert choose_thresholds(curves, hours=2.0, target_false_per_hour=1.0) == {"a": 0.9, "b": 0.5}
    # none: out of reach, the fewest false events
    assert choose_thresholds(curves, hours=0.5, target_false_per_hour=1.0) == {"a": 0.9, "b": 0.9}


def _point(threshold: float, missed: dict[str, int], false: dict[str, int]) -> SweepPoint:
    return SweepPoint(threshold, missed, {label: 4 for label in missed}, false, nontarget_seconds=360.0)


def test_hindsight_finds_the_most_targets_any_thresholds_give_within_each_false_event_budget() -> None:
    points = [
        _point(0.5, {"a": 0, "b": 0}, {"a": 2, "b": 1}),
        _point(0.7, {"a": 1, "b": 2}, {"a": 1, "b": 0}),
        _point(0.95, {"a": 3, "b": 4}, {"a": 0, "b": 0}),
    ]
    figures = hindsight(points[::-1], budgets=(0, 1, 2))  # the sweep's order does not matter
    by_budget = {row["max_false_events"]: row for row in figures["budgets"]}
    # no false event: a at 0.95 (3 missed), b at 0.7 (2 missed)
    assert by_budget[0]["detected_in_time"] == 3 and by_budget[0]["false_events"] == 0
    assert by_budget[0]["thresholds"] == {"a": 0.95, "b": 0.7}
    # one: b's single false event at 0.5 buys 2 targets; a's at 0.7 only 2 as well, and ties keep the higher thresholds
    assert by_budget[1]["detected_in_time"] == 5 and by_budget[1]["thresholds"] == {"a": 0.95, "b": 0.5}
    # two: a at 0.7 and b at 0.5 (1 missed) beat a at 0.5 and b at 0.7 (2 missed)
    assert by_budget[2]["detected_in_time"] == 7 and by_budget[2]["false_events"] == 2
    assert figures["targets"] == 8 and figures["any_false"] == 8
    assert hindsight_text(figures).endswith("<= 0 false: 3/8; <= 1 false: 5/8; <= 2 false: 7/8; any false events: 8/8")
    # a false event even at the highest threshold: no thresholds keep a budget of none
    stubborn = hindsight([_point(0.5, {"a": 0}, {"a": 3}), _point(0.9, {"a": 1}, {"a": 1})], budgets=(0, 1))
    assert [row["detected_in_time"] for row in stubborn["budgets"]] == [None, 3]
    assert "<= 0 false: out of reach; <= 1 false: 3/4" in hindsight_text(stubborn)
    with pytest.raises(ValueError, match="at least one point"):
        hindsight([])


def _assert_hindsight_respects_its_budgets(results: dict) -> None:
    """evaluate_streams' results.json: each stream's hindsight ceiling is consistent with itself and the stream."""
    for name, entry in results["streams"].items():
        assert "hindsight" in entry, f"stream {name} has no hindsight figures"
        figures = entry["hindsight"]
        reachable = [row for row in figures["budgets"] if row["detected_in_time"] is not None]
        in_time = [row["detected_in_time"] for row in reachable]
        assert in_time == sorted(in_time), name  # more budget never finds fewer
        assert all(row["false_events"] <= row["max_false_events"] for row in reachable), name
        assert max(in_time, default=0) <= figures["any_false"] <= figures["targets"] == entry["overall"]["targets"], name


class _LevelEmbedder:
    """A stand-in YAMNet: a patch's embedding holds its RMS level, so _LoudnessHead hears loudness."""

    weights_sha256 = "0" * 64

    def embed_patches(self, patches: np.ndarray, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        embeddings = np.zeros((len(patches), EMBEDDING), np.float32)
        embeddings[:, 0] = np.sqrt(np.mean(np.square(patches, dtype=np.float64), axis=1))
        return embeddings, np.zeros((len(patches), DEFAULT_PARAMS.yamnet_classes), np.float32)


class _LoudnessHead:
    """P(beep) rises with the patch's level (the toy beeps' RMS is ~0.2, its noise's ~0.05), plus a
    jitter that depends on the level's last digits: some noise patches look like beeps and some beep
    patches do not, so fewer false events cost targets, as with a real head."""

    def run(self, embeddings: np.ndarray) -> np.ndarray:
        level = embeddings[:, 0].astype(np.float64)
        beep = np.clip(2.5 * level + 0.45 * np.sin(1e5 * level), 0.0, 1.0)
        return np.stack([beep, 1.0 - beep], axis=1).astype(np.float32)


def _write_toy_data(task: Task, data_dir: Path) -> Path:
    """`task` as a prepared data folder (audio/, the fold lists); background clips named <category>__*.wav."""
    from train.datasets import DatasetEntry, PreparedDataset, dataset_json

    (data_dir / "audio").mkdir(parents=True)
    entries = []
    for clip in task.clips:
        name = clip.path.name if clip.label == 0 else f"{clip.category}__{clip.path.name}"  # the noise's category: hiss, hum
        (data_dir / "audio" / name).write_bytes(clip.path.read_bytes())
        entries.append(DatasetEntry(name, LABELS[clip.label], clip.label, clip.fold, clip.source))
    dataset = PreparedDataset(data_dir=data_dir, labels=LABELS, background_label="other", task="own",
                              train=tuple(e for e in entries if e.fold != task.test_fold),
                              test=tuple(e for e in entries if e.fold == task.test_fold), test_fold=task.test_fold)  # fmt: skip
    for name, document in dataset_json(dataset).items():
        (data_dir / name).write_text(json.dumps(document), encoding="utf-8")
    return data_dir


def _loudness_model() -> StreamModel:
    from train.openset import DEFAULT_DETECTOR

    return StreamModel(
        labels=LABELS, background_label="other", params=DEFAULT_PARAMS, embedder=_LevelEmbedder(), head=_LoudnessHead(),
        detector=DEFAULT_DETECTOR.with_changes(thresholds={"beep": 0.7}, background_label="other"), kind="keras", tolerance=1e-4,
    )  # fmt: skip


def test_hindsight_of_a_generated_stream_respects_its_budgets(toy_task: Task, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from train.openset import evaluate_streams

    data_dir = _write_toy_data(toy_task, tmp_path / "data")
    model = _loudness_model()
    out = tmp_path / "stream"
    evaluate_streams(model, data_dir, out_dir=out, snr_db=(0.0,), bed_categories=("hiss",), cache_dir=None,
                     check_pipeline=False, write_audio=False)  # fmt: skip
    results = json.loads((out / "results.json").read_text())
    assert set(results["streams"]) == {"clean", "snr0db"}
    assert results["streams"]["clean"]["overall"]["targets"] == 2  # the test fold's two beeps
    _assert_hindsight_respects_its_budgets(results)


def test_hindsight_of_the_main_job_stream_respects_its_budgets() -> None:
    """Checks the main job's own output (reports/openset/stream/results.json, step 5 of
    scripts/run_default.sh), the file the README's stream figures come from: the generated stream
    above checks the code; this checks the figures. It skips only when there is no such file; one
    older than the model it should have measured fails: rerun oido-train evaluate-stream."""
    repo = Path(__file__).resolve().parents[1]
    results = repo / "reports" / "openset" / "stream" / "results.json"
    if not results.exists():
        pytest.skip(f"no main-job stream results at {results} (bash scripts/run_default.sh makes them)")
    manifest = repo / "model" / "manifest.json"
    assert manifest.is_file(), f"{results} is there but not the model it measured ({manifest}): rerun bash scripts/run_default.sh"
    assert results.stat().st_mtime >= manifest.stat().st_mtime, (
        f"{results} is older than {manifest}: it measured an earlier model; rerun oido-train evaluate-stream"
    )
    _assert_hindsight_respects_its_budgets(json.loads(results.read_text()))


def test_calibration_grid_is_increasing_probabilities() -> None:
    grid = np.array(CALIBRATION_GRID)
    assert np.all(np.diff(grid) > 0) and 0 < grid[0] < 0.5 < 0.9999 < grid[-1] < 1


# --------------------------------------------------------------------------- labels


def test_quiet_patches_of_a_target_become_background() -> None:
    levels = np.array([-20.0, -25.0, -45.0, -200.0], np.float32)
    np.testing.assert_array_equal(quiet_mask(levels, quiet_below_peak_db=20.0), [False, False, True, True])
    assert not quiet_mask(levels, quiet_below_peak_db=None).any()


def test_background_clip_category_comes_from_the_esc50_file_name() -> None:
    categories = {0: "dog", 38: "clock_tick"}
    assert clip_category("5-9032-A-0.wav", "other", background_label="other", categories=categories) == "dog"
    assert clip_category("1-1234-B-38.wav", "other", background_label="other", categories=categories) == "clock_tick"
    assert clip_category("kitchen__take2.wav", "other", background_label="other", categories=categories) == "kitchen"
    assert clip_category("5-9032-A-0.wav", "dog", background_label="other", categories=categories) == "dog"


def _clip(path: Path, label: int, category: str, fold: int, levels: np.ndarray, rng: np.random.Generator) -> ClipData:
    return ClipData(
        path=path, label=label, category=category, fold=fold, source=path.stem,
        embeddings=rng.standard_normal((len(levels), EMBEDDING)).astype(np.float32),
        yamnet_scores=np.zeros((len(levels), DEFAULT_PARAMS.yamnet_classes), np.float32),
        level_db=np.asarray(levels, np.float32),
    )  # fmt: skip


@pytest.fixture()
def toy_task(tmp_path: Path) -> Task:
    """Two folds; per fold two 2 s beeps (second half silent) and two noise clips of categories hiss/hum."""
    from edge.framing import waveform_to_patches

    rng = np.random.default_rng(0)
    clips = []
    t = np.arange(2 * RATE) / RATE
    for fold in (1, 2):
        for i in range(2):
            wave = (0.3 * np.sin(2 * math.pi * 1000 * t)).astype(np.float32)
            wave[RATE:] = 0.0
            path = write_wav(tmp_path / f"{fold}-beep{i}.wav", wave, rate_hz=RATE)
            levels = patch_rms_dbfs(waveform_to_patches(wave))
            clips.append(_clip(path, 0, "beep", fold, levels, rng))
        for i, category in enumerate(("hiss", "hum")):
            wave = (0.05 * rng.standard_normal(2 * RATE)).astype(np.float32)
            path = write_wav(tmp_path / f"{fold}-noise{i}.wav", wave, rate_hz=RATE)
            clips.append(_clip(path, 1, category, fold, patch_rms_dbfs(waveform_to_patches(wave)), rng))
    return Task(labels=LABELS, background_label="other", clips=tuple(clips), test_fold=2)


class RandomEmbedder:
    weights_sha256 = "e" * 64

    def embed_patches(self, patches: np.ndarray, *, batch_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(len(patches))
        return (
            rng.standard_normal((len(patches), EMBEDDING)).astype(np.float32),
            np.zeros((len(patches), DEFAULT_PARAMS.yamnet_classes), np.float32),
        )


def test_training_only_background_is_trained_on_but_never_streamed_for_measuring(toy_task: Task, tmp_path: Path) -> None:
    from dataclasses import replace

    rng = np.random.default_rng(1)
    wave = (0.05 * rng.standard_normal(2 * RATE)).astype(np.float32)
    path = write_wav(tmp_path / "other__debian-00001-0.wav", wave, rate_hz=RATE)
    from edge.framing import waveform_to_patches

    extra = replace(_clip(path, 1, "extra", 1, patch_rms_dbfs(waveform_to_patches(wave)), rng), train_only=True)
    task = replace(toy_task, clips=toy_task.clips + (extra,))
    assert task.categories == ["hiss", "hum"]
    assert extra in task.select(folds=[1]) and extra not in task.select(folds=[1], train_only=False)
    factory = StreamFactory(task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    measured = factory.fold_stream([1], seed=3)
    trained = factory.fold_stream([1], seed=3, training=True)
    assert "extra" not in {c.category for c in measured.nontargets}
    assert "extra" in {c.category for c in trained.nontargets}


def test_plain_clips_keep_their_label_except_silent_target_patches(toy_task: Task) -> None:
    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    data = training_set(factory, toy_task.select(folds=[1]), OpenSetRecipe(mix=None, training_streams=0, quiet_below_peak_db=20.0), augment_cache=None)
    labels = np.concatenate([np.full(len(e), l) for e, l in zip(data.clip_embeddings, data.clip_labels)])
    beep_patches = sum(len(c.embeddings) for c in toy_task.select(folds=[1], background=False))
    quiet = sum(int(quiet_mask(c.level_db, quiet_below_peak_db=20.0).sum()) for c in toy_task.select(folds=[1], background=False))
    assert 0 < quiet < beep_patches
    assert int((labels == 0).sum()) == beep_patches - quiet
    assert data.output_names == LABELS
    np.testing.assert_array_equal(data.merge, np.eye(2))


def test_background_subclasses_merge_back_into_the_background_label(toy_task: Task) -> None:
    space = _LabelSpace(toy_task, toy_task.select(folds=[1]), OpenSetRecipe(mix=None, background_subclasses=True))
    assert space.names == ("beep", "other:hiss", "other:hum", "other:quiet")
    outputs = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    np.testing.assert_allclose(outputs @ space.merge, [[0.1, 0.9]])


def test_stream_patches_are_labelled_by_what_they_hold(toy_task: Task) -> None:
    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    recipe = OpenSetRecipe(mix=None, training_streams=1, quiet_below_peak_db=20.0)
    spec = factory.fold_stream([1], seed=7)
    allowed = {str(Path(c.path).resolve()): c for c in clips}
    labels = label_stream_patches(spec, allowed, _LabelSpace(toy_task, clips, recipe), recipe=recipe, factory=factory)
    assert len(labels) == DEFAULT_PARAMS.patches_in(spec.num_samples)
    min_overlap = round(recipe.min_target_overlap_seconds * RATE)
    for index, label in enumerate(labels):
        start, end = index * HOP, index * HOP + DEFAULT_PARAMS.patch_samples
        sounding = [
            c for c in spec.targets
            if min(end, c.start_sample + RATE) - max(start, c.start_sample) > 0  # the beep's first (loud) second
        ]  # fmt: skip
        if label == 0:  # a beep patch holds at least min_overlap of loud beep
            assert any(min(end, c.start_sample + RATE) - max(start, c.start_sample) >= min_overlap - 400 for c in sounding)
        elif label == 1:
            assert not sounding
    assert (labels == 0).any() and (labels == 1).any() and (labels == -1).any()
    # a held-out clip drops every patch touching it
    held_out = {k: v for k, v in allowed.items() if v.category != "hum"}
    dropped = label_stream_patches(spec, held_out, _LabelSpace(toy_task, clips, recipe), recipe=recipe, factory=factory)
    hum = next(c for c in spec.nontargets if c.category == "hum")
    touching = [i for i in range(len(labels)) if i * HOP < hum.end_sample and i * HOP + DEFAULT_PARAMS.patch_samples > hum.start_sample]
    assert all(dropped[i] == -1 for i in touching)


# --------------------------------------------------------------------------- saved settings


def test_thresholds_file_is_what_convert_reads(tmp_path: Path) -> None:
    calibration = Calibration(
        thresholds={"beep": 0.93}, target_false_per_hour=2.0, validation_hours=0.8, validation_targets=64,
        sweep={"beep": []}, expected={"beep": {"missed": 1, "targets": 64, "false_events": 0}},
    )  # fmt: skip
    detector = DetectorConfig(thresholds={"beep": 0.93}, background_label="other", min_patches=2, of_patches=3)
    path = write_thresholds(tmp_path, calibration, detector, head_sha256="ab" * 32)
    document = json.loads(path.read_text())
    assert document["thresholds"] == {"beep": 0.93}
    assert "thresholds" not in document["detector"] and "background_label" not in document["detector"]
    rebuilt = detector_from_metadata(document, labels=LABELS, background_label="other", where=str(path))
    assert rebuilt == detector


def test_detector_settings_name_unknown_labels(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="head.json"):
        detector_from_metadata({"thresholds": {"meow": 0.5}}, labels=LABELS, background_label="other", where="model/head.json")
    assert detector_settings(DetectorConfig(min_patches=1, of_patches=1))["of_patches"] == 1


def test_recipe_round_trips_through_a_dict() -> None:
    recipe = OpenSetRecipe(label_smoothing=0.1, training_streams=2)
    assert OpenSetRecipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


# --------------------------------------------------------------------------- heads (TensorFlow)


def test_training_is_seeded_and_the_merged_keras_head_equals_the_ensemble(toy_task: Task) -> None:
    pytest.importorskip("tensorflow")
    from train.openset import train_heads

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    recipe = OpenSetRecipe(mix=None, epochs=2, ensemble=2, background_subclasses=True)
    heads = train_heads(factory, toy_task.select(folds=[1]), recipe, augment_cache=None)
    again = train_heads(factory, toy_task.select(folds=[1]), recipe, augment_cache=None)
    embeddings = np.random.default_rng(1).standard_normal((5, EMBEDDING)).astype(np.float32)
    probabilities = heads.predict(embeddings)
    np.testing.assert_array_equal(probabilities, again.predict(embeddings))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    from train.head import predict_probabilities

    merged = heads.as_keras()
    assert int(merged.outputs[0].shape[-1]) == len(LABELS)
    np.testing.assert_allclose(predict_probabilities(merged, embeddings), probabilities, atol=1e-6)
    heads.temperature = 2.5
    np.testing.assert_allclose(predict_probabilities(heads.as_keras(), embeddings), heads.predict(embeddings), atol=1e-6)


def test_temperature_is_folded_into_the_tutorial_head(toy_task: Task) -> None:
    pytest.importorskip("tensorflow")
    from train.head import predict_probabilities
    from train.openset import train_heads

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    heads = train_heads(factory, toy_task.select(folds=[1]), OpenSetRecipe(mix=None, epochs=2), augment_cache=None)
    embeddings = np.random.default_rng(2).standard_normal((4, EMBEDDING)).astype(np.float32)
    np.testing.assert_allclose(heads.predict(embeddings), predict_probabilities(heads.models[0], embeddings), atol=1e-6)
    heads.temperature = 3.0
    exported = heads.as_keras()
    assert [layer.name for layer in exported.layers[1:]] == ["hidden", "probabilities"]
    np.testing.assert_allclose(predict_probabilities(exported, embeddings), heads.predict(embeddings), atol=1e-6)
    assert np.array_equal(heads.predict(embeddings).argmax(1), heads.predict(embeddings, temperature=1.0).argmax(1))


def test_dropout_trains_differently_and_leaves_the_tutorial_head(toy_task: Task) -> None:
    pytest.importorskip("tensorflow")
    from train.head import predict_probabilities
    from train.openset import train_heads

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    dropped = train_heads(factory, clips, OpenSetRecipe(mix=None, epochs=2, dropout=0.5), augment_cache=None)
    again = train_heads(factory, clips, OpenSetRecipe(mix=None, epochs=2, dropout=0.5), augment_cache=None)
    plain = train_heads(factory, clips, OpenSetRecipe(mix=None, epochs=2), augment_cache=None)
    embeddings = np.random.default_rng(3).standard_normal((6, EMBEDDING)).astype(np.float32)
    np.testing.assert_array_equal(dropped.predict(embeddings), again.predict(embeddings))  # seeded
    assert not np.allclose(dropped.predict(embeddings), plain.predict(embeddings), atol=1e-4)
    model = dropped.models[0]
    assert [layer.name for layer in model.layers[1:]] == ["hidden", "probabilities"]  # no dropout layer is saved
    # Inference is deterministic: the same input twice gives the same output.
    np.testing.assert_array_equal(predict_probabilities(model, embeddings), predict_probabilities(model, embeddings))


def test_weight_decay_shrinks_the_head_and_reaches_the_recipe_from_a_flag(toy_task: Task) -> None:
    from train.cli import parse_args
    from train.openset_cli import recipe_from_args

    assert recipe_from_args(parse_args(["fit-openset", "--weight-decay", "0.05"])).weight_decay == 0.05
    assert recipe_from_args(parse_args(["loco"])).weight_decay == 0.0
    with pytest.raises(ValueError, match="weight_decay"):
        OpenSetRecipe(weight_decay=-0.1)
    pytest.importorskip("tensorflow")
    from train.openset import train_heads

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    norms = {}
    for decay in (0.0, 0.5):
        heads = train_heads(factory, clips, OpenSetRecipe(mix=None, epochs=3, weight_decay=decay), augment_cache=None)
        norms[decay] = float(np.linalg.norm(heads.models[0].get_layer("hidden").get_weights()[0]))
    assert norms[0.5] < norms[0.0]


def test_noisy_validation_streams_mix_the_targets_over_background_never_the_left_out_category(toy_task: Task) -> None:
    from train.cli import parse_args
    from train.openset import ExperimentOptions, oof_validation
    from train.openset_cli import _experiment_from_args

    assert _experiment_from_args(parse_args(["calibrate", "--validation-snr-db", "0", "10"])).validation_snr_db == (0.0, 10.0)
    assert _experiment_from_args(parse_args(["fit-openset"])).validation_snr_db == ()
    assert _experiment_from_args(parse_args(["fit-openset", "--validation-snr-db", "none"])).validation_snr_db == ()
    pytest.importorskip("tensorflow")
    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    recipe = OpenSetRecipe(mix=None, epochs=1, training_streams=0, temperature_scaling=False)
    clean = oof_validation(factory, recipe, train_folds=[1, 2], experiment=ExperimentOptions(validation_seeds=1, validation_snr_db=()))
    noisy = oof_validation(factory, recipe, train_folds=[1, 2], exclude_categories=["hum"],
                           experiment=ExperimentOptions(validation_seeds=1, validation_snr_db=(0.0,)))  # fmt: skip
    assert len(clean.streams) == 2 and len(noisy.streams) == 4  # each fold's stream, then the same over background
    for plain, mixed in zip(noisy.streams[::2], noisy.streams[1::2]):
        beds = [c for c in mixed.spec.clips if c.role == "bed"]
        assert beds and {c.category for c in beds} == {"hiss"}  # the toy task has no ESC-10 beds; hum is left out
        assert [t.file for t in mixed.spec.targets] == [t.file for t in plain.spec.targets]


def test_a_context_head_trains_on_each_patch_with_the_patches_before_it(toy_task: Task) -> None:
    pytest.importorskip("tensorflow")
    from train.context import context_features
    from train.openset import train_heads

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    recipe = OpenSetRecipe(mix=None, training_streams=1, epochs=2, context_patches=3)
    data = training_set(factory, clips, recipe, augment_cache=None)
    plain = training_set(factory, clips, replace(recipe, context_patches=0), augment_cache=None)
    assert {e.shape[1] for e in data.clip_embeddings} == {2 * EMBEDDING}
    assert data.num_patches == plain.num_patches and data.clip_labels == plain.clip_labels
    # the first half of every row is the patch's embedding: the same rows as without context
    np.testing.assert_array_equal(np.concatenate(data.clip_embeddings)[:, :EMBEDDING], np.concatenate(plain.clip_embeddings))
    heads = train_heads(factory, clips, recipe, augment_cache=None)
    assert heads.context_patches == 3 and int(heads.models[0].inputs[0].shape[-1]) == 2 * EMBEDDING
    embeddings = np.random.default_rng(4).standard_normal((8, EMBEDDING)).astype(np.float32)
    # predict() takes consecutive embeddings and hears each with the three before it
    np.testing.assert_allclose(heads.predict(embeddings)[5:], heads.predict(embeddings[2:])[3:], atol=1e-6)
    assert not np.allclose(heads.predict(embeddings)[1], heads.predict(embeddings[1:])[0], atol=1e-4)
    np.testing.assert_array_equal(heads.logits(embeddings), heads.logits_of_features(context_features(embeddings, 3)))


def _recorded_in_two_sessions(toy_task: Task) -> Task:
    """The toy task as own data of two sessions per class: fold 2's beeps went to the test fold (3),
    so the beep trains in fold 1 only, while the background trains in folds 1 and 2."""
    clips = tuple(replace(c, fold=3) if c.label == 0 and c.fold == 2 else c for c in toy_task.clips)
    return replace(toy_task, clips=clips, test_fold=3)


def _calibration(*, missed: int, targets: int) -> Calibration:
    return Calibration(
        thresholds={"beep": 0.99999}, target_false_per_hour=2.0, validation_hours=0.1, validation_targets=targets,
        sweep={"beep": []}, expected={"beep": {"missed": missed, "targets": targets, "false_events": 0}},
    )  # fmt: skip


def test_a_class_trained_in_one_fold_or_never_lit_in_validation_is_named_with_the_fix(toy_task: Task) -> None:
    from train.openset import calibration_warnings

    healthy = replace(toy_task, test_fold=3)  # beeps in training folds 1 and 2
    assert calibration_warnings(healthy, _calibration(missed=1, targets=4), train_folds=[1, 2]) == ()
    (dark,) = calibration_warnings(healthy, _calibration(missed=4, targets=4), train_folds=[1, 2])
    assert dark.startswith("class 'beep': its calibrated threshold 0.99999 misses all 4")
    assert "missed 4 of 4" in dark and "never light" in dark and "record another session of beep" in dark
    assert "fold 1" not in dark

    (two_sessions,) = calibration_warnings(_recorded_in_two_sessions(toy_task), _calibration(missed=2, targets=2),
                                           train_folds=[1, 2])  # fmt: skip
    assert "its 2 training clip(s) are all in fold 1" in two_sessions
    assert "out-of-fold calibration never sees it trained" in two_sessions and "missed 2 of 2" in two_sessions
    assert "record a third session of beep" in two_sessions
    # one fold alone is enough to warn: its threshold was chosen on clips no validation head knew
    (untrained,) = calibration_warnings(_recorded_in_two_sessions(toy_task), _calibration(missed=0, targets=2),
                                        train_folds=[1, 2])  # fmt: skip
    assert "all in fold 1" in untrained and "misses all" not in untrained


def test_fit_openset_on_two_sessions_per_class_warns_in_its_summary_and_head_json(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    pytest.importorskip("tensorflow")
    import train.openset_cli as openset_cli
    from train.cli import parse_args

    factory = StreamFactory(_recorded_in_two_sessions(toy_task), RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    monkeypatch.setattr(openset_cli, "_factory", lambda args: factory)
    args = parse_args(["fit-openset", "--model-dir", str(tmp_path / "model"), "--reports-dir", str(tmp_path / "reports"),
                       "--data-dir", str(tmp_path / "data"), "--epochs", "1", "--training-streams", "0", "--mix-copies", "0",
                       "--validation-seeds", "1", "--veto-classes", "none"])  # fmt: skip
    with caplog.at_level("WARNING", logger="train.openset"):
        assert openset_cli.fit_openset_main(args) == 0
    assert "class 'beep': its 2 training clip(s) are all in fold 1" in caplog.text  # said when found
    summary = capsys.readouterr().out.splitlines()
    warning_at = next(i for i, line in enumerate(summary) if line.startswith("WARNING: calibration warnings for"))
    assert summary[warning_at + 1].startswith("  class 'beep': its 2 training clip(s) are all in fold 1")
    assert "record a third session of beep" in summary[-1]  # and again as the summary's last lines
    saved = json.loads((tmp_path / "model" / "head.json").read_text())["openset"]["calibration"]["warnings"]
    assert len(saved) == 1 and "record a third session of beep" in saved[0]


def test_temperature_softens_an_overconfident_head() -> None:
    from train.openset import HeadEnsemble, fit_temperature

    class Fixed(HeadEnsemble):
        def logits_of_features(self, features: np.ndarray) -> np.ndarray:
            return self._logits

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    right = rng.random(400) < 0.8  # 80 % right, every answer given with logit margin 12
    winner = np.where(right, labels, 1 - labels)
    logits = np.zeros((1, 400, 2), np.float32)
    logits[0, np.arange(400), winner] = 12.0
    heads = Fixed(models=[], merge=np.eye(2, dtype=np.float32), output_names=("a", "b"))
    heads._logits = logits
    temperature = fit_temperature([(heads, np.zeros((400, EMBEDDING), np.float32), labels)])
    # the honest confidence is 0.8: softmax(12 / T) = 0.8 -> T = 12 / ln 4 = 8.7
    assert temperature == pytest.approx(12.0 / math.log(4.0), rel=0.06)


# --------------------------------------------------------------------------- shipped defaults


def test_default_detector_reports_a_sound_on_its_first_patch_over_threshold() -> None:
    from edge.detect import Detector
    from edge.pipeline import PatchResult
    from train.openset import DEFAULT_DETECTOR

    config = DEFAULT_DETECTOR.with_changes(thresholds={"beep": 0.9}, background_label="other")
    detector = Detector(config, labels=LABELS)

    def patch(index: int, beep: float) -> PatchResult:
        return PatchResult(
            index=index, start_sample=index * HOP, probabilities=np.array([beep, 1.0 - beep], np.float32),
            yamnet_scores=np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32), rms_dbfs=-20.0,
        )  # fmt: skip

    assert detector.update(patch(0, 0.89)) == ([], [])  # under the threshold: dark
    started, _ = detector.update(patch(1, 0.95))  # the first patch over it starts the event
    assert [event.label for event in started] == ["beep"]
    assert started[0].start_seconds == pytest.approx(HOP / RATE)
    # hysteresis: half the threshold sustains it, so a dip to 0.6 does not start a second event
    assert detector.update(patch(2, 0.6)) == ([], [])
    assert detector.update(patch(3, 0.95)) == ([], [])


def test_training_streams_add_stream_patches_labelled_by_what_they_hold(toy_task: Task) -> None:
    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    plain = training_set(factory, clips, OpenSetRecipe(mix=None, training_streams=0), augment_cache=None)
    streamed = training_set(factory, clips, OpenSetRecipe(mix=None, training_streams=1), augment_cache=None)
    stream_groups = [g for g in streamed.groups if g.startswith("stream:1:")]
    assert stream_groups and not any(g.startswith("stream:") for g in plain.groups)
    assert streamed.num_patches > plain.num_patches
    # the stream holds beeps and noise: both labels occur among its patches
    labels = {label for label, group in zip(streamed.clip_labels, streamed.groups) if group.startswith("stream:")}
    assert labels == {0, 1}


def test_main_job_ships_the_calibrated_openset_head_and_measures_it_on_streams() -> None:
    script = (Path(__file__).resolve().parents[1] / "scripts" / "run_default.sh").read_text()
    commands = [line.strip() for line in script.splitlines() if line.strip().startswith('"$PYTHON"')]
    names = ("train all", "-m convert", "train prepare", "fit-openset", "-m convert", "replay_test_clips", "evaluate-stream")
    steps = [next((s for s in names if s in c), c) for c in commands]
    assert steps == list(names)
    # the tutorial's four classes into model/tutorial, exported while data/ still holds that task;
    # the open-set head (with `other`) is what the second convert exports for the Pi
    assert "--background none" in commands[0] and "--model-dir model/tutorial" in commands[0]
    assert "--model-dir model/tutorial" in commands[1]
    assert "--background" not in commands[2] and "--model-dir model" in commands[3]
    assert "--model-dir" not in commands[4]


# --------------------------------------------------------------------------- veto from YAMNet's own scores

AUDIOSET = tuple(f"class {i}" for i in range(DEFAULT_PARAMS.yamnet_classes - 2)) + ("Speech", "Music")


def _scored(label: int, music: list[float], speech: list[float], levels: list[float] | None = None) -> ClipData:
    scores = np.zeros((len(music), DEFAULT_PARAMS.yamnet_classes), np.float32)
    scores[:, AUDIOSET.index("Music")] = music
    scores[:, AUDIOSET.index("Speech")] = speech
    return ClipData(
        path=Path(f"{label}-{music[0]}.wav"), label=label, category=LABELS[label], fold=1, source="s",
        embeddings=np.zeros((len(music), EMBEDDING), np.float32), yamnet_scores=scores,
        level_db=np.asarray(levels if levels is not None else [-20.0] * len(music), np.float32),
    )  # fmt: skip


def test_the_veto_sits_above_every_audible_training_target_and_skips_classes_targets_reach() -> None:
    from train.openset import choose_veto

    task = Task(labels=LABELS, background_label="other", clips=(), test_fold=2)
    clips = [
        _scored(0, music=[0.1, 0.675], speech=[0.96, 0.0]),  # a target YAMNet also hears as speech
        _scored(0, music=[0.99, 0.2], speech=[0.0, 0.0], levels=[-120.0, -20.0]),  # a silent patch does not count
        _scored(1, music=[1.0, 1.0], speech=[1.0, 1.0]),  # background clips do not count
    ]
    veto = choose_veto(clips, task=task, audioset_classes=AUDIOSET, candidates=("Speech", "Music"))
    assert veto == {"Music": 0.75}  # 0.675 + 0.05, rounded up to 0.05; Speech 0.96 leaves no room
    assert choose_veto(clips, task=task, audioset_classes=(), candidates=("Music",)) == {}
    assert choose_veto(clips, task=task, audioset_classes=AUDIOSET, candidates=()) == {}
    with pytest.raises(ValueError, match="Musik"):
        choose_veto(clips, task=task, audioset_classes=AUDIOSET, candidates=("Musik",))


def test_detect_events_vetoes_the_patches_yamnet_hears_as_music() -> None:
    from train.streams import StreamPatches, detect_events

    labels = ("beep", "other")
    starts = np.arange(6, dtype=np.int64) * HOP
    probabilities = np.tile(np.array([[0.99, 0.01]], np.float32), (6, 1))
    scores = np.zeros((6, DEFAULT_PARAMS.yamnet_classes), np.float32)
    scores[:3, AUDIOSET.index("Music")] = 0.9  # the first three patches are music
    patches = StreamPatches(starts, np.zeros((6, EMBEDDING), np.float32), scores, np.full(6, -20.0, np.float32))
    config = DetectorConfig(background_label="other", min_patches=1, of_patches=1, veto={"Music": 0.75})
    found = detect_events(probabilities, patches, labels=labels, config=config, num_samples=int(starts[-1]) + DEFAULT_PARAMS.patch_samples,
                          audioset_classes=AUDIOSET)  # fmt: skip
    assert [d.start_seconds for d in found] == [3 * DEFAULT_PARAMS.hop_seconds]
    unvetoed = detect_events(probabilities, patches, labels=labels, config=config.with_changes(veto={}), num_samples=int(starts[-1]) + DEFAULT_PARAMS.patch_samples)
    assert [d.start_seconds for d in unvetoed] == [0.0]


def test_evaluate_stream_threshold_flag_parses_one_label_and_refuses_a_bad_probability() -> None:
    import argparse

    from train.cli import parse_args

    assert parse_args(["evaluate-stream", "--threshold", "water_drops=0.9", "--threshold", "crying_baby=1"]).threshold == [
        ("water_drops", 0.9), ("crying_baby", 1.0)]  # fmt: skip
    assert parse_args(["evaluate-stream"]).threshold == []
    from train.openset_cli import label_threshold_arg

    for bad in ("water_drops", "water_drops=1.5", "=0.5", "water_drops=x", "water_drops=0"):
        with pytest.raises(argparse.ArgumentTypeError, match="LABEL=P"):
            label_threshold_arg(bad)


def test_veto_flags_parse_names_scores_and_none() -> None:
    import argparse

    from train.openset_cli import veto_arg, veto_classes_arg

    assert veto_classes_arg("Speech, Music") == ("Speech", "Music") and veto_classes_arg("none") == ()
    assert veto_arg("Music=0.75,Speech=0.8") == {"Music": 0.75, "Speech": 0.8} and veto_arg("none") == {}
    for bad in ("Music", "=0.5", "Music=loud"):
        with pytest.raises(argparse.ArgumentTypeError, match="CLASS=SCORE"):
            veto_arg(bad)


def test_ablation_seed_reaches_every_variant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.ablation as ablation
    import train.openset_cli as openset_cli
    from train.cli import parse_args

    seen: dict[str, OpenSetRecipe] = {}

    class _Task:
        labels, test_fold = ("a", "other"), 5

    class _Factory:
        task = _Task()

    def fake_ablation(factory: object, variants: dict, **kwargs: object) -> list:
        seen.update({name: variant.recipe for name, variant in variants.items()})
        return []

    monkeypatch.setattr(openset_cli, "_factory", lambda args: _Factory())
    monkeypatch.setattr(openset_cli, "_train_folds", lambda task: [1, 2, 3, 4])
    monkeypatch.setattr(openset_cli, "ablation", fake_ablation)
    args = parse_args(["ablation", "--variants", "default,dropout", "--seed", "3", "--reports-dir", str(tmp_path), "-q"])
    assert openset_cli.ablation_main(args) == 0
    assert {name: recipe.seed for name, recipe in seen.items()} == {"default": 3, "dropout": 3}
    assert (seen["dropout"].dropout, seen["dropout"].epochs) == (0.5, 40)  # the rest of the variant is kept
    assert ablation.ABLATION["dropout"].recipe.seed == 0  # the table itself is not changed


def test_mix_speed_reaches_the_recipe_from_a_flag_or_a_recipe_file(tmp_path: Path) -> None:
    from train.cli import parse_args
    from train.openset import DEFAULT_RECIPE
    from train.openset_cli import recipe_from_args

    assert recipe_from_args(parse_args(["fit-openset"])).mix == DEFAULT_RECIPE.mix
    typed = recipe_from_args(parse_args(["fit-openset", "--mix-speed", "0.85", "1.15"]))
    assert typed.mix is not None and typed.mix.speed == (0.85, 1.15) and typed.mix.copies == DEFAULT_RECIPE.mix.copies
    (tmp_path / "recipe.toml").write_text("[fit-openset]\nmix_speed = [0.9, 1.1]\n")
    from_file = recipe_from_args(parse_args(["--config", str(tmp_path / "recipe.toml"), "fit-openset"]))
    assert from_file.mix is not None and from_file.mix.speed == (0.9, 1.1)
    with pytest.raises(ValueError, match="--mix-speed"):
        recipe_from_args(parse_args(["fit-openset", "--mix-speed", "1.1", "0.9"]))


def test_mix_snr_reaches_the_recipe_and_refuses_a_reversed_range() -> None:
    from train.cli import parse_args
    from train.openset_cli import recipe_from_args

    assert recipe_from_args(parse_args(["fit-openset"])).mix.snr_db == (0.0, 20.0)
    assert recipe_from_args(parse_args(["fit-openset", "--mix-snr", "-5", "20"])).mix.snr_db == (-5.0, 20.0)
    with pytest.raises(ValueError, match="--mix-snr takes LOW HIGH in dB"):
        recipe_from_args(parse_args(["fit-openset", "--mix-snr", "20", "-5"]))


def test_background_copies_add_only_background_patches_and_reach_the_recipe(toy_task: Task) -> None:
    from dataclasses import replace

    from train.augment import MixOptions
    from train.cli import parse_args
    from train.openset_cli import recipe_from_args

    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    clips = toy_task.select(folds=[1])
    recipe = OpenSetRecipe(mix=MixOptions(copies=0), training_streams=0)
    plain = training_set(factory, clips, recipe, augment_cache=None)
    copied = training_set(factory, clips, replace(recipe, mix=MixOptions(copies=0, background_copies=3)), augment_cache=None)

    def count(data, label: int) -> int:
        return sum(len(e) for e, lab in zip(data.clip_embeddings, data.clip_labels) if lab == label)

    noise_patches = sum(len(c.embeddings) for c in clips if c.label == 1)
    assert count(copied, 0) == count(plain, 0)  # no new target patches
    # three copies of each noise clip, each a little longer for its shift: at least 3x the noise patches, all background
    assert count(copied, 1) - count(plain, 1) >= 3 * noise_patches
    assert recipe_from_args(parse_args(["fit-openset"])).mix.background_copies == 0
    assert recipe_from_args(parse_args(["fit-openset", "--mix-background-copies", "2"])).mix.background_copies == 2
    with pytest.raises(SystemExit, match="2"):  # refused while parsing, naming the flag
        parse_args(["fit-openset", "--mix-background-copies", "-1"])
    with pytest.raises(ValueError, match="background_copies"):
        MixOptions(background_copies=-1)


def test_rank_auc_counts_pairs_in_order_and_ties_as_half() -> None:
    from train.openset import rank_auc

    assert rank_auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert rank_auc([1.0], [2.0]) == 0.0
    assert rank_auc([1.0, 3.0], [1.0, 2.0]) == pytest.approx(0.625)  # pairs: tie, below, above, above
    with pytest.raises(ValueError, match="at least one"):
        rank_auc([], [1.0])


def test_separability_tells_a_look_alike_from_a_distinct_never_trained_sound(toy_task: Task) -> None:
    pytest.importorskip("tensorflow")
    from dataclasses import replace

    from train.openset import separability

    rng = np.random.default_rng(2)
    direction = np.zeros(EMBEDDING, np.float32)
    direction[:8] = 3.0

    def with_embeddings(sign_of: dict[str, float]) -> Task:
        clips = []
        for clip in toy_task.clips:
            noise = rng.standard_normal(clip.embeddings.shape).astype(np.float32)
            # the beeps' silent patches are trained on as background: they sit with it
            sign = np.where(DEFAULT_PARAMS.audible(clip.level_db), sign_of[clip.category], -1.0).astype(np.float32)
            clips.append(replace(clip, embeddings=noise + sign[:, None] * direction))
        return replace(toy_task, clips=tuple(clips))

    recipe = OpenSetRecipe(mix=None, training_streams=0, epochs=5, temperature_scaling=False)
    figures = {}
    for name, hum in (("look-alike", 1.0), ("distinct", -1.0)):
        task = with_embeddings({"beep": 1.0, "hiss": -1.0, "hum": hum})
        factory = StreamFactory(task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
        figures[name] = separability(factory, recipe, train_folds=[1, 2], left_out="hum", target="beep", augment_cache=None)
    assert figures["distinct"]["target_clips"] == 4 and figures["distinct"]["left_out_clips"] == 2
    assert figures["distinct"]["log-odds"]["auc"] == 1.0
    assert figures["look-alike"]["log-odds"]["auc"] < 0.9
    with pytest.raises(ValueError, match="not a background category"):
        separability(factory, recipe, train_folds=[1, 2], left_out="dog", target="beep", augment_cache=None)


def test_evaluate_stream_refuses_a_head_trained_on_a_recording_now_in_the_test_fold(tmp_path: Path) -> None:
    from train.datasets import DatasetEntry, PreparedDataset, dataset_json
    from train.head import HeadError
    from train.openset_cli import _check_not_trained_on_test

    def write_data(folds: dict[str, int]) -> Path:
        entries = [DatasetEntry(f"{key.replace(':', '__')}.wav", key.split(":")[0], LABELS.index(key.split(":")[0]),
                                fold, key.split(":")[1]) for key, fold in folds.items()]  # fmt: skip
        dataset = PreparedDataset(data_dir=tmp_path / "data", labels=LABELS, background_label="other", task="own",
                                  train=tuple(e for e in entries if e.fold != 5),
                                  test=tuple(e for e in entries if e.fold == 5))  # fmt: skip
        (tmp_path / "data").mkdir(exist_ok=True)
        for name, document in dataset_json(dataset).items():
            (tmp_path / "data" / name).write_text(json.dumps(document), encoding="utf-8")
        return tmp_path / "data"

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    _check_not_trained_on_test(model_dir, tmp_path / "nowhere")  # no head.json: nothing recorded, nothing checked
    required = dict.fromkeys(("labels", "background_label", "params", "embedding_size", "train_config",
                              "yamnet_weights_sha256"))  # fmt: skip
    head_json = {**required, "trained_on": {"sources": ["hall", "cafe"]}}
    (model_dir / "head.json").write_text(json.dumps(head_json), encoding="utf-8")
    folds = {"beep:hall": 1, "beep:porch": 5, "other:cafe": 2, "other:street": 5}
    _check_not_trained_on_test(model_dir, write_data(folds))
    with pytest.raises(HeadError, match=r"now in the test fold 5 .*e.g. hall.*fit it again"):
        _check_not_trained_on_test(model_dir, write_data({**folds, "beep:hall": 5, "beep:porch": 1}))


# --------------------------------------------------------------------------- experiment commands: checks before the work


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [("epochs", 0, "--epochs"), ("ensemble", 0, "--ensemble"), ("training_streams", -1, "--training-streams"),
     ("seed", -1, "--seed"), ("label_smoothing", 1.0, "--label-smoothing"), ("validation_seeds", 0, "--validation-seeds"),
     ("target_false_per_hour", -1.0, "--target-false-per-hour"), ("threshold_position", 2.0, "--threshold-position")],
)  # fmt: skip
def test_recipe_and_experiment_options_refuse_values_that_train_a_broken_model(field: str, value: float, flag: str) -> None:
    """ExperimentOptions(validation_seeds=0) used to calibrate on nothing and save `"thresholds": {}`;
    OpenSetRecipe(ensemble=0) to fail only after every head had trained."""
    from train.openset import ExperimentOptions

    options = OpenSetRecipe if field in OpenSetRecipe.__dataclass_fields__ else ExperimentOptions
    with pytest.raises(ValueError, match=f"{field} \\({flag}\\) must be"):
        options(**{field: value})


def test_more_min_patches_than_of_patches_is_refused_naming_both_flags() -> None:
    from train.cli import parse_args
    from train.openset_cli import _experiment_from_args

    with pytest.raises(ValueError, match="--min-patches 3 is more than --of-patches 2"):
        _experiment_from_args(parse_args(["loco", "--min-patches", "3", "--of-patches", "2"]))


def _no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading the task or the model fail the test: nothing may run before the checks."""
    import train.openset_cli as openset_cli

    def no_work(*args: object, **kwargs: object) -> None:
        raise AssertionError("work started before the command's checks")

    monkeypatch.setattr(openset_cli, "_factory", no_work)
    monkeypatch.setattr(openset_cli, "load_stream_model", no_work)


def _head_json_of_fit_openset(model_dir: Path) -> Path:
    required = dict.fromkeys(("labels", "background_label", "params", "embedding_size", "train_config", "yamnet_weights_sha256"))
    model_dir.mkdir()
    document = {**required, "openset": {"recipe": OpenSetRecipe().to_dict()}}
    (model_dir / "head.json").write_text(json.dumps(document, default=list), encoding="utf-8")
    return model_dir


@pytest.mark.parametrize(
    ("command", "flag"),
    [("fit-openset", "--reports-dir"), ("calibrate", "--reports-dir"), ("loco", "--reports-dir"), ("feedback", "--reports-dir"),
     ("ablation", "--reports-dir"), ("readouts", "--reports-dir"), ("separability", "--reports-dir"),
     ("evaluate-stream", "--reports-dir"), ("evaluate-stream", "--out")],
)  # fmt: skip
def test_an_output_folder_that_is_a_file_is_refused_before_any_work(
    command: str, flag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """loco used to print its table only after writing loco.json, and cv, ablation and feedback
    to fail there: hours of results lost to a --reports-dir that was a file."""
    from train.cli import EXIT_USAGE, main

    _no_work(monkeypatch)
    blocker = tmp_path / "results.txt"
    blocker.write_text("kept")
    model_dir = _head_json_of_fit_openset(tmp_path / "model")
    status = main([command, "-q", "--threads", "0", flag, str(blocker), "--model-dir", str(model_dir), "--data-dir", str(tmp_path)])
    assert status == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"error: {flag} {blocker}: {blocker} is a file, not a folder: give another {flag}" in err, err
    assert blocker.read_text() == "kept"


def _fake_factory(task: Task) -> object:
    from types import SimpleNamespace

    return SimpleNamespace(task=task)


def _loco_summary(categories: list[str]) -> dict:
    split = {"false_events": 1, "false_per_hour": 18.0, "detected_in_time": 3, "targets": 4,
             "hindsight": {"budgets": [{"detected_in_time": 3}, {"detected_in_time": 4}], "any_false": 4}}  # fmt: skip
    return {"splits": {c: split for c in categories}, "mean_false_per_hour": 18.0, "worst_false_per_hour": 18.0,
            "worst_category": categories[0], "min_detected_in_time": 3, "targets": 4}  # fmt: skip


def test_loco_halves_run_with_categories_write_beside_each_other_not_over(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's figures come from loco run as two halves with --categories: each half now
    writes loco-<its categories>.json, where both used to write (and the second overwrite) loco.json."""
    import train.openset_cli as openset_cli
    from train.cli import main

    monkeypatch.setattr(openset_cli, "_factory", lambda args: _fake_factory(toy_task))
    monkeypatch.setattr(openset_cli, "leave_one_class_out",
                        lambda factory, recipe, *, categories, **kwargs: _loco_summary(categories or toy_task.categories))  # fmt: skip
    folders = ["-q", "--threads", "0", "--reports-dir", str(tmp_path)]
    assert main(["loco", "--categories", "hiss", *folders]) == 0
    assert main(["loco", "--categories", "hum", *folders]) == 0
    assert main(["loco", *folders]) == 0
    written = {path.name: list(json.loads(path.read_text())["splits"]) for path in (tmp_path / "openset").iterdir()}
    assert written == {"loco-hiss.json": ["hiss"], "loco-hum.json": ["hum"], "loco.json": ["hiss", "hum"]}


def test_loco_prints_its_table_before_writing_loco_json(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import train.openset_cli as openset_cli
    from train.cli import EXIT_FAILURE, main

    def disk_full(path: Path, document: object) -> Path:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(openset_cli, "_factory", lambda args: _fake_factory(toy_task))
    monkeypatch.setattr(openset_cli, "leave_one_class_out", lambda factory, recipe, **kwargs: _loco_summary(["hiss", "hum"]))
    monkeypatch.setattr(openset_cli, "write_json", disk_full)
    assert main(["loco", "--threads", "0", "--reports-dir", str(tmp_path)]) == EXIT_FAILURE
    out = capsys.readouterr().out
    assert "hiss" in out and "hum" in out and "mean 18.0/h, worst 18.0/h (hiss)" in out  # the hours of work are on screen


def test_loco_checks_every_category_before_training_the_first(toy_task: Task, monkeypatch: pytest.MonkeyPatch) -> None:
    import train.openset as openset

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("a split trained before every --categories name was checked")

    monkeypatch.setattr(openset, "fit_openset", no_training)
    factory = StreamFactory(toy_task, RandomEmbedder(), cache_dir=None, library=AudioLibrary())
    with pytest.raises(ValueError, match="--categories: 'hsis' is not a background category .* choose from hiss, hum"):
        openset.leave_one_class_out(factory, train_folds=[1], test_fold=2, categories=["hiss", "hsis"], augment_cache=None)


def test_evaluate_stream_refuses_a_misspelt_bed_category_naming_the_flag_and_the_choices(
    toy_task: Task, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--bed-categories rian used to log a warning, skip the noisy streams and exit 0; rain,rian
    dropped rian silently. Checked before the model loads or --others downloads anything."""
    from train.cli import EXIT_USAGE, main
    from train.openset import check_bed_categories, evaluate_streams

    data_dir = _write_toy_data(toy_task, tmp_path / "data")
    check_bed_categories(data_dir, ["hiss", "hum"])
    with pytest.raises(ValueError, match=r"--bed-categories: 'hsis' is not a background category of the test fold .*choose from hiss, hum"):
        check_bed_categories(data_dir, ["hiss", "hsis"])
    with pytest.raises(ValueError, match=r"--bed-categories: 'rain', 'rian' are not background categories"):
        evaluate_streams(_loudness_model(), data_dir, out_dir=tmp_path / "direct", bed_categories=["rain", "rian"], cache_dir=None)
    assert not (tmp_path / "direct").exists()

    _no_work(monkeypatch)
    out = tmp_path / "stream"
    status = main(["evaluate-stream", "--threads", "0", "--bed-categories", "hiss,hsis", "--data-dir", str(data_dir), "--out", str(out)])
    assert status == EXIT_USAGE
    assert "--bed-categories: 'hsis' is not a background category" in capsys.readouterr().err
    assert not out.exists()
