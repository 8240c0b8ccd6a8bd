"""Clip evaluation (train.evaluate) and figures (train.plots).

Metrics are checked on hand-built confusions and probabilities (NumPy only); cross-validation
trains tiny heads (TensorFlow); figures need matplotlib.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.pipeline import decide
from train.evaluate import (
    confusion_matrix,
    decide_clips,
    evaluate_clip_probabilities,
    evaluate_head,
    format_cross_validation,
    format_report,
    metrics_from_confusion,
    split_patch_probabilities,
)

LABELS = ["crying_baby", "clock_alarm", "other"]


def test_metrics_of_a_hand_built_confusion() -> None:
    confusion = [
        [7, 1, 0],  # crying_baby: one decided as clock_alarm
        [0, 8, 0],
        [1, 0, 9],  # other: one false alarm as crying_baby
    ]
    report = metrics_from_confusion(confusion, LABELS, background_label="other")
    assert report["accuracy_text"] == "24/26"
    assert report["accuracy"] == pytest.approx(24 / 26)
    baby, alarm, other = (report["per_class"][label] for label in LABELS)
    assert baby["precision"] == pytest.approx(7 / 8) and baby["recall"] == pytest.approx(7 / 8)
    assert alarm["precision"] == pytest.approx(8 / 9) and alarm["recall"] == 1.0
    assert alarm["f1"] == pytest.approx(2 * (8 / 9) / (8 / 9 + 1))
    assert other["precision"] == 1.0 and other["recall"] == pytest.approx(0.9)
    assert [report["per_class"][label]["support"] for label in LABELS] == [8, 8, 10]
    assert report["targets"] == {
        "num_clips": 16, "correct": 15, "accuracy": 15 / 16, "accuracy_text": "15/16", "missed_as_background": 0,
    }  # fmt: skip
    assert report["background"]["accuracy_text"] == "9/10"
    assert report["background"]["false_alarms"] == 1
    assert report["confusion"] == confusion


def test_without_a_background_class_there_is_no_target_split() -> None:
    report = metrics_from_confusion(np.diag([8, 8, 8]), ["a", "b", "c"])
    assert report["accuracy_text"] == "24/24"
    assert "targets" not in report and "background" not in report


def test_a_class_never_decided_has_precision_zero_not_nan() -> None:
    report = metrics_from_confusion([[2, 0], [1, 0]], ["a", "b"])
    assert report["per_class"]["b"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1, "decided": 0, "correct": 0,
    }  # fmt: skip


def test_confusion_rows_are_true_labels_and_columns_decisions() -> None:
    confusion = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], num_labels=3)
    assert confusion.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 0], num_labels=3)


def test_clips_are_decided_by_the_mean_over_patches_exactly_as_the_edge_decides() -> None:
    # Majority vote would say label 0 (two patches of three); the mean says label 1.
    clip = np.array([[0.55, 0.45], [0.55, 0.45], [0.0, 1.0]], np.float32)
    assert decide_clips([clip]).tolist() == [decide(clip)] == [1]
    rng = np.random.default_rng(0)
    clips = [rng.dirichlet(np.ones(3), size=int(rng.integers(1, 12))).astype(np.float32) for _ in range(50)]
    assert decide_clips(clips).tolist() == [decide(clip) for clip in clips]


def test_evaluate_head_splits_patches_back_into_clips() -> None:
    clip_embeddings = [np.full((10, 4), label, np.float32) for label in (0, 1, 2, 2)]

    def predict(embeddings: np.ndarray) -> np.ndarray:  # decides label = the embedding value
        return np.eye(3, dtype=np.float32)[embeddings[:, 0].astype(int)]

    report = evaluate_head(predict, clip_embeddings, [0, 1, 2, 1], LABELS, background_label="other",
                           clip_names=["a.wav", "b.wav", "c.wav", "d.wav"])  # fmt: skip
    assert report["accuracy_text"] == "3/4"
    assert report["clips"][3] == {"file": "d.wav", "true": "clock_alarm", "decided": "other", "score": 1.0}
    assert report["targets"]["missed_as_background"] == 1
    text = format_report(report)
    assert "3/4" in text and "d.wav: clock_alarm -> other" in text


def test_split_patch_probabilities_checks_the_counts() -> None:
    parts = split_patch_probabilities(np.arange(10, dtype=np.float32).reshape(5, 2), [2, 3])
    assert [part.shape for part in parts] == [(2, 2), (3, 2)]
    with pytest.raises(ValueError, match="sum to 4"):
        split_patch_probabilities(np.zeros((5, 2), np.float32), [2, 2])


def test_the_report_table_shows_counts_per_class_and_the_target_accuracy() -> None:
    probabilities = [np.eye(3, dtype=np.float32)[[label] * 10] for label in [0] * 16 + [1] * 15 + [0] + [2] * 4]
    truth = [0] * 16 + [1] * 16 + [2] * 4
    report = evaluate_clip_probabilities(probabilities, truth, LABELS, background_label="other")
    text = format_report(report, title="Test fold 5")
    assert text.startswith("Test fold 5: accuracy 35/36")
    assert "target classes: 31/32" in text
    for label in LABELS:
        assert label in text
    assert "confusion (rows: true, columns: decided)" in text


# --------------------------------------------------------------------------- cross-validation


def test_cross_validation_trains_on_the_other_folds_and_reports_each(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from train.evaluate import cross_validate
    from train.head import TrainConfig

    rng = np.random.default_rng(1)
    centres = rng.normal(size=(3, 1024)).astype(np.float32)
    clips, labels, folds = [], [], []
    for fold in (1, 2, 3):
        for label in range(3):
            for _ in range(3):
                clips.append(centres[label] + 0.3 * rng.normal(size=(4, 1024)).astype(np.float32))
                labels.append(label)
                folds.append(fold)
    summary = cross_validate(clips, labels, folds, LABELS, background_label="other",
                             config=TrainConfig(epochs=3, batch_size=8))  # fmt: skip
    assert summary["folds"] == [1, 2, 3]
    assert summary["fold_accuracy"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert summary["mean_accuracy"] == 1.0
    assert summary["overall"]["accuracy_text"] == "27/27"
    assert summary["per_fold"]["2"]["accuracy_text"] == "9/9"
    text = format_cross_validation(summary)
    assert "fold 3:     9/9" in text and "mean accuracy 100.00%" in text


def test_cross_validation_never_tests_training_only_clips() -> None:
    pytest.importorskip("tensorflow")
    from train.evaluate import cross_validate
    from train.head import TrainConfig

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 1024)).astype(np.float32)
    clips, labels, folds, train_only = [], [], [], []
    for fold in (1, 2):
        for label in range(3):
            for extra in (False, False, True):
                clips.append(centres[label] + 0.3 * rng.normal(size=(4, 1024)).astype(np.float32))
                labels.append(label)
                folds.append(fold)
                train_only.append(extra and label == 2)  # one "other" clip per fold is extra background
    summary = cross_validate(clips, labels, folds, LABELS, background_label="other", train_only=train_only,
                             config=TrainConfig(epochs=3, batch_size=8))  # fmt: skip
    assert summary["per_fold"]["1"]["accuracy_text"] == "8/8"  # 9 clips in fold 1, one never tested
    assert summary["overall"]["accuracy_text"] == "16/16"


def test_repeated_cross_validation_reports_each_seed_and_their_mean() -> None:
    from train.evaluate import summarize_repeats

    def summary(seed: int, accuracy: float) -> dict:
        return {"train_config": {"seed": seed}, "mean_accuracy": accuracy, "fold_accuracy": {"1": accuracy},
                "mean_target_accuracy": accuracy - 0.1}  # fmt: skip

    combined = summarize_repeats([summary(0, 0.975), summary(1, 0.99375)])
    assert [entry["seed"] for entry in combined["repeats"]] == [0, 1]
    assert combined["mean_accuracy_over_repeats"] == pytest.approx(0.984375)
    assert combined["mean_target_accuracy_over_repeats"] == pytest.approx(0.884375)
    first = metrics_from_confusion(np.diag([8, 8]), ["a", "b"])
    text = format_cross_validation({
        "folds": [1], "per_fold": {"1": first}, "mean_accuracy": 1.0, "std_accuracy": 0.0, "overall": first,
        "train_config": {"seed": 0}, **combined,
    })  # fmt: skip
    assert "seed 1: mean accuracy 99.38%" in text and "mean over seeds: 98.44%" in text


def test_cross_validation_needs_two_folds() -> None:
    pytest.importorskip("tensorflow")
    from train.evaluate import cross_validate

    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate([np.zeros((2, 1024), np.float32)] * 2, [0, 1], [1, 1], ["a", "b"])


# --------------------------------------------------------------------------- figures


def _assert_png(path: Path, *, min_bytes: int = 10_000) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > min_bytes


def test_figures_are_written_as_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from edge.params import DEFAULT_PARAMS
    from train.plots import plot_clip, plot_confusion_matrix, plot_training_curves

    history = {"loss": [1.0, 0.5, 0.3], "accuracy": [0.5, 0.8, 0.9], "val_loss": [1.1, 0.7, 0.6], "val_accuracy": [0.4, 0.7, 0.8]}
    _assert_png(plot_training_curves(history, tmp_path / "curves.png"))
    _assert_png(plot_confusion_matrix([[7, 1, 0], [0, 8, 0], [1, 0, 9]], LABELS, tmp_path / "confusion.png"))
    rng = np.random.default_rng(0)
    waveform = 0.2 * rng.standard_normal(DEFAULT_PARAMS.clip_samples).astype(np.float32)
    frames = 1 + (len(waveform) - DEFAULT_PARAMS.stft_window_samples) // DEFAULT_PARAMS.stft_hop_samples
    log_mel = rng.normal(size=(frames, DEFAULT_PARAMS.mel_bands)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(3), size=10).astype(np.float32)
    _assert_png(plot_clip(waveform, log_mel, probabilities, LABELS, tmp_path / "clip.png", title="noise.wav"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.png", "confusion.png", "curves.png"]


def test_plot_clip_rejects_probabilities_of_the_wrong_width(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from train.plots import plot_clip

    with pytest.raises(ValueError, match="probabilities must be"):
        plot_clip(np.zeros(16000, np.float32), np.zeros((98, 64), np.float32), np.zeros((2, 2), np.float32), LABELS, tmp_path / "x.png")


def _embedded_dataset(tmp_path: Path, folds: dict[str, int]):  # noqa: ANN202 - a train.core.EmbeddedDataset
    """Two separable classes, one 2-patch clip per (label, source) of `folds` ({"<label>:<source>": fold})."""
    from types import SimpleNamespace

    from train.core import EmbeddedDataset
    from train.datasets import DatasetEntry, PreparedDataset

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 1024)).astype(np.float32)
    labels = ("door", "kettle")
    entries, clips = [], {}
    for key, fold in folds.items():
        label, source = key.split(":")
        entry = DatasetEntry(f"{label}__{source}.wav", label, labels.index(label), fold, source)
        entries.append(entry)
        embeddings = centres[entry.class_number] + 0.1 * rng.normal(size=(2, 1024)).astype(np.float32)
        clips[entry] = SimpleNamespace(embeddings=embeddings, rms_dbfs=np.full(2, -20.0, np.float32))
    dataset = PreparedDataset(
        data_dir=tmp_path, labels=labels, background_label=None, task="own",
        train=tuple(e for e in entries if e.fold != 5), test=tuple(e for e in entries if e.fold == 5),
    )  # fmt: skip
    return EmbeddedDataset(dataset, [clips[e] for e in dataset.train], [clips[e] for e in dataset.test], "0" * 64)


def test_evaluate_refuses_a_head_trained_on_a_recording_that_has_since_moved_to_the_test_fold(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from train import core
    from train.head import HeadError, TrainConfig, load_head

    # "esc": one recording in a training fold and in the test fold, as four of ESC-50's are: not a moved one.
    folds = {"door:hall": 1, "door:porch": 2, "door:shed": 5, "kettle:cafe": 1, "kettle:office": 3, "kettle:home": 5,
             "door:esc": 4, "kettle:esc": 5}  # fmt: skip
    model_dir = tmp_path / "model"
    core.fit(_embedded_dataset(tmp_path, folds), config=TrainConfig(epochs=2, validation_fraction=0.0),
             model_dir=model_dir, reports_dir=None)  # fmt: skip
    head = load_head(model_dir)
    assert head.extra["trained_on"] == {"sources": ["cafe", "esc", "hall", "office", "porch"]}
    report = core.evaluate(head, _embedded_dataset(tmp_path, folds), model_dir=model_dir, reports_dir=None)
    assert report["accuracy_text"].endswith("/3")

    regrouped = {**folds, "door:hall": 5, "door:shed": 1}  # a re-prepare that placed the groups anew
    with pytest.raises(HeadError, match=r"head.json was trained on 1 source recording\(s\) that are now in the test "
                                        r"fold 5 \(1 test clip\(s\); e.g. hall\).*fit it again"):  # fmt: skip
        core.evaluate(head, _embedded_dataset(tmp_path, regrouped), model_dir=model_dir, reports_dir=None)


def test_a_head_that_recorded_no_training_sources_is_not_checked(tmp_path: Path) -> None:
    from train.core import check_head_not_trained_on_test

    dataset = _embedded_dataset(tmp_path, {"door:hall": 5, "door:shed": 1, "kettle:cafe": 5, "kettle:home": 1}).dataset
    check_head_not_trained_on_test({}, dataset, json_path=tmp_path / "head.json")  # fit-openset or older heads
    with pytest.raises(ValueError, match="e.g. cafe, hall"):
        check_head_not_trained_on_test({"trained_on": {"sources": ["cafe", "hall"]}}, dataset, json_path=tmp_path)
