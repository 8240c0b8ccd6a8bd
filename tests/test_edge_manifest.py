"""Manifest validation and model loading: every disagreement is a ManifestError/ModelError naming the file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Callable, Dict

import numpy as np
import pytest

from edge.errors import ManifestError, ModelError
from edge.manifest import MANIFEST_NAME, Manifest, load_manifest, read_manifest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures.edge_models import (  # noqa: E402
    ASSET_YAMNET,
    TINY_HEAD,
    TINY_HEAD_INT8,
    TINY_LABELS,
    fake_model_dir,
    real_model_dir,
)


def edit_manifest(model_dir: Path, change: Callable[[Dict[str, Any]], None]) -> None:
    path = model_dir / MANIFEST_NAME
    values = json.loads(path.read_text())
    change(values)
    path.write_text(json.dumps(values))


def needs_runtime() -> None:
    from edge.runtime import available_backend

    if available_backend() is None:
        pytest.skip("no TF-Lite runtime installed")


def needs_yamnet_asset() -> None:
    needs_runtime()
    if not ASSET_YAMNET.is_file():
        pytest.skip(f"YAMNet asset missing: {ASSET_YAMNET}")


# --- manifest structure and consistency (no runtime needed) ---


def test_a_consistent_manifest_loads_and_round_trips(tmp_path: Path) -> None:
    written = fake_model_dir(tmp_path)
    manifest = load_manifest(tmp_path)
    assert manifest.labels == TINY_LABELS
    assert manifest.to_dict() == written.to_dict()
    assert json.loads(manifest.to_json()) == json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert manifest.yamnet_path == tmp_path / "yamnet.tflite"
    assert load_manifest(tmp_path / MANIFEST_NAME).labels == TINY_LABELS  # the file itself works too


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path: Path) -> None:
    manifest = fake_model_dir(tmp_path)
    manifest.write(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([MANIFEST_NAME, "head.tflite", "yamnet.tflite"])


def test_detector_config_merges_manifest_and_overrides(tmp_path: Path) -> None:
    manifest = fake_model_dir(tmp_path)
    config = manifest.detector_config()
    assert config.threshold_for("beep") == 0.6 and config.hold_seconds == 1.5
    assert config.background_label == "other"
    override = manifest.detector_config({"thresholds": {"speech": 0.8}, "hold_seconds": 0.5})
    assert override.threshold_for("beep") == 0.6 and override.threshold_for("speech") == 0.8
    assert override.hold_seconds == 0.5


def test_missing_manifest_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=f"{MANIFEST_NAME}: not found"):
        load_manifest(tmp_path)


def test_invalid_json_names_the_file(tmp_path: Path) -> None:
    fake_model_dir(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json: not valid JSON"):
        load_manifest(tmp_path)


def test_missing_model_file_names_it(tmp_path: Path) -> None:
    fake_model_dir(tmp_path)
    (tmp_path / "head.tflite").unlink()
    with pytest.raises(ManifestError, match="head.tflite: missing") as error:
        load_manifest(tmp_path)
    assert error.value.path == str(tmp_path / "head.tflite")


def test_sha256_mismatch_names_the_changed_file(tmp_path: Path) -> None:
    fake_model_dir(tmp_path)
    (tmp_path / "yamnet.tflite").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match="yamnet.tflite: sha256 .* does not match"):
        load_manifest(tmp_path)
    assert load_manifest(tmp_path, verify_hashes=False).labels == TINY_LABELS


def _labels_longer(values: Dict[str, Any]) -> None:
    values["labels"].append("doorbell")


def _embedding_size(values: Dict[str, Any]) -> None:
    values["yamnet"]["outputs"]["embeddings"]["shape"] = [1, 512]


def _head_input(values: Dict[str, Any]) -> None:
    values["head"]["input"]["shape"] = [-1, 2048]


def _unknown_param(values: Dict[str, Any]) -> None:
    values["params"]["hop_ms"] = 480


def _bad_param(values: Dict[str, Any]) -> None:
    values["params"]["overlap"] = 1.5


def _background(values: Dict[str, Any]) -> None:
    values["background_label"] = "silence"


def _threshold_label(values: Dict[str, Any]) -> None:
    values["thresholds"] = {"doorbell": 0.5}


def _format(values: Dict[str, Any]) -> None:
    values["format"] = "oido-model/0"


def _no_scores(values: Dict[str, Any]) -> None:
    del values["yamnet"]["outputs"]["scores"]


def _duplicate_label(values: Dict[str, Any]) -> None:
    values["labels"] = ["beep", "beep", "other"]


def _bad_detector(values: Dict[str, Any]) -> None:
    values["detector"] = {"min_patches": 5, "of_patches": 3}


def _hold_nan(values: Dict[str, Any]) -> None:
    values["detector"] = {"hold_seconds": float("nan")}  # json writes NaN and reads it back


def _hold_infinite(values: Dict[str, Any]) -> None:
    values["detector"] = {"hold_seconds": float("inf")}


def _patch_count_float(values: Dict[str, Any]) -> None:
    values["detector"] = {"min_patches": 2.0, "of_patches": 3}


def _patch_count_bool(values: Dict[str, Any]) -> None:
    values["detector"] = {"min_patches": 1, "of_patches": True}


def _log_mel_shape(values: Dict[str, Any]) -> None:
    values["yamnet"]["outputs"]["log_mel"]["shape"] = [96, 128]


def _veto_without_class_names(values: Dict[str, Any]) -> None:
    values.pop("audioset_classes", None)
    values["detector"] = {"veto": {"Music": 0.75}}


def _short_class_names(values: Dict[str, Any]) -> None:
    values["audioset_classes"] = ["Speech", "Music"]


def _veto_of_an_unknown_class(values: Dict[str, Any]) -> None:
    values["audioset_classes"] = [f"class {i}" for i in range(520)] + ["Music"]
    values["detector"] = {"veto": {"Musik": 0.75}}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_labels_longer, r"head.outputs.probabilities has shape \[-1, 3\] but the number of labels is 4"),
        (_embedding_size, r"yamnet.outputs.embeddings has shape \[1, 512\] but params.embedding_size is 1024"),
        (_head_input, r"head.input has shape \[-1, 2048\]"),
        (_unknown_param, r"unknown parameter\(s\) \['hop_ms'\]"),
        (_bad_param, "overlap must be in"),
        (_background, "background_label 'silence' is not in"),
        (_threshold_label, r"names unknown label\(s\) \['doorbell'\]"),
        (_format, "expected 'oido-model/1'"),
        (_no_scores, 'lacks "scores"'),
        (_duplicate_label, r"repeats \['beep'\]"),
        (_bad_detector, "min_patches=5"),
        (_hold_nan, "hold_seconds is nan; use a finite number of seconds"),
        (_hold_infinite, "hold_seconds is inf; use a finite number of seconds"),
        (_patch_count_float, r"min_patches is 2.0; use a whole number"),
        (_patch_count_bool, r"of_patches is True; use a whole number"),
        (_log_mel_shape, r"log_mel has shape \[96, 128\]"),
        (_veto_without_class_names, "class names are not known: re-export"),
        (_short_class_names, '"audioset_classes" has 2 names but YAMNet scores 521'),
        (_veto_of_an_unknown_class, r"'Musik' is not one of YAMNet's 521 AudioSet classes; did you mean \['Music'\]"),
    ],
)
def test_disagreements_raise_manifest_error_naming_the_manifest(
    tmp_path: Path, change: Callable[[Dict[str, Any]], None], message: str
) -> None:
    fake_model_dir(tmp_path)
    edit_manifest(tmp_path, change)
    with pytest.raises(ManifestError, match=message) as error:
        load_manifest(tmp_path)
    assert "manifest.json" in str(error.value)
    assert isinstance(error.value, ValueError)


def test_read_manifest_does_not_touch_model_files(tmp_path: Path) -> None:
    fake_model_dir(tmp_path)
    (tmp_path / "yamnet.tflite").unlink()
    assert read_manifest(tmp_path).labels == TINY_LABELS


def test_manifest_from_dict_and_to_dict_are_inverse(tmp_path: Path) -> None:
    manifest = fake_model_dir(tmp_path)
    again = Manifest.from_dict(manifest.to_dict(), model_dir=tmp_path)
    assert again.to_dict() == manifest.to_dict()


def test_a_manifest_with_yamnets_class_names_gives_a_detector_that_vetoes(tmp_path: Path) -> None:
    names = [f"class {i}" for i in range(520)] + ["Music"]

    def veto(values: Dict[str, Any]) -> None:
        values["audioset_classes"] = names
        values["detector"] = {"veto": {"Music": 0.75}}

    fake_model_dir(tmp_path)
    edit_manifest(tmp_path, veto)
    manifest = load_manifest(tmp_path)
    assert manifest.audioset_classes == tuple(names)
    assert manifest.detector_config().veto_indices(manifest.audioset_classes) == ((520, 0.75),)
    assert Manifest.from_dict(manifest.to_dict(), model_dir=tmp_path).to_dict() == manifest.to_dict()


# --- model files (need the TF-Lite runtime) ---


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "empty"), (b"not a flatbuffer at all" * 20, "not a loadable TF-Lite model"), (None, "not a loadable")],
)
def test_corrupt_tflite_raises_model_error_naming_the_file(tmp_path: Path, content: bytes | None, message: str) -> None:
    needs_runtime()
    from edge.head import HeadTflite
    from edge.runtime import load_interpreter

    path = tmp_path / "broken.tflite"
    data = TINY_HEAD.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)
    with pytest.raises(ModelError, match=f"broken.tflite.*{message}") as error:
        load_interpreter(path)
    assert error.value.path == str(path)
    with pytest.raises(ModelError, match="broken.tflite"):
        HeadTflite(path)


def test_missing_model_file_is_a_model_error(tmp_path: Path) -> None:
    from edge.runtime import load_interpreter

    with pytest.raises(ModelError, match="nothing.tflite: model file not found"):
        load_interpreter(tmp_path / "nothing.tflite")


def test_without_a_runtime_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.runtime import load_interpreter

    for module in ("ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime", "tflite_runtime.interpreter"):
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(RuntimeError, match="pip install ai-edge-litert"):
        load_interpreter(TINY_HEAD)


def test_head_reproduces_the_tensorflow_golden() -> None:
    needs_runtime()
    from edge.head import HeadTflite

    golden = np.load(TINY_HEAD.with_name("tiny_head_golden.npz"))
    head = HeadTflite(TINY_HEAD)
    assert head.num_labels == len(golden["labels"]) and not head.quantized
    np.testing.assert_allclose(head.run(golden["inputs"]), golden["probabilities"], atol=1e-5)
    np.testing.assert_allclose(head.run(golden["inputs"][0]), golden["probabilities"][:1], atol=1e-5)


def test_int8_head_is_quantized_and_dequantized_with_its_scales() -> None:
    needs_runtime()
    from edge.head import HeadTflite

    golden = np.load(TINY_HEAD.with_name("tiny_head_golden.npz"))
    real = slice(len(golden["inputs"]) - len(golden["real_rows"]), None)
    head = HeadTflite(TINY_HEAD_INT8)
    assert head.quantized
    probabilities = head.run(golden["inputs"][real])
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities, golden["probabilities"][real], atol=0.05)


def test_real_model_dir_passes_the_tensor_checks(tmp_path: Path) -> None:
    needs_yamnet_asset()
    real_model_dir(tmp_path)
    manifest = load_manifest(tmp_path, check_models=True)
    assert manifest.yamnet.outputs["embeddings"].name.endswith("global_average_pooling2d/Mean") or (
        "global_average_pooling2d/Mean" in manifest.yamnet.outputs["embeddings"].name
    )


def test_manifest_naming_the_wrong_tensor_is_refused(tmp_path: Path) -> None:
    needs_yamnet_asset()
    real_model_dir(tmp_path)
    edit_manifest(tmp_path, lambda v: v["yamnet"]["outputs"]["scores"].update(index=3))
    with pytest.raises(ManifestError, match=r"yamnet.tflite: tensor 3 is .* names yamnet.outputs.scores"):
        load_manifest(tmp_path, check_models=True)


def test_yamnet_asset_gives_embedding_and_beep_scores() -> None:
    needs_yamnet_asset()
    from edge.params import DEFAULT_PARAMS
    from edge.yamnet import YamnetTflite

    yamnet = YamnetTflite(ASSET_YAMNET)
    assert yamnet.embedding_is_internal and not yamnet.has_log_mel
    t = np.arange(DEFAULT_PARAMS.patch_samples) / DEFAULT_PARAMS.sample_rate_hz
    embedding, scores = yamnet.run((0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32))
    assert embedding.shape == (1024,) and scores.shape == (521,)
    assert embedding.dtype == scores.dtype == np.float32 and embedding.any()
    assert int(np.argmax(scores)) in (475, 495)  # "Beep, bleep" or "Sine wave"
    with pytest.raises(ModelError, match="no log_mel output"):
        yamnet.log_mel(np.zeros(DEFAULT_PARAMS.patch_samples, np.float32))
    with pytest.raises(ValueError, match="one patch of shape"):
        yamnet.run(np.zeros(100, np.float32))


def test_yamnet_with_a_log_mel_output_exposes_it() -> None:
    needs_runtime()
    path = ASSET_YAMNET.with_name("yamnet_public_int8w_pertensor.tflite")
    if not path.is_file():
        pytest.skip(f"missing {path}")
    from edge.params import DEFAULT_PARAMS
    from edge.yamnet import YamnetTflite

    yamnet = YamnetTflite(path)
    log_mel = yamnet.log_mel(np.zeros(DEFAULT_PARAMS.patch_samples, np.float32))
    assert log_mel.shape == (DEFAULT_PARAMS.patch_frames, DEFAULT_PARAMS.mel_bands)
    assert np.allclose(log_mel, np.log(DEFAULT_PARAMS.log_offset), atol=1e-3)  # silence: log(0 + offset)


def test_exported_style_yamnet_outputs_are_found_by_signature_name() -> None:
    needs_runtime()
    from edge.params import DEFAULT_PARAMS as params
    from edge.yamnet import YamnetTflite, _signature_outputs

    toy = TINY_HEAD.with_name("toy_yamnet.tflite")  # weightless stand-in, see make_head_fixture.py
    yamnet = YamnetTflite(toy)
    details = yamnet.tensor_details
    assert _signature_outputs(yamnet.interpreter) == {role: details[role]["index"] for role in ("embeddings", "scores", "log_mel")}
    assert not yamnet.embedding_is_internal and yamnet.has_log_mel
    patch = np.linspace(-0.5, 0.5, params.patch_samples, dtype=np.float32)
    outputs = yamnet.run_all(patch)
    np.testing.assert_allclose(outputs.embedding, np.full(params.embedding_size, np.abs(patch).mean()), rtol=1e-5)
    assert outputs.scores.shape == (params.yamnet_classes,)
    frames = patch[: params.patch_frames * params.stft_hop_samples].reshape(params.patch_frames, -1)
    np.testing.assert_allclose(yamnet.log_mel(patch), np.log(np.abs(frames[:, : params.mel_bands]) + params.log_offset), rtol=1e-5, atol=1e-5)
