"""`oido-train ablation`: what each part of the open-set recipe changes, measured at event level.

Each variant is a recipe (train.openset.OpenSetRecipe). For each, heads trained on three of the
training folds stream the fourth (out of fold, the figure that picks recipes), thresholds are
calibrated there, and a head trained on all training folds is measured on the test fold's
stream, clean and over background, and on its clips. README "Results" has the figures.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from train.augment import DEFAULT_AUGMENT_CACHE, MixOptions
from train.openset import (
    DEFAULT_BED_CATEGORIES,
    DEFAULT_RECIPE,
    ExperimentOptions,
    OpenSetRecipe,
    ProgressFn,
    ScoredStream,
    StreamFactory,
    calibrate_on_streams,
    clip_accuracy,
    detector_with,
    merge_scores,
    oof_validation,
    score,
    seconds_text,
    train_heads,
)


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: a recipe, and whether the background class is trained at all."""

    description: str
    recipe: OpenSetRecipe
    background: bool = True


ABLATION: dict[str, Variant] = {
    "no-other": Variant("4-class softmax, no background class", OpenSetRecipe(class_weight="none", mix=None, training_streams=0), background=False),
    "other": Variant("+ 'other' class (9 ESC-10 classes)", OpenSetRecipe(class_weight="none", mix=None, training_streams=0)),
    "balanced": Variant("+ balanced class weights", OpenSetRecipe(mix=None, training_streams=0)),
    "mix": Variant("+ 2 mixed copies of each target", replace(DEFAULT_RECIPE, training_streams=0)),
    "default": Variant("+ 2 training streams per fold (the default)", DEFAULT_RECIPE),
    "quiet": Variant("default + quiet target patches as background", replace(DEFAULT_RECIPE, quiet_below_peak_db=20.0)),
    "smooth": Variant("default + label smoothing 0.1", replace(DEFAULT_RECIPE, label_smoothing=0.1)),
    "subclasses": Variant("default + one output per background category", replace(DEFAULT_RECIPE, background_subclasses=True)),
    "no-temperature": Variant("default without temperature scaling", replace(DEFAULT_RECIPE, temperature_scaling=False)),
    "ensemble": Variant("default + 3 heads averaged", replace(DEFAULT_RECIPE, ensemble=3)),
    "epochs": Variant("default, 40 epochs", replace(DEFAULT_RECIPE, epochs=40)),
    "dropout": Variant("default, 40 epochs + dropout 0.5", replace(DEFAULT_RECIPE, epochs=40, dropout=0.5)),
    "context": Variant("default + the mean of the 3 patches before each one", replace(DEFAULT_RECIPE, context_patches=3)),
    "onset": Variant("default, stream patches with 0.2 s of a target labelled target (not 0.4 s)",
                     replace(DEFAULT_RECIPE, min_target_overlap_seconds=0.2)),
    "streams4": Variant("default with 4 training streams per fold (not 2)", replace(DEFAULT_RECIPE, training_streams=4)),
    "epochs10": Variant("default, 10 epochs", replace(DEFAULT_RECIPE, epochs=10)),
    "speed": Variant("default, mixed copies played at 0.9-1.1x speed", replace(DEFAULT_RECIPE, mix=replace(MixOptions(), speed=(0.9, 1.1)))),
    "speed20": Variant("default, mixed copies played at 0.8-1.2x speed", replace(DEFAULT_RECIPE, mix=replace(MixOptions(), speed=(0.8, 1.2)))),
    "gain30": Variant("default, mixed copies at -30 to 0 dB gain (not -12 to 0)", replace(DEFAULT_RECIPE, mix=replace(MixOptions(), gain_db=(-30.0, 0.0)))),
    "snr-5": Variant("default, mixed copies at -5 to 20 dB SNR (not 0 to 20)", replace(DEFAULT_RECIPE, mix=replace(MixOptions(), snr_db=(-5.0, 20.0)))),
    "tilt": Variant("default, mixed copies tilted by -3 to +3 dB per octave", replace(DEFAULT_RECIPE, mix=replace(MixOptions(), tilt_db_per_octave=(-3.0, 3.0)))),
    "weight-decay": Variant("default + AdamW weight decay 0.05", replace(DEFAULT_RECIPE, weight_decay=0.05)),
    "bg-copies": Variant("default + 2 mixed copies of each background clip, as background",
                         replace(DEFAULT_RECIPE, mix=replace(MixOptions(), background_copies=2))),
}
"""Variants measured by `oido-train ablation`: the first five build the default up, the rest change one thing in it
(dropout: with the 40 epochs of `epochs`)."""
ABLATION_SNR_DB = 10.0
"""SNR of the ablation's targets-over-background stream."""


def ablation(
    factory: StreamFactory,
    variants: Mapping[str, Variant],
    *,
    train_folds: Sequence[int],
    test_fold: int,
    detectors: Sequence[tuple[int, int]] = ((1, 1), (2, 3)),
    experiment: ExperimentOptions = ExperimentOptions(),
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    progress: ProgressFn | None = None,
) -> list[dict[str, Any]]:
    """For each variant and k-of-n detector: calibrate out of fold, score the test-fold stream.

    One row per (variant, detector): validation and test recall in time, false events, thresholds,
    latency, and the test clip accuracy of the targets.
    """
    task = factory.task
    test_spec = factory.fold_stream([test_fold], seed=experiment.test_seed)
    test_patches = factory.patches(test_spec)
    mixed_spec = factory.mixed(test_spec, snr_db=ABLATION_SNR_DB, bed_folds=[test_fold], bed_categories=DEFAULT_BED_CATEGORIES, seed=experiment.test_seed)
    mixed_patches = factory.patches(mixed_spec)
    rows = []
    for name, variant in variants.items():
        if progress:
            progress(f"variant {name}: {variant.description}")
        checked = oof_validation(
            factory, variant.recipe, train_folds=train_folds, background=variant.background,
            experiment=experiment, augment_cache=augment_cache,
        )  # fmt: skip
        validation = checked.streams
        clips = task.select(folds=train_folds, background=variant.background)
        heads = train_heads(factory, clips, variant.recipe, augment_cache=augment_cache)
        heads.temperature = checked.temperature
        test = ScoredStream(test_spec, heads.predict(test_patches.embeddings), test_patches)
        mixed = ScoredStream(mixed_spec, heads.predict(mixed_patches.embeddings), mixed_patches)
        right, total = clip_accuracy(task, heads, folds=[test_fold])
        for k, n in detectors:
            base = experiment.detector.with_changes(min_patches=k, of_patches=n, background_label=task.background_label)
            calibration = calibrate_on_streams(
                validation, labels=task.labels, config=base, target_false_per_hour=experiment.target_false_per_hour,
                options=factory.options, params=factory.params, position=experiment.threshold_position,
            )  # fmt: skip
            config = detector_with(calibration, base, task.background_label)
            valid = merge_scores([score(s, labels=task.labels, config=config, options=factory.options) for s in validation])
            tested = score(test, labels=task.labels, config=config, options=factory.options)
            v, t = valid.summary()["overall"], tested.summary()["overall"]
            m = score(mixed, labels=task.labels, config=config, options=factory.options).summary()["overall"]
            rows.append({
                "variant": name, "description": variant.description, "detector": f"{k}-of-{n}",
                "validation_in_time": [v["detected_in_time"], v["targets"]], "validation_false": v["false_events"],
                "validation_hours": round(valid.nontarget_seconds / 3600, 3),
                "test_in_time": [t["detected_in_time"], t["targets"]], "test_detected": t["detected"],
                "test_false": t["false_events"], "test_false_per_hour": t["false_per_hour"],
                "test_latency_median": t["latency_median_seconds"], "test_latency_max": t["latency_max_seconds"],
                "test_clip_accuracy": [right, total], "thresholds": calibration.thresholds,
                "snr_db": ABLATION_SNR_DB, "mixed_in_time": [m["detected_in_time"], m["targets"]],
                "temperature": round(checked.temperature, 3),
            })  # fmt: skip
    return rows


def format_ablation(rows: Sequence[Mapping[str, Any]]) -> str:
    """Markdown table of ablation rows."""
    lines = [
        "| variant | detector | validation: in time / false | test: in time (1.5 s) | test false events (/h) | latency median / max | over background 10 dB: in time | test clip accuracy |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        vi, vt = row["validation_in_time"]
        ti, tt = row["test_in_time"]
        ca, ct = row["test_clip_accuracy"]
        lines.append(
            f"| {row['description']} | {row['detector']} | {vi}/{vt} / {row['validation_false']} | {ti}/{tt} | "
            f"{row['test_false']} ({row['test_false_per_hour']:.0f}) | {seconds_text(row['test_latency_median'])} / "
            f"{seconds_text(row['test_latency_max'])} s | {row['mixed_in_time'][0]}/{row['mixed_in_time'][1]} | {ca}/{ct} |"
        )
    return "\n".join(lines)
