"""Open-set detection: training recipe, threshold calibration, event-level evaluation, leave-one-class-out.

A four-class softmax cannot say "none of these": every sound lands on some class. Oído trains a
background class ("other") on real non-target audio and then chooses, per class, the onset
threshold that keeps false events under a target rate on validation streams. This module holds:

- `OpenSetRecipe` and `train_heads`: the head trainer (train.head.fit_head) fed with patches
  whose labels follow the sound (near-silent patches of a target clip are background), plus
  mixed/shifted augmented copies of the target clips (train.augment);
- `oof_validation` and `calibrate_on_streams`: out-of-fold predictions on validation STREAMS of
  the training folds (train on three folds, stream the fourth), a threshold sweep per class,
  and the thresholds that miss the fewest targets with false events within the budget
  (default 2 per hour; `choose_thresholds`);
- `evaluate_streams`: the test fold as a stream through the edge detector (event recall,
  latency, false events per hour, sweep plot, and `hindsight`: the most any thresholds could do);
- `leave_one_class_out`: an honest proxy for never-heard sounds: the background class is
  trained without one category, and false events are counted on that category's clips.

Also `separability`: how well any score of the head tells a target from a never-trained sound.
Its commands (fit-openset, calibrate, evaluate-stream, loco, separability, feedback, ablation) are
parsed in train.openset_cli; `oido-train ablation`'s variants are in train.ablation.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.detect import DetectorConfig
from edge.params import DEFAULT_PARAMS, Params
from edge.pipeline import StreamingPipeline
from train.augment import DEFAULT_AUGMENT_CACHE, MixOptions, embed_mixes, plan_background_mixes, plan_mixes
from train.context import context_features
from train.datasets import FALSE_ALARM_TAG
from train.embeddings import patch_rms_dbfs
from train.yamnet import find_audioset_classes
from train.streams import (
    DEFAULT_STREAM_CACHE,
    DEFAULT_STREAM_OPTIONS,
    AudioLibrary,
    PatchEmbedder,
    SourceClip,
    StreamOptions,
    StreamPatches,
    StreamScore,
    StreamSpec,
    SweepPoint,
    TfliteEmbedder,
    build_stream,
    check_against_pipeline,
    detect_events,
    embed_stream,
    logit,
    plot_sweep,
    render_stream,
    run_pipeline,
    score_stream,
    sweep_thresholds,
    with_background,
)

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

THRESHOLDS_FILE = "thresholds.json"
DEFAULT_RESULTS_DIR = Path("reports/openset")
CALIBRATION_GRID = tuple(
    round(1.0 / (1.0 + math.exp(-z)), 7) for z in np.arange(-1.0, 12.01, 0.25)
)  # fmt: skip
"""Onset thresholds tried by calibration: even steps in logit space, 0.27 .. 0.99999."""
DEFAULT_BED_CATEGORIES = ("rain", "sea_waves", "helicopter", "chainsaw", "crackling_fire")
"""Steady ESC-10 sounds used as backgrounds under targets (the test fold's clips)."""

EXTRA_CATEGORY = "extra"
"""Category of the training-only extra background clips (never left out by loco, never streamed)."""
FALSE_ALARM_CATEGORY = FALSE_ALARM_TAG
"""Category of the saved false alarms (prepare --false-alarms): never left out by loco, streamed only in
training and validation streams."""
_ESC50_STEM = re.compile(r"^(?P<fold>\d)-(?P<source>[^-]+)-(?P<take>[A-Za-z]+)-(?P<target>\d+)$")


# --------------------------------------------------------------------------- data


def esc50_categories(
    esc50_dir: str | os.PathLike[str] | None = None, *, assets_dir: str | os.PathLike[str] | None = None
) -> dict[int, str]:
    """ESC-50 target number -> category name, from meta/esc50.csv (empty when ESC-50 is not found).

    esc50_dir: the ESC-50 folder; else found by train.assets.find_esc50 (never downloaded), with
    assets_dir (``--assets``) as the assets root holding esc50/.
    """
    from train.assets import AssetError, Esc50Catalog, find_esc50

    try:
        root = Path(esc50_dir) if esc50_dir is not None else find_esc50(assets_dir=assets_dir, download=False, progress=False)
        catalog = Esc50Catalog(root)
    except (AssetError, OSError, ValueError) as error:
        logger.info("ESC-50 metadata not found (%s): background clips are grouped by recording", error)
        return {}
    return {clip.target: clip.category for clip in catalog.clips}


def clip_category(file_name: str, class_name: str, *, background_label: str | None, categories: Mapping[int, str]) -> str:
    """Finer name of a clip: its label for targets; for background clips the ESC-50 category
    (from an ESC-50 file name) or else the file's recording id (text before '__' or the stem)."""
    if class_name != background_label:
        return class_name
    stem = Path(file_name).stem
    match = _ESC50_STEM.match(stem)
    if match and int(match["target"]) in categories:
        return categories[int(match["target"])]
    return stem.split("__")[0]


@dataclass(frozen=True)
class ClipData:
    """A prepared clip with its YAMNet outputs."""

    path: Path
    label: int
    """Index into the task's labels."""
    category: str
    fold: int
    source: str
    embeddings: FloatArray
    """float32 [p, 1024]"""
    yamnet_scores: FloatArray
    """float32 [p, 521]"""
    level_db: FloatArray
    """float32 [p]: RMS level of each patch, dB full scale."""
    train_only: bool = False
    """Extra background (train.extra_background): trained on, never in a validation or test stream."""
    false_alarm: bool = False
    """A saved false alarm (prepare --false-alarms): train_only, but also in the validation streams."""


@dataclass(frozen=True)
class Task:
    """The clips of a prepared data set, embedded."""

    labels: tuple[str, ...]
    background_label: str | None
    clips: tuple[ClipData, ...]
    test_fold: int

    @property
    def background_index(self) -> int | None:
        return None if self.background_label is None else self.labels.index(self.background_label)

    @property
    def target_labels(self) -> tuple[str, ...]:
        return tuple(label for label in self.labels if label != self.background_label)

    @property
    def categories(self) -> list[str]:
        """Background categories that streams are made of (not the training-only extra background), sorted."""
        return sorted({c.category for c in self.clips if c.label == self.background_index and not c.train_only})

    def select(
        self, *, folds: Sequence[int] | None = None, targets: bool = True, background: bool = True,
        exclude_categories: Sequence[str] = (), only_categories: Sequence[str] | None = None,
        train_only: bool = True, false_alarms: bool = False,
    ) -> list[ClipData]:  # fmt: skip
        """Clips of `folds` (None: all); `train_only=False` leaves out the training-only extra
        background, except the saved false alarms when `false_alarms` (a validation stream's choice)."""
        chosen = []
        for clip in self.clips:
            is_background = clip.label == self.background_index
            if folds is not None and clip.fold not in folds:
                continue
            if clip.train_only and not train_only and not (false_alarms and clip.false_alarm):
                continue
            if (is_background and not background) or (not is_background and not targets):
                continue
            if is_background and clip.category in exclude_categories:
                continue
            if is_background and only_categories is not None and clip.category not in only_categories:
                continue
            chosen.append(clip)
        return chosen

    def sources(self, clips: Sequence[ClipData], *, role_of_background: str = "nontarget") -> list[SourceClip]:
        """Stream sources for clips: targets keep their label; background clips become non-targets (or beds)."""
        return [
            SourceClip(
                path=c.path,
                role="target" if c.label != self.background_index else role_of_background,  # type: ignore[arg-type]
                label=self.labels[c.label] if c.label != self.background_index else None,
                category=c.category,
                fold=c.fold,
            )
            for c in clips
        ]


def load_task(
    data_dir: str | os.PathLike[str],
    embedder: PatchEmbedder,
    *,
    cache_root: str | os.PathLike[str] | None,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    library: AudioLibrary | None = None,
    params: Params = DEFAULT_PARAMS,
) -> Task:
    """Read data/ (train.datasets.load_dataset) and embed every clip (train.embeddings' cache)."""
    from edge.framing import waveform_to_patches
    from train.datasets import load_dataset
    from train.embeddings import embed_files

    dataset = load_dataset(data_dir)
    library = library or AudioLibrary(params=params)
    entries = list(dataset.entries)
    paths = [dataset.audio_path(e) for e in entries]
    embedded = embed_files(paths, embedder, cache_root=cache_root, params=params)
    categories = esc50_categories(esc50_dir, assets_dir=assets_dir) if dataset.background_label else {}
    clips = []
    for entry, path, outputs in zip(entries, paths, embedded):
        levels = getattr(outputs, "rms_dbfs", None)
        if levels is None:  # an older train.embeddings without patch levels
            levels = patch_rms_dbfs(waveform_to_patches(library.waveform(path), params=params))
        if len(levels) != outputs.num_patches:
            raise RuntimeError(f"{path}: {outputs.num_patches} cached embeddings but {len(levels)} patches")
        clips.append(
            ClipData(
                path=path,
                label=entry.class_number,
                category=FALSE_ALARM_CATEGORY if entry.false_alarm else EXTRA_CATEGORY if entry.train_only else clip_category(
                    entry.file_name, entry.class_name, background_label=dataset.background_label, categories=categories),
                fold=entry.fold,
                source=entry.source,
                embeddings=outputs.embeddings,
                yamnet_scores=outputs.scores,
                level_db=levels,
                train_only=entry.train_only,
                false_alarm=entry.false_alarm,
            )
        )
    return Task(labels=dataset.labels, background_label=dataset.background_label, clips=tuple(clips), test_fold=dataset.test_fold)


# --------------------------------------------------------------------------- recipe and training


@dataclass(frozen=True)
class OpenSetRecipe:
    """How the head is trained for open-set use (defaults: the measured choice, see reports/openset.md)."""

    epochs: int = 20
    """Passes over the training patches."""
    class_weight: Literal["none", "balanced"] = "balanced"
    """'balanced' up-weights the targets against the larger background class: clip accuracy
    27 -> 30/32 at the same event figures (reports/openset.md)."""
    quiet_below_peak_db: float | None = None
    """Target patches more than this under their clip's loudest patch hold (near) silence or
    background, not the target: they are labelled background (None keeps clip labels; 20 dB
    removed some false events at 1-of-1 but cost clip accuracy and validation recall)."""
    mix: MixOptions | None = field(default_factory=MixOptions)
    """Augmented copies of the target clips (shift, gain, over background); None: none."""
    training_streams: int = 2
    """Streams per training fold (built like the evaluation streams, other seeds) whose patches
    are added to the training set, labelled by what they hold: patch phases off the clip grid,
    clip boundaries, silence between sounds, and the first patches of a sound. 2 (vs 0), out of
    fold at 1-of-1 and 2 false events/h: 196 vs 185 of 256 validation targets in time."""
    min_target_overlap_seconds: float = 0.4
    """A stream patch is labelled a target when it holds at least this much of the target's
    sound (at full level, see quiet_below_peak_db); with less it is left out of training."""
    ensemble: int = 1
    """Heads trained with different seeds and averaged (1: the tutorial's single head)."""
    label_smoothing: float = 0.0
    """Cross-entropy label smoothing: keeps the softmax from saturating at 1.0, so onset
    thresholds can still separate targets from look-alikes."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay (0: plain Adam, the tutorial's optimiser)."""
    dropout: float = 0.0
    """Dropout on the hidden layer's outputs while training (0: none, the tutorial's head). The
    saved head is still the tutorial's two Dense layers: dropout only exists in training."""
    temperature_scaling: bool = True
    """Divide the head's logits by a temperature fitted on out-of-fold clip patches (folded into
    its last layer): without it the softmax saturates (validation false events at p > 0.99999)
    and the calibrated thresholds end up at 0.99999x, fragile and useless to adjust by hand."""
    background_subclasses: bool = False
    """Train one softmax output per background category (e.g. dog, rain, ...) and sum them into
    the background label afterwards (a fixed layer in the exported head)."""
    context_patches: int = 0
    """The head also takes the mean embedding of this many patches before each one
    (train.context; 0: the embedding alone, the tutorial's input). Measured and not kept: it
    detects targets later, because at an onset the patches before are the sound before. Only
    `loco` and `ablation` train such heads; the Pi's pipeline feeds embeddings alone."""
    seed: int = 0

    def __post_init__(self) -> None:
        # each message names the oido-train flag that sets the field (a recipe file's key is its flag's name)
        if self.epochs < 1:
            raise ValueError(f"epochs (--epochs) must be at least 1: a head trained on nothing lights nothing; got {self.epochs}")
        if self.ensemble < 1:
            raise ValueError(f"ensemble (--ensemble) must be at least 1 head, got {self.ensemble}")
        if self.training_streams < 0:
            raise ValueError(f"training_streams (--training-streams) must be 0 or more, got {self.training_streams}")
        if self.seed < 0:
            raise ValueError(f"seed (--seed) must be 0 or more, got {self.seed}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing (--label-smoothing) must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout (--dropout) must be in [0, 1), got {self.dropout}")
        if self.context_patches < 0:
            raise ValueError(f"context_patches (--context-patches) must be >= 0, got {self.context_patches}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay (--weight-decay) must be >= 0, got {self.weight_decay}")
        if not self.min_target_overlap_seconds >= 0:
            raise ValueError(f"min_target_overlap_seconds must be >= 0, got {self.min_target_overlap_seconds}")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "OpenSetRecipe":
        values = dict(values)
        mix = values.pop("mix", None)
        if mix is not None:
            mix = MixOptions(**{k: tuple(v) if isinstance(v, list) else v for k, v in mix.items()})
        return cls(mix=mix, **values)


DEFAULT_RECIPE = OpenSetRecipe()


@dataclass(frozen=True)
class TrainingSet:
    """Patches and labels a head is trained on, grouped as the head trainer expects.

    Labels are in the TRAINING label space: the task's labels, or with background subclasses
    the target labels followed by one output per background category; `merge` [train_labels,
    task_labels] (0/1) maps training outputs back to the task's labels.
    """

    clip_embeddings: list[FloatArray]
    clip_labels: list[int]
    groups: list[str]
    merge: FloatArray
    output_names: tuple[str, ...]

    @property
    def num_patches(self) -> int:
        return sum(len(e) for e in self.clip_embeddings)


QUIET_SUBCLASS = "quiet"
"""Background subclass of near-silent target patches."""


class _LabelSpace:
    """Training outputs of a recipe: task labels, or targets + background subclasses."""

    def __init__(self, task: Task, clips: Sequence[ClipData], recipe: OpenSetRecipe) -> None:
        self.task = task
        background = task.background_index
        self.subclasses = recipe.background_subclasses and background is not None
        if self.subclasses:
            categories = sorted({c.category for c in clips if c.label == background} - {QUIET_SUBCLASS})
            categories.append(QUIET_SUBCLASS)
            targets = [i for i in range(len(task.labels)) if i != background]
            self.names = tuple(task.labels[i] for i in targets) + tuple(f"{task.background_label}:{c}" for c in categories)
            self.index = {task.labels[i]: n for n, i in enumerate(targets)}
            self.index.update({f"{task.background_label}:{c}": len(targets) + n for n, c in enumerate(categories)})
            self.merge = np.zeros((len(self.names), len(task.labels)), np.float32)
            for n, i in enumerate(targets):
                self.merge[n, i] = 1.0
            self.merge[len(targets) :, background] = 1.0
        else:
            self.names = tuple(task.labels)
            self.index = {label: i for i, label in enumerate(task.labels)}
            self.merge = np.eye(len(task.labels), dtype=np.float32)

    def of_clip(self, clip: ClipData) -> int:
        if self.subclasses and clip.label == self.task.background_index:
            return self.index[f"{self.task.background_label}:{clip.category}"]
        return self.index[self.task.labels[clip.label]]

    def quiet(self, bed: ClipData | None) -> int:
        """Label of a quiet target patch (silence, or the bed under it); -1: drop it."""
        background = self.task.background_index
        if background is None:
            return -1
        if not self.subclasses:
            return background
        if bed is not None:
            return self.of_clip(bed)
        return self.index[f"{self.task.background_label}:{QUIET_SUBCLASS}"]


def _split_by_label(embeddings: FloatArray, labels: IntArray, group: str, out: TrainingSet) -> None:
    for label in np.unique(labels):
        out.clip_embeddings.append(np.asarray(embeddings[labels == label], np.float32))
        out.clip_labels.append(int(label))
        out.groups.append(group)


def quiet_mask(level_db: FloatArray, *, quiet_below_peak_db: float | None) -> npt.NDArray[np.bool_]:
    """bool [p]: patches more than quiet_below_peak_db under the clip's loudest patch (none when None)."""
    if quiet_below_peak_db is None or len(level_db) == 0:
        return np.zeros(len(level_db), bool)
    return np.asarray(level_db < float(np.max(level_db)) - quiet_below_peak_db)


def training_set(
    factory: "StreamFactory",
    clips: Sequence[ClipData],
    recipe: OpenSetRecipe,
    *,
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
) -> TrainingSet:
    """The recipe's training patches for `clips`: the clips, augmented copies of their targets,
    and patches of training streams made of them."""
    task = factory.task
    space = _LabelSpace(task, clips, recipe)
    out = TrainingSet([], [], [], space.merge, space.names)
    background = task.background_index
    params = factory.params
    for clip in clips:
        labels = np.full(len(clip.embeddings), space.of_clip(clip), np.int64)
        if clip.label != background:
            labels[quiet_mask(clip.level_db, quiet_below_peak_db=recipe.quiet_below_peak_db)] = space.quiet(None)
        # Silence is not a target: it never votes or starts an event on the edge, but near-silent
        # audio embeds close to it, and learning it as background keeps quiet rooms dark.
        labels[~params.audible(clip.level_db)] = space.quiet(None)
        keep = labels >= 0
        _split_by_label(context_features(clip.embeddings, recipe.context_patches)[keep], labels[keep], clip.source, out)
    if recipe.mix is not None:
        library = factory.library
        targets = [c for c in clips if c.label != background]
        backgrounds = [c for c in clips if c.label == background]
        plans = plan_mixes([str(c.path) for c in targets], [str(c.path) for c in backgrounds], options=recipe.mix, library=library, params=params)
        by_path = {str(Path(c.path).resolve()): c for c in targets + backgrounds}
        for mixed in embed_mixes(plans, factory.embedder, library=library, cache_dir=augment_cache, params=params):
            source = by_path[mixed.plan.target]
            bed = None if mixed.plan.background is None else by_path[mixed.plan.background]
            labels = np.full(len(mixed.embeddings), space.of_clip(source), np.int64)
            # Where the background drowns the target the patch is not evidence either way.
            labels[mixed.target_level_db < mixed.background_level_db + recipe.mix.min_patch_snr_db] = -1
            quiet = quiet_mask(mixed.target_level_db, quiet_below_peak_db=recipe.quiet_below_peak_db)
            # Without a bed a quiet patch is silence, which the plain clips already teach.
            labels[quiet] = space.quiet(bed) if bed is not None else -1
            keep = labels >= 0
            _split_by_label(context_features(mixed.embeddings, recipe.context_patches)[keep], labels[keep], source.source, out)
        plans = plan_background_mixes([str(c.path) for c in backgrounds], options=recipe.mix, library=library, params=params)
        for mixed in embed_mixes(plans, factory.embedder, library=library, cache_dir=augment_cache, params=params):
            source = by_path[mixed.plan.target]
            bed = source if mixed.plan.background is None else by_path[mixed.plan.background]
            # Each patch is what is louder in it; a patch YAMNet cannot hear is silence.
            labels = np.where(mixed.target_level_db >= mixed.background_level_db, space.of_clip(source), space.of_clip(bed))
            louder = np.maximum(mixed.target_level_db, mixed.background_level_db)
            labels[~params.audible(louder)] = space.quiet(None)
            _split_by_label(context_features(mixed.embeddings, recipe.context_patches), labels.astype(np.int64), source.source, out)
    if recipe.training_streams > 0:
        allowed = {str(Path(c.path).resolve()): c for c in clips}
        for fold in sorted({c.fold for c in clips}):
            for copy in range(recipe.training_streams):
                spec = factory.fold_stream([fold], seed=TRAINING_STREAM_SEED + 1000 * fold + copy, training=True)
                patches = factory.patches(spec)
                labels = label_stream_patches(spec, allowed, space, recipe=recipe, factory=factory)
                keep = labels >= 0
                features = context_features(patches.embeddings, recipe.context_patches)
                _split_by_label(features[keep], labels[keep], f"stream:{fold}:{copy}", out)
    return out


TRAINING_STREAM_SEED = 500_000
"""Seeds of training streams start here (evaluation streams use small seeds)."""


def label_stream_patches(
    spec: StreamSpec,
    allowed: Mapping[str, ClipData],
    space: _LabelSpace,
    *,
    recipe: OpenSetRecipe,
    factory: "StreamFactory",
) -> IntArray:
    """Training label of every patch of a stream (in `space`), -1 for patches left out.

    A patch is a target when it holds at least min_target_overlap_seconds of that target's sound
    (its onset .. last active frame) and the target's level in it is within quiet_below_peak_db of
    the target clip's loudest patch;
    with a loud but shorter overlap it is left out (ambiguous onset/offset); otherwise it is
    background (the category of the clip it overlaps most; "quiet" when only silence). Patches
    touching a clip not in `allowed` (held out) are left out.
    """
    params = factory.params
    patch, hop = params.patch_samples, params.hop_samples
    count = params.patches_in(spec.num_samples)
    labels = np.full(count, -1, np.int64)
    quiet_db = recipe.quiet_below_peak_db if recipe.quiet_below_peak_db is not None else math.inf
    min_overlap = round(recipe.min_target_overlap_seconds * params.sample_rate_hz)
    clips = sorted(spec.clips, key=lambda c: c.start_sample)
    for index in range(count):
        start, end = index * hop, index * hop + patch
        touching = [c for c in clips if c.start_sample < end and c.end_sample > start]
        if any(c.file not in allowed for c in touching):
            continue
        best_target, best_level, ambiguous = None, -math.inf, False
        best_other, best_overlap = None, 0
        for clip in touching:
            data = allowed[clip.file]
            overlap = min(end, clip.end_sample) - max(start, clip.start_sample)
            if clip.role == "target":
                # Overlap with the sound itself (onset .. last active frame), not the clip's silence.
                overlap = min(end, clip.active_end_sample) - max(start, clip.onset_sample)
                audio = factory.library.waveform(clip.file)
                part = audio[max(0, start - clip.start_sample) : min(clip.num_samples, end - clip.start_sample)].astype(np.float64)
                energy = float(np.sum(part**2)) * 10.0 ** (clip.gain_db / 10.0) / patch
                level = 10.0 * math.log10(energy) if energy > 0 else -math.inf
                if level >= float(np.max(data.level_db)) - quiet_db:
                    if overlap >= min_overlap and level > best_level:
                        best_target, best_level = data, level
                    elif overlap < min_overlap:
                        ambiguous = True
            elif overlap > best_overlap:
                best_other, best_overlap = data, overlap
        if best_target is not None:
            labels[index] = space.of_clip(best_target)
        elif not ambiguous:
            labels[index] = space.of_clip(best_other) if best_other is not None else space.quiet(None)
    return labels


@dataclass
class HeadEnsemble:
    """Trained heads whose averaged, merged, tempered outputs are the task's label probabilities.

    probabilities = mean over heads of softmax(logits / temperature), then @ merge. The
    temperature is folded into each head's last layer on export (softmax((W x + b) / T) =
    softmax((W / T) x + b / T)), so the exported head is still the tutorial's two Dense layers.
    """

    models: list[Any]
    merge: FloatArray
    """float32 [training outputs, task labels]"""
    output_names: tuple[str, ...]
    temperature: float = 1.0
    context_patches: int = 0
    """The heads take train.context features of this many patches (0: embeddings)."""

    @staticmethod
    def _layers(model: Any) -> list[tuple[FloatArray, FloatArray, str]]:
        import tensorflow as tf

        layers = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
        return [
            (np.asarray(layer.kernel.numpy(), np.float32), np.asarray(layer.bias.numpy(), np.float32), layer.get_config()["activation"])
            for layer in layers
        ]

    def features(self, embeddings: FloatArray) -> FloatArray:
        """The heads' input for consecutive patches' embeddings (train.context.context_features)."""
        return context_features(embeddings, self.context_patches)

    def logits(self, embeddings: FloatArray) -> FloatArray:
        """Pre-softmax outputs of every head for consecutive patches: float32 [heads, p, training outputs]."""
        return self.logits_of_features(self.features(embeddings))

    def logits_of_features(self, features: FloatArray) -> FloatArray:
        """Pre-softmax outputs of every head for its input rows (features())."""
        x0 = np.asarray(features, np.float32)
        results = []
        for model in self.models:
            x = x0
            layers = self._layers(model)
            for number, (kernel, bias, activation) in enumerate(layers):
                x = x @ kernel + bias
                if number < len(layers) - 1:
                    if activation != "relu":
                        raise ValueError(f"head layer {number} has activation {activation!r}; expected the tutorial's relu")
                    x = np.maximum(x, 0.0)
            results.append(x)
        return np.stack(results).astype(np.float32)

    def predict(self, embeddings: FloatArray, *, temperature: float | None = None) -> FloatArray:
        """float32 [p, 1024] -> float32 [p, task labels]."""
        return probabilities_from_logits(self.logits(embeddings), self.merge, self.temperature if temperature is None else temperature)

    def as_keras(self) -> Any:
        """One Keras model computing predict(): the heads (temperature folded in), their mean, the merge.

        With one head, no subclasses and temperature 1 it is that head itself (the tutorial's model).
        """
        import tensorflow as tf

        identity = self.merge.shape[0] == self.merge.shape[1] and np.array_equal(self.merge, np.eye(len(self.merge)))
        if len(self.models) == 1 and identity and self.temperature == 1.0:
            return self.models[0]
        inputs = tf.keras.Input(shape=(int(self.models[0].inputs[0].shape[-1]),), dtype="float32", name="embedding")
        outputs = []
        for number, member in enumerate(self.models):
            # Fresh, uniquely named copies of each member's layers (Keras wants unique names).
            x = inputs
            dense = [layer for layer in member.layers if isinstance(layer, tf.keras.layers.Dense)]
            for index, layer in enumerate(dense):
                name = layer.name if len(self.models) == 1 else f"{layer.name}_{number}"
                copy = tf.keras.layers.Dense.from_config({**layer.get_config(), "name": name})
                x = copy(x)
                kernel, bias = layer.get_weights()
                if index == len(dense) - 1:
                    kernel, bias = kernel / self.temperature, bias / self.temperature
                copy.set_weights([kernel, bias])
            outputs.append(x)
        mean = outputs[0] if len(outputs) == 1 else tf.keras.layers.Average(name="ensemble_mean")(outputs)
        if not identity:
            merge = tf.keras.layers.Dense(self.merge.shape[1], use_bias=False, trainable=False, name="merge_background")
            mean = merge(mean)
            merge.set_weights([self.merge])
        return tf.keras.Model(inputs=inputs, outputs=mean, name="oido_head")


def probabilities_from_logits(logits: FloatArray, merge: FloatArray, temperature: float) -> FloatArray:
    """logits float32 [heads, p, outputs] -> mean softmax(logits / T) @ merge: float32 [p, labels]."""
    scaled = np.asarray(logits, np.float64) / float(temperature)
    scaled -= scaled.max(axis=-1, keepdims=True)
    exp = np.exp(scaled)
    softmax = exp / exp.sum(axis=-1, keepdims=True)
    return (softmax.mean(axis=0) @ merge).astype(np.float32)


TEMPERATURE_GRID = tuple(float(t) for t in np.exp(np.linspace(math.log(0.5), math.log(50.0), 81)))
"""Temperatures tried by fit_temperature (log-spaced 0.5 .. 50)."""


def fit_temperature(pairs: Sequence[tuple[HeadEnsemble, FloatArray, IntArray]]) -> float:
    """Temperature minimising the mean negative log-likelihood of held-out patches.

    pairs: (heads, their input rows float32 [n, features] (HeadEnsemble.features of each clip),
    task labels int [n]) with each heads' own held-out clips (out of fold). Standard temperature
    scaling: keeps every argmax, makes the probabilities honest so that thresholds land where they
    can be told apart.
    """
    cached = [(heads.logits_of_features(x), heads.merge, np.asarray(y, np.int64)) for heads, x, y in pairs if len(y)]
    if not cached:
        return 1.0
    best, best_nll = 1.0, math.inf
    for temperature in TEMPERATURE_GRID:
        total, count = 0.0, 0
        for logits, merge, labels in cached:
            probabilities = probabilities_from_logits(logits, merge, temperature)
            picked = probabilities[np.arange(len(labels)), labels]
            total += float(-np.log(np.clip(picked, 1e-12, 1.0)).sum())
            count += len(labels)
        if total / count < best_nll:
            best, best_nll = temperature, total / count
    return float(best)


def train_heads(
    factory: "StreamFactory",
    clips: Sequence[ClipData],
    recipe: OpenSetRecipe = DEFAULT_RECIPE,
    *,
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
) -> HeadEnsemble:
    """Train recipe.ensemble heads on the recipe's training set of `clips` (no validation split)."""
    data = training_set(factory, clips, recipe, augment_cache=augment_cache)
    models = [fit_patches(data, recipe, seed=recipe.seed + member) for member in range(recipe.ensemble)]
    logger.info("trained %d head(s) on %d patches", len(models), data.num_patches)
    return HeadEnsemble(models=models, merge=data.merge, output_names=data.output_names, context_patches=recipe.context_patches)


def fit_patches(data: TrainingSet, recipe: OpenSetRecipe, *, seed: int, batch_size: int = 16, learning_rate: float = 1e-3) -> Any:
    """Train one tutorial head (train.head.build_head) on a TrainingSet; returns the Keras model.

    Adam (AdamW with weight_decay) on cross-entropy with label smoothing, shuffled mini-batches
    of `batch_size` patches (the tutorial's 16), class weights as recipe.class_weight says, and
    recipe.dropout on the hidden layer while training (the returned model has none).
    Seeded: the same data and seed give the same weights.
    """
    import tensorflow as tf

    from train.head import balanced_class_weights, build_head, seed_everything

    x = np.concatenate(data.clip_embeddings).astype(np.float32)
    y = np.concatenate([np.full(len(e), label, np.int64) for e, label in zip(data.clip_embeddings, data.clip_labels)])
    num_outputs = len(data.output_names)
    seed_everything(seed)
    model = build_head(num_outputs, embedding_size=x.shape[1])
    rate = float(recipe.dropout)
    hidden_layer, output_layer = model.get_layer("hidden"), model.get_layer("probabilities")
    if recipe.weight_decay > 0:
        optimizer = tf.keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=recipe.weight_decay)
    else:
        optimizer = tf.keras.optimizers.Adam(learning_rate=learning_rate)
    optimizer.build(model.trainable_variables)
    weights = np.ones(num_outputs, np.float32)
    if recipe.class_weight == "balanced":
        table = balanced_class_weights(y, num_outputs)
        weights = np.array([table[i] for i in range(num_outputs)], np.float32)
    smooth = float(recipe.label_smoothing)
    targets = (np.eye(num_outputs, dtype=np.float32) * (1.0 - smooth) + smooth / num_outputs)[y]
    sample_weight = weights[y]

    @tf.function(jit_compile=True, reduce_retracing=True)
    def step(batch_x: Any, batch_y: Any, batch_w: Any, batch_mask: Any) -> Any:
        with tf.GradientTape() as tape:
            if rate > 0:
                # Inverted dropout on the hidden layer, masks drawn by NumPy per epoch (random ops
                # under XLA cost 3x the whole step here). Only training sees it.
                probabilities = output_layer(hidden_layer(batch_x) * batch_mask)
            else:
                probabilities = model(batch_x, training=True)
            loss = tf.reduce_mean(batch_w * tf.keras.losses.categorical_crossentropy(batch_y, probabilities))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    all_x, all_targets, all_weights = tf.constant(x), tf.constant(targets), tf.constant(sample_weight)

    @tf.function(reduce_retracing=True)
    def full_batches(order: Any, masks: Any) -> None:
        # The epoch's loop runs in the graph: one Python call per epoch instead of one per step
        # (same steps in the same order, so the same weights; ~1.5x faster).
        for start in tf.range(0, tf.shape(order)[0], batch_size):
            batch = order[start : start + batch_size]
            step(tf.gather(all_x, batch), tf.gather(all_targets, batch), tf.gather(all_weights, batch), masks[start : start + batch_size])

    rng = np.random.default_rng(seed)
    dropout_rng = np.random.default_rng([seed, 1])  # its own stream: the batch order is the same with or without dropout
    whole = len(x) // batch_size * batch_size
    masks = np.ones((len(x), 1), np.float32)  # unused without dropout
    for _ in range(recipe.epochs):
        order = rng.permutation(len(x))
        if rate > 0:
            masks = (dropout_rng.random((len(x), hidden_layer.units), dtype=np.float32) >= rate).astype(np.float32) / np.float32(1.0 - rate)
        if whole:
            full_batches(tf.constant(order[:whole]), tf.constant(masks[:whole]))
        if whole < len(order):
            rest = order[whole:]
            step(x[rest], targets[rest], sample_weight[rest], masks[whole:])
    return model


# --------------------------------------------------------------------------- detector settings and calibration


DEFAULT_DETECTOR = DetectorConfig(min_patches=1, of_patches=1, hold_seconds=1.0)
"""Detector settings the calibration starts from (thresholds are then chosen per class).

1-of-1: an event starts on the first patch over its class threshold. Out of fold, at the same
false-event budget, it gets more targets within 1.5 s than 2-of-3 (196 vs 179 of 256 validation
targets): a second patch costs 0.48 s of latency, and the calibrated threshold, not the k-of-n
rule, is what keeps look-alikes dark. Hysteresis (release at half the threshold) and the 1 s
hold still keep one sound one event."""


@dataclass(frozen=True)
class ScoredStream:
    """A stream with per-patch probabilities from some head."""

    spec: StreamSpec
    probabilities: FloatArray
    patches: StreamPatches
    exclude_categories: tuple[str, ...] = ()


@dataclass(frozen=True)
class Calibration:
    """Per-class thresholds chosen on validation streams, with the sweep that chose them."""

    thresholds: dict[str, float]
    target_false_per_hour: float
    validation_hours: float
    validation_targets: int
    sweep: dict[str, list[dict[str, Any]]]
    """Per label: [{threshold, missed, false_events}] over CALIBRATION_GRID."""
    expected: dict[str, Any]
    """Validation figures at the chosen thresholds."""
    warnings: tuple[str, ...] = ()
    """Per class whose threshold calibration could not choose (calibration_warnings): what went
    wrong and the fix. Printed by fit-openset and calibrate, kept in head.json and thresholds.json."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _per_label_curves(
    streams: Sequence[ScoredStream], *, labels: Sequence[str], config: DetectorConfig, grid: Sequence[float],
    options: StreamOptions, params: Params,
) -> tuple[dict[str, list[tuple[float, int, int, int]]], float]:  # fmt: skip
    """label -> [(threshold, missed, targets, false events)] summed over streams; and non-target hours."""
    curves: dict[str, list[tuple[float, int, int, int]]] = {}
    hours = 0.0
    points_per_stream = [
        sweep_thresholds(
            [(s.spec, s.probabilities, s.patches)], labels=labels, config=config, thresholds=grid,
            options=options, params=params, exclude_categories=s.exclude_categories,
        )
        for s in streams
    ]  # fmt: skip
    for stream_points in points_per_stream:
        hours += stream_points[0].nontarget_seconds / 3600.0
    for label in stream_points[0].missed if points_per_stream else []:
        rows = []
        for index, threshold in enumerate(grid):
            missed = sum(p[index].missed[label] for p in points_per_stream)
            targets = sum(p[index].targets[label] for p in points_per_stream)
            false = sum(p[index].false_events[label] for p in points_per_stream)
            rows.append((float(threshold), missed, targets, false))
        curves[label] = rows
    return curves, hours


def choose_thresholds(
    curves: Mapping[str, Sequence[tuple[float, int, int, int]]], *, hours: float, target_false_per_hour: float,
    position: float = 1.0,
) -> dict[str, float]:
    """Per-class thresholds: fewest validation misses with total false events within budget.

    The budget (target rate x validation hours, at least the events a zero-false choice
    allows) is shared between classes; among thresholds of equal misses the higher one is
    kept (same recall on validation, fewer false events to expect). Solved exactly by dynamic
    programming over classes. Then each threshold moves to `position` (in logit space) within
    its plateau, the run of grid thresholds around it with the same misses and false events:
    1 keeps the highest, 0.5 takes the middle, 0 the lowest (see plateau_threshold).
    """
    budget = int(math.floor(target_false_per_hour * hours + 1e-9))
    # exact[f] = (total missed, -sum of thresholds, choices) using exactly f false events in all
    exact: dict[int, tuple[int, float, dict[str, float]]] = {0: (0, 0.0, {})}
    for label, rows in curves.items():
        nxt: dict[int, tuple[int, float, dict[str, float]]] = {}
        for used, (missed_so_far, negative_sum, choices) in exact.items():
            for threshold, missed, _, false in rows:
                value = (missed_so_far + missed, negative_sum - threshold, {**choices, label: threshold})
                total = used + false
                if total not in nxt or (value[0], value[1]) < (nxt[total][0], nxt[total][1]):
                    nxt[total] = value
        exact = nxt
    within = [f for f in exact if f <= budget]
    # When even the highest thresholds overshoot the budget, the fewest false events win.
    best = min((exact[f] for f in within), key=lambda v: (v[0], v[1])) if within else exact[min(exact)]
    return {label: plateau_threshold(curves[label], threshold, position) for label, threshold in best[2].items()}


def plateau_threshold(rows: Sequence[tuple[float, int, int, int]], threshold: float, position: float) -> float:
    """The threshold at `position` (0 lowest .. 1 highest, in logit space) of the run of `rows`
    (threshold, missed, targets, false events; increasing thresholds) around `threshold` whose
    misses and false events equal its own: validation cannot tell these apart, and one away
    from the run's top leaves a margin for targets a little quieter or noisier than any validated."""
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"the threshold position within its plateau must be in [0, 1], got {position}")
    index = next(i for i, row in enumerate(rows) if row[0] == threshold)
    figures = (rows[index][1], rows[index][3])
    low = high = index
    while low > 0 and (rows[low - 1][1], rows[low - 1][3]) == figures:
        low -= 1
    while high < len(rows) - 1 and (rows[high + 1][1], rows[high + 1][3]) == figures:
        high += 1
    if position == 1.0 or low == high:
        return threshold
    logit_low, logit_high = logit(rows[low][0]), logit(rows[high][0])
    return round(1.0 / (1.0 + math.exp(-(logit_low + position * (logit_high - logit_low)))), 7)


HINDSIGHT_GRID = tuple(round(1.0 / (1.0 + math.exp(-z)), 9) for z in np.arange(-8.0, 16.01, 0.05))
"""Onset thresholds `hindsight` tries: logit steps of 0.05, 0.00034 .. 0.9999999 (481 thresholds): low
enough that "any number of false events" is the ceiling it claims to be (noisy targets can need 0.003)."""
HINDSIGHT_BUDGETS = (0, 1, 2)
"""False-event budgets (events in the whole stream) `hindsight` reports."""
HINDSIGHT_PLOT_EVENTS = 20
"""sweep.png draws the hindsight ceiling for budgets of 0 .. this many false events."""


def hindsight(points: Sequence[SweepPoint], *, budgets: Sequence[int] = HINDSIGHT_BUDGETS) -> dict[str, Any]:
    """The most targets in time that ANY per-class thresholds (among the points' thresholds) give
    on the very stream the points were swept on, within each budget of false events in all.

    Thresholds chosen on the test stream itself are not a figure a user gets (calibration never
    sees it); they are a ceiling. What the shipped thresholds miss under it, calibration could
    still win; what the ceiling misses needs a better head, whatever the thresholds.

    Returns {"targets", "any_false": in time with each class at its best threshold whatever the
    false events, "budgets": [{"max_false_events", "detected_in_time" (None when no thresholds
    keep within the budget), "false_events", "thresholds"}]}.
    """
    if not points:
        raise ValueError("hindsight needs a threshold sweep with at least one point")
    ordered = sorted(points, key=lambda p: p.threshold)
    curves = {label: [(p.threshold, p.missed[label], p.targets[label], p.false_events[label]) for p in ordered] for label in ordered[0].missed}
    targets = sum(ordered[0].targets.values())
    rows = []
    for budget in budgets:
        chosen = choose_thresholds(curves, hours=1.0, target_false_per_hour=float(budget))
        figures = [next(r for r in curves[label] if r[0] == threshold) for label, threshold in chosen.items()]
        false = sum(r[3] for r in figures)
        rows.append({
            "max_false_events": int(budget),
            # None: even the highest thresholds give more false events than the budget
            "detected_in_time": targets - sum(r[1] for r in figures) if false <= budget else None,
            "false_events": false,
            "thresholds": {label: round(threshold, 7) for label, threshold in chosen.items()},
        })  # fmt: skip
    any_false = targets - sum(min(r[1] for r in rows_) for rows_ in curves.values())
    return {"targets": targets, "any_false": any_false, "budgets": rows}


def hindsight_text(figures: Mapping[str, Any]) -> str:
    """One line: in-time targets per false-event budget with thresholds chosen on the stream."""
    parts = [
        f"<= {b['max_false_events']} false: " + (f"{b['detected_in_time']}/{figures['targets']}" if b["detected_in_time"] is not None else "out of reach")
        for b in figures["budgets"]
    ]
    parts.append(f"any false events: {figures['any_false']}/{figures['targets']}")
    return "in time with thresholds chosen in hindsight on this stream (a ceiling): " + "; ".join(parts)


def calibrate_on_streams(
    streams: Sequence[ScoredStream],
    *,
    labels: Sequence[str],
    config: DetectorConfig = DEFAULT_DETECTOR,
    target_false_per_hour: float = 2.0,
    grid: Sequence[float] = CALIBRATION_GRID,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    params: Params = DEFAULT_PARAMS,
    position: float = 1.0,
) -> Calibration:
    """Choose per-class thresholds on scored validation streams (see choose_thresholds)."""
    curves, hours = _per_label_curves(streams, labels=labels, config=config, grid=grid, options=options, params=params)
    chosen = choose_thresholds(curves, hours=hours, target_false_per_hour=target_false_per_hour, position=position)
    expected = {}
    for label, rows in curves.items():
        # a threshold inside a plateau has the figures of the grid threshold just under it
        row = max((r for r in rows if r[0] <= chosen[label]), key=lambda r: r[0])
        expected[label] = {"missed": row[1], "targets": row[2], "false_events": row[3]}
    return Calibration(
        thresholds=chosen,
        target_false_per_hour=target_false_per_hour,
        validation_hours=round(hours, 4),
        validation_targets=sum(rows[0][2] for rows in curves.values()),
        sweep={label: [{"threshold": r[0], "missed": r[1], "false_events": r[3]} for r in rows] for label, rows in curves.items()},
        expected=expected,
    )


def calibration_warnings(task: Task, calibration: Calibration, *, train_folds: Sequence[int]) -> tuple[str, ...]:
    """One warning per target class whose calibrated threshold cannot be trusted, naming the class,
    what happened and the fix:

    - its training clips are all in one fold (e.g. own data recorded in two sessions: one went to
      the test fold), so out of fold the heads that score those clips never trained on the class;
    - its threshold misses every validation target ("missed 10 of 10"): the LED would never light.

    The model is still saved (a user may want it for a test); the caller shows these.
    """
    warnings = []
    for index, label in enumerate(task.labels):
        if index == task.background_index:
            continue
        clips = [c for c in task.select(folds=train_folds, background=False) if c.label == index]
        folds = sorted({c.fold for c in clips})
        figures = calibration.expected.get(label) or {}
        targets, missed = int(figures.get("targets", 0)), int(figures.get("missed", 0))
        problems = []
        if len(folds) == 1 and len(train_folds) > 1:
            sources = sorted({c.source for c in clips})
            problems.append(
                f"its {len(clips)} training clip(s) are all in fold {folds[0]} (source(s) {', '.join(sources[:3])}), so "
                f"out-of-fold calibration never sees it trained: the heads that score fold {folds[0]} were trained without it"
            )
        if targets and missed >= targets:
            threshold = calibration.thresholds.get(label, math.nan)
            problems.append(
                f"its calibrated threshold {threshold:g} misses all {targets} of its validation targets "
                f"(missed {missed} of {targets}), so as exported its LED would never light"
            )
        if not problems:
            continue
        if len(folds) == 1:
            fix = (f"record a third session of {label} (oido-edge record --dataset DIR --label {label}) so two training folds hold "
                   "it, then run oido-train prepare and fit-openset again")  # fmt: skip
        else:
            fix = (f"record another session of {label} (varied takes and rooms), or allow more false events "
                   "(--target-false-per-hour), then fit-openset again")  # fmt: skip
        warnings.append(f"class {label!r}: " + "; ".join(problems) + f". Fix: {fix}")
    return tuple(warnings)


def checked_calibration(task: Task, calibration: Calibration, *, train_folds: Sequence[int]) -> Calibration:
    """`calibration` with its calibration_warnings, each logged as a warning."""
    found = calibration_warnings(task, calibration, train_folds=train_folds)
    for text in found:
        logger.warning("%s", text)
    return replace(calibration, warnings=found)


# --------------------------------------------------------------------------- streams of a task


@dataclass
class StreamFactory:
    """Builds, embeds and caches the streams of one task with one YAMNet."""

    task: Task
    embedder: PatchEmbedder
    cache_dir: str | os.PathLike[str] | None = DEFAULT_STREAM_CACHE
    options: StreamOptions = DEFAULT_STREAM_OPTIONS
    params: Params = DEFAULT_PARAMS
    library: AudioLibrary = field(default_factory=AudioLibrary)
    audioset_classes: tuple[str, ...] = ()
    """YAMNet's class names (train.yamnet.find_audioset_classes); () if unknown: no veto then."""

    def fold_stream(
        self, folds: Sequence[int], *, seed: int = 0, exclude_categories: Sequence[str] = (),
        only_categories: Sequence[str] | None = None, target_folds: Sequence[int] | None = None,
        training: bool = False, validation: bool = False,
    ) -> StreamSpec:  # fmt: skip
        """Targets of `target_folds` (default `folds`) interleaved among background clips of `folds`;
        the training-only extra background is among them only in a `training` stream, and the saved
        false alarms in a `training` or `validation` stream."""
        targets = self.task.select(folds=target_folds or folds, background=False)
        nontargets = self.task.select(folds=folds, targets=False, exclude_categories=exclude_categories,
                                      only_categories=only_categories, train_only=training, false_alarms=validation)  # fmt: skip
        recipe = {
            "folds": sorted(folds), "target_folds": sorted(target_folds or folds),
            "categories": sorted({c.category for c in nontargets}),
        }  # fmt: skip
        return build_stream(
            self.task.sources(targets), self.task.sources(nontargets), seed=seed, options=self.options,
            params=self.params, library=self.library, recipe=recipe,
        )  # fmt: skip

    def mixed(self, spec: StreamSpec, *, snr_db: float, bed_folds: Sequence[int], bed_categories: Sequence[str], seed: int = 0) -> StreamSpec:
        beds = self.task.select(folds=bed_folds, targets=False, only_categories=bed_categories)
        return with_background(
            spec, self.task.sources(beds, role_of_background="bed"), snr_db=snr_db, seed=seed, options=self.options,
            params=self.params, library=self.library,
        )  # fmt: skip

    def patches(self, spec: StreamSpec) -> StreamPatches:
        return embed_stream(spec, self.embedder, cache_dir=self.cache_dir, params=self.params, library=self.library)


def score(
    stream: ScoredStream, *, labels: Sequence[str], config: DetectorConfig, options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    params: Params = DEFAULT_PARAMS, audioset_classes: Sequence[str] = (),
) -> StreamScore:  # fmt: skip
    detections = detect_events(
        stream.probabilities, stream.patches, labels=labels, config=config,
        num_samples=stream.spec.num_samples, params=params, audioset_classes=audioset_classes,
    )  # fmt: skip
    return score_stream(stream.spec, detections, labels=labels, options=options, exclude_categories=stream.exclude_categories)


def merge_scores(scores: Sequence[StreamScore]) -> StreamScore:
    """One StreamScore holding the targets and false events of several streams."""
    return StreamScore(
        labels=scores[0].labels,
        targets=tuple(t for s in scores for t in s.targets),
        false_events=tuple(f for s in scores for f in s.false_events),
        nontarget_seconds=sum(s.nontarget_seconds for s in scores),
        latency_limit_seconds=scores[0].latency_limit_seconds,
    )


# --------------------------------------------------------------------------- the whole procedure


@dataclass(frozen=True)
class ExperimentOptions:
    """What calibration and evaluation run on."""

    validation_seeds: int = 2
    """Validation streams per training fold (each another order and offsets of the same clips)."""
    target_false_per_hour: float = 2.0
    """False events per hour of non-target sound the thresholds are chosen for."""
    detector: DetectorConfig = DEFAULT_DETECTOR
    """Detector settings besides the thresholds (k-of-n, hold, release)."""
    test_seed: int = 0
    """Seed of the test streams' layout."""
    veto_classes: tuple[str, ...] = ("Speech", "Music")
    """YAMNet AudioSet classes the detector may veto (choose_veto keeps those no training target
    reaches); () for none."""
    threshold_position: float = 1.0
    """Where each threshold sits within the run of grid thresholds that give the same validation
    figures, in logit space: 1 the highest (the default), 0.5 the middle, 0 the lowest."""
    validation_snr_db: tuple[float, ...] = ()
    """Each validation stream also with its targets mixed over background clips of its fold
    (DEFAULT_BED_CATEGORIES, or every background category when the task has none of those) at
    these SNRs, so thresholds are chosen for targets in noise too."""

    def __post_init__(self) -> None:
        # each message names the oido-train flag that sets the field
        if self.validation_seeds < 1:
            raise ValueError(
                f"validation_seeds (--validation-seeds) must be at least 1, got {self.validation_seeds}: "
                "with no validation stream no threshold can be chosen"
            )
        if not (math.isfinite(self.target_false_per_hour) and self.target_false_per_hour >= 0):
            raise ValueError(f"target_false_per_hour (--target-false-per-hour) must be 0 or more, got {self.target_false_per_hour}")
        if not 0.0 <= self.threshold_position <= 1.0:
            raise ValueError(f"threshold_position (--threshold-position) must be in [0, 1], got {self.threshold_position}")
        if self.test_seed < 0:
            raise ValueError(f"test_seed must be 0 or more, got {self.test_seed}")
        if not all(math.isfinite(db) for db in self.validation_snr_db):
            raise ValueError(f"validation_snr_db (--validation-snr-db) must be finite dB values, got {self.validation_snr_db}")


@dataclass
class Validation:
    """Out-of-fold validation: scored streams, and the temperature fitted on held-out clips."""

    streams: list[ScoredStream]
    temperature: float


def oof_validation(
    factory: StreamFactory,
    recipe: OpenSetRecipe,
    *,
    train_folds: Sequence[int],
    exclude_categories: Sequence[str] = (),
    background: bool = True,
    experiment: ExperimentOptions = ExperimentOptions(),
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    progress: ProgressFn | None = None,
) -> Validation:
    """Out-of-fold validation: for each fold f, heads trained on the other folds score f's streams.

    With recipe.temperature_scaling the temperature is fitted on the held-out folds' clip
    patches first (each by the heads that did not train on it) and applied to every head.
    Background clips of `exclude_categories` are neither trained on nor scored (leave-one-class-out);
    background=False trains on the targets only (the 4-class baseline).
    """
    task = factory.task
    folds: list[tuple[int, HeadEnsemble]] = []
    for fold in train_folds:
        if progress:
            progress(f"validation: heads without fold {fold}")
        others = [f for f in train_folds if f != fold]
        clips = task.select(folds=others, exclude_categories=exclude_categories, background=background)
        folds.append((fold, train_heads(factory, clips, recipe, augment_cache=augment_cache)))
    temperature = 1.0
    if recipe.temperature_scaling:
        pairs = []
        for fold, heads in folds:
            held_out = task.select(folds=[fold], exclude_categories=exclude_categories, background=background)
            if held_out:
                x = np.concatenate([heads.features(c.embeddings) for c in held_out])
                y = np.concatenate([np.full(len(c.embeddings), c.label, np.int64) for c in held_out])
                pairs.append((heads, x, y))
        temperature = fit_temperature(pairs)
        logger.info("temperature %.3g (fitted on %d held-out patches)", temperature, sum(len(p[2]) for p in pairs))
    scored = []
    # the ESC-10 beds the test streams use when the task has them, else every background category
    beds = [c for c in DEFAULT_BED_CATEGORIES if c in task.categories] or list(task.categories)
    beds = [c for c in beds if c not in exclude_categories]
    for fold, heads in folds:
        heads.temperature = temperature
        for seed in range(experiment.validation_seeds):
            spec = factory.fold_stream([fold], seed=VALIDATION_STREAM_SEED + 1000 * fold + seed, validation=True)
            specs = [spec] + [
                factory.mixed(spec, snr_db=snr, bed_folds=[fold], bed_categories=beds, seed=VALIDATION_STREAM_SEED + 1000 * fold + seed)
                for snr in experiment.validation_snr_db
            ]  # fmt: skip
            for stream in specs:
                patches = factory.patches(stream)
                scored.append(ScoredStream(stream, heads.predict(patches.embeddings), patches, tuple(exclude_categories)))
    return Validation(scored, temperature)


VALIDATION_STREAM_SEED = 100_000
"""Seeds of validation streams start here (test streams use experiment.test_seed)."""

ProgressFn = Callable[[str], None]


@dataclass
class OpenSetModel:
    """A trained head ensemble with its calibrated detector."""

    heads: HeadEnsemble
    calibration: Calibration
    detector: DetectorConfig
    recipe: OpenSetRecipe
    validation: list[ScoredStream]


def fit_openset(
    factory: StreamFactory,
    recipe: OpenSetRecipe = DEFAULT_RECIPE,
    *,
    train_folds: Sequence[int],
    exclude_categories: Sequence[str] = (),
    experiment: ExperimentOptions = ExperimentOptions(),
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    progress: ProgressFn | None = None,
) -> OpenSetModel:
    """Calibrate thresholds out of fold, then train the final heads on every training fold."""
    task = factory.task
    validation = oof_validation(
        factory, recipe, train_folds=train_folds, exclude_categories=exclude_categories,
        experiment=experiment, augment_cache=augment_cache, progress=progress,
    )  # fmt: skip
    base = experiment.detector.with_changes(background_label=task.background_label)
    calibration = calibrate_on_streams(
        validation.streams, labels=task.labels, config=base, target_false_per_hour=experiment.target_false_per_hour,
        options=factory.options, params=factory.params, position=experiment.threshold_position,
    )  # fmt: skip
    calibration = checked_calibration(task, calibration, train_folds=train_folds)
    if progress:
        progress("final heads on all training folds")
    training = task.select(folds=train_folds, exclude_categories=exclude_categories)
    heads = train_heads(factory, training, recipe, augment_cache=augment_cache)
    heads.temperature = validation.temperature
    veto = choose_veto(training, task=task, audioset_classes=factory.audioset_classes, candidates=experiment.veto_classes, params=factory.params)
    detector = detector_with(calibration, base, task.background_label).with_changes(veto=veto)
    return OpenSetModel(heads, calibration, detector, recipe, validation.streams)


VETO_MARGIN = 0.05
"""How far above the highest training target patch a veto score sits."""
VETO_STEP = 0.05
"""Veto scores are rounded up to this step (0.75, 0.8, ...)."""
VETO_MAX = 0.95
"""No veto of a class some training target patch scores within VETO_MARGIN of this."""


def choose_veto(
    clips: Sequence[ClipData], *, task: Task, audioset_classes: Sequence[str], candidates: Sequence[str], params: Params = DEFAULT_PARAMS,
) -> dict[str, float]:  # fmt: skip
    """The detector's veto {AudioSet class: score}: for each candidate (e.g. "Music"), a score above
    every audible patch of the training target clips, so the veto never silences a sound it was
    taught; a candidate that some target reaches (a user's own "guitar" and "Music") gets none.

    Measured (README, "Open set"): on Debian's spoken words and music with the fold-5 targets, a
    Music veto of 0.75 and Speech of 0.8 keep every target and cut false events from 13 to 2.
    """
    if not candidates:
        return {}
    if not audioset_classes:
        logger.warning("YAMNet's class map was not found: no %s veto (put yamnet_class_map.csv beside the weights)", "/".join(candidates))
        return {}
    index = {name: number for number, name in enumerate(audioset_classes)}
    unknown = [name for name in candidates if name not in index]
    if unknown:
        raise ValueError(f"--veto-classes: {unknown} are not YAMNet AudioSet classes (e.g. Speech, Music, Dog)")
    targets = [c for c in clips if c.label != task.background_index]
    if not targets:
        return {}
    veto = {}
    for name in candidates:
        peaks = [float(np.max(c.yamnet_scores[params.audible(c.level_db), index[name]], initial=0.0)) for c in targets]
        loudest = int(np.argmax(peaks))
        peak = peaks[loudest]
        score = math.ceil((peak + VETO_MARGIN) / VETO_STEP - 1e-9) * VETO_STEP
        where = f"highest training target patch {peak:.3f} ({task.labels[targets[loudest].label]}, {targets[loudest].path.name})"
        if score <= VETO_MAX:
            veto[name] = round(score, 2)
            logger.info("veto %s at %.2f: %s + %.2f", name, veto[name], where, VETO_MARGIN)
        else:
            logger.info("no %s veto: %s", name, where)
    return veto


def detector_with(calibration: Calibration, base: DetectorConfig, background_label: str | None) -> DetectorConfig:
    return base.with_changes(thresholds=dict(calibration.thresholds), background_label=background_label)


def clip_accuracy(task: Task, heads: HeadEnsemble, *, folds: Sequence[int], params: Params = DEFAULT_PARAMS) -> tuple[int, int]:
    """(right, total) target clips of `folds` decided as the edge decides a clip (argmax of the mean
    over the audible patches)."""
    from edge.pipeline import decide

    targets = task.select(folds=folds, background=False)
    right = sum(decide(heads.predict(c.embeddings), params.audible(c.level_db)) == c.label for c in targets)
    return int(right), len(targets)


def score_model(factory: StreamFactory, model: OpenSetModel, spec: StreamSpec, patches: StreamPatches) -> dict[str, Any]:
    """StreamScore.summary() of `model`'s heads and detector on a stream `spec` (its `patches`)."""
    stream = ScoredStream(spec, model.heads.predict(patches.embeddings), patches)
    return score(stream, labels=factory.task.labels, config=model.detector, options=factory.options, params=factory.params,
                 audioset_classes=factory.audioset_classes).summary()  # fmt: skip


def check_categories(task: Task, categories: Sequence[str], *, flag: str = "--categories") -> None:
    """ValueError naming `flag` and the choices unless every name is a background category of the task."""
    unknown = [name for name in categories if name not in task.categories]
    if unknown:
        raise ValueError(
            f"{flag}: {', '.join(map(repr, unknown))} {'is not a' if len(unknown) == 1 else 'are not'} background "
            f"categor{'y' if len(unknown) == 1 else 'ies'} of this data set; choose from {', '.join(task.categories)}"
        )


def leave_one_class_out(
    factory: StreamFactory,
    recipe: OpenSetRecipe = DEFAULT_RECIPE,
    *,
    train_folds: Sequence[int],
    test_fold: int,
    categories: Sequence[str] | None = None,
    experiment: ExperimentOptions = ExperimentOptions(),
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """For each background category X: train (and calibrate) without X, stream X's clips of every
    fold with the test fold's targets, count false events on X and target recall.

    Returns {"splits": {X: figures, with `hindsight`: the most targets in time any thresholds find
    on X's stream}, "mean_false_per_hour", "worst_false_per_hour", "worst_category",
    "min_detected_in_time", "targets"}.
    """
    task = factory.task
    chosen = list(categories) if categories is not None else task.categories
    if len(chosen) < 2 and categories is None:
        raise ValueError("leave-one-class-out needs at least two background categories; prepare the data with --background esc10")
    check_categories(task, chosen)  # every name before the first split trains, not after it
    all_folds = sorted({c.fold for c in task.clips})
    splits: dict[str, Any] = {}
    for category in chosen:
        started = time.perf_counter()
        if progress:
            progress(f"leave out {category}")
        model = fit_openset(
            factory, recipe, train_folds=train_folds, exclude_categories=[category], experiment=experiment,
            augment_cache=augment_cache, progress=progress,
        )  # fmt: skip
        spec = factory.fold_stream(all_folds, seed=experiment.test_seed, only_categories=[category], target_folds=[test_fold])
        patches = factory.patches(spec)
        summary = score_model(factory, model, spec, patches)
        fine = sweep_thresholds([(spec, model.heads.predict(patches.embeddings), patches)], labels=task.labels, config=model.detector,
                                thresholds=HINDSIGHT_GRID, options=factory.options, params=factory.params,
                                audioset_classes=factory.audioset_classes)  # fmt: skip
        splits[category] = {
            **summary["overall"],
            "nontarget_seconds": summary["nontarget_seconds"],
            "false_events_list": summary["false_events"],
            "hindsight": hindsight(fine),
            "thresholds": model.calibration.thresholds,
            "seconds": round(time.perf_counter() - started, 1),
        }
        logger.info("leave out %s: %d false events in %.0f s, %d/%d targets in time", category,
                    summary["overall"]["false_events"], summary["nontarget_seconds"],
                    summary["overall"]["detected_in_time"], summary["overall"]["targets"])  # fmt: skip
    rates = {c: v["false_per_hour"] for c, v in splits.items()}
    worst = max(rates, key=rates.__getitem__)
    return {
        "splits": splits,
        "mean_false_per_hour": round(float(np.mean(list(rates.values()))), 2),
        "worst_false_per_hour": rates[worst],
        "worst_category": worst,
        "min_detected_in_time": min(v["detected_in_time"] for v in splits.values()),
        "targets": next(iter(splits.values()))["targets"],
        "recipe": recipe.to_dict(),
        "target_false_per_hour": experiment.target_false_per_hour,
    }


SEPARABILITY_SCORES = ("log-odds", "logit", "logit minus other")
"""Patch scores compared by `separability`: the log-odds of the class against every other output
(ranks patches as the softmax probability does at any temperature, without saturating at 1.0),
the class's own logit (max-logit, an out-of-distribution score), and its logit minus the
background's."""


def rank_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Chance that a random positive scores above a random negative (ties count half): 1 separates
    them perfectly, 0.5 not at all."""
    pos, neg = np.asarray(positives, np.float64), np.asarray(negatives, np.float64)
    if len(pos) == 0 or len(neg) == 0:
        raise ValueError("rank_auc needs at least one positive and one negative score")
    above = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(above / (len(pos) * len(neg)))


def separability(
    factory: StreamFactory,
    recipe: OpenSetRecipe = DEFAULT_RECIPE,
    *,
    train_folds: Sequence[int],
    left_out: str,
    target: str,
    augment_cache: str | os.PathLike[str] | None = DEFAULT_AUGMENT_CACHE,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """How well any score of the head tells `target` clips from a background category it never
    trained on, out of fold: heads trained without fold f and without `left_out` score the
    `target` clips of fold f and the `left_out` clips of fold f. A clip's score is its highest
    audible patch's (an event starts on one patch). No threshold on a score whose AUC is near 0.5
    can keep the left-out sound dark and still hear the target.

    Returns {score name: {"auc", "left_out_over": {"75%", "50%"}: left-out clips at or over the
    threshold that keeps that share of target clips}, "target_clips", "left_out_clips"}.
    """
    task = factory.task
    if left_out not in task.categories:
        raise ValueError(f"{left_out!r} is not a background category of this data set; choose from {task.categories}")
    if target not in task.labels or task.labels.index(target) == task.background_index:
        raise ValueError(f"{target!r} is not a target label of this data set; choose from {task.target_labels}")
    label, other = task.labels.index(target), task.background_index
    scores: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in SEPARABILITY_SCORES}
    for fold in train_folds:
        if progress:
            progress(f"heads without fold {fold} and without {left_out}")
        clips = task.select(folds=[f for f in train_folds if f != fold], exclude_categories=[left_out])
        heads = train_heads(factory, clips, recipe, augment_cache=augment_cache)
        output = int(np.flatnonzero(heads.merge[:, label])[0])
        for clip in task.select(folds=[fold]):
            side = 0 if clip.label == label else 1 if clip.category == left_out else None
            audible = factory.params.audible(clip.level_db)
            if side is None or not audible.any():
                continue
            logits = heads.logits(clip.embeddings)[:, audible].astype(np.float64)  # [heads, p, outputs]
            own = logits[..., output]
            rest = np.logaddexp.reduce(np.delete(logits, output, axis=-1), axis=-1)
            background = np.logaddexp.reduce(logits[..., heads.merge[:, other] > 0], axis=-1)
            for name, values in zip(SEPARABILITY_SCORES, (own - rest, own, own - background)):
                scores[name][side].append(float(np.max(values.mean(axis=0))))
    result: dict[str, Any] = {}
    for name, (targets, others) in scores.items():
        result[name] = {
            "auc": round(rank_auc(targets, others), 3),
            "left_out_over": {f"{share:.0%}": int(np.sum(np.asarray(others) >= np.quantile(targets, 1.0 - share))) for share in (0.75, 0.5)},
        }
    result["target_clips"], result["left_out_clips"] = len(scores["logit"][0]), len(scores["logit"][1])
    return result


# --------------------------------------------------------------------------- models to evaluate


class _KerasHead:
    """A Keras head as the edge pipeline's PatchClassifier."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def run(self, embeddings: FloatArray) -> FloatArray:
        from train.head import predict_probabilities

        return predict_probabilities(self.model, np.asarray(embeddings, np.float32))


class TfYamnet:
    """train YAMNet (train.core.LazyYamnet / YamnetTF) as both stream-cache embedder and pipeline PatchEmbedder."""

    def __init__(self, yamnet: Any) -> None:
        self.yamnet = yamnet
        self.weights_sha256 = yamnet.weights_sha256

    @property
    def numerics(self) -> str:
        return getattr(self.yamnet, "numerics", "")

    def embed_patches(self, patches: FloatArray, *, batch_size: int = 64) -> tuple[FloatArray, FloatArray]:
        return self.yamnet.embed_patches(patches, batch_size=batch_size)

    def run(self, patch: FloatArray) -> tuple[FloatArray, FloatArray]:
        embeddings, scores = self.yamnet.embed_patches(np.asarray(patch, np.float32)[np.newaxis], batch_size=1)
        return embeddings[0], scores[0]


@dataclass
class StreamModel:
    """What evaluate-stream runs: YAMNet, head and detector settings of a model directory."""

    labels: tuple[str, ...]
    background_label: str | None
    params: Params
    detector: DetectorConfig
    embedder: Any
    """stream-cache embedder and pipeline PatchEmbedder (weights_sha256, embed_patches, run)."""
    head: Any
    """PatchClassifier: run(embeddings [n, 1024]) -> probabilities [n, L]."""
    kind: str
    """"exported" (manifest.json: the TF-Lite files the Pi runs) or "keras" (head.json + its .keras + TF YAMNet)."""
    tolerance: float
    """Largest probability difference allowed between cached patches and the streaming pipeline."""
    audioset_classes: tuple[str, ...] = ()
    """YAMNet's class names (the detector's veto names them)."""

    def predict(self, embeddings: FloatArray) -> FloatArray:
        return np.concatenate(
            [self.head.run(embeddings[i : i + 256]) for i in range(0, len(embeddings), 256)]
        ) if len(embeddings) else np.zeros((0, len(self.labels)), np.float32)  # fmt: skip

    def pipeline(self) -> StreamingPipeline:
        from edge.detect import Detector

        detector = Detector(self.detector, labels=self.labels, params=self.params, audioset_classes=self.audioset_classes)
        return StreamingPipeline(self.embedder, self.head, labels=self.labels, params=self.params, detector=detector)


def detector_from_metadata(metadata: Mapping[str, Any], *, labels: Sequence[str], background_label: str | None, where: str) -> DetectorConfig:
    """DetectorConfig from head.json's "detector" and "thresholds" (as convert copies them into the manifest)."""
    values = dict(metadata.get("detector") or {})
    values.setdefault("background_label", background_label)
    values["thresholds"] = {**dict(values.get("thresholds") or {}), **dict(metadata.get("thresholds") or {})}
    from edge.errors import ConfigError

    config = DetectorConfig.from_dict(values, source=where)
    try:
        config.check_labels(labels)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None
    return config


def load_stream_model(
    model_dir: str | os.PathLike[str],
    *,
    yamnet_source: str = "auto",
    yamnet_weights: Path | None = None,
    assets_dir: Path | None = None,
    num_threads: int = 1,
) -> StreamModel:
    """The exported model (manifest.json: YamnetTflite + HeadTflite, the Pi's files) when present,
    else head.json + its .keras with train's TensorFlow YAMNet (weights: yamnet_weights, else searched
    for with assets_dir as the assets root). Raises ValueError naming the file."""
    from edge.manifest import MANIFEST_NAME

    directory = Path(model_dir)
    if (directory / MANIFEST_NAME).is_file():
        from edge.head import HeadTflite
        from edge.manifest import load_manifest
        from edge.yamnet import YamnetTflite

        manifest = load_manifest(directory)
        yamnet = YamnetTflite.from_manifest(manifest, num_threads=num_threads)
        return StreamModel(
            labels=tuple(manifest.labels),
            background_label=manifest.background_label,
            params=manifest.params,
            detector=manifest.detector_config(),
            embedder=TfliteEmbedder(yamnet, weights_sha256=manifest.yamnet.sha256),
            head=HeadTflite.from_manifest(manifest, num_threads=num_threads),
            kind="exported",
            tolerance=1e-6,
            audioset_classes=manifest.audioset_classes,
        )
    from train.core import load_embedder
    from train.head import load_head

    head = load_head(directory)
    metadata = {**head.extra}
    detector = detector_from_metadata(metadata, labels=head.labels, background_label=head.background_label, where=str(directory / "head.json"))
    embedder = load_embedder(source=yamnet_source, weights_path=yamnet_weights, assets_dir=assets_dir, params=head.params)
    if embedder.weights_sha256 != head.yamnet_weights_sha256:
        raise ValueError(
            f"{directory / 'head.json'} was trained on YAMNet weights {head.yamnet_weights_sha256[:16]}..., "
            f"but the YAMNet found has {embedder.weights_sha256[:16]}...: pass --yamnet-weights of the training run"
        )
    return StreamModel(
        labels=tuple(head.labels),
        background_label=head.background_label,
        params=head.params,
        detector=detector,
        embedder=TfYamnet(embedder),
        head=_KerasHead(head.model),
        kind="keras",
        tolerance=1e-4,  # TensorFlow sums in another order for one patch than for a batch
        audioset_classes=find_audioset_classes(getattr(embedder, "weights_path", None), assets_dir=assets_dir),
    )


# --------------------------------------------------------------------------- evaluate-stream


def evaluate_streams(
    model: StreamModel,
    data_dir: str | os.PathLike[str],
    *,
    out_dir: str | os.PathLike[str],
    seed: int = 0,
    snr_db: Sequence[float] = (10.0, 0.0),
    bed_categories: Sequence[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = DEFAULT_STREAM_CACHE,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
    check_pipeline: bool = True,
    block_samples: int = 1024,
    write_audio: bool = True,
    options: StreamOptions = DEFAULT_STREAM_OPTIONS,
    thresholds: Sequence[float] = tuple(t for t in CALIBRATION_GRID[::2]),
    target_false_per_hour: float | None = 2.0,
    everyday: Sequence[SourceClip] = (),
) -> dict[str, Any]:
    """The test fold as streams through the model's pipeline and detector: clean, and over background;
    with `everyday` (non-target clips of everyday sound, e.g. speech and music), one more stream
    "others" of the test targets interleaved among them.

    `bed_categories`: background categories of the test fold mixed under the targets; each must
    be one (ValueError naming --bed-categories and the choices). None: those of
    DEFAULT_BED_CATEGORIES the test fold has (with none of them, no SNR streams and a warning).

    Writes into out_dir: <name>.spec.json (replayable; <name>.wav with write_audio),
    <name>.patches.npz (per-patch start sample, probabilities, level), results.json (figures,
    every event, and each stream's `hindsight` ceiling), sweep.png (clean stream). Returns the results.
    """
    from train.datasets import load_dataset

    dataset = load_dataset(data_dir)
    if tuple(dataset.labels) != model.labels:
        raise ValueError(
            f"{Path(data_dir) / 'classes.json'} has labels {list(dataset.labels)} but the model has {list(model.labels)}: "
            "evaluate with the data the model was trained on (--data-dir)"
        )
    library = AudioLibrary(params=model.params)
    categories = esc50_categories(esc50_dir, assets_dir=assets_dir) if dataset.background_label else {}
    test = [e for e in dataset.test]
    targets = [
        SourceClip(dataset.audio_path(e), "target", e.class_name, e.class_name, e.fold)
        for e in test if e.class_name != dataset.background_label
    ]  # fmt: skip
    others = [
        SourceClip(dataset.audio_path(e), "nontarget", None,
                   clip_category(e.file_name, e.class_name, background_label=dataset.background_label, categories=categories), e.fold)
        for e in test if e.class_name == dataset.background_label
    ]  # fmt: skip
    if not targets:
        raise ValueError(f"{Path(data_dir) / 'testData.json'} holds no target clips to detect")
    if bed_categories is None:
        bed_categories = DEFAULT_BED_CATEGORIES
    else:
        _check_bed_names(bed_categories, sorted({o.category for o in others}), data_dir=data_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = build_stream(targets, others, seed=seed, options=options, params=model.params, library=library,
                         recipe={"folds": [dataset.test_fold], "data_dir": str(data_dir)})  # fmt: skip
    specs = {"clean": clean}
    beds = [replace(o, role="bed") for o in others if o.category in bed_categories]
    for snr in snr_db:
        if not beds:
            logger.warning("no test clips of %s to mix under the targets; skipping the SNR streams", list(bed_categories))
            break
        specs[f"snr{snr:g}db"] = with_background(clean, beds, snr_db=snr, seed=seed, options=options, params=model.params, library=library)
    if everyday:
        specs["others"] = build_stream(targets, list(everyday), seed=seed, options=options, params=model.params, library=library,
                                       recipe={"folds": [dataset.test_fold], "others": sorted({o.category for o in everyday})})  # fmt: skip
    results: dict[str, Any] = {
        "model": model.kind, "labels": list(model.labels), "detector": model.detector.to_dict(),
        "options": asdict(options), "streams": {},
    }  # fmt: skip
    for name, spec in specs.items():
        spec.save(out / f"{name}.spec.json")
        if write_audio:
            from edge.audio import write_wav

            write_wav(out / f"{name}.wav", render_stream(spec, library=library, params=model.params), rate_hz=spec.sample_rate_hz)
        patches = embed_stream(spec, model.embedder, cache_dir=cache_dir, params=model.params, library=library)
        probabilities = model.predict(patches.embeddings)
        detections = detect_events(
            probabilities, patches, labels=model.labels, config=model.detector,
            num_samples=spec.num_samples, params=model.params, audioset_classes=model.audioset_classes,
        )  # fmt: skip
        if check_pipeline and name == "clean":
            run = run_pipeline(model.pipeline(), render_stream(spec, library=library, params=model.params), block_samples=block_samples)
            check_against_pipeline((probabilities, patches.start_samples, detections), run, atol=model.tolerance)
            results["pipeline_check"] = (
                f"cached patches == StreamingPipeline fed in blocks of {block_samples} samples "
                f"({len(run.start_samples)} patches, {len(run.detections)} events)"
            )
        scored = score_stream(spec, detections, labels=model.labels, options=options)
        np.savez_compressed(
            out / f"{name}.patches.npz", start_samples=patches.start_samples, probabilities=probabilities,
            labels=np.array(model.labels), rms_dbfs=patches.rms_dbfs,
        )  # fmt: skip
        entry = {"seconds": round(spec.seconds, 1), **scored.summary(), "events": [asdict(d) for d in detections]}
        fine = sweep_thresholds([(spec, probabilities, patches)], labels=model.labels, config=model.detector, thresholds=HINDSIGHT_GRID,
                                options=options, params=model.params, audioset_classes=model.audioset_classes)  # fmt: skip
        entry["hindsight"] = hindsight(fine)
        if name == "clean":
            points = sweep_thresholds([(spec, probabilities, patches)], labels=model.labels, config=model.detector,
                                      thresholds=thresholds, options=options, params=model.params,
                                      audioset_classes=model.audioset_classes)  # fmt: skip
            entry["sweep"] = [p.to_dict() for p in points]
            hours = scored.nontarget_seconds / 3600.0
            ceiling = [
                (row["false_events"] / hours, entry["hindsight"]["targets"] - row["detected_in_time"])
                for row in hindsight(fine, budgets=range(HINDSIGHT_PLOT_EVENTS + 1))["budgets"] if row["detected_in_time"] is not None
            ] if hours > 0 else []  # fmt: skip
            overall = entry["overall"]
            plot_sweep(points, out / "sweep.png", chosen=dict(model.detector.thresholds), target_false_per_hour=target_false_per_hour,
                       ceiling=ceiling, shipped=(overall["false_per_hour"], overall["targets"] - overall["detected_in_time"]),
                       title=f"Test fold stream ({spec.seconds / 60:.0f} min, {len(spec.targets)} targets): one threshold for all classes")  # fmt: skip
        results["streams"][name] = entry
    write_json(out / "results.json", results)
    return results


def _check_bed_names(names: Sequence[str], available: Sequence[str], *, data_dir: str | os.PathLike[str]) -> None:
    unknown = [name for name in names if name not in available]
    if unknown:
        where = Path(data_dir) / "testData.json"
        choices = ", ".join(available) if available else "none: the test fold holds no background clips"
        raise ValueError(
            f"--bed-categories: {', '.join(map(repr, unknown))} {'is not a' if len(unknown) == 1 else 'are not'} background "
            f"categor{'y' if len(unknown) == 1 else 'ies'} of the test fold ({where}); choose from {choices}"
        )


def check_bed_categories(
    data_dir: str | os.PathLike[str],
    names: Sequence[str],
    *,
    esc50_dir: str | os.PathLike[str] | None = None,
    assets_dir: str | os.PathLike[str] | None = None,
) -> None:
    """ValueError naming --bed-categories and the choices unless every name is a background
    category of `data_dir`'s test fold (what evaluate_streams can mix under the targets). Reads
    the fold lists only, so a typo is found before any model loads or stream is built."""
    from train.datasets import load_dataset

    dataset = load_dataset(data_dir, check_audio=False)
    background = [e for e in dataset.test if dataset.background_label and e.class_name == dataset.background_label]
    categories = esc50_categories(esc50_dir, assets_dir=assets_dir) if background else {}
    available = sorted({clip_category(e.file_name, e.class_name, background_label=dataset.background_label, categories=categories)
                        for e in background})  # fmt: skip
    _check_bed_names(names, available, data_dir=data_dir)


def write_json(path: Path, document: Any) -> Path:
    from train.streams import _write_text_atomic

    return _write_text_atomic(path, json.dumps(document, indent=1, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def format_stream_results(results: Mapping[str, Any]) -> str:
    """Plain-text table of evaluate_streams' results."""
    lines = []
    for name, entry in results["streams"].items():
        overall = entry["overall"]
        lines.append(
            f"{name}: {entry['seconds']:.0f} s, {entry['nontarget_seconds']:.0f} s non-target; "
            f"{overall['detected_in_time']}/{overall['targets']} targets within {results['options']['latency_limit_seconds']:g} s "
            f"({overall['detected']} detected at all), {overall['false_events']} false events "
            f"= {overall['false_per_hour']:.1f}/h, latency median {overall['latency_median_seconds']} s max {overall['latency_max_seconds']} s"
        )
        lines.append(f"  {'class':14s} {'recall':>8s} {'in time':>8s} {'lat.med':>8s} {'lat.max':>8s} {'false':>6s} {'per h':>7s}")
        for label, figures in entry["per_class"].items():
            lines.append(
                f"  {label:14s} {figures['detected']:>4d}/{figures['targets']:<3d} {figures['detected_in_time']:>4d}/{figures['targets']:<3d} "
                f"{seconds_text(figures['latency_median_seconds']):>8s} {seconds_text(figures['latency_max_seconds']):>8s} "
                f"{figures['false_events']:>6d} {figures['false_per_hour']:>7.1f}"
            )
        if "hindsight" in entry:
            lines.append("  " + hindsight_text(entry["hindsight"]))
        if name == "others":
            during = Counter(str(event.get("during")) for event in entry["false_events"])
            lines.append("  false events during: " + (", ".join(f"{k} {v}" for k, v in sorted(during.items())) or "none"))
    if "pipeline_check" in results:
        lines.append(f"check: {results['pipeline_check']}")
    return "\n".join(lines)


def seconds_text(value: float | None) -> str:
    """Seconds with two decimals, "-" for none."""
    return "-" if value is None else f"{value:.2f}"


# --------------------------------------------------------------------------- saving the calibrated model


def detector_settings(config: DetectorConfig) -> dict[str, Any]:
    """head.json "detector": DetectorConfig fields except thresholds and background_label
    (those live in "thresholds" and "background_label", as the manifest keeps them)."""
    values = config.to_dict()
    values.pop("thresholds")
    values.pop("background_label")
    return values


def write_thresholds(
    model_dir: str | os.PathLike[str], calibration: Calibration, detector: DetectorConfig, *, head_sha256: str | None
) -> Path:
    """model_dir/thresholds.json (atomic): {"thresholds": {label: p}, "head_sha256": the head they were chosen
    for, "detector": {...}, "calibration": {...}}. `oido-convert` ignores the file for any other head."""
    document = {
        "thresholds": calibration.thresholds,
        "head_sha256": head_sha256,
        "detector": detector_settings(detector),
        "calibration": {k: v for k, v in calibration.to_dict().items() if k != "sweep"},
    }
    return write_json(Path(model_dir) / THRESHOLDS_FILE, document)


def save_openset_model(
    model: OpenSetModel,
    model_dir: str | os.PathLike[str],
    *,
    task: Task,
    yamnet_weights_sha256: str,
    params: Params = DEFAULT_PARAMS,
    evaluation: Mapping[str, Any] | None = None,
) -> Path:
    """head.json + head-<sha>.keras (train.head.save_head; with "thresholds", "detector", "openset") + thresholds.json."""
    from train.core import TRAINED_ON_KEY, trained_on_record
    from train.head import TrainConfig, TrainedHead, save_head

    recipe = model.recipe
    config = TrainConfig(
        epochs=recipe.epochs, class_weight=recipe.class_weight, validation_fraction=0.0, seed=recipe.seed,
        silent_patch_dbfs=None,
    )  # fmt: skip
    head = TrainedHead(
        model=model.heads.as_keras(),
        labels=list(task.labels),
        background_label=task.background_label,
        params=params,
        train_config=config,
        yamnet_weights_sha256=yamnet_weights_sha256,
        embedding_size=params.embedding_size,
        metrics=dict(evaluation or {}),
        extra={
            "test_fold": task.test_fold,
            TRAINED_ON_KEY: trained_on_record([clip.source for clip in task.clips if clip.fold != task.test_fold]),
            "thresholds": dict(model.calibration.thresholds),
            "detector": detector_settings(model.detector),
            "openset": {
                "recipe": recipe.to_dict(),
                "temperature": model.heads.temperature,
                "training_outputs": list(model.heads.output_names),
                "calibration": {k: v for k, v in model.calibration.to_dict().items() if k != "sweep"},
            },
        },
    )
    from train.head import read_head_metadata

    path = save_head(head, model_dir)
    head_sha256 = read_head_metadata(model_dir).get("head_sha256")
    write_thresholds(model_dir, model.calibration, model.detector, head_sha256=head_sha256)
    return path


def update_thresholds(model_dir: str | os.PathLike[str], calibration: Calibration, detector: DetectorConfig) -> None:
    """Write new thresholds into an existing head.json (and thresholds.json), keeping everything else."""
    from train.head import read_head_metadata, write_head_metadata

    metadata = read_head_metadata(model_dir)
    metadata["thresholds"] = dict(calibration.thresholds)
    metadata["detector"] = detector_settings(detector)
    openset = dict(metadata.get("openset") or {})
    openset["calibration"] = {k: v for k, v in calibration.to_dict().items() if k != "sweep"}
    metadata["openset"] = openset
    write_head_metadata(model_dir, metadata)
    write_thresholds(model_dir, calibration, detector, head_sha256=metadata.get("head_sha256"))


def plot_calibration(calibration: Calibration, path: str | os.PathLike[str]) -> Path:
    """PNG of the validation sweep per class (false events/hour vs missed), chosen thresholds starred."""
    labels = list(calibration.sweep)
    seconds = calibration.validation_hours * 3600.0
    points = []
    for index in range(len(next(iter(calibration.sweep.values()))) if labels else 0):
        rows = {label: calibration.sweep[label][index] for label in labels}
        threshold = rows[labels[0]]["threshold"]
        points.append(
            SweepPoint(
                threshold=threshold,
                missed={l: r["missed"] for l, r in rows.items()},
                targets={l: calibration.expected[l]["targets"] for l in labels},
                false_events={l: r["false_events"] for l, r in rows.items()},
                nontarget_seconds=seconds,
            )
        )
    return plot_sweep(
        points, path, chosen=calibration.thresholds, target_false_per_hour=calibration.target_false_per_hour,
        title=f"Validation streams ({calibration.validation_hours:.2f} h non-target, out of fold): thresholds per class",
    )  # fmt: skip
