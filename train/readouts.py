"""Other read-outs of YAMNet: would a head reading more of YAMNet than its embedding keep a
never-heard sound dark more often? (`oido-train readouts`)

YAMNet's embedding is its last feature map (layer 14: 3 time steps x 2 frequency bands x 1024
channels, for a 0.975 s patch) averaged. Averaging throws away where and how strongly a channel
fired; a ticking clock and dripping water differ in exactly such detail. Each read-out below keeps
some of it. They are measured out of fold the way `train.openset.separability` measures scores:
heads trained without fold f and without one background category score fold f's target clips
and that category's clips, a clip scoring its highest audible patch's log-odds.

The heads here train on the clips as they are (balanced class weights, no mixed copies, no
training streams): a read-out other than the embedding would need every augmented copy embedded
again. So the figures compare read-outs with each other, not with the shipped recipe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params
from train.openset import HeadEnsemble, OpenSetRecipe, Task, TrainingSet, fit_patches, rank_auc
from train.streams import AudioLibrary

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

READOUTS: dict[str, str] = {
    "embedding": "YAMNet's embedding: layer 14 averaged (what the shipped head reads), 1024",
    "layer14-max": "the embedding + layer 14's largest value per channel, 2048",
    "layer14-time": "layer 14 averaged over frequency only, its 3 time steps kept, 3072",
    "layer12": "the embedding + layer 12 (6 x 4 x 512) averaged and its largest value per channel, 2048",
    "log-mel": "the embedding + each mel band's mean, deviation and mean frame-to-frame change, 1216",
}
"""Read-outs of a patch, by name: what each holds and its size."""

READOUT_LAYERS = ("layer12_pointwise_conv", "layer14_pointwise_conv")
"""train.yamnet.build_patch_model's layers the read-outs use (with log_mel and embeddings)."""

EMBEDDING_TOLERANCE = 1e-3
"""Largest difference allowed between the read-out 'embedding' and the cached embeddings of a clip."""

ProgressFn = Callable[[str], None]


def check_readouts(names: Sequence[str]) -> None:
    """Raise ValueError naming the choices when a name is not in READOUTS."""
    unknown = [name for name in names if name not in READOUTS]
    if unknown:
        raise ValueError(f"--readouts: unknown read-out {', '.join(unknown)}; choose from {', '.join(READOUTS)}")


def check_left_out(task: Task, left_out: Sequence[str], *, target: str | None) -> None:
    """Raise ValueError naming --left-out or --target and the choices unless every `left_out` name
    is a background category of the task and `target` (when given) a target label. Cheap: call it
    as soon as the task is known, before clip_readouts reads every clip through YAMNet."""
    unknown = [name for name in left_out if name not in task.categories]
    if unknown:
        raise ValueError(
            f"--left-out: {', '.join(map(repr, unknown))} {'is not a' if len(unknown) == 1 else 'are not'} background "
            f"categor{'y' if len(unknown) == 1 else 'ies'} of this data set; choose from {', '.join(task.categories)}"
        )
    if target is not None and target not in task.target_labels:
        raise ValueError(f"--target: {target!r} is not a target label of this data set; choose from {', '.join(task.target_labels)}")


def readout_model(patch_model: Any) -> Any:
    """A Keras model of YAMNet's patch model that also returns the feature maps the read-outs use.

    Args:
        patch_model: train.yamnet.build_patch_model's model (YamnetTF.patch_model of weights read
            from a file; TF Hub's model has no named layers).

    Returns:
        keras.Model: waveform float32 [b, patch_samples] -> (layer 12 [b, 6, 4, 512],
        layer 14 [b, 3, 2, 1024], log-mel [b, patch_frames, mel_bands], embeddings [b, 1024]).
    """
    import keras

    names = {layer.name for layer in patch_model.layers}
    missing = [name for name in (*READOUT_LAYERS, "log_mel", "embeddings") if name not in names]
    if missing:
        raise ValueError(
            f"this YAMNet has no layer {', '.join(missing)}: read-outs need YAMNet built from its weights file "
            "(--yamnet-source tflite), not TF Hub's model"
        )
    outputs = [patch_model.get_layer(name).output for name in (*READOUT_LAYERS, "log_mel", "embeddings")]
    return keras.Model(patch_model.input, outputs, name="yamnet_readouts")


def readouts_of(layer12: FloatArray, layer14: FloatArray, log_mel: FloatArray, embeddings: FloatArray) -> dict[str, FloatArray]:
    """Every read-out of READOUTS for a batch of patches (readout_model's outputs).

    Returns:
        {name: float32 [b, size]} with the sizes READOUTS gives.
    """
    b = len(embeddings)
    spread = np.abs(np.diff(log_mel, axis=1)).mean(axis=1)
    features = {
        "embedding": embeddings,
        "layer14-max": np.concatenate([embeddings, layer14.max(axis=(1, 2))], axis=1),
        "layer14-time": layer14.mean(axis=2).reshape(b, -1),
        "layer12": np.concatenate([embeddings, layer12.mean(axis=(1, 2)), layer12.max(axis=(1, 2))], axis=1),
        "log-mel": np.concatenate([embeddings, log_mel.mean(axis=1), log_mel.std(axis=1), spread], axis=1),
    }
    return {name: np.asarray(value, np.float32) for name, value in features.items()}


def clip_readouts(
    task: Task,
    patch_model: Any,
    *,
    names: Sequence[str],
    library: AudioLibrary | None = None,
    params: Params = DEFAULT_PARAMS,
    progress: ProgressFn | None = None,
) -> list[dict[str, FloatArray]]:
    """The read-outs `names` of every clip of the task, in task.clips' order: {name: float32 [p, size]}.

    Raises:
        RuntimeError: a clip's 'embedding' read-out disagrees with its cached embeddings (the
            cache was made by another YAMNet or another framing).
    """
    from edge.framing import waveform_to_patches

    check_readouts(names)
    model = readout_model(patch_model)
    library = library or AudioLibrary(params=params)
    result = []
    for number, clip in enumerate(task.clips):
        patches = waveform_to_patches(library.waveform(clip.path), params=params)
        outputs = [np.asarray(a, np.float32) for a in model.predict(patches, batch_size=64, verbose=0)]
        features = readouts_of(*outputs)
        difference = float(np.abs(features["embedding"] - clip.embeddings).max()) if len(patches) else 0.0
        if features["embedding"].shape != clip.embeddings.shape or difference > EMBEDDING_TOLERANCE:
            raise RuntimeError(
                f"{clip.path}: its read-out embedding differs from the cached one by {difference:.2g}; "
                "the embedding cache was made by another YAMNet: delete data/cache/embeddings and run again"
            )
        result.append({name: features[name] for name in names})
        if progress and (number + 1) % 100 == 0:
            progress(f"read out {number + 1}/{len(task.clips)} clips")
    return result


def readout_separability(
    task: Task,
    features: Sequence[Mapping[str, FloatArray]],
    *,
    readout: str,
    left_out: str,
    train_folds: Sequence[int],
    seed: int = 0,
    target: str | None = None,
    params: Params = DEFAULT_PARAMS,
) -> dict[str, Any]:
    """How well heads reading `readout` tell the targets from `left_out`, a category they never trained on.

    For each fold f of train_folds, a head trains on the other folds' clips but `left_out`'s
    and scores fold f's target clips and `left_out` clips; a clip scores its highest audible
    patch. A target clip's score is its own label's log-odds; a left-out clip's is the highest
    log-odds of any target label (whichever LED it would light).

    Returns:
        {"auc": targets against left_out, "target_auc": `target`'s clips against left_out on
        `target`'s log-odds (None without a target), "left_out_over_75%": left-out clips at or
        over the score that keeps 75% of the target clips, "target_clips", "left_out_clips"}.
    """
    check_left_out(task, [left_out], target=target)
    background = task.background_index
    targets = [i for i in range(len(task.labels)) if i != background]
    recipe = OpenSetRecipe(mix=None, training_streams=0, seed=seed)
    own: list[float] = []
    others: list[float] = []
    own_target: list[float] = []
    others_target: list[float] = []
    index = {id(clip): number for number, clip in enumerate(task.clips)}
    for fold in train_folds:
        clips = task.select(folds=[f for f in train_folds if f != fold], exclude_categories=[left_out])
        data = TrainingSet(
            clip_embeddings=[features[index[id(c)]][readout] for c in clips],
            clip_labels=[c.label for c in clips],
            groups=[c.source for c in clips],
            merge=np.eye(len(task.labels), dtype=np.float32),
            output_names=task.labels,
        )
        heads = HeadEnsemble(models=[fit_patches(data, recipe, seed=seed)], merge=data.merge, output_names=task.labels)
        for clip in task.select(folds=[fold]):
            is_left_out = clip.label == background and clip.category == left_out
            audible = params.audible(clip.level_db)
            if (clip.label == background and not is_left_out) or not audible.any():
                continue
            logits = heads.logits_of_features(features[index[id(clip)]][readout][audible])[0].astype(np.float64)
            rest = np.stack([np.logaddexp.reduce(np.delete(logits, i, axis=-1), axis=-1) for i in range(logits.shape[-1])], axis=-1)
            best = (logits - rest).max(axis=0)  # [labels]: each label's highest log-odds over the clip's patches
            if is_left_out:
                others.append(float(best[targets].max()))
                if target is not None:
                    others_target.append(float(best[task.labels.index(target)]))
            else:
                own.append(float(best[clip.label]))
                if target is not None and task.labels[clip.label] == target:
                    own_target.append(float(best[clip.label]))
    keep = float(np.quantile(own, 0.25))
    return {
        "auc": round(rank_auc(own, others), 3),
        "target_auc": round(rank_auc(own_target, others_target), 3) if target is not None else None,
        "left_out_over_75%": int(np.sum(np.asarray(others) >= keep)),
        "target_clips": len(own),
        "left_out_clips": len(others),
    }


def compare_readouts(
    task: Task,
    features: Sequence[Mapping[str, FloatArray]],
    *,
    readouts: Sequence[str],
    left_out: Sequence[str],
    train_folds: Sequence[int],
    seeds: Sequence[int],
    target: str | None = None,
    params: Params = DEFAULT_PARAMS,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """readout_separability for every read-out, left-out category and seed.

    Returns:
        {"readouts": {name: {category: {"seeds": [per-seed results], "mean_auc", "mean_target_auc"}}},
         "train_folds", "seeds", "target"}.
    """
    table: dict[str, Any] = {}
    for name in readouts:
        table[name] = {}
        for category in left_out:
            runs = []
            for seed in seeds:
                runs.append(readout_separability(task, features, readout=name, left_out=category, train_folds=train_folds,
                                                 seed=seed, target=target, params=params))  # fmt: skip
                if progress:
                    progress(f"{name} without {category}, seed {seed}: AUC {runs[-1]['auc']}")
            table[name][category] = {
                "seeds": runs,
                "mean_auc": round(float(np.mean([r["auc"] for r in runs])), 3),
                "mean_target_auc": None if target is None else round(float(np.mean([r["target_auc"] for r in runs])), 3),
            }
    return {"readouts": table, "train_folds": list(train_folds), "seeds": list(seeds), "target": target}
