"""The classifier head (train.head): shape, by-clip split, seeding, save/load.

The split and config tests need only NumPy; the rest skip without TensorFlow. Data is tiny and
synthetic (a few 1024-D clusters), so every test trains in about a second.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.params import DEFAULT_PARAMS
from train.head import (
    HEAD_METADATA_FILE,
    NO_EVIDENCE,
    HeadError,
    TrainConfig,
    TrainedHead,
    balanced_class_weights,
    field_docs,
    head_model_name,
    head_model_path,
    mark_silent_patches,
    patches_with_labels,
    split_by_clip,
)

EMBEDDING_SIZE = DEFAULT_PARAMS.embedding_size
FAST = TrainConfig(epochs=2, batch_size=8)


def synthetic_clips(
    *, num_labels: int = 3, clips_per_label: int = 6, patches: int = 4, seed: int = 0
) -> tuple[list[np.ndarray], np.ndarray]:
    """Clips whose patches scatter around one random centre per label (separable, 1024-D)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_labels, EMBEDDING_SIZE)).astype(np.float32)
    clips, labels = [], []
    for label in range(num_labels):
        for _ in range(clips_per_label):
            clips.append(centres[label] + 0.3 * rng.normal(size=(patches, EMBEDDING_SIZE)).astype(np.float32))
            labels.append(label)
    return clips, np.array(labels)


# --------------------------------------------------------------------------- numpy only


def test_train_config_defaults_are_the_tutorials() -> None:
    config = TrainConfig()
    assert (config.hidden_units, config.epochs, config.batch_size) == (512, 20, 16)
    assert config.validation_fraction == 0.15
    assert config.learning_rate == 0.001


def test_every_train_config_field_has_a_doc() -> None:
    docs = field_docs(TrainConfig)
    assert set(docs) == set(TrainConfig().to_dict())
    assert all(docs.values())


@pytest.mark.parametrize(
    "changes",
    [{"epochs": 0}, {"batch_size": 0}, {"validation_fraction": 1.0}, {"learning_rate": 0.0}, {"class_weight": "heavy"},
     {"silent_patch_dbfs": float("nan")}],  # fmt: skip
)
def test_bad_train_config_is_a_value_error_naming_the_field(changes: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(changes))):
        TrainConfig(**changes)


def test_train_config_round_trips_through_a_dict_and_rejects_unknown_keys() -> None:
    config = TrainConfig(epochs=3, class_weight="none")
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"epochs": 3, "dropout": 0.5})


@settings(max_examples=60, deadline=None)
@given(
    labels=st.lists(st.integers(0, 3), min_size=2, max_size=60),
    group_size=st.integers(1, 4),
    fraction=st.floats(0.0, 0.9),
    seed=st.integers(0, 1000),
)
def test_validation_split_never_puts_one_clip_or_recording_on_both_sides(
    labels: list[int], group_size: int, fraction: float, seed: int
) -> None:
    groups = [f"{label}-{index // group_size}" for index, label in enumerate(labels)]
    train, validation = split_by_clip(labels, validation_fraction=fraction, seed=seed, groups=groups)
    assert not set(train) & set(validation)
    assert sorted([*train, *validation]) == list(range(len(labels)))
    train_groups = {groups[i] for i in train}
    assert not train_groups & {groups[i] for i in validation}
    # every class keeps something to train on
    assert {labels[i] for i in train} == set(labels)


def test_validation_split_takes_about_the_fraction_of_each_class_and_is_seeded() -> None:
    labels = np.repeat(np.arange(4), 32)
    train, validation = split_by_clip(labels, validation_fraction=0.15, seed=3)
    assert np.bincount(labels[validation]).tolist() == [5, 5, 5, 5]
    again_train, again_validation = split_by_clip(labels, validation_fraction=0.15, seed=3)
    assert np.array_equal(validation, again_validation) and np.array_equal(train, again_train)
    _, other_validation = split_by_clip(labels, validation_fraction=0.15, seed=4)
    assert not np.array_equal(validation, other_validation)


def test_a_session_far_larger_than_the_fraction_is_never_held_back_for_validation() -> None:
    # Two sessions of four takes per class: one is half the class, not the 15 % asked for.
    labels = np.repeat([0, 1], 8)
    groups = [f"{label}-{index // 4}" for index, label in enumerate(labels)]
    for seed in range(10):
        train, validation = split_by_clip(labels, validation_fraction=0.15, seed=seed, groups=groups)
        assert validation.size == 0 and train.tolist() == list(range(16))
    # A class with small enough groups still contributes; the coarse one alone holds nothing back.
    labels = np.repeat([0, 1], [8, 20])
    groups = [f"0-{index // 4}" for index in range(8)] + [f"1-{index}" for index in range(20)]
    _, validation = split_by_clip(labels, validation_fraction=0.15, seed=0, groups=groups)
    assert np.bincount(labels[validation], minlength=2).tolist() == [0, 3]


def test_patches_carry_their_clips_label_unless_patch_labels_are_given() -> None:
    clips = [np.zeros((3, 4), np.float32), np.ones((2, 4), np.float32)]
    stacked, labels = patches_with_labels(clips, [1, 0], np.array([0, 1]))
    assert stacked.shape == (5, 4)
    assert labels.tolist() == [1, 1, 1, 0, 0]
    _, relabelled = patches_with_labels(clips, [1, 0], np.array([1, 0]), patch_labels=[np.array([1, 2, 1]), np.array([0, 2])])
    assert relabelled.tolist() == [0, 2, 1, 2, 1]


def test_silent_patches_are_marked_as_no_evidence() -> None:
    levels = [np.array([-20.0, -70.0, -200.0], np.float32), np.array([-61.0, -59.0], np.float32)]
    marked = mark_silent_patches([2, 1], levels, silent_below_dbfs=-60.0)
    assert [m.tolist() for m in marked] == [[2, NO_EVIDENCE, NO_EVIDENCE], [NO_EVIDENCE, 1]]
    over = mark_silent_patches([2, 1], levels, silent_below_dbfs=-60.0, patch_labels=[np.array([0, 0, 0]), np.array([1, 0])])
    assert [m.tolist() for m in over] == [[0, NO_EVIDENCE, NO_EVIDENCE], [NO_EVIDENCE, 0]]


def test_balanced_class_weights_ignore_no_evidence_patches() -> None:
    assert balanced_class_weights(np.array([0, 0, 1, 1, NO_EVIDENCE, NO_EVIDENCE]), 2) == {0: 1.0, 1: 1.0}


def test_balanced_class_weights_give_every_class_the_same_total_weight() -> None:
    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    weights = balanced_class_weights(labels, 4)
    totals = [weights[k] * np.sum(labels == k) for k in range(3)]
    assert np.allclose(totals, totals[0])
    assert weights[3] == 1.0  # absent class


# --------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def tf():  # noqa: ANN201 - the module
    return pytest.importorskip("tensorflow")


def test_head_is_dense_512_relu_then_softmax_over_the_labels(tf) -> None:
    from train.head import build_head

    model = build_head(5)
    dense = [layer for layer in model.layers if isinstance(layer, tf.keras.layers.Dense)]
    assert [layer.units for layer in dense] == [512, 5]
    assert [layer.activation.__name__ for layer in dense] == ["relu", "softmax"]
    assert model.count_params() == (1024 * 512 + 512) + (512 * 5 + 5)
    probabilities = model(np.zeros((3, 1024), np.float32)).numpy()
    assert probabilities.shape == (3, 5)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_same_seed_gives_the_same_weights_and_another_seed_does_not(tf) -> None:
    from train.head import fit_head

    clips, labels = synthetic_clips()
    first = fit_head(clips, labels, num_labels=3, config=FAST)
    second = fit_head(clips, labels, num_labels=3, config=FAST)
    for a, b in zip(first.model.get_weights(), second.model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert first.history == second.history
    third = fit_head(clips, labels, num_labels=3, config=TrainConfig(epochs=2, batch_size=8, seed=1))
    assert not np.array_equal(first.model.get_weights()[0], third.model.get_weights()[0])


def test_fused_adam_takes_the_steps_keras_adam_takes(tf) -> None:
    from train.head import FusedAdam

    rng = np.random.default_rng(0)
    shapes = [(64, 32), (32,)]
    initial = [rng.normal(size=shape).astype(np.float32) for shape in shapes]
    fused_variables = [tf.keras.Variable(value) for value in initial]
    keras_variables = [tf.keras.Variable(value) for value in initial]
    fused = FusedAdam(fused_variables, learning_rate=0.01)
    keras_adam = tf.keras.optimizers.Adam(learning_rate=0.01)
    for _ in range(5):
        gradients = [tf.constant(rng.normal(size=shape).astype(np.float32)) for shape in shapes]
        fused.apply(gradients)
        keras_adam.apply_gradients(zip(gradients, keras_variables))
    assert int(fused.iterations.numpy()) == 5
    for start, ours, theirs in zip(initial, fused_variables, keras_variables):
        assert np.abs(ours.numpy() - start).max() > 0.01  # five steps of ~lr each moved every weight
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-5, atol=1e-6)


def test_fit_learns_separable_clusters_and_reports_history(tf) -> None:
    from train.head import fit_head, predict_probabilities

    clips, labels = synthetic_clips()
    result = fit_head(clips, labels, num_labels=3, config=TrainConfig(epochs=5, batch_size=8))
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 5 for values in result.history.values())
    assert result.history["loss"][-1] < result.history["loss"][0]
    held_out, held_out_labels = synthetic_clips(clips_per_label=2, seed=0)
    decided = [predict_probabilities(result.model, clip).mean(axis=0).argmax() for clip in held_out]
    assert decided == held_out_labels.tolist()
    assert not set(result.train_clips) & set(result.validation_clips)


def test_groups_too_coarse_for_validation_train_on_every_clip_and_say_so_once(
    tf, caplog: pytest.LogCaptureFixture  # noqa: ANN001 - the module
) -> None:
    import logging

    from train.head import fit_head

    clips, labels = synthetic_clips(num_labels=2, clips_per_label=8)
    groups = [f"{label}-{index // 4}" for index, label in enumerate(labels)]
    with caplog.at_level(logging.INFO, logger="train.head"):
        result = fit_head(clips, labels, num_labels=2, config=FAST, groups=groups)
    assert result.validation_clips.size == 0 and len(result.train_clips) == 16
    assert set(result.history) == {"loss", "accuracy"}
    messages = [record.getMessage() for record in caplog.records if "validation" in record.getMessage()]
    assert len(messages) == 1 and "from every one of its 16 clips" in messages[0]
    assert "no validation curves: no class has a source group small enough to hold back about 15%" in messages[0]


def test_silence_trained_as_no_evidence_scores_every_label_alike(tf) -> None:
    from train.head import fit_head, predict_probabilities

    clips, labels = synthetic_clips()
    silence = np.full(EMBEDDING_SIZE, 0.5, np.float32)  # YAMNet gives one fixed embedding for digital silence
    # Only label-0 clips end in silence: trained on their clips' labels, silence would mean label 0.
    padded = [np.vstack([clip, *[silence] * 4]) if label == 0 else clip for clip, label in zip(clips, labels)]
    levels = [np.where(np.all(clip == silence, axis=1), -200.0, -20.0) for clip in padded]
    config = TrainConfig(epochs=12, batch_size=8)
    naive = fit_head(padded, labels, num_labels=3, config=dataclasses.replace(config, silent_patch_dbfs=None))
    marked = fit_head(padded, labels, num_labels=3, config=config, patch_levels_dbfs=levels)
    silent_training_clips = int(np.sum(labels[marked.train_clips] == 0))
    assert silent_training_clips > 0
    assert marked.silent_patches == 4 * silent_training_clips
    naive_silence = predict_probabilities(naive.model, silence[None])[0]
    marked_silence = predict_probabilities(marked.model, silence[None])[0]
    assert naive_silence.argmax() == 0 and naive_silence.max() > 0.9
    assert marked_silence.max() < 0.5  # no label claims silence any more


def _head(model, *, seed: int = 0) -> TrainedHead:  # noqa: ANN001 - a tf.keras.Model
    return TrainedHead(
        model=model,
        labels=["a", "b", "other"],
        background_label="other",
        params=DEFAULT_PARAMS,
        train_config=TrainConfig(epochs=2, batch_size=8, seed=seed),
        yamnet_weights_sha256="ab" * 32,
        embedding_size=EMBEDDING_SIZE,
        metrics={"training": {"final_epoch": {"loss": 1.0}}},
        history={"loss": [1.2, 1.0]},
        extra={"task": "test"},
    )


@pytest.fixture(scope="module")
def trained_head(tf) -> TrainedHead:  # noqa: ANN001
    from train.head import fit_head

    clips, labels = synthetic_clips()
    return _head(fit_head(clips, labels, num_labels=3, config=FAST).model)


def test_saved_head_loads_without_retraining_and_predicts_identically(trained_head: TrainedHead, tmp_path: Path) -> None:
    from train.head import load_head, save_head

    head = trained_head
    save_head(head, tmp_path)
    metadata = json.loads((tmp_path / HEAD_METADATA_FILE).read_text())
    for key in ("labels", "background_label", "params", "embedding_size", "train_config",
                "yamnet_weights_sha256", "metrics", "history"):  # fmt: skip
        assert key in metadata
    assert metadata["params"] == DEFAULT_PARAMS.to_dict()
    loaded = load_head(tmp_path)
    assert loaded.labels == ["a", "b", "other"] and loaded.background_label == "other"
    assert loaded.train_config == FAST
    assert loaded.extra["task"] == "test"
    probe = np.random.default_rng(5).normal(size=(7, EMBEDDING_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(head.predict(probe), loaded.predict(probe))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([HEAD_METADATA_FILE, metadata["head_file"]])
    assert metadata["head_file"] == head_model_name(metadata["head_sha256"])


def test_load_head_names_the_missing_file(trained_head: TrainedHead, tmp_path: Path) -> None:
    from train.head import load_head, save_head

    with pytest.raises(HeadError, match=str(tmp_path / HEAD_METADATA_FILE)):
        load_head(tmp_path)
    save_head(trained_head, tmp_path)
    model_file = head_model_path(tmp_path)
    model_file.unlink()
    with pytest.raises(HeadError, match=model_file.name):
        load_head(tmp_path)


def test_load_head_refuses_a_model_from_another_run(trained_head: TrainedHead, tmp_path: Path) -> None:
    from train.head import build_head, load_head, save_head

    save_head(trained_head, tmp_path / "one")
    save_head(_head(build_head(3), seed=1), tmp_path / "two")
    # the model of one run under the name head.json of another expects (e.g. a hand-made copy)
    os.replace(head_model_path(tmp_path / "two"), head_model_path(tmp_path / "one"))
    with pytest.raises(HeadError, match="sha256 recorded in"):
        load_head(tmp_path / "one")


def test_load_head_refuses_labels_that_disagree_with_the_model(trained_head: TrainedHead, tmp_path: Path) -> None:
    from train.head import load_head, save_head

    save_head(trained_head, tmp_path)
    metadata = json.loads((tmp_path / HEAD_METADATA_FILE).read_text())
    metadata["labels"] = ["a", "b"]
    metadata["background_label"] = None
    (tmp_path / HEAD_METADATA_FILE).write_text(json.dumps(metadata))
    with pytest.raises(HeadError, match="outputs 3 classes"):
        load_head(tmp_path)


def test_interrupted_save_leaves_the_previous_model_intact(
    trained_head: TrainedHead, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from train.head import load_head, save_head

    head = trained_head
    save_head(head, tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}

    def interrupted_save(*args, **kwargs) -> None:  # noqa: ANN002, ANN003
        raise KeyboardInterrupt

    monkeypatch.setattr(head.model, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        save_head(head, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temp dir left either
    load_head(tmp_path)
