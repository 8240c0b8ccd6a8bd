"""What retraining on the device's own false alarms buys: `oido-train feedback`.

The loop a user runs at home: the Pi saves the audio of each event (`[events] save_dir`), the
user moves the false alarms into a folder, and retrains with `oido-train prepare --false-alarms
FOLDER`. This measures that loop on a sound no head was trained on, like leave-one-class-out
(train.openset.leave_one_class_out). For each background category X:

1. train and calibrate without X (model "before");
2. "listen" to X's clips of `listen_folds` (a first day at home). Every event there is a false
   alarm, and its audio is cut as the Pi's event saver would cut it: `pre_roll_seconds` before
   its start to its end, at most `max_clip_seconds`;
3. train and calibrate again with those clips as background (model "after"): the WAVs go through
   `--false-alarms FOLDER`'s own code (cut into 5 s clips, folds by recording) and the embedding
   cache. As false alarms (the default, RETRAIN_AS) they are also in the validation streams that
   choose the thresholds; as extra background (`--retrain-as extra-background`) they are
   training-only, and recalibration may lower a threshold again (README, "Results");
4. stream X's clips of the other folds (never heard in step 2) with the test fold's targets
   through both models: false events per hour on X, targets detected in time.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from train.openset import (
    DEFAULT_RECIPE,
    EXTRA_CATEGORY,
    FALSE_ALARM_CATEGORY,
    ClipData,
    ExperimentOptions,
    OpenSetModel,
    OpenSetRecipe,
    ProgressFn,
    StreamFactory,
    check_categories,
    fit_openset,
    score_model,
)
from train.streams import build_stream, detect_events, render_stream

logger = logging.getLogger(__name__)

DEFAULT_LISTEN_FOLDS = (1, 2)
"""Folds whose clips of the left-out category stand for the first day of listening."""
PRE_ROLL_SECONDS = 1.0
"""Audio kept before an event's start (the edge config's [events] pre_roll_seconds default)."""
MAX_CLIP_SECONDS = 15.0
"""Longest saved event (the edge config's [events] max_clip_seconds default)."""
RETRAIN_AS = ("false-alarms", "extra-background")
"""How the heard clips join the data: `prepare --false-alarms DIR` (the default) or `--extra-background DIR`."""


def false_alarm_clips(
    factory: StreamFactory, model: OpenSetModel, category: str, *, listen_folds: Sequence[int], out_dir: Path,
    seed: int = 0, pre_roll_seconds: float = PRE_ROLL_SECONDS, max_clip_seconds: float = MAX_CLIP_SECONDS,
) -> list[Path]:  # fmt: skip
    """Stream `category`'s clips of `listen_folds` (no targets) through `model`; write each event's
    audio (every one is a false alarm) as a 16 kHz WAV into `out_dir` (cleared first). Returns the files."""
    from edge.audio import write_wav

    task, params = factory.task, factory.params
    clips = task.select(folds=listen_folds, targets=False, only_categories=[category], train_only=False)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    if not clips:
        return []
    spec = build_stream([], task.sources(clips), seed=seed, options=factory.options, params=params, library=factory.library,
                        recipe={"folds": sorted(listen_folds), "categories": [category]})  # fmt: skip
    patches = factory.patches(spec)
    detections = detect_events(
        model.heads.predict(patches.embeddings), patches, labels=task.labels, config=model.detector,
        num_samples=spec.num_samples, params=params, audioset_classes=factory.audioset_classes,
    )  # fmt: skip
    audio = render_stream(spec, library=factory.library, params=params)
    rate = params.sample_rate_hz
    paths = []
    for number, event in enumerate(detections):
        start = max(0.0, event.start_seconds - pre_roll_seconds)
        end = min(event.end_seconds, start + max_clip_seconds)
        name = f"{number:03d}-{event.label}.wav"
        paths.append(write_wav(out_dir / name, audio[round(start * rate) : round(end * rate)], rate_hz=rate, subtype="PCM_16"))
    return paths


def with_extra_background(
    factory: StreamFactory, folder: Path, *, cache_dir: Path, embeddings_cache: str | os.PathLike[str] | None,
    false_alarms: bool = False,
) -> StreamFactory:  # fmt: skip
    """`factory` whose task also holds the recordings in `folder` as training-only background, cut
    and given folds exactly as `oido-train prepare --extra-background FOLDER` does
    (train.extra_background.folder_clips, cut clips cached in `cache_dir`) and embedded through
    the embedding cache `embeddings_cache`. `false_alarms`: as `prepare --false-alarms FOLDER`
    adds them instead (also in the validation streams, ClipData.false_alarm)."""
    from train.embeddings import embed_files
    from train.extra_background import folder_clips

    task = factory.task
    if task.background_index is None:
        raise ValueError("retraining on false alarms needs a background class (prepare --background esc10)")
    cut = folder_clips(folder, task.labels, cache_dir=cache_dir, test_fold=task.test_fold, params=factory.params)
    embedded = embed_files([c.path for c in cut], factory.embedder, cache_root=embeddings_cache, params=factory.params)
    extra = tuple(
        ClipData(path=c.path, label=task.background_index, category=FALSE_ALARM_CATEGORY if false_alarms else EXTRA_CATEGORY,
                 fold=c.fold, source=c.source, embeddings=e.embeddings, yamnet_scores=e.scores, level_db=e.rms_dbfs,
                 train_only=True, false_alarm=false_alarms)  # fmt: skip
        for c, e in zip(cut, embedded)
    )
    return replace(factory, task=replace(task, clips=task.clips + extra))


def _figures(factory: StreamFactory, model: OpenSetModel, spec: Any, patches: Any) -> dict[str, Any]:
    summary = score_model(factory, model, spec, patches)
    return {**summary["overall"], "nontarget_seconds": summary["nontarget_seconds"], "thresholds": dict(model.detector.thresholds)}


def feedback_loop(
    factory: StreamFactory,
    recipe: OpenSetRecipe = DEFAULT_RECIPE,
    *,
    train_folds: Sequence[int],
    test_fold: int,
    categories: Sequence[str] | None = None,
    listen_folds: Sequence[int] = DEFAULT_LISTEN_FOLDS,
    retrain_as: str = RETRAIN_AS[0],
    experiment: ExperimentOptions = ExperimentOptions(),
    augment_cache: str | os.PathLike[str] | None = None,
    embeddings_cache: str | os.PathLike[str] | None = None,
    work_dir: str | os.PathLike[str],
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """For each background category: false events per hour on its clips outside `listen_folds`
    before and after retraining on the false alarms heard in `listen_folds` (module docstring),
    added as `retrain_as` (RETRAIN_AS).

    Returns {"splits": {X: {"before": figures, "after": figures, "false_alarm_clips": n,
    "false_alarm_seconds": s}}, "mean_before", "mean_after", "worst_before", "worst_after", ...}.
    """
    task = factory.task
    chosen = list(categories) if categories is not None else task.categories
    all_folds = sorted({c.fold for c in task.clips})
    rest = [f for f in all_folds if f not in listen_folds]
    if retrain_as not in RETRAIN_AS:
        raise ValueError(f"retrain_as must be one of {RETRAIN_AS}, got {retrain_as!r}")
    if not set(listen_folds) <= set(all_folds) or not rest:
        raise ValueError(f"--listen-folds {list(listen_folds)} must be some, not all, of the folds {all_folds}")
    check_categories(task, chosen)  # every name before the first category trains, not after it
    splits: dict[str, Any] = {}
    for category in chosen:
        started = time.perf_counter()
        if progress:
            progress(f"leave out {category}: train without it")
        before = fit_openset(factory, recipe, train_folds=train_folds, exclude_categories=[category], experiment=experiment,
                             augment_cache=augment_cache)  # fmt: skip
        heard_dir = Path(work_dir) / category / "heard"
        heard = false_alarm_clips(factory, before, category, listen_folds=listen_folds, out_dir=heard_dir, seed=experiment.test_seed)
        seconds = sum(_seconds(p) for p in heard)
        if progress:
            alarms = f"{len(heard)} false alarm{'' if len(heard) == 1 else 's'} ({seconds:.1f} s)"
            then = "; retrain with them" if heard else "; nothing to retrain on"
            progress(f"leave out {category}: {alarms} while listening to folds {','.join(map(str, listen_folds))}{then}")
        after = before
        if heard:
            retrained = with_extra_background(factory, heard_dir, cache_dir=Path(work_dir) / category / "cut",
                                              embeddings_cache=embeddings_cache, false_alarms=retrain_as == RETRAIN_AS[0])  # fmt: skip
            after = fit_openset(retrained, recipe, train_folds=train_folds, exclude_categories=[category], experiment=experiment,
                                augment_cache=augment_cache)  # fmt: skip
        spec = factory.fold_stream(rest, seed=experiment.test_seed, only_categories=[category], target_folds=[test_fold])
        patches = factory.patches(spec)
        splits[category] = {
            "false_alarm_clips": len(heard), "false_alarm_seconds": round(seconds, 1),
            "before": _figures(factory, before, spec, patches), "after": _figures(factory, after, spec, patches),
            "seconds": round(time.perf_counter() - started, 1),
        }  # fmt: skip
        logger.info("leave out %s: %d -> %d false events on folds %s after %d false alarms", category,
                    splits[category]["before"]["false_events"], splits[category]["after"]["false_events"], rest, len(heard))  # fmt: skip
    summary: dict[str, Any] = {"splits": splits, "listen_folds": sorted(listen_folds), "test_folds": rest,
                               "retrain_as": retrain_as,
                               "targets": next(iter(splits.values()))["before"]["targets"] if splits else 0}  # fmt: skip
    for when in ("before", "after"):
        rates = {c: v[when]["false_per_hour"] for c, v in splits.items()}
        summary[f"mean_{when}"] = round(float(np.mean(list(rates.values()))), 2) if rates else 0.0
        summary[f"worst_{when}"] = max(rates.values(), default=0.0)
        summary[f"min_in_time_{when}"] = min((v[when]["detected_in_time"] for v in splits.values()), default=0)
    return summary


def _seconds(path: Path) -> float:
    import soundfile

    info = soundfile.info(str(path))
    return info.frames / info.samplerate


def format_feedback(summary: dict[str, Any]) -> str:
    """Plain-text table of feedback_loop's summary."""
    targets = summary["targets"]
    lines = [f"{'left out':16s} {'false alarms heard':>19s} {'false/h before':>15s} {'after':>7s} {'in time before':>15s} {'after':>6s}"]
    for category, split in summary["splits"].items():
        before, after = split["before"], split["after"]
        lines.append(
            f"{category:16s} {split['false_alarm_clips']:>8d} ({split['false_alarm_seconds']:5.1f} s) "
            f"{before['false_per_hour']:>15.1f} {after['false_per_hour']:>7.1f} "
            f"{before['detected_in_time']:>12d}/{targets} {after['detected_in_time']:>3d}/{targets}"
        )
    lines.append(
        f"mean {summary['mean_before']:.1f} -> {summary['mean_after']:.1f} false events/h, worst {summary['worst_before']:.1f} -> "
        f"{summary['worst_after']:.1f}, fewest targets in time {summary['min_in_time_before']} -> {summary['min_in_time_after']}/{targets} "
        f"(listened to folds {','.join(map(str, summary['listen_folds']))}; measured on folds {','.join(map(str, summary['test_folds']))})"
    )
    return "\n".join(lines)
