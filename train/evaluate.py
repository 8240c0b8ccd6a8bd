"""Clip-level evaluation of a head, deciding every clip exactly as the edge does.

A clip's decision is `edge.pipeline.decide` of its patches' probabilities: the argmax of their
mean (the tutorial's rule, and the one the Pi applies to each window). Figures:

- accuracy over all clips, also as a count ("31/32");
- precision, recall and F1 per class, from the confusion matrix (rows: true, columns: decided);
- with a background class ("other"): accuracy over the TARGET clips (those whose true label is not
  the background) separately from the background clips, and the background clips that were
  decided as a target (false alarms);
- k-fold cross-validation by ESC-50 fold: train on all folds but one, test on that one.

The metric functions are pure NumPy (no TensorFlow); training for cross-validation imports
train.head only when called.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params
from edge.pipeline import decide, voting_mean

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]

EVALUATION_FILE = "eval.json"
CROSS_VALIDATION_FILE = "cv.json"


def decide_clips(clip_probabilities: Sequence[FloatArray], clip_audible: Sequence[BoolArray] | None = None) -> IntArray:
    """One decision per clip: edge.pipeline.decide of float32 [p_i, L] (with bool [p_i] audible
    patches, when given) -> int64 [n_clips]."""
    audible = [None] * len(clip_probabilities) if clip_audible is None else list(clip_audible)
    if len(audible) != len(clip_probabilities):
        raise ValueError(f"{len(clip_probabilities)} clips of probabilities but {len(audible)} audible masks")
    return np.array([decide(p, a) for p, a in zip(clip_probabilities, audible)], dtype=np.int64)


def audible_masks(patch_levels_dbfs: Sequence[FloatArray] | None, params: Params = DEFAULT_PARAMS) -> list[BoolArray] | None:
    """Per clip bool [p_i]: which patches vote in its decision (Params.audible); None for None."""
    if patch_levels_dbfs is None:
        return None
    return [np.asarray(params.audible(levels), bool) for levels in patch_levels_dbfs]


def confusion_matrix(true_labels: Sequence[int] | IntArray, decided: Sequence[int] | IntArray, *, num_labels: int) -> IntArray:
    """int64 [L, L] counts: row = true label, column = decided label."""
    true_array = np.asarray(true_labels, dtype=np.int64)
    decided_array = np.asarray(decided, dtype=np.int64)
    if true_array.shape != decided_array.shape:
        raise ValueError(f"{len(true_array)} true labels but {len(decided_array)} decisions")
    for name, values in (("true label", true_array), ("decision", decided_array)):
        if len(values) and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(f"a {name} is outside [0, {num_labels}): {values.min()}..{values.max()}")
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(confusion, (true_array, decided_array), 1)
    return confusion


def _ratio(numerator: int, denominator: int) -> float:
    """numerator / denominator, 0.0 when there is nothing to divide (sklearn's zero_division=0)."""
    return float(numerator) / float(denominator) if denominator else 0.0


def metrics_from_confusion(
    confusion: npt.ArrayLike, labels: Sequence[str], *, background_label: str | None = None
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1 and target/background figures from a confusion matrix.

    confusion: int [L, L], row = true label, column = decided label; labels: L names.
    A class never decided has precision 0.0; one with no clips has recall 0.0 (support 0).
    """
    matrix = np.asarray(confusion, dtype=np.int64)
    num_labels = len(labels)
    if matrix.shape != (num_labels, num_labels):
        raise ValueError(f"confusion must be [{num_labels}, {num_labels}] for labels {list(labels)}, got {matrix.shape}")
    if background_label is not None and background_label not in labels:
        raise ValueError(f"background_label {background_label!r} is not one of the labels {list(labels)}")
    total = int(matrix.sum())
    correct = int(np.trace(matrix))
    per_class: dict[str, dict[str, float | int]] = {}
    for index, label in enumerate(labels):
        hits = int(matrix[index, index])
        support = int(matrix[index].sum())
        decided = int(matrix[:, index].sum())
        precision = _ratio(hits, decided)
        recall = _ratio(hits, support)
        f1 = 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
        per_class[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
            "decided": decided,
            "correct": hits,
        }
    present = [label for label in labels if per_class[label]["support"] > 0]
    report: dict[str, Any] = {
        "labels": list(labels),
        "background_label": background_label,
        "num_clips": total,
        "correct": correct,
        "accuracy": _ratio(correct, total),
        "accuracy_text": f"{correct}/{total}",
        "macro_f1": float(np.mean([per_class[label]["f1"] for label in present])) if present else 0.0,
        "per_class": per_class,
        "confusion": matrix.tolist(),
    }
    if background_label is not None:
        background = labels.index(background_label)
        targets = [index for index in range(num_labels) if index != background]
        target_clips = int(matrix[targets].sum())
        target_correct = int(sum(matrix[index, index] for index in targets))
        background_clips = int(matrix[background].sum())
        background_correct = int(matrix[background, background])
        report["targets"] = {
            "num_clips": target_clips,
            "correct": target_correct,
            "accuracy": _ratio(target_correct, target_clips),
            "accuracy_text": f"{target_correct}/{target_clips}",
            "missed_as_background": int(matrix[targets, background].sum()),
        }
        report["background"] = {
            "num_clips": background_clips,
            "correct": background_correct,
            "accuracy": _ratio(background_correct, background_clips),
            "accuracy_text": f"{background_correct}/{background_clips}",
            "false_alarms": background_clips - background_correct,
        }
    return report


def evaluate_clip_probabilities(
    clip_probabilities: Sequence[FloatArray],
    true_labels: Sequence[int] | IntArray,
    labels: Sequence[str],
    *,
    background_label: str | None = None,
    clip_names: Sequence[str] | None = None,
    clip_audible: Sequence[BoolArray] | None = None,
) -> dict[str, Any]:
    """The evaluation report for clips whose per-patch probabilities float32 [p_i, L] are known
    (clip_audible: bool [p_i] per clip, the patches that vote; None: all).

    Adds to `metrics_from_confusion` a 'clips' list: {file, true, decided, score} per clip, where
    score is the mean probability of the decided label (what the edge compares to its threshold).
    """
    true_array = np.asarray(true_labels, dtype=np.int64)
    if len(clip_probabilities) != len(true_array):
        raise ValueError(f"{len(clip_probabilities)} clips of probabilities but {len(true_array)} labels")
    decided = decide_clips(clip_probabilities, clip_audible)
    report = metrics_from_confusion(
        confusion_matrix(true_array, decided, num_labels=len(labels)), labels, background_label=background_label
    )
    names = list(clip_names) if clip_names is not None else [str(index) for index in range(len(true_array))]
    report["clips"] = [
        {
            "file": name,
            "true": labels[int(truth)],
            "decided": labels[int(choice)],
            "score": float(voting_mean(probabilities, audible)[int(choice)]),
        }
        for name, truth, choice, probabilities, audible in zip(
            names, true_array, decided, clip_probabilities, clip_audible or [None] * len(decided)
        )
    ]
    return report


def split_patch_probabilities(probabilities: FloatArray, patch_counts: Sequence[int]) -> list[FloatArray]:
    """Cut float32 [sum p_i, L] back into one [p_i, L] block per clip."""
    boundaries = np.cumsum([0, *patch_counts])
    if boundaries[-1] != len(probabilities):
        raise ValueError(f"patch counts sum to {boundaries[-1]} but there are {len(probabilities)} rows")
    return [probabilities[start:stop] for start, stop in zip(boundaries[:-1], boundaries[1:])]


def evaluate_head(
    predict: Callable[[FloatArray], FloatArray],
    clip_embeddings: Sequence[FloatArray],
    true_labels: Sequence[int] | IntArray,
    labels: Sequence[str],
    *,
    background_label: str | None = None,
    clip_names: Sequence[str] | None = None,
    clip_audible: Sequence[BoolArray] | None = None,
) -> dict[str, Any]:
    """Evaluate a head on held-out clips.

    predict: embeddings float32 [n, 1024] -> probabilities float32 [n, L] (e.g. TrainedHead.predict);
    clip_embeddings: one float32 [p_i, 1024] per clip; true_labels: int [n_clips].
    """
    if not len(clip_embeddings):
        raise ValueError("no clips to evaluate: the test split is empty")
    counts = [len(embeddings) for embeddings in clip_embeddings]
    probabilities = np.asarray(predict(np.concatenate(clip_embeddings, axis=0)), np.float32)
    return evaluate_clip_probabilities(
        split_patch_probabilities(probabilities, counts),
        true_labels,
        labels,
        background_label=background_label,
        clip_names=clip_names,
        clip_audible=clip_audible,
    )


def cross_validate(
    clip_embeddings: Sequence[FloatArray],
    true_labels: Sequence[int] | IntArray,
    folds: Sequence[int] | IntArray,
    labels: Sequence[str],
    *,
    background_label: str | None = None,
    config: Any = None,
    groups: Sequence[str] | None = None,
    clip_names: Sequence[str] | None = None,
    patch_levels_dbfs: Sequence[FloatArray] | None = None,
    train_only: Sequence[bool] | None = None,
    params: Params = DEFAULT_PARAMS,
) -> dict[str, Any]:
    """k-fold cross-validation by the given folds (ESC-50's 1..5): train on k-1, test on 1.

    config: train.head.TrainConfig (None: the defaults); groups, patch_levels_dbfs: per clip, as
    for train.head.fit_head; train_only: per clip, True for extra background that is trained on
    in every split and never tested. Returns per-fold reports (only the misclassified clips listed),
    per-fold and mean accuracy, and the confusion summed over folds.
    """
    from train.head import DEFAULT_TRAIN_CONFIG, fit_head, predict_probabilities

    train_config = DEFAULT_TRAIN_CONFIG if config is None else config
    true_array = np.asarray(true_labels, dtype=np.int64)
    fold_array = np.asarray(folds, dtype=np.int64)
    if not (len(clip_embeddings) == len(true_array) == len(fold_array)):
        raise ValueError(
            f"got {len(clip_embeddings)} clips, {len(true_array)} labels and {len(fold_array)} folds; give one of each per clip"
        )
    fold_ids = sorted(int(fold) for fold in set(fold_array.tolist()))
    if len(fold_ids) < 2:
        raise ValueError(f"cross-validation needs clips from at least 2 folds, got folds {fold_ids}")
    names = list(clip_names) if clip_names is not None else [str(index) for index in range(len(true_array))]
    audible = audible_masks(patch_levels_dbfs, params)
    per_fold: dict[str, Any] = {}
    total_confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    only_trained = np.zeros(len(true_array), bool) if train_only is None else np.asarray(train_only, bool)
    for fold in fold_ids:
        train_indices = np.flatnonzero((fold_array != fold) | only_trained)
        test_indices = np.flatnonzero((fold_array == fold) & ~only_trained)
        logger.info("cross-validation: testing on fold %d (%d clips), training on %d clips", fold, len(test_indices), len(train_indices))
        fit = fit_head(
            [clip_embeddings[i] for i in train_indices],
            true_array[train_indices],
            num_labels=len(labels),
            config=train_config,
            groups=None if groups is None else [groups[i] for i in train_indices],
            patch_levels_dbfs=None if patch_levels_dbfs is None else [patch_levels_dbfs[i] for i in train_indices],
        )
        report = evaluate_head(
            lambda embeddings: predict_probabilities(fit.model, embeddings),
            [clip_embeddings[i] for i in test_indices],
            true_array[test_indices],
            labels,
            background_label=background_label,
            clip_names=[names[i] for i in test_indices],
            clip_audible=None if audible is None else [audible[i] for i in test_indices],
        )
        total_confusion += np.asarray(report["confusion"], dtype=np.int64)
        report["errors"] = [clip for clip in report.pop("clips") if clip["true"] != clip["decided"]]
        per_fold[str(fold)] = report
        logger.info("cross-validation: fold %d accuracy %s", fold, report["accuracy_text"])
    accuracies = [per_fold[str(fold)]["accuracy"] for fold in fold_ids]
    summary: dict[str, Any] = {
        "folds": fold_ids,
        "fold_accuracy": {str(fold): per_fold[str(fold)]["accuracy"] for fold in fold_ids},
        "mean_accuracy": float(np.mean(accuracies)),
        "std_accuracy": float(np.std(accuracies)),
        "overall": metrics_from_confusion(total_confusion, labels, background_label=background_label),
        "per_fold": per_fold,
        "train_config": train_config.to_dict(),
    }
    if background_label is not None:
        target_accuracies = [per_fold[str(fold)]["targets"]["accuracy"] for fold in fold_ids]
        summary["mean_target_accuracy"] = float(np.mean(target_accuracies))
        summary["fold_target_accuracy"] = {str(fold): per_fold[str(fold)]["targets"]["accuracy"] for fold in fold_ids}
    return summary


def summarize_repeats(summaries: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Each repeat's (seed's) mean accuracy and their mean, from `cross_validate` summaries."""
    repeats = []
    for summary in summaries:
        entry = {"seed": summary["train_config"]["seed"], "mean_accuracy": summary["mean_accuracy"],
                 "fold_accuracy": summary["fold_accuracy"]}  # fmt: skip
        if "mean_target_accuracy" in summary:
            entry["mean_target_accuracy"] = summary["mean_target_accuracy"]
        repeats.append(entry)
    combined: dict[str, Any] = {
        "repeats": repeats,
        "mean_accuracy_over_repeats": float(np.mean([entry["mean_accuracy"] for entry in repeats])),
    }
    if all("mean_target_accuracy" in entry for entry in repeats):
        combined["mean_target_accuracy_over_repeats"] = float(np.mean([e["mean_target_accuracy"] for e in repeats]))
    return combined


# --------------------------------------------------------------------------- text


def format_report(report: dict[str, Any], *, title: str = "Evaluation") -> str:
    """A readable table: accuracy lines, per-class precision/recall/F1, confusion, mistakes."""
    labels: list[str] = report["labels"]
    width = max(12, *(len(label) for label in labels)) + 2
    lines = [f"{title}: accuracy {report['accuracy_text']} = {100 * report['accuracy']:.1f}% of clips"]
    if "targets" in report:
        targets, background = report["targets"], report["background"]
        lines.append(
            f"  target classes: {targets['accuracy_text']} = {100 * targets['accuracy']:.1f}%"
            f" ({targets['missed_as_background']} missed as {report['background_label']!r})"
        )
        lines.append(
            f"  {report['background_label']!r} (background): {background['accuracy_text']} = "
            f"{100 * background['accuracy']:.1f}% ({background['false_alarms']} decided as a target)"
        )
    lines.append("")
    lines.append(f"{'class':<{width}}{'precision':>10}{'recall':>10}{'f1':>10}{'clips':>8}")
    for label in labels:
        row = report["per_class"][label]
        lines.append(
            f"{label:<{width}}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>8d}"
        )
    lines.append(f"{'macro F1':<{width}}{'':>20}{report['macro_f1']:>10.3f}")
    lines.append("")
    lines.append(format_confusion(report["confusion"], labels))
    mistakes = [clip for clip in report.get("clips", []) if clip["true"] != clip["decided"]]
    if mistakes:
        lines.append("")
        lines.append("misclassified clips:")
        for clip in mistakes:
            lines.append(f"  {clip['file']}: {clip['true']} -> {clip['decided']} (mean p {clip['score']:.2f})")
    return "\n".join(lines)


def format_confusion(confusion: Sequence[Sequence[int]], labels: Sequence[str]) -> str:
    """Confusion matrix as text: rows true, columns decided (abbreviated to 6 characters)."""
    width = max(len(label) for label in labels) + 2
    column = max(7, *(len(str(value)) + 1 for row in confusion for value in row))
    header = " " * width + "".join(f"{label[:column - 1]:>{column}}" for label in labels)
    lines = ["confusion (rows: true, columns: decided)", header]
    for label, row in zip(labels, confusion):
        lines.append(f"{label:<{width}}" + "".join(f"{value:>{column}d}" for value in row))
    return "\n".join(lines)


def format_cross_validation(summary: dict[str, Any]) -> str:
    """Per-fold and mean accuracy, then the table of the folds' summed confusion."""
    lines = [f"{len(summary['folds'])}-fold cross-validation (train on the other folds, test on one):"]
    for fold in summary["folds"]:
        report = summary["per_fold"][str(fold)]
        line = f"  fold {fold}: {report['accuracy_text']:>7} = {100 * report['accuracy']:5.1f}%"
        if "targets" in report:
            line += f"   targets {report['targets']['accuracy_text']:>7} = {100 * report['targets']['accuracy']:5.1f}%"
        lines.append(line)
    mean_line = f"  mean accuracy {100 * summary['mean_accuracy']:.2f}% (std {100 * summary['std_accuracy']:.2f})"
    if "mean_target_accuracy" in summary:
        mean_line += f"; mean target accuracy {100 * summary['mean_target_accuracy']:.2f}%"
    lines.append(mean_line)
    if "repeats" in summary:
        lines.append(f"  repeated with {len(summary['repeats'])} seeds:")
        for entry in summary["repeats"]:
            line = f"    seed {entry['seed']}: mean accuracy {100 * entry['mean_accuracy']:.2f}%"
            if "mean_target_accuracy" in entry:
                line += f", targets {100 * entry['mean_target_accuracy']:.2f}%"
            lines.append(line)
        line = f"    mean over seeds: {100 * summary['mean_accuracy_over_repeats']:.2f}%"
        if "mean_target_accuracy_over_repeats" in summary:
            line += f", targets {100 * summary['mean_target_accuracy_over_repeats']:.2f}%"
        lines.append(line)
    lines.append("")
    lines.append(format_report(summary["overall"], title=f"all folds together (seed {summary['train_config']['seed']})"))
    return "\n".join(lines)
