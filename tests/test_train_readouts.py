"""train.readouts: other read-outs of YAMNet's layers, and their out-of-fold separability.

The sizes and the embedding are checked on YAMNet built from the real weights (skips without
tensorflow or ../shared/assets); separability is checked on a toy task whose answer is known.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from edge.params import DEFAULT_PARAMS
from train.openset import ClipData, Task
from train.readouts import READOUTS, readout_separability, readouts_of

from fixtures.assets import YAMNET_TFLITE as WEIGHTS  # noqa: E402


def _layers(batch: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    layer12 = rng.random((batch, 6, 4, 512), dtype=np.float32)
    layer14 = rng.random((batch, 3, 2, 1024), dtype=np.float32)
    log_mel = rng.standard_normal((batch, DEFAULT_PARAMS.patch_frames, DEFAULT_PARAMS.mel_bands)).astype(np.float32)
    return layer12, layer14, log_mel, layer14.mean(axis=(1, 2))


def test_every_readout_has_the_size_its_description_gives() -> None:
    outputs = _layers(3, np.random.default_rng(0))
    features = readouts_of(*outputs)
    assert set(features) == set(READOUTS)
    for name, description in READOUTS.items():
        size = int(re.search(r"(\d+)$", description).group(1))
        assert features[name].shape == (3, size), name
        assert features[name].dtype == np.float32


def test_readouts_keep_the_embedding_and_add_what_averaging_loses() -> None:
    layer12, layer14, log_mel, embeddings = _layers(2, np.random.default_rng(1))
    features = readouts_of(layer12, layer14, log_mel, embeddings)
    np.testing.assert_array_equal(features["embedding"], embeddings)
    np.testing.assert_array_equal(features["layer14-max"][:, 1024:], layer14.max(axis=(1, 2)))
    # the time steps, averaged, are the embedding again
    np.testing.assert_allclose(features["layer14-time"].reshape(2, 3, 1024).mean(axis=1), embeddings, rtol=1e-5)
    np.testing.assert_allclose(features["log-mel"][:, 1024 : 1024 + DEFAULT_PARAMS.mel_bands], log_mel.mean(axis=1), rtol=1e-5)


@pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"YAMNet weights not found at {WEIGHTS}")
def test_embedding_readout_is_yamnets_embedding_of_the_same_patches() -> None:
    pytest.importorskip("tensorflow")
    from edge.framing import waveform_to_patches
    from train.readouts import readout_model
    from train.yamnet import load_yamnet

    yamnet = load_yamnet(weights_path=WEIGHTS)
    t = np.arange(2 * DEFAULT_PARAMS.sample_rate_hz) / DEFAULT_PARAMS.sample_rate_hz
    waveform = (0.3 * np.sin(2 * np.pi * 880 * t) * (t % 0.25 < 0.05)).astype(np.float32)  # beeps
    patches = waveform_to_patches(waveform)
    layer12, layer14, log_mel, embeddings = [np.asarray(a) for a in readout_model(yamnet.patch_model).predict(patches, verbose=0)]
    expected, _ = yamnet.embed_patches(patches)
    np.testing.assert_allclose(embeddings, expected, atol=1e-5)
    # the embedding is layer 14 averaged: the read-outs tap the layer the embedding comes from
    np.testing.assert_allclose(layer14.mean(axis=(1, 2)), expected, atol=1e-5)
    assert layer12.shape == (len(patches), 6, 4, 512)


def test_a_model_without_yamnets_layers_is_refused_with_the_fix() -> None:
    keras = pytest.importorskip("keras")
    from train.readouts import readout_model

    inputs = keras.Input((DEFAULT_PARAMS.patch_samples,))
    model = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    with pytest.raises(ValueError, match="--yamnet-source tflite"):
        readout_model(model)


def _toy_task() -> tuple[Task, list[dict[str, np.ndarray]]]:
    """Targets 'beep' near e0; trained background hiss near e1, hum near e2; two candidates to
    leave out: 'rumble' near hiss (a head that knows hiss calls it background) and 'twin', drawn
    like the beeps (no read-out can tell it apart)."""
    rng = np.random.default_rng(0)
    centres = {"beep": 0, "hiss": 1, "hum": 2, "rumble": 1, "twin": 0}
    clips, features = [], []
    for fold in (1, 2, 3):
        for name, centre in centres.items():
            for take in range(3):
                x = 0.3 * rng.standard_normal((4, 8)).astype(np.float32)
                x[:, centre] += 3.0
                if name == "rumble":
                    x[:, 3] += 0.5
                clips.append(ClipData(
                    path=Path(f"{fold}-{name}-{take}.wav"), label=0 if name == "beep" else 1, category=name, fold=fold,
                    source=f"{fold}-{name}-{take}", embeddings=x, yamnet_scores=np.zeros((4, 1), np.float32),
                    level_db=np.full(4, -20.0, np.float32),
                ))  # fmt: skip
                features.append({"embedding": x})
    return Task(labels=("beep", "other"), background_label="other", clips=tuple(clips), test_fold=4), features


def test_a_sound_like_trained_background_separates_and_a_lookalike_does_not() -> None:
    pytest.importorskip("tensorflow")
    task, features = _toy_task()
    rumble = readout_separability(task, features, readout="embedding", left_out="rumble", train_folds=[1, 2, 3], target="beep")
    twin = readout_separability(task, features, readout="embedding", left_out="twin", train_folds=[1, 2, 3], target="beep")
    assert rumble["target_clips"] == twin["target_clips"] == 9
    assert rumble["left_out_clips"] == twin["left_out_clips"] == 9
    assert rumble["auc"] >= 0.95 and rumble["left_out_over_75%"] == 0
    assert twin["auc"] <= 0.8 and twin["left_out_over_75%"] >= 3
    assert twin["target_auc"] == twin["auc"]  # one target label: both read the same scores


def test_unknown_left_out_category_is_refused() -> None:
    task, features = _toy_task()
    with pytest.raises(ValueError, match="not a background category"):
        readout_separability(task, features, readout="embedding", left_out="thunder", train_folds=[1, 2, 3])


def test_cli_refuses_an_unknown_readout_before_loading_anything(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from train.cli import main

    assert main(["readouts", "--readouts", "embedding,layer99", "--data-dir", str(tmp_path)]) == 2
    assert "layer99" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [(["--left-out", "clock_tik"], "--left-out: 'clock_tik' is not a background category of this data set; choose from hiss, hum, rumble, twin"),
     (["--left-out", "twin,thunder"], "--left-out: 'thunder' is not a background category"),
     (["--left-out", "twin", "--target", "boop"], "--target: 'boop' is not a target label of this data set; choose from beep")],
)  # fmt: skip
def test_cli_refuses_an_unknown_left_out_or_target_before_reading_any_clip(
    flags: list[str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--left-out clock_tik` used to fail only after all 520 clips had gone through YAMNet."""
    from types import SimpleNamespace

    import train.openset_cli as openset_cli
    import train.readouts as readouts
    from train.cli import main

    task, _ = _toy_task()
    yamnet = SimpleNamespace(patch_model=None)
    monkeypatch.setattr(openset_cli, "_factory", lambda args: SimpleNamespace(
        task=task, embedder=SimpleNamespace(yamnet=yamnet), library=None, params=DEFAULT_PARAMS))  # fmt: skip

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("the clips were read through YAMNet before --left-out and --target were checked")

    monkeypatch.setattr(readouts, "clip_readouts", no_reading)
    assert main(["readouts", "-q", "--threads", "0", "--reports-dir", str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
