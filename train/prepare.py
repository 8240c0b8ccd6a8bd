"""``prepare``: turn ESC-50 clips or a user's own recordings into ``data/``.

Writes ``data/audio/<name>.wav`` (16 kHz mono float32, resampled in float with soxr VHQ
so full-scale clips keep their peaks), ``data/trainData.json`` / ``data/testData.json``
(folds other than the test fold / the test fold), ``data/classes.json`` and
``data/manifest.json`` (source sha256 per output, so unchanged clips are not redone).

Every check on the input runs before anything is written; each file is written to a
temporary name and renamed into place, and the JSON files are written last, so an
interrupted or failed run never leaves a data set that looks complete.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import math
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from edge.audio import missing_audio_bytes, warn_if_misscaled
from edge.errors import listed
from edge.params import DEFAULT_CLASSES, DEFAULT_PARAMS, Params
from train.assets import ESC50_ENV, ESC50_URL, AssetError, Esc50Catalog, find_esc50, user_cache_dir
from train.extra_background import DEBIAN_SFX, FOLDERS_SUBDIR, ExtraClip, describe, extra_background_clips, folder_clips
from train.datasets import (
    AUDIO_DIR,
    CLASSES_JSON,
    DEFAULT_TEST_FOLD,
    FALSE_ALARM_TAG,
    NUM_FOLDS,
    SOURCE_SEPARATOR,
    TEST_JSON,
    TRAIN_JSON,
    DatasetEntry,
    DatasetError,
    OwnClip,
    PreparedDataset,
    PrepareReport,
    assign_folds,
    dataset_json,
    ensure_test_fold,
    load_dataset,
    scan_background_folder,
    scan_class_folders,
    validate_label,
    write_json_atomic,
)

__all__ = [
    "BACKGROUND_LABEL",
    "DEFAULT_CLASSES",
    "ESC10_TASK_CLASSES",
    "DatasetEntry",
    "DatasetError",
    "PrepareReport",
    "PreparedDataset",
    "file_sha256",
    "load_dataset",
    "pad_to_patch",
    "prepare_dataset",
    "to_model_waveform",
    "write_float_wav_atomic",
]

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

ESC10_TASK_CLASSES: tuple[str, ...] = (
    "chainsaw", "clock_tick", "crackling_fire", "dog", "helicopter", "rain", "rooster", "sea_waves", "sneezing",
)  # fmt: skip
"""The second task: the nine ESC-10 classes of the local 16 kHz copy."""
BACKGROUND_LABEL = "other"
"""Label of the optional background class; always the last label."""
MIN_LABELS = 2
"""Fewest labels a task may have (targets + background): a head chooses between them."""
ESC10_BACKGROUND = "esc10"
"""``background=`` value selecting ESC-10 clips (of non-target classes) as the background class."""
ESC50_BACKGROUND = "esc50"
"""``background=`` value selecting the clips of every other ESC-50 class (~1,800 clips of 40+ classes:
more varied "everything else" than ESC-10's nine; needs the full ESC-50 download)."""
RESAMPLE_QUALITY = "VHQ"
"""soxr quality for every rate conversion."""
IMBALANCE_RATIO = 1.5
"""Warn when the largest target class has more than this many times the clips of the smallest."""
MANIFEST_JSON = "manifest.json"
MANIFEST_FORMAT = "oido-data/1"
_HASH_CHUNK_BYTES = 1 << 20
_LISTED_ERRORS = 20  # unusable input files named in one error; the rest are counted


@dataclass
class _PlannedClip:
    """One source file on its way to ``data/audio``."""

    path: Path
    class_name: str
    source: str
    fold: int | None
    output_name: str
    from_catalog: bool
    """An ESC-50 clip: its fold comes from meta/esc50.csv."""
    train_only: bool = False
    """Extra background (train.extra_background): its fold is fixed, it never enters a validation or test stream."""
    false_alarm: bool = False
    """A saved false alarm: extra background that also enters the validation streams (DatasetEntry.false_alarm)."""
    sha256: str = ""
    rate_hz: int = 0
    channels: int = 0
    subtype: str = ""


# --- pure core ------------------------------------------------------------------------------


def to_model_waveform(
    waveform: npt.NDArray[np.floating], rate_hz: int, *, params: Params = DEFAULT_PARAMS
) -> FloatArray:
    """Mix down to mono and resample to the model rate, all in float (nothing is clipped).

    Args:
        waveform: float [n] or [n, channels] at ``rate_hz``, nominally in [-1, 1].
        rate_hz: its sample rate.
        params: gives the model rate, ``params.sample_rate_hz``.

    Returns:
        float32 [m] at ``params.sample_rate_hz``, m = round(n * rate ratio). Values may
        exceed [-1, 1] slightly where the source was at full scale (band-limiting
        overshoot): they are kept, not clipped.
    """
    samples = np.asarray(waveform, dtype=np.float32)
    if samples.ndim == 2:
        mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    else:
        mono = samples
    if rate_hz != params.sample_rate_hz:
        mono = soxr.resample(mono, rate_hz, params.sample_rate_hz, quality=RESAMPLE_QUALITY)
    return np.ascontiguousarray(mono, dtype=np.float32)


def pad_to_patch(waveform: FloatArray, *, params: Params = DEFAULT_PARAMS) -> tuple[FloatArray, bool]:
    """Zero-pad at the end to one YAMNet patch; returns (waveform float32 [>= patch_samples], padded?)."""
    shortfall = params.patch_samples - waveform.shape[0]
    if shortfall <= 0:
        return waveform, False
    return np.concatenate([waveform, np.zeros(shortfall, dtype=np.float32)]), True


# --- thin I/O -------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def write_float_wav_atomic(path: Path, waveform: FloatArray, *, rate_hz: int) -> None:
    """Write float32 [n] as a mono 32-bit float WAV via a temporary file and os.replace.

    Encoded in memory first: libsndfile fsyncs on close, which costs more than the
    whole conversion; the rename alone keeps an interrupted run from leaving a torn file.
    """
    encoded = io.BytesIO()
    sf.write(encoded, waveform, rate_hz, subtype="FLOAT", format="WAV")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(encoded.getbuffer())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _read_source(path: Path) -> tuple[FloatArray, int]:
    try:
        waveform, rate_hz = sf.read(path, dtype="float32", always_2d=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetError(f"{path} is not readable audio ({error}): replace or delete it") from error
    if waveform.shape[0] == 0:
        raise DatasetError(f"{path} holds no audio samples: replace or delete it")
    bad = ~np.isfinite(waveform)
    if bad.any():
        # The resampler would smear one NaN over a thousand samples and into manifest.json.
        logger.warning("%s: %d NaN/Inf sample(s) replaced with 0", path, int(np.count_nonzero(bad)))
        waveform = np.nan_to_num(waveform, nan=0.0, posinf=0.0, neginf=0.0)
    return waveform, int(rate_hz)


def _probe(clip: _PlannedClip) -> None:
    """Fill hash, rate, channels; DatasetError naming the file if it is unreadable, empty or cut short."""
    try:
        info = sf.info(str(clip.path), verbose=True)
    except (RuntimeError, OSError, ValueError) as error:
        raise DatasetError(f"{clip.path} is not readable audio ({error}): replace or delete it") from error
    if info.frames <= 0 or info.samplerate <= 0 or info.channels <= 0:
        raise DatasetError(f"{clip.path} holds no audio samples: replace or delete it")
    missing = missing_audio_bytes(str(info.extra_info))
    if missing:
        raise DatasetError(
            f"{clip.path} is cut short: its header promises {missing} more bytes of audio than the file holds "
            f"(an interrupted copy?): copy it again, or delete it"
        )
    clip.sha256 = file_sha256(clip.path)
    clip.rate_hz, clip.channels, clip.subtype = int(info.samplerate), int(info.channels), str(info.subtype)


# --- planning -------------------------------------------------------------------------------


def _task_name(classes: Sequence[str], *, own: bool) -> str:
    if own:
        return "own"
    if tuple(classes) == DEFAULT_CLASSES:
        return "default"
    if sorted(classes) == sorted(ESC10_TASK_CLASSES):
        return "esc10"
    return "esc50"


def _unique_name(name: str, taken: set[str]) -> str:
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    taken.add(candidate)
    return candidate


def _esc50_plan(catalog: Esc50Catalog, categories: Sequence[str], *, label_of: dict[str, str]) -> list[_PlannedClip]:
    return [
        _PlannedClip(
            path=path,
            class_name=label_of[clip.category],
            source=f"esc50:{clip.src_file}",
            fold=clip.fold,
            output_name=f"{clip.stem}.wav",
            from_catalog=True,
        )
        for clip, path in catalog.present_clips(categories)
    ]


def _check_complete(catalog: Esc50Catalog, categories: Sequence[str]) -> None:
    """AssetError in one sentence when the ESC-50 copy lacks clips of `categories` (background 'esc50')."""
    clips = [clip for category in categories for clip in catalog.clips_of(category)]
    missing = [clip for clip in clips if catalog.clip_path(clip) is None]
    if missing:
        incomplete = sorted({clip.category for clip in missing})
        raise AssetError(
            f"background 'esc50' needs every clip of the {len(categories)} other ESC-50 classes, but "
            f"{catalog.root} lacks {len(missing)} of their {len(clips)} clips ({len(incomplete)} classes, "
            f"e.g. {', '.join(incomplete[:3])}): point --esc50 / {ESC50_ENV} at a full ESC-50 folder "
            f"(from {ESC50_URL}), or use --background esc10"
        )


def _own_plan(clips: Sequence[OwnClip]) -> list[_PlannedClip]:
    return [
        _PlannedClip(
            path=clip.path,
            class_name=clip.class_name,
            source=clip.source,
            fold=clip.fold,
            output_name=f"{clip.class_name}{SOURCE_SEPARATOR}{clip.path.stem}.wav",
            from_catalog=False,
        )
        for clip in clips
    ]


def _extra_plan(clips: Sequence[ExtraClip], *, false_alarm: bool = False) -> list[_PlannedClip]:
    plan = []
    for clip in clips:
        kind, _, rest = clip.source.partition(":")
        tag = FALSE_ALARM_TAG if false_alarm else rest.split(":")[0] if kind == DEBIAN_SFX else kind
        plan.append(
            _PlannedClip(
                path=clip.path,
                class_name=BACKGROUND_LABEL,
                source=f"{FALSE_ALARM_TAG}:{rest}" if false_alarm else clip.source,
                fold=clip.fold,
                output_name=f"{BACKGROUND_LABEL}{SOURCE_SEPARATOR}{tag}-{clip.path.stem}.wav",
                from_catalog=False,
                train_only=True,
                false_alarm=false_alarm,
            )
        )
    return plan


def _drop_duplicates(plan: list[_PlannedClip]) -> tuple[list[_PlannedClip], list[tuple[str, str]]]:
    """Keep the first of byte-identical files (targets come before the background)."""
    kept: dict[str, _PlannedClip] = {}
    duplicates: list[tuple[str, str]] = []
    for clip in plan:
        first = kept.get(clip.sha256)
        if first is None:
            kept[clip.sha256] = clip
            continue
        duplicates.append((str(clip.path), str(first.path)))
        logger.warning(
            "duplicate audio: %s (class %r) is byte-identical to %s (class %r); keeping only the latter",
            clip.path, clip.class_name, first.path, first.class_name,
        )  # fmt: skip
    return list(kept.values()), duplicates


def _assign_own_folds(plan: list[_PlannedClip], *, test_fold: int, earlier: Mapping[str, int]) -> None:
    """Folds for clips whose name fixes none: by source group, balanced per class.

    A group an earlier prepare of the same data folder placed (``earlier``: {source: fold})
    keeps its fold, so adding a session never moves one a head was trained on into the test
    fold; only new groups are placed. One is moved only when a class would have no test clips.
    """
    fixed: dict[str, int] = {}
    for clip in plan:
        if clip.fold is None:
            continue
        previous = fixed.setdefault(clip.source, clip.fold)
        if previous != clip.fold:
            logger.warning(
                "source %r has clips named with folds %d and %d (e.g. %s); using fold %d for all of them",
                clip.source, previous, clip.fold, clip.path, min(previous, clip.fold),
            )  # fmt: skip
            fixed[clip.source] = min(previous, clip.fold)
    pairs = [(clip.class_name, clip.source) for clip in plan]
    movable = {clip.source for clip in plan} - set(fixed)
    kept = {source: earlier[source] for source in sorted(movable) if source in earlier}
    if kept:
        logger.info(
            "kept the folds of %d source group(s) from the previous prepare; placed %d new group(s)",
            len(kept), len(movable) - len(kept),
        )  # fmt: skip
    folds = assign_folds(pairs, fixed={**fixed, **kept})
    folds = ensure_test_fold(pairs, folds, test_fold=test_fold, movable=movable, last_resort=kept)
    for clip in plan:
        clip.fold = folds[clip.source]


def _previous_folds(root: Path) -> dict[str, int]:
    """{source: fold} of the data folder's last prepare: its JSONs, else (a run that stopped
    after removing them) the manifest's "source_folds"; {} when there is neither."""
    folds: dict[str, int] = {}
    try:
        for name in (TRAIN_JSON, TEST_JSON):
            for item in json.loads((root / name).read_text(encoding="utf-8")):
                folds[str(item["source"])] = int(item["fold"])
    except (OSError, ValueError, TypeError, KeyError):
        folds = {}
        try:
            recorded = json.loads((root / MANIFEST_JSON).read_text(encoding="utf-8")).get("source_folds")
        except (OSError, ValueError, AttributeError):
            recorded = None
        if isinstance(recorded, dict):
            folds = {str(source): fold for source, fold in recorded.items() if isinstance(fold, int)}
    return {source: fold for source, fold in folds.items() if 1 <= fold <= NUM_FOLDS}


def _check_label_count(labels: Sequence[str]) -> None:
    """DatasetError when the task has fewer than MIN_LABELS labels (targets + background): a head of
    one output cannot choose, and fit would only say so after embedding every clip."""
    if len(labels) >= MIN_LABELS:
        return
    raise DatasetError(
        f"the task has {len(labels)} label(s) ({', '.join(labels) or 'none'}) and a head needs at least "
        f"{MIN_LABELS} to choose between: keep a background class (--background esc10, the default, adds "
        f"'{BACKGROUND_LABEL}') or add a class to --classes (with --own-data: another label folder)"
    )


def _check_splits(
    plan: Sequence[_PlannedClip], labels: Sequence[str], *, test_fold: int, background: str | None
) -> None:
    _check_label_count(labels)
    for label in labels:
        clips = [clip for clip in plan if clip.class_name == label]
        if not clips:
            raise DatasetError(f"class {label!r} has no clips: add recordings for it or drop it from the class list")
        test = [clip for clip in clips if clip.fold == test_fold]
        train = [clip for clip in clips if clip.fold != test_fold]
        sources = sorted({clip.source for clip in clips})
        example = clips[0].path
        if not test:
            raise DatasetError(
                f"class {label!r} has no clips in the test fold {test_fold} (e.g. {example}; sources: "
                f"{', '.join(sources[:5])}): record another session (run `oido-edge record --dataset ...` "
                f"again) or add a recording named '<source>{SOURCE_SEPARATOR}<take>.wav' from another source, "
                f"so train and test do not share a recording"
            )
        if not train:
            raise DatasetError(
                f"class {label!r} has clips only in the test fold {test_fold} (e.g. {example}): "
                f"add recordings from another source session for training"
            )
    targets = Counter(clip.class_name for clip in plan if clip.class_name != background)
    if targets and max(targets.values()) > IMBALANCE_RATIO * min(targets.values()):
        logger.warning(
            "imbalanced classes (clips per class: %s): the head may favour the larger ones; "
            "record more clips of the smaller ones",
            ", ".join(f"{label}={targets[label]}" for label in labels if label != background),
        )


# --- the manifest ---------------------------------------------------------------------------


def _load_manifest(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(document, dict) or document.get("format") != MANIFEST_FORMAT:
        return {}
    files = document.get("files")
    return files if isinstance(files, dict) else {}


def _manifest(
    files: dict[str, Any], *, params: Params, complete: bool, task: str, source_folds: Mapping[str, int]
) -> dict[str, Any]:
    """manifest.json; ``source_folds`` ({group: fold} of the user's own clips) lets a rerun keep
    them even after a run that stopped with the fold JSONs removed."""
    return {
        "format": MANIFEST_FORMAT,
        "complete": complete,
        "task": task,
        "sample_rate_hz": params.sample_rate_hz,
        "subtype": "FLOAT",
        "resampler": f"soxr {soxr.__version__} {RESAMPLE_QUALITY}",
        "source_folds": dict(source_folds),
        "files": files,
    }


def _is_current(record: Any, clip: _PlannedClip, output: Path, *, params: Params) -> bool:
    if not isinstance(record, dict) or record.get("source_sha256") != clip.sha256:
        return False
    if record.get("sample_rate_hz") != params.sample_rate_hz or record.get("min_samples") != params.patch_samples:
        return False
    try:
        info = sf.info(str(output))
    except (RuntimeError, OSError, ValueError):
        return False
    return (
        info.samplerate == params.sample_rate_hz
        and info.channels == 1
        and info.subtype == "FLOAT"
        and info.frames == record.get("num_samples")
    )


# --- the phases of the command ---------------------------------------------------------------


@dataclass(frozen=True)
class _Inputs:
    labels: list[str]
    background_label: str | None
    plan: list[_PlannedClip]


def _plan_inputs(
    *,
    classes: Sequence[str] | None,
    catalog: Callable[[], Esc50Catalog],
    background: str | os.PathLike[str] | None,
    own_data_dir: Path | None,
) -> _Inputs:
    """Which files go in under which label (nothing is read yet)."""
    if own_data_dir is not None:
        by_label = scan_class_folders(own_data_dir, classes=classes)
        labels = list(by_label)
        plan = _own_plan([clip for clips in by_label.values() for clip in clips])
    else:
        labels = list(classes) if classes is not None else list(DEFAULT_CLASSES)
        plan = _esc50_plan(catalog(), labels, label_of={name: name for name in labels})
    if background is None:
        return _Inputs(labels, None, plan)
    if BACKGROUND_LABEL in labels:
        raise DatasetError(
            f"class {BACKGROUND_LABEL!r} is also the background label: rename that class or pass background=None"
        )
    if isinstance(background, str) and background in (ESC10_BACKGROUND, ESC50_BACKGROUND):
        pool = catalog().esc10_categories if background == ESC10_BACKGROUND else catalog().categories
        others = [name for name in pool if name not in labels]
        if not others:
            raise DatasetError(
                f"background {background!r} has no classes left once the targets are removed: pass background=None"
            )
        if background == ESC50_BACKGROUND:
            _check_complete(catalog(), others)
        plan += _esc50_plan(catalog(), others, label_of={name: BACKGROUND_LABEL for name in others})
        logger.info("background %r (%s): classes %s", BACKGROUND_LABEL, background, ", ".join(others))
    else:
        plan += _own_plan(scan_background_folder(Path(background), label=BACKGROUND_LABEL))
    return _Inputs([*labels, BACKGROUND_LABEL], BACKGROUND_LABEL, plan)


def _check_inputs(
    inputs: _Inputs, *, test_fold: int, progress: bool, previous_folds: Mapping[str, int]
) -> tuple[list[_PlannedClip], list[tuple[str, str]]]:
    """Read every header and hash, drop duplicates, name outputs, assign folds (keeping
    ``previous_folds``, see _assign_own_folds), check the splits."""
    unusable = []
    for clip in _progress(inputs.plan, progress=progress, desc="check", unit="file"):
        try:
            _probe(clip)
        except DatasetError as error:
            unusable.append(error)
    _raise_all(unusable)
    plan, duplicates = _drop_duplicates(inputs.plan)
    taken: set[str] = set()
    for clip in plan:
        clip.output_name = _unique_name(clip.output_name, taken)
    user_clips = [clip for clip in plan if not clip.from_catalog and not clip.train_only]
    if user_clips:
        _assign_own_folds(user_clips, test_fold=test_fold, earlier=previous_folds)
    _check_splits(plan, inputs.labels, test_fold=test_fold, background=inputs.background_label)
    return plan, duplicates


def _raise_all(errors: Sequence[DatasetError], *, kept: str = "") -> None:
    """One DatasetError naming every unusable file, so one pass fixes them all; `kept` says what was saved."""
    if not errors:
        return
    if len(errors) == 1 and not kept:
        raise errors[0]
    raise DatasetError(listed(f"{len(errors)} input file(s) cannot be used{kept}", errors, limit=_LISTED_ERRORS))


def _convert(clip: _PlannedClip, audio_dir: Path, *, params: Params) -> dict[str, Any]:
    """Decode, mix down, resample, pad and write one clip; returns its manifest record."""
    waveform, rate_hz = _read_source(clip.path)
    source_peak = float(np.max(np.abs(waveform)))
    warn_if_misscaled(clip.path, source_peak)
    model_waveform, padded = pad_to_patch(to_model_waveform(waveform, rate_hz, params=params), params=params)
    if padded:
        logger.warning(
            "%s is shorter than one patch (%.3f s): zero-padded to %d samples (%.3f s)",
            clip.path, waveform.shape[0] / rate_hz, params.patch_samples, params.patch_seconds,
        )  # fmt: skip
    peak = float(np.max(np.abs(model_waveform)))
    peak_dbfs = 20.0 * math.log10(peak) if peak > 0.0 else -math.inf
    if peak == 0.0:
        logger.warning("%s is digital silence: check the recording", clip.path)
    elif peak_dbfs < params.silent_patch_dbfs:
        logger.warning("%s is silent (peak %.1f dBFS, under the %.0f dBFS YAMNet hears): check the recording",
                       clip.path, peak_dbfs, params.silent_patch_dbfs)  # fmt: skip
    write_float_wav_atomic(audio_dir / clip.output_name, model_waveform, rate_hz=params.sample_rate_hz)
    return {
        "source": str(clip.path),
        "source_sha256": clip.sha256,
        "source_rate_hz": rate_hz,
        "source_channels": int(waveform.shape[1]),
        "source_subtype": clip.subtype,
        "sample_rate_hz": params.sample_rate_hz,
        "min_samples": params.patch_samples,
        "num_samples": int(model_waveform.shape[0]),
        "padded": padded,
        "peak": peak,
        "source_peak": source_peak,
    }


def _remove_stale(audio_dir: Path, wanted: set[str]) -> int:
    """Delete outputs no entry names (an earlier task's) and stray temporary files; returns the count of the former."""
    removed = 0
    for path in audio_dir.iterdir():
        if path.name.startswith(".") and ".tmp-" in path.name:
            path.unlink(missing_ok=True)
        elif path.is_file() and path.suffix == ".wav" and path.name not in wanted:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _dataset(
    plan: Sequence[_PlannedClip], inputs: _Inputs, *, root: Path, task: str, test_fold: int
) -> PreparedDataset:
    entries = sorted(
        (
            DatasetEntry(
                file_name=clip.output_name,
                class_name=clip.class_name,
                class_number=inputs.labels.index(clip.class_name),
                fold=int(clip.fold),  # type: ignore[arg-type]  # every fold is set by _check_inputs
                source=clip.source,
                train_only=clip.train_only,
                false_alarm=clip.false_alarm,
            )
            for clip in plan
        ),
        key=lambda entry: (entry.class_number, entry.file_name),
    )
    return PreparedDataset(
        data_dir=root,
        labels=tuple(inputs.labels),
        background_label=inputs.background_label,
        task=task,
        train=tuple(entry for entry in entries if entry.fold != test_fold),
        test=tuple(entry for entry in entries if entry.fold == test_fold),
        test_fold=test_fold,
    )


# --- the command ----------------------------------------------------------------------------


def prepare_dataset(
    *,
    classes: Sequence[str] | None,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    out_dir: str | os.PathLike[str] = Path("data"),
    background: str | os.PathLike[str] | None = ESC10_BACKGROUND,
    own_data_dir: str | os.PathLike[str] | None = None,
    extra_background: str | os.PathLike[str] | None = None,
    false_alarms: str | os.PathLike[str] | None = None,
    test_fold: int = DEFAULT_TEST_FOLD,
    params: Params = DEFAULT_PARAMS,
    progress: bool = True,
    task: str | None = None,
    cache_dir: Path | None = None,
) -> PreparedDataset:
    """Build ``out_dir`` (``data/``) for a task: 16 kHz mono float32 clips and the fold JSONs.

    Args:
        classes: ESC-50 class names in head output order (None: crying_baby, clock_alarm,
            toilet_flush, water_drops); with ``own_data_dir``, the label folders to use, in
            that order (None: every folder, sorted by name).
        esc50_dir: the ESC-50 folder; None finds it (train.assets.find_esc50, which may
            download). Only read for ESC-50 classes or ``background="esc10"`` / ``"esc50"``.
        assets_dir: the assets root holding ``esc50/`` (``--assets``), searched when
            ``esc50_dir`` is None (see find_esc50).
        out_dir: the data folder to write; prepare owns its ``audio/`` sub-folder.
        background: the string ``"esc10"`` adds the ESC-10 clips of non-target classes as
            the last label ``"other"``; ``"esc50"`` the clips of every non-target ESC-50 class
            (the full download); a folder (a Path, or any other string) adds the
            user's own background recordings as ``"other"``; None adds no background class.
        own_data_dir: a folder of ``<label>/<clip>.wav|.flac`` (any rate, channels, bit
            depth) to use instead of ESC-50 classes. Folds are assigned per source
            recording (see data/README.md).
        extra_background: more ``"other"`` audio that is only trained on, never in the test
            fold or a validation stream (train.extra_background): ``"debian-sfx"`` (sound
            effects, ambiences, music and spoken words from Debian packages; needs apt-get),
            a folder of recordings of any length, or None. Unused without a background class.
        false_alarms: a folder of the device's saved false alarms (``[events] save_dir``), or
            None: cut and trained on like ``extra_background``, and also in the validation
            streams that choose the thresholds (DatasetEntry.false_alarm). Needs a background class.
        test_fold: the fold held out for testing (1..5); the others train.
        params: gives the output rate and the one-patch minimum length.
        progress: show tqdm bars (on a terminal only; quiet in pipes).
        task: name stored in classes.json (default: "default", "esc10", "esc50" or "own").
        cache_dir: the user cache for the extra background (default: ~/.cache/oido).

    Returns:
        The data set as written, with ``report`` saying what was written and skipped.

    Raises:
        DatasetError: bad input, naming the file and the fix (unreadable or empty audio,
            an invalid or clip-less class, a class without test or train clips, fewer than
            two labels with the background, ...).
            Nothing is written when the input fails these checks.
        ValueError: an unknown ESC-50 class (the message lists the valid names), or a bad option.
        AssetError: ESC-50 is needed and missing, or lacks a requested class's clips.
    """
    started = time.perf_counter()
    if not 1 <= test_fold <= NUM_FOLDS:
        raise ValueError(f"test_fold must be 1..{NUM_FOLDS}, got {test_fold}")
    if classes is not None:
        if isinstance(classes, str):
            raise ValueError(f"classes must be a list of names, got the string {classes!r}")
        if not classes:
            raise ValueError("classes is empty: name at least one class")
        repeated = sorted(name for name, count in Counter(classes).items() if count > 1)
        if repeated:
            raise ValueError(f"classes lists {repeated} more than once: name each class once")
        for name in classes:
            validate_label(name, where="the class list")
    if own_data_dir is None and background is None:  # known now: refuse before ESC-50 is looked for (or downloaded)
        _check_label_count(list(classes) if classes is not None else list(DEFAULT_CLASSES))

    @functools.cache
    def catalog() -> Esc50Catalog:
        return Esc50Catalog(esc50_dir if esc50_dir is not None else find_esc50(assets_dir=assets_dir, progress=progress))

    # 1. every check on the input, before anything is written
    own = Path(own_data_dir) if own_data_dir is not None else None
    inputs = _plan_inputs(classes=classes, catalog=catalog, background=background, own_data_dir=own)
    targets = [label for label in inputs.labels if label != inputs.background_label]
    if extra_background is not None and str(extra_background) != "none":
        if inputs.background_label is None:
            logger.info("no background class: the extra background %s is not used", extra_background)
        else:
            extra = extra_background_clips(
                extra_background, targets, test_fold=test_fold, cache_dir=cache_dir, params=params, progress=progress
            )  # fmt: skip
            logger.info("extra background (training only): %s", describe(extra))
            inputs.plan.extend(_extra_plan(extra))
    if false_alarms is not None:
        if inputs.background_label is None:
            raise ValueError(
                f"--false-alarms {false_alarms}: false alarms are taught as the background class; drop --background none"
            )
        if not Path(false_alarms).is_dir():
            raise DatasetError(
                f"--false-alarms {false_alarms} does not exist: copy the false alarms the Pi saved ([events] save_dir) into one folder"
            )
        heard = folder_clips(
            Path(false_alarms), targets, cache_dir=(cache_dir or user_cache_dir()) / FOLDERS_SUBDIR, test_fold=test_fold,
            params=params, progress=progress,
        )  # fmt: skip
        logger.info("false alarms (trained on, in the validation streams): %s", describe(heard))
        inputs.plan.extend(_extra_plan(heard, false_alarm=True))
    task_name = task or _task_name(targets, own=own is not None)
    root = Path(out_dir)
    plan, duplicates = _check_inputs(
        inputs, test_fold=test_fold, progress=progress, previous_folds=_previous_folds(root)
    )
    source_folds = {
        clip.source: int(clip.fold)  # type: ignore[arg-type]  # every fold is set by _check_inputs
        for clip in plan
        if not clip.from_catalog and not clip.train_only
    }
    manifest = functools.partial(_manifest, params=params, task=task_name, source_folds=source_folds)

    # 2. mark the data set incomplete: drop the old JSONs, keep only still-valid manifest records
    audio_dir = root / AUDIO_DIR
    audio_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = root / MANIFEST_JSON
    previous = _load_manifest(manifest_path)
    records = {
        clip.output_name: previous[clip.output_name]
        for clip in plan
        if _is_current(previous.get(clip.output_name), clip, audio_dir / clip.output_name, params=params)
    }
    todo = [clip for clip in plan if clip.output_name not in records]
    for name in (TRAIN_JSON, TEST_JSON, CLASSES_JSON):
        (root / name).unlink(missing_ok=True)
    write_json_atomic(manifest_path, manifest(records, complete=False))

    # 3. the audio, each file atomically
    for name, record in records.items():
        if record.get("padded"):
            logger.warning("%s: its source %s is shorter than one patch and was zero-padded to %d samples",
                           name, record.get("source"), params.patch_samples)  # fmt: skip
        warn_if_misscaled(record.get("source"), record.get("source_peak", 0.0))
    undecodable = []
    try:
        for clip in _progress(todo, progress=progress, desc="prepare", unit="clip"):
            try:
                records[clip.output_name] = _convert(clip, audio_dir, params=params)
            except DatasetError as error:  # a header that reads but audio that does not decode
                undecodable.append(error)
    finally:  # an error or Ctrl-C keeps the clips done so far: a rerun skips them
        write_json_atomic(manifest_path, manifest(records, complete=False))
    converted = len(todo) - len(undecodable)
    _raise_all(undecodable, kept=f" (the {converted} other new clip(s) are converted and kept: a rerun skips them)")
    over = [record for record in records.values() if record.get("peak", 0.0) > 1.0]
    stored = [record for record in over if record.get("source_rate_hz") == params.sample_rate_hz]
    if len(over) > len(stored):
        logger.info(
            "%d clip(s) peak above full scale after resampling; kept in float, not clipped", len(over) - len(stored)
        )
    if stored:
        logger.info(
            "%d clip(s) peak above full scale as stored in their float source (e.g. %s); kept, not clipped",
            len(stored), stored[0].get("source"),
        )  # fmt: skip
    removed = _remove_stale(audio_dir, {clip.output_name for clip in plan})

    # 4. the JSONs, then the manifest that marks the data set complete
    dataset = _dataset(plan, inputs, root=root, task=task_name, test_fold=test_fold)
    for name, document in dataset_json(dataset).items():
        write_json_atomic(root / name, document)
    ordered = {clip.output_name: records[clip.output_name] for clip in plan}
    write_json_atomic(manifest_path, manifest(ordered, complete=True))

    report = PrepareReport(
        written=len(todo),
        skipped=len(plan) - len(todo),
        padded=tuple(sorted(name for name, record in ordered.items() if record.get("padded"))),
        duplicates=tuple(duplicates),
        removed=removed,
        seconds=time.perf_counter() - started,
    )
    counts = dataset.counts()
    logger.info(
        "prepared %s in %.1f s (%d written, %d unchanged): train %s, test %s",
        root, report.seconds, report.written, report.skipped, counts["train"], counts["test"],
    )  # fmt: skip
    return replace(dataset, report=report)


def _progress(items: Sequence[Any], *, progress: bool, desc: str, unit: str) -> Any:
    """tqdm over ``items`` on a terminal when ``progress``; the plain sequence otherwise."""
    if not progress or not items:
        return items
    from tqdm import tqdm  # noqa: PLC0415 - only a run with progress needs it

    return tqdm(items, desc=desc, unit=unit, disable=None, leave=False)
