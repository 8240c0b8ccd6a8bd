"""The classifier head: the TF.js tutorial's Dense 512 ReLU -> Dense N softmax on YAMNet embeddings.

The head is trained on single PATCH embeddings (float32 [1024] each), every patch carrying its
clip's label; a clip is decided later, as on the edge, by the argmax of the mean of its patches'
probabilities (`edge.pipeline.decide`).

Validation is split BY CLIP, never by patch: the 10 patches of a 5 s clip overlap in time and are
near-duplicates, so letting some of them train and others validate would report an optimistic,
leaked validation accuracy. Clips that share a source recording (`groups`, e.g. ESC-50's
`src_file`) are kept together as well, for the same reason.

Files written to the model directory:
  head-<sha256[:16]>.keras  the Keras model, input float32 [batch, 1024] -> probabilities float32
                            [batch, N], named by its content
  head.json                 {"labels", "background_label", "params", "embedding_size", "train_config",
                            "yamnet_weights_sha256", "metrics", "history", "head_file", "head_sha256", ...}
head.json is the one file that says which model is current, and it is replaced last and atomically:
an interrupted save leaves the previous head.json naming the previous model, still on disk.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.errors import OidoError
from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

HEAD_MODEL_FILE = "head.keras"
"""The model file of heads saved before content-named files (head.json without "head_file")."""
HEAD_MODEL_PATTERN = "head-*.keras"
HEAD_METADATA_FILE = "head.json"
HEAD_FORMAT = "oido-head/1"
ADAM_BETA_1 = 0.9
ADAM_BETA_2 = 0.999
ADAM_EPSILON = 1e-7
"""Adam's moment decays and epsilon: tf.keras.optimizers.Adam's (and TF.js') defaults."""

NO_EVIDENCE = -1
"""Patch label meaning "this patch says nothing about the class" (e.g. digital silence): it is
trained towards the uniform distribution, so it adds the same to every label's mean."""

ClassWeighting = Literal["none", "balanced"]
CLASS_WEIGHTINGS: tuple[str, ...] = ("none", "balanced")


class HeadError(OidoError):
    """A head model directory is missing, incomplete or inconsistent; the message names the file.

    A ValueError (through OidoError), so CLIs report it as a user error without a traceback."""


@dataclass(frozen=True)
class TrainConfig:
    """How the head is trained.

    Architecture, optimiser, loss, validation split, batch size and epochs default to the TF.js
    tutorial's; silent_patch_dbfs and class_weight are this project's additions (see each field).
    """

    hidden_units: int = 512
    """Units of the hidden ReLU layer (the tutorial's Dense 512)."""
    epochs: int = 20
    """Passes over the training patches."""
    batch_size: int = 16
    """Patches per gradient step."""
    learning_rate: float = 0.001
    """Adam step size (Keras' and TF.js' default)."""
    validation_fraction: float = 0.15
    """Fraction of the training CLIPS (not patches) held out for validation curves, per class."""
    silent_patch_dbfs: float | None = -60.0
    """Patches quieter than this RMS level (dB full scale) carry no evidence: they are trained
    towards the uniform distribution instead of their clip's label (ESC-50 clips are padded with
    digital silence, unevenly across classes). None: every patch keeps its clip's label. (At
    decision time, patches under edge.params' silent_patch_dbfs, which YAMNet cannot hear, do not vote.)"""
    class_weight: ClassWeighting = "balanced"
    """'balanced' weights each class's patches by n_patches / (n_classes x n_class_patches), so a
    larger background class does not dominate the loss; 'none' weights every patch 1."""
    seed: int = 0
    """Seed for the split, initial weights and shuffling: the same seed gives the same weights."""
    deterministic: bool = True
    """Ask TensorFlow for deterministic kernels (slightly slower, bit-reproducible on one machine)."""

    def __post_init__(self) -> None:
        positive = {"hidden_units": self.hidden_units, "epochs": self.epochs, "batch_size": self.batch_size}
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"TrainConfig.{name} must be at least 1, got {value}")
        if not self.learning_rate > 0.0:
            raise ValueError(f"TrainConfig.learning_rate must be positive, got {self.learning_rate}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"TrainConfig.validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )
        if self.silent_patch_dbfs is not None and not math.isfinite(self.silent_patch_dbfs):
            raise ValueError(f"TrainConfig.silent_patch_dbfs must be a finite level or None, got {self.silent_patch_dbfs}")
        if self.class_weight not in CLASS_WEIGHTINGS:
            raise ValueError(
                f"TrainConfig.class_weight must be one of {list(CLASS_WEIGHTINGS)}, got {self.class_weight!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown training option(s) {unknown}; known: {sorted(known)}")
        return cls(**values)


DEFAULT_TRAIN_CONFIG = TrainConfig()


def field_docs(cls: type) -> dict[str, str]:
    """The one-line docstrings under a dataclass's fields (for --help), read from its source."""
    import ast
    import inspect
    import textwrap

    body = ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for statement, following in zip(body, body[1:]):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = " ".join(following.value.value.split())
    return docs


@dataclass
class FitResult:
    """A freshly trained head and how it got there."""

    model: Any
    """tf.keras.Model: float32 [batch, embedding_size] -> probabilities float32 [batch, num_labels]."""
    history: dict[str, list[float]]
    """Per-epoch 'loss', 'accuracy' and, with a validation split, 'val_loss', 'val_accuracy'."""
    train_clips: IntArray
    """Indices (into the clips given to fit_head) of the clips trained on."""
    validation_clips: IntArray
    """Indices of the clips held out for validation."""
    class_weights: dict[int, float] | None = None
    silent_patches: int = 0
    """Training patches marked NO_EVIDENCE (quieter than TrainConfig.silent_patch_dbfs)."""

    def metrics(self) -> dict[str, Any]:
        """Last-epoch figures and the split sizes, for head.json."""
        last = {name: float(values[-1]) for name, values in self.history.items() if values}
        return {
            "final_epoch": last,
            "train_clips": int(len(self.train_clips)),
            "validation_clips": int(len(self.validation_clips)),
            "silent_training_patches": int(self.silent_patches),
        }


@dataclass
class TrainedHead:
    """A head loaded from (or about to be saved to) a model directory."""

    model: Any
    """tf.keras.Model: float32 [batch, embedding_size] -> probabilities float32 [batch, num_labels]."""
    labels: list[str]
    background_label: str | None
    params: Params
    train_config: TrainConfig
    yamnet_weights_sha256: str
    embedding_size: int
    metrics: dict[str, Any] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    """Other head.json fields (task, versions, created_utc, head_sha256)."""

    def predict(self, embeddings: FloatArray, *, batch_size: int = 4096) -> FloatArray:
        """Class probabilities per patch: embeddings float32 [n, embedding_size] -> float32 [n, num_labels]."""
        return predict_probabilities(self.model, embeddings, batch_size=batch_size)


# --------------------------------------------------------------------------- model


def seed_everything(seed: int, *, deterministic: bool = True) -> None:
    """Seed Python, NumPy, TensorFlow and Keras; optionally request deterministic TF kernels."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()


def build_head(
    num_labels: int,
    *,
    embedding_size: int = DEFAULT_PARAMS.embedding_size,
    hidden_units: int = DEFAULT_TRAIN_CONFIG.hidden_units,
) -> Any:
    """The tutorial's head: Dense(hidden_units, relu) -> Dense(num_labels, softmax).

    Input float32 [batch, embedding_size]; output probabilities float32 [batch, num_labels].
    Returns an uncompiled tf.keras.Model.
    """
    import tensorflow as tf

    if num_labels < 2:
        raise ValueError(f"a head needs at least 2 labels, got {num_labels}")
    inputs = tf.keras.Input(shape=(embedding_size,), dtype="float32", name="embedding")
    hidden = tf.keras.layers.Dense(hidden_units, activation="relu", name="hidden")(inputs)
    outputs = tf.keras.layers.Dense(num_labels, activation="softmax", name="probabilities")(hidden)
    return tf.keras.Model(inputs=inputs, outputs=outputs, name="oido_head")


def predict_probabilities(model: Any, embeddings: FloatArray, *, batch_size: int = 4096) -> FloatArray:
    """Run `model` over embeddings float32 [n, d] in batches -> probabilities float32 [n, num_labels]."""
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2:
        raise ValueError(f"embeddings must be [n, d], got shape {embeddings.shape}")
    num_labels = int(model.outputs[0].shape[-1])
    if len(embeddings) == 0:
        return np.zeros((0, num_labels), np.float32)
    parts = [
        np.asarray(model(embeddings[start : start + batch_size], training=False).numpy(), dtype=np.float32)
        for start in range(0, len(embeddings), batch_size)
    ]
    return np.concatenate(parts, axis=0)


# --------------------------------------------------------------------------- data


def split_by_clip(
    labels: Sequence[int] | IntArray,
    *,
    validation_fraction: float,
    seed: int,
    groups: Sequence[str] | None = None,
) -> tuple[IntArray, IntArray]:
    """Split CLIPS (not patches) into training and validation, stratified by class.

    labels: int [n_clips], the class of each clip. groups: a recording id per clip (clips of one
    group always land on the same side); None puts every clip in a group of its own.
    For each class, whole groups move to validation (in a seeded random order) until about
    `validation_fraction` of that class's clips are there; a group that would overshoot that
    target by more than it falls short is skipped, the first one too, so a class whose groups are
    all too large (a few long sessions) holds none back. Every class keeps at least one group for
    training. Returns (train_indices, validation_indices), int64, sorted, disjoint; the validation
    indices are empty when no class can hold back a group.
    """
    labels_array = np.asarray(labels, dtype=np.int64)
    n = len(labels_array)
    if groups is None:
        group_ids = [str(index) for index in range(n)]
    else:
        if len(groups) != n:
            raise ValueError(f"got {len(groups)} groups for {n} clips; give one group id per clip")
        group_ids = [str(group) for group in groups]
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")

    members: dict[str, list[int]] = {}
    for index, group in enumerate(group_ids):
        members.setdefault(group, []).append(index)
    # A group's class is its most common clip label (ties -> lowest label).
    group_class = {g: int(np.bincount(labels_array[idx]).argmax()) for g, idx in members.items()}

    rng = np.random.default_rng(seed)
    validation: list[int] = []
    for label in sorted(set(group_class.values())):
        class_groups = sorted(g for g, c in group_class.items() if c == label)
        class_clips = sum(len(members[g]) for g in class_groups)
        target = round(validation_fraction * class_clips)
        order = rng.permutation(len(class_groups))
        taken = 0
        for position in order[: max(0, len(class_groups) - 1)]:  # keep >= 1 group to train on
            if taken >= target:
                break
            group = class_groups[position]
            # Take a group only if it brings us closer to the target than stopping here: one session
            # of 4 takes out of 8 clips is half the class, not the 15 % asked for.
            if abs(taken + len(members[group]) - target) > abs(taken - target):
                continue
            validation.extend(members[group])
            taken += len(members[group])
    validation_indices = np.array(sorted(validation), dtype=np.int64)
    train_indices = np.setdiff1d(np.arange(n, dtype=np.int64), validation_indices)
    return train_indices, validation_indices


def mark_silent_patches(
    clip_labels: Sequence[int] | IntArray,
    patch_levels_dbfs: Sequence[FloatArray],
    *,
    silent_below_dbfs: float,
    patch_labels: Sequence[IntArray] | None = None,
) -> list[IntArray]:
    """Per-clip int64 [p_i] patch labels, NO_EVIDENCE where a patch's level is under silent_below_dbfs.

    patch_levels_dbfs: float32 [p_i] per clip (train.embeddings.ClipEmbeddings.rms_dbfs); the other
    patches keep patch_labels[i] if given, else the clip's label.
    """
    marked = []
    for index, levels in enumerate(patch_levels_dbfs):
        levels = np.asarray(levels, np.float32)
        base = (
            np.asarray(patch_labels[index], np.int64).copy()
            if patch_labels is not None
            else np.full(len(levels), int(clip_labels[index]), np.int64)
        )
        if base.shape != levels.shape:
            raise ValueError(f"clip {index}: {len(levels)} patch levels for {len(base)} patches")
        base[levels < silent_below_dbfs] = NO_EVIDENCE
        marked.append(base)
    return marked


def patches_with_labels(
    clip_embeddings: Sequence[FloatArray],
    clip_labels: Sequence[int] | IntArray,
    clip_indices: IntArray,
    *,
    patch_labels: Sequence[IntArray] | None = None,
) -> tuple[FloatArray, IntArray]:
    """Stack the patches of the chosen clips: -> (embeddings float32 [P, d], labels int64 [P]).

    Each patch carries its clip's label, unless patch_labels gives int [p_i] labels per clip.
    """
    if len(clip_indices) == 0:
        width = clip_embeddings[0].shape[1] if len(clip_embeddings) else 0
        return np.zeros((0, width), np.float32), np.zeros(0, np.int64)
    stacked = np.concatenate([np.asarray(clip_embeddings[i], np.float32) for i in clip_indices], axis=0)
    if patch_labels is None:
        parts = [np.full(len(clip_embeddings[i]), int(clip_labels[i]), np.int64) for i in clip_indices]
    else:
        parts = [np.asarray(patch_labels[i], np.int64) for i in clip_indices]
        for i, part in zip(clip_indices, parts):
            if part.shape != (len(clip_embeddings[i]),):
                raise ValueError(f"clip {i}: {part.shape} patch labels for {len(clip_embeddings[i])} patches")
    return stacked, np.concatenate(parts)


def balanced_class_weights(patch_labels: IntArray, num_labels: int) -> dict[int, float]:
    """Keras class_weight {label: n / (num_present_classes x n_label)}; absent classes get 1.0.

    NO_EVIDENCE patches (label -1) are not counted."""
    labels = np.asarray(patch_labels, np.int64)
    counts = np.bincount(labels[labels >= 0], minlength=num_labels)
    present = int(np.count_nonzero(counts))
    total = int(counts.sum())
    return {
        label: (total / (present * int(count)) if count else 1.0) for label, count in enumerate(counts)
    }


# --------------------------------------------------------------------------- training


def fit_head(
    clip_embeddings: Sequence[FloatArray],
    clip_labels: Sequence[int] | IntArray,
    *,
    num_labels: int,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    groups: Sequence[str] | None = None,
    patch_labels: Sequence[IntArray] | None = None,
    patch_levels_dbfs: Sequence[FloatArray] | None = None,
) -> FitResult:
    """Train a new head on per-patch embeddings, each patch labelled with its clip's class.

    clip_embeddings: one float32 [p_i, embedding_size] array per clip; clip_labels: int [n_clips]
    in [0, num_labels); groups: optional recording id per clip, kept on one side of the split;
    patch_labels: optional int [p_i] per clip overriding the clip label patch by patch (e.g. quiet
    patches relabelled as background); the split still uses the clip labels;
    patch_levels_dbfs: optional float32 [p_i] RMS levels per clip: with config.silent_patch_dbfs,
    patches under it become NO_EVIDENCE (without levels, that rule is skipped).
    The same inputs and config (seed) give the same weights.
    """
    labels_array = np.asarray(clip_labels, dtype=np.int64)
    if len(clip_embeddings) != len(labels_array):
        raise ValueError(f"got {len(clip_embeddings)} clips but {len(labels_array)} labels")
    if len(labels_array) == 0:
        raise ValueError("no training clips: prepare a dataset first (oido-train prepare)")
    if labels_array.min() < 0 or labels_array.max() >= num_labels:
        raise ValueError(f"clip labels must be in [0, {num_labels}), got {labels_array.min()}..{labels_array.max()}")
    embedding_size = int(np.asarray(clip_embeddings[0]).shape[1])
    if config.silent_patch_dbfs is not None and patch_levels_dbfs is not None:
        patch_labels = mark_silent_patches(
            labels_array, patch_levels_dbfs, silent_below_dbfs=config.silent_patch_dbfs, patch_labels=patch_labels
        )

    seed_everything(config.seed, deterministic=config.deterministic)
    train_clips, validation_clips = split_by_clip(
        labels_array, validation_fraction=config.validation_fraction, seed=config.seed, groups=groups
    )
    train_x, train_y = patches_with_labels(clip_embeddings, labels_array, train_clips, patch_labels=patch_labels)
    validation_x, validation_y = patches_with_labels(
        clip_embeddings, labels_array, validation_clips, patch_labels=patch_labels
    )
    silent = int(np.sum(train_y == NO_EVIDENCE))
    if len(validation_clips):
        logger.info(
            "training the head on %d patches from %d clips (%d silent: no evidence), validating on %d patches from %d clips",
            len(train_x), len(train_clips), silent, len(validation_x), len(validation_clips),
        )  # fmt: skip
    else:
        why = "no validation split asked for"
        if config.validation_fraction > 0:
            why = (
                f"no validation curves: no class has a source group small enough to hold back about "
                f"{config.validation_fraction:.0%} of its training clips (record more sessions of fewer takes)"
            )
        logger.info(
            "training the head on %d patches from every one of its %d clips (%d silent: no evidence); %s",
            len(train_x), len(train_clips), silent, why,
        )  # fmt: skip

    model = build_head(num_labels, embedding_size=embedding_size, hidden_units=config.hidden_units)
    class_weights = balanced_class_weights(train_y, num_labels) if config.class_weight == "balanced" else None
    history = _train(
        model,
        train_x,
        train_y,
        validation_x,
        validation_y,
        num_labels=num_labels,
        config=config,
        class_weights=class_weights,
    )
    return FitResult(
        model=model,
        history=history,
        train_clips=train_clips,
        validation_clips=validation_clips,
        class_weights=class_weights,
        silent_patches=silent,
    )


class FusedAdam:
    """Adam as tf.keras.optimizers.Adam does it (same defaults, same update), one kernel a variable.

    Each step runs tf.raw_ops.ResourceApplyAdam on every variable: one pass over its weights and
    its two moments, where Keras' Adam runs ~10 element-wise ops, each a pass over ~2 MB for the
    hidden layer; on this head that is most of a training step. The updates agree with Keras'
    to float rounding (Keras rounds 1 - beta in float64, the kernel in float32).
    """

    def __init__(
        self,
        variables: Sequence[Any],
        *,
        learning_rate: float,
        beta_1: float = ADAM_BETA_1,
        beta_2: float = ADAM_BETA_2,
        epsilon: float = ADAM_EPSILON,
    ) -> None:
        import tensorflow as tf

        self.variables = list(variables)
        self.first_moments = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.variables]
        self.second_moments = [tf.Variable(tf.zeros(v.shape, tf.float32), trainable=False) for v in self.variables]
        self.iterations = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.learning_rate = float(learning_rate)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)

    def apply(self, gradients: Sequence[Any]) -> None:
        """One Adam step: gradients[i] float32, shaped like variables[i] (graph or eager)."""
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.constant(self.beta_1, tf.float32)
        beta_2 = tf.constant(self.beta_2, tf.float32)
        beta_1_power, beta_2_power = tf.pow(beta_1, step), tf.pow(beta_2, step)
        learning_rate = tf.constant(self.learning_rate, tf.float32)
        epsilon = tf.constant(self.epsilon, tf.float32)
        for variable, first, second, gradient in zip(self.variables, self.first_moments, self.second_moments, gradients):
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=first.handle, v=second.handle, beta1_power=beta_1_power,
                beta2_power=beta_2_power, lr=learning_rate, beta1=beta_1, beta2=beta_2, epsilon=epsilon,
                grad=gradient,
            )  # fmt: skip
        self.iterations.assign_add(1)


def _train(
    model: Any,
    train_x: FloatArray,
    train_y: IntArray,
    validation_x: FloatArray,
    validation_y: IntArray,
    *,
    num_labels: int,
    config: TrainConfig,
    class_weights: dict[int, float] | None,
) -> dict[str, list[float]]:
    """Adam on weighted categorical cross-entropy, mini-batches of shuffled patches.

    The same maths as the tutorial's model.fit (per-batch loss = mean over the batch of
    weight x cross-entropy; last partial batch kept; reshuffled every epoch), written as a lean
    graph loop: Keras' fit spends most of its time in per-step overhead on a head this small, and
    training is the pipeline's hot spot after YAMNet. A step is two small matmuls and an Adam
    update of all ~0.5 M weights; the update is FusedAdam (one pass over each variable), which
    about halves a step's cost against Keras' Adam (one thread: ~3.4 -> ~1.6 ms), with or without
    XLA (XLA copies every variable in and out of each step and takes ~2 s to compile: not used).
    """
    import tensorflow as tf

    optimizer = FusedAdam(model.trainable_variables, learning_rate=config.learning_rate)
    weights = np.ones(num_labels, np.float32)
    if class_weights is not None:
        weights = np.array([class_weights[label] for label in range(num_labels)], np.float32)
    # Targets: one-hot for labelled patches, uniform for NO_EVIDENCE ones (weight 1).
    labelled = train_y >= 0
    train_targets = np.full((len(train_y), num_labels), 1.0 / num_labels, np.float32)
    train_targets[labelled] = np.eye(num_labels, dtype=np.float32)[train_y[labelled]]
    train_weight = np.ones(len(train_y), np.float32)
    train_weight[labelled] = weights[train_y[labelled]]
    train_counted = labelled.astype(np.float32)

    batch_size = config.batch_size
    padding = -len(train_x) % batch_size

    @tf.function(reduce_retracing=True)
    def train_step(embeddings: Any, targets: Any, weight: Any, real: Any, counted: Any) -> tuple[Any, Any]:
        with tf.GradientTape() as tape:
            probabilities = model(embeddings, training=True)
            cross_entropy = tf.keras.losses.categorical_crossentropy(targets, probabilities)
            # Mean over the batch's real patches (the padding of the last batch weighs 0).
            loss = tf.reduce_sum(real * weight * cross_entropy) / tf.reduce_sum(real)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, axis=1), tf.argmax(targets, axis=1)), tf.float32)
        return loss, tf.reduce_sum(counted * correct)

    # The batch loop runs inside one graph (a Python loop costs ~4 ms a step in call overhead).
    # Every batch has batch_size rows, the last one padded with weightless rows, so the step is
    # traced for one shape only.
    @tf.function
    def train_epoch(
        embeddings: Any, targets: Any, weight: Any, counted: Any, order: Any, real: Any
    ) -> tuple[Any, Any]:
        batches = tf.shape(order)[0] // batch_size
        loss_sum = tf.constant(0.0)
        hits_sum = tf.constant(0.0)
        for batch in tf.range(batches):
            chosen = order[batch * batch_size : (batch + 1) * batch_size]
            batch_real = real[batch * batch_size : (batch + 1) * batch_size]
            loss, hits = train_step(
                tf.gather(embeddings, chosen),
                tf.gather(targets, chosen),
                tf.gather(weight, chosen),
                batch_real,
                batch_real * tf.gather(counted, chosen),
            )
            loss_sum += loss
            hits_sum += hits
        return loss_sum / tf.cast(batches, tf.float32), hits_sum

    real_rows = tf.constant(np.concatenate([np.ones(len(train_x)), np.zeros(padding)]).astype(np.float32))
    rng = np.random.default_rng(config.seed)
    tensors = [tf.constant(array) for array in (train_x, train_targets, train_weight, train_counted)]
    counted_patches = max(1, int(labelled.sum()))
    validation_labelled = validation_y >= 0
    validation_x, validation_y = validation_x[validation_labelled], validation_y[validation_labelled]
    history: dict[str, list[float]] = {"loss": [], "accuracy": []}
    if len(validation_x):
        history.update(val_loss=[], val_accuracy=[])
        validation_tensor = tf.constant(validation_x)
        validation_probabilities = tf.function(lambda embeddings: model(embeddings, training=False))
    for epoch in range(config.epochs):
        order = np.concatenate([rng.permutation(len(train_x)), np.zeros(padding, np.int64)]).astype(np.int32)
        loss, hits = train_epoch(*tensors, tf.constant(order), real_rows)
        history["loss"].append(float(loss))
        history["accuracy"].append(float(hits) / counted_patches)
        if len(validation_x):
            probabilities = validation_probabilities(validation_tensor).numpy()
            picked = probabilities[np.arange(len(validation_y)), validation_y]
            history["val_loss"].append(float(np.mean(-np.log(np.clip(picked, 1e-7, 1.0)))))
            history["val_accuracy"].append(float(np.mean(probabilities.argmax(axis=1) == validation_y)))
        logger.debug(
            "epoch %d/%d %s", epoch + 1, config.epochs,
            " ".join(f"{name}={values[-1]:.4f}" for name, values in history.items()),
        )
    return history


# --------------------------------------------------------------------------- files


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": tf.keras.__version__, "numpy": np.__version__}


def head_model_name(sha256: str) -> str:
    """The content-named model file of a head whose .keras file has this sha256 (hex)."""
    return f"head-{sha256[:16]}.keras"


def save_head(head: TrainedHead, model_dir: str | os.PathLike[str]) -> Path:
    """Write head-<sha>.keras + head.json into model_dir; returns the head.json path.

    The model goes in under a new, content-derived name first; then head.json (which names it) is
    replaced atomically; only then are older head-*.keras files removed. An interrupt at any point
    leaves a head.json whose model file is on disk and matches its recorded sha256: the previous
    head, or the new one, never a mix. Both files are staged in a temporary directory inside
    model_dir, so nothing half-written ever carries a real name.
    """
    from datetime import datetime, timezone

    directory = Path(model_dir)
    directory.mkdir(parents=True, exist_ok=True)
    num_outputs = int(head.model.outputs[0].shape[-1])
    if num_outputs != len(head.labels):
        raise ValueError(f"head has {num_outputs} outputs but {len(head.labels)} labels {head.labels}")
    staging = Path(tempfile.mkdtemp(prefix=".head-", dir=directory))
    try:
        staged_model = staging / HEAD_MODEL_FILE
        head.model.save(staged_model)
        sha256 = _sha256_file(staged_model)
        model_name = head_model_name(sha256)
        metadata = {
            "format": HEAD_FORMAT,
            "labels": list(head.labels),
            "background_label": head.background_label,
            "params": head.params.to_dict(),
            "embedding_size": int(head.embedding_size),
            "train_config": head.train_config.to_dict(),
            "yamnet_weights_sha256": head.yamnet_weights_sha256,
            "metrics": head.metrics,
            "history": head.history,
            **{k: v for k, v in head.extra.items() if k not in ("head_file", "head_sha256", "versions", "created_utc")},
            "head_file": model_name,
            "head_sha256": sha256,
            "versions": _versions(),
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        staged_json = staging / HEAD_METADATA_FILE
        staged_json.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        os.replace(staged_model, directory / model_name)
        os.replace(staged_json, directory / HEAD_METADATA_FILE)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for stale in [*directory.glob(HEAD_MODEL_PATTERN), directory / HEAD_MODEL_FILE]:
        if stale.name != model_name and stale.is_file():
            stale.unlink(missing_ok=True)
    logger.info("saved the head to %s", directory / model_name)
    return directory / HEAD_METADATA_FILE


def read_head_metadata(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """head.json as a dict, checked for the required keys; raises HeadError naming the file."""
    path = Path(model_dir) / HEAD_METADATA_FILE
    if not path.is_file():
        raise HeadError(
            f"{path} not found: train a head first (oido-train fit-openset, the head the Pi ships; or oido-train fit or all)"
        )
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise HeadError(f"{path} is not valid JSON ({error}); retrain with oido-train fit") from error
    required = ("labels", "background_label", "params", "embedding_size", "train_config", "yamnet_weights_sha256")
    missing = [key for key in required if not isinstance(metadata, dict) or key not in metadata]
    if missing:
        raise HeadError(f"{path} lacks {missing}; retrain with oido-train fit")
    return metadata


def head_model_path(model_dir: str | os.PathLike[str]) -> Path:
    """The Keras model file that model_dir/head.json names (head-<sha>.keras; head.keras for old heads).

    Raises HeadError naming head.json when it is missing or invalid. Does not check the file exists.
    """
    metadata = read_head_metadata(model_dir)
    name = str(metadata.get("head_file") or HEAD_MODEL_FILE)
    if Path(name).name != name:
        raise HeadError(f"{Path(model_dir) / HEAD_METADATA_FILE}: head_file {name!r} must be a file name in that folder")
    return Path(model_dir) / name


def write_head_metadata(model_dir: str | os.PathLike[str], metadata: dict[str, Any]) -> None:
    """Replace head.json atomically (used to add evaluation figures after training)."""
    from train.datasets import write_json_atomic

    write_json_atomic(Path(model_dir) / HEAD_METADATA_FILE, metadata)


def load_head(model_dir: str | os.PathLike[str]) -> TrainedHead:
    """Load head.json and the model it names from model_dir without retraining.

    Raises HeadError naming the file when either is missing, unreadable, or they disagree
    (sha256 recorded in head.json, output size vs labels, input size vs embedding_size).
    """
    directory = Path(model_dir)
    metadata = read_head_metadata(directory)
    json_path = directory / HEAD_METADATA_FILE
    model_path = head_model_path(directory)
    if not model_path.is_file():
        raise HeadError(f"{model_path} not found (named by {json_path}): retrain with oido-train fit")
    recorded = metadata.get("head_sha256")
    if recorded and recorded != _sha256_file(model_path):
        raise HeadError(
            f"{model_path} does not match the sha256 recorded in {json_path} (files from different "
            "training runs?): retrain with oido-train fit"
        )
    import tensorflow as tf

    try:
        model = tf.keras.models.load_model(model_path, compile=False)
    except Exception as error:  # Keras raises many types for a corrupt archive
        raise HeadError(f"{model_path} could not be loaded ({error}); retrain with oido-train fit") from error

    labels = [str(label) for label in metadata["labels"]]
    outputs = int(model.outputs[0].shape[-1])
    inputs = int(model.inputs[0].shape[-1])
    if outputs != len(labels):
        raise HeadError(
            f"{model_path} outputs {outputs} classes but {json_path} lists {len(labels)} labels: retrain"
        )
    if inputs != int(metadata["embedding_size"]):
        raise HeadError(
            f"{model_path} takes {inputs}-D input but {json_path} says embedding_size "
            f"{metadata['embedding_size']}: retrain"
        )
    background = metadata["background_label"]
    if background is not None and background not in labels:
        raise HeadError(f"{json_path}: background_label {background!r} is not one of the labels {labels}")
    try:
        params = Params.from_dict(metadata["params"])
        config = TrainConfig.from_dict(metadata["train_config"])
    except (TypeError, ValueError) as error:
        raise HeadError(f"{json_path}: bad params/train_config ({error}); retrain") from error
    known = {
        "labels", "background_label", "params", "embedding_size", "train_config",
        "yamnet_weights_sha256", "metrics", "history",
    }
    return TrainedHead(
        model=model,
        labels=labels,
        background_label=background,
        params=params,
        train_config=config,
        yamnet_weights_sha256=str(metadata["yamnet_weights_sha256"]),
        embedding_size=inputs,
        metrics=dict(metadata.get("metrics") or {}),
        history=dict(metadata.get("history") or {}),
        extra={k: v for k, v in metadata.items() if k not in known},
    )
