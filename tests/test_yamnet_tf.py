"""TensorFlow YAMNet (train.yamnet) against the published weights file, on real clips.

Three references, all run through ai_edge_litert:
- the weights file's own graph in float: a copy of yamnet_public_int8w.tflite with its
  int8 weights dequantized (built here with TF's flatbuffer tools). It checks the rebuild:
  same weights, same ops, same padding.
- the weights file as published (dynamic-range int8: the interpreter quantizes activations
  on the fly). Its embeddings stray from its own float graph (cosine down to ~0.6 on real
  clips, from the last conv layers), so the TF model is held to "as close to it as its float
  graph is", not to a fixed cosine.
- YAMNet's class names for synthesized speech and for silence.

Needs tensorflow, ai-edge-litert, soundfile, soxr and ../shared/assets; skips without them.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")
soundfile = pytest.importorskip("soundfile")
soxr = pytest.importorskip("soxr")

from edge.params import DEFAULT_PARAMS  # noqa: E402
from train import yamnet as yamnet_module  # noqa: E402
from train.yamnet import AssetError, load_yamnet  # noqa: E402
from train.yamnet_weights import YAMNET_LAYERS, read_yamnet_weights  # noqa: E402

try:  # the machine is shared: keep TF to two threads (only possible before TF starts its runtime)
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(1)
except RuntimeError:
    pass

from fixtures.assets import ESC50_AUDIO as ESC50_WAVS  # noqa: E402
from fixtures.assets import ESC50_DIR, YAMNET_CLASS_MAP as CLASS_MAP, YAMNET_TFLITE as WEIGHTS  # noqa: E402

ESC10_FLACS = ESC50_DIR / "esc10-16k"

pytestmark = [
    pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"YAMNet weights not found at {WEIGHTS}"),
    pytest.mark.filterwarnings("ignore:.*experimental_preserve_all_tensors:UserWarning"),
]

P = DEFAULT_PARAMS


# --- helpers -----------------------------------------------------------------------


def _patches(waveform: np.ndarray) -> np.ndarray:
    try:
        from edge.framing import waveform_to_patches
    except ImportError:  # framing not written yet: YAMNet's padding, by hand
        count = P.patches_in(len(waveform))
        padded = np.zeros((count - 1) * P.hop_samples + P.patch_samples, np.float32)
        padded[: len(waveform)] = waveform
        return np.stack([padded[k * P.hop_samples : k * P.hop_samples + P.patch_samples] for k in range(count)])
    return waveform_to_patches(waveform, params=P)


def _read_16k(path: Path) -> np.ndarray:
    waveform, rate = soundfile.read(path, dtype="float32", always_2d=True)
    waveform = waveform.mean(axis=1)
    if rate != P.sample_rate_hz:
        waveform = soxr.resample(waveform, rate, P.sample_rate_hz)
    return np.asarray(waveform, np.float32)


def _class_names() -> list[str]:
    with open(CLASS_MAP, newline="") as stream:
        return [row["display_name"] for row in csv.DictReader(stream)]


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _run_tflite(path: Path, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings [p, 1024], scores [p, 521]) of a YAMNet .tflite that has no embedding output."""
    interpreter = litert.Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1)
    interpreter.allocate_tensors()
    (embedding_index,) = [
        detail["index"]
        for detail in interpreter.get_tensor_details()
        if detail["name"].split(";")[0].endswith("global_average_pooling2d/Mean")
    ]
    input_index = interpreter.get_input_details()[0]["index"]
    scores_index = interpreter.get_output_details()[0]["index"]
    embeddings, scores = [], []
    for patch in patches:
        interpreter.set_tensor(input_index, patch)
        interpreter.invoke()
        embeddings.append(interpreter.get_tensor(embedding_index).reshape(-1).copy())
        scores.append(interpreter.get_tensor(scores_index).reshape(-1).copy())
    return np.array(embeddings), np.array(scores)


def _dequantized_copy(source: Path, destination: Path) -> Path:
    """The TF-Lite file with every int8 constant replaced by its float32 value (per-channel scales)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(source))
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            buffer = model.buffers[tensor.buffer]
            quantization = tensor.quantization
            if tensor.type != schema.TensorType.INT8 or quantization is None or quantization.scale is None:
                continue
            if buffer.data is None or len(buffer.data) == 0:
                continue
            values = np.frombuffer(bytes(bytearray(buffer.data)), np.int8).reshape(tensor.shape).astype(np.float64)
            shape = [1] * values.ndim
            scale = np.asarray(quantization.scale, np.float64)
            if scale.size > 1:
                shape[quantization.quantizedDimension] = scale.size
            zero = np.zeros_like(scale) if quantization.zeroPoint is None else np.asarray(quantization.zeroPoint)
            floats = (values - zero.reshape(shape)) * scale.reshape(shape)
            floats = floats.astype(np.float32)
            buffer.data = np.frombuffer(floats.tobytes(), np.uint8)
            tensor.type = schema.TensorType.FLOAT32
            tensor.quantization = None
    flatbuffer_utils.write_model(model, str(destination))
    return destination


# --- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def yamnet() -> Any:
    return load_yamnet(weights_path=WEIGHTS)


@pytest.fixture(scope="module")
def clip_patches() -> np.ndarray:
    """160 patches of 16 real clips: 8 ESC-50 WAVs (44.1 kHz, resampled) and 8 ESC-10 16 kHz FLACs."""
    wavs = sorted(ESC50_WAVS.glob("*.wav"))[::20]
    flacs = sorted(ESC10_FLACS.glob("*.flac"))[::45]
    if not wavs or not flacs:
        pytest.skip(f"ESC-50 clips not found in {ESC50_WAVS} / {ESC10_FLACS}")
    return np.concatenate([_patches(_read_16k(path)) for path in wavs + flacs])


@pytest.fixture(scope="module")
def float_graph_outputs(clip_patches: np.ndarray, tmp_path_factory: pytest.TempPathFactory) -> tuple:
    path = _dequantized_copy(WEIGHTS, tmp_path_factory.mktemp("yamnet") / "yamnet_float.tflite")
    return _run_tflite(path, clip_patches)


@pytest.fixture(scope="module")
def int8_file_outputs(clip_patches: np.ndarray) -> tuple:
    return _run_tflite(WEIGHTS, clip_patches)


# --- weights -----------------------------------------------------------------------


def test_weights_file_reads_as_yamnets_3729481_float_values() -> None:
    weights = read_yamnet_weights(WEIGHTS)
    assert weights.num_values == 3_729_481  # yamnet.h5's 3,751,369 minus the folded BatchNorm values
    assert [conv.spec for conv in weights.convs] == list(YAMNET_LAYERS)
    assert weights.convs[0].kernel.shape == (3, 3, 1, 32)
    assert weights.convs[-1].kernel.shape == (1, 1, 1024, 1024)
    assert weights.dense_kernel.shape == (P.embedding_size, P.yamnet_classes)
    assert weights.log_offset == pytest.approx(P.log_offset)
    periodic_hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(P.stft_window_samples) / P.stft_window_samples)
    np.testing.assert_allclose(weights.stft_window, periodic_hann, atol=1e-6)


def test_unreadable_weights_file_raises_value_error_naming_it(tmp_path: Path) -> None:
    broken = tmp_path / "yamnet_public_int8w.tflite"
    broken.write_bytes(b"not a flatbuffer at all" * 10)
    with pytest.raises(ValueError, match="yamnet_public_int8w.tflite"):
        read_yamnet_weights(broken)


# --- parity ------------------------------------------------------------------------


def test_rebuild_reproduces_the_weight_files_float_graph(
    clip_patches: np.ndarray, float_graph_outputs: tuple
) -> None:
    # With the file's own (int8-rounded) mel matrix, the Keras model IS that graph in float.
    same_front_end = load_yamnet(weights_path=WEIGHTS, mel="file")
    embeddings, scores = same_front_end.embed_patches(clip_patches)
    reference_embeddings, reference_scores = float_graph_outputs
    assert _cosine(embeddings, reference_embeddings).min() >= 0.9999
    assert (scores.argmax(1) == reference_scores.argmax(1)).all()
    np.testing.assert_allclose(scores, reference_scores, atol=1e-3)


def test_exact_mel_front_end_stays_within_parity_of_the_weight_file(
    yamnet: Any, clip_patches: np.ndarray, float_graph_outputs: tuple
) -> None:
    embeddings, scores = yamnet.embed_patches(clip_patches)
    reference_embeddings, reference_scores = float_graph_outputs
    cosine = _cosine(embeddings, reference_embeddings)
    agreement = (scores.argmax(1) == reference_scores.argmax(1)).mean()
    print(f"\nvs float graph: cosine min {cosine.min():.5f} mean {cosine.mean():.5f}, top-1 {agreement:.4f}")
    assert cosine.min() >= 0.995
    assert agreement >= 0.99


def test_float_model_is_as_close_to_the_int8_file_as_the_files_own_float_graph(
    yamnet: Any, clip_patches: np.ndarray, float_graph_outputs: tuple, int8_file_outputs: tuple
) -> None:
    embeddings, scores = yamnet.embed_patches(clip_patches)
    int8_embeddings, int8_scores = int8_file_outputs
    float_embeddings, float_scores = float_graph_outputs
    ours = _cosine(embeddings, int8_embeddings)
    theirs = _cosine(float_embeddings, int8_embeddings)
    ours_top1 = (scores.argmax(1) == int8_scores.argmax(1)).mean()
    theirs_top1 = (float_scores.argmax(1) == int8_scores.argmax(1)).mean()
    print(
        f"\nvs int8 file: cosine min {ours.min():.5f} mean {ours.mean():.5f}, top-1 {ours_top1:.4f} "
        f"(file's float graph: min {theirs.min():.5f} mean {theirs.mean():.5f}, top-1 {theirs_top1:.4f}; "
        f"largest per-patch shortfall {np.max(theirs - ours):.5f})"
    )
    assert (ours >= theirs - 0.01).all()
    assert ours.mean() >= theirs.mean() - 0.002
    assert ours_top1 >= theirs_top1 - 0.02


# --- behaviour ---------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_synthesized_speech_is_named_speech(yamnet: Any, tmp_path: Path) -> None:
    wav = tmp_path / "speech.wav"
    text = "Hello, this is a test of the sound recognition system. It should hear speech."
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
    _, scores = yamnet.embed_patches(_patches(_read_16k(wav)))
    assert _class_names()[int(scores.mean(axis=0).argmax())] == "Speech"


def test_silence_is_named_silence(yamnet: Any) -> None:
    _, scores = yamnet.embed_patches(np.zeros((2, P.patch_samples), np.float32))
    names = _class_names()
    assert [names[int(index)] for index in scores.argmax(axis=1)] == ["Silence", "Silence"]


def test_patch_model_outputs_and_batching(yamnet: Any) -> None:
    rng = np.random.default_rng(7)
    patches = (0.1 * rng.standard_normal((5, P.patch_samples))).astype(np.float32)
    outputs = yamnet.patch_model(patches, training=False)
    assert tuple(outputs["embeddings"].shape) == (5, P.embedding_size)
    assert tuple(outputs["scores"].shape) == (5, P.yamnet_classes)
    assert tuple(outputs["log_mel"].shape) == (5, P.patch_frames, P.mel_bands)
    one_by_one = yamnet.embed_patches(patches, batch_size=1)
    all_at_once = yamnet.embed_patches(patches, batch_size=64)
    np.testing.assert_allclose(one_by_one[0], all_at_once[0], atol=1e-4)
    np.testing.assert_allclose(all_at_once[0], np.asarray(outputs["embeddings"]), atol=1e-4)
    # log_mel of a bare waveform frames it the same way, without padding
    np.testing.assert_allclose(yamnet.log_mel(patches[0]), np.asarray(outputs["log_mel"][0]), atol=1e-4)
    assert yamnet.log_mel(np.zeros(P.clip_samples, np.float32)).shape == (
        1 + (P.clip_samples - P.stft_window_samples) // P.stft_hop_samples,
        P.mel_bands,
    )


def test_embed_patches_rejects_a_bare_waveform(yamnet: Any) -> None:
    with pytest.raises(ValueError, match="waveform_to_patches"):
        yamnet.embed_patches(np.zeros(P.patch_samples, np.float32))


def test_weights_sha256_is_the_files(yamnet: Any) -> None:
    import hashlib

    assert yamnet.weights_sha256 == hashlib.sha256(WEIGHTS.read_bytes()).hexdigest()
    assert yamnet.source == "tflite"


def test_serving_function_exports_to_tflite_with_its_weights(yamnet: Any) -> None:
    converter = tf.lite.TFLiteConverter.from_concrete_functions([yamnet.concrete_function()], yamnet.export_module())
    model = converter.convert()
    assert len(model) > 4 * yamnet.weights.num_values  # float32 weights inside, not left as variables
    interpreter = litert.Interpreter(model_content=model, num_threads=1)
    runner = interpreter.get_signature_runner()
    patch = (0.1 * np.random.default_rng(3).standard_normal(P.patch_samples)).astype(np.float32)
    exported = runner(waveform=patch)
    embeddings, scores = yamnet.embed_patches(patch[None])
    np.testing.assert_allclose(exported["embeddings"], embeddings[0], atol=1e-4)
    np.testing.assert_allclose(exported["scores"], scores[0], atol=1e-4)
    assert exported["log_mel"].shape == (P.patch_frames, P.mel_bands)


# --- finding the weights -----------------------------------------------------------


def _no_hub(handle: str) -> Any:
    raise OSError(f"no network: cannot fetch {handle}")


def _no_weights_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights file anywhere, the user cache (and so TF Hub's) in tmp_path."""
    monkeypatch.setattr(yamnet_module, "find_weights_file", lambda **_: None)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TFHUB_CACHE_DIR", raising=False)


def test_missing_weights_and_no_network_raise_one_clear_asset_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with pytest.raises(AssetError, match="does not exist"):
        load_yamnet(weights_path=tmp_path / "missing.tflite")
    _no_weights_file(monkeypatch, tmp_path)
    monkeypatch.setattr(yamnet_module, "_load_hub_model", _no_hub)
    with pytest.raises(AssetError) as caught:
        load_yamnet()
    message = str(caught.value)
    assert "yamnet_public_int8w.tflite" in message and "shared/assets/yamnet" in message
    assert "--yamnet-weights FILE" in message and "--assets DIR" in message
    assert "(no network: cannot fetch https://tfhub.dev/google/yamnet/1)" in message  # the cause is kept
    assert message.count(". ") == 0 and message.endswith(".")  # one sentence
    with pytest.raises(AssetError, match="yamnet_public_int8w.tflite"):
        load_yamnet(source="tflite")


def test_weights_are_found_through_the_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(yamnet_module.WEIGHTS_ENV_VAR, str(WEIGHTS))
    assert yamnet_module.default_weight_paths()[0] == WEIGHTS
    assert load_yamnet(source="tflite").weights_path == WEIGHTS
    # an --assets folder wins over the variable
    in_assets = tmp_path / "assets" / "yamnet" / WEIGHTS.name
    in_assets.parent.mkdir(parents=True)
    in_assets.symlink_to(WEIGHTS)
    assert yamnet_module.default_weight_paths(assets_dir=tmp_path / "assets")[0] == in_assets
    monkeypatch.setenv(yamnet_module.WEIGHTS_ENV_VAR, str(tmp_path / "typo.tflite"))  # given, wrong: never skipped
    with pytest.raises(AssetError, match=r"typo\.tflite \(from OIDO_YAMNET_TFLITE\) does not exist"):
        load_yamnet()


def test_a_damaged_tf_hub_cache_fails_naming_the_folder_to_delete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """tensorflow/hub#896: a cached module folder without saved_model.pb fails every later load,
    offline too; the real tensorflow_hub reads it from the user cache without touching the network."""
    pytest.importorskip("tensorflow_hub")
    _no_weights_file(monkeypatch, tmp_path)
    module_dir = tmp_path / "xdg" / "oido" / "tfhub" / hashlib.sha1(yamnet_module.HUB_HANDLE.encode()).hexdigest()
    (module_dir / "variables").mkdir(parents=True)
    (module_dir / "variables" / "variables.index").write_bytes(b"half a download")
    with pytest.raises(AssetError) as caught:
        load_yamnet()
    message = str(caught.value)
    assert message.startswith(f"TF Hub's cached YAMNet in {module_dir} does not load (")
    assert "saved_model.pb" in message  # tensorflow_hub's own words
    assert "delete that folder to download it again" in message


class FakeHubYamnet(tf.Module):
    """Hub YAMNet's interface (waveform [n] -> scores, embeddings, log_mel; class_map_path()),
    for one-patch waveforms."""

    def __init__(self, model: Any, class_map: Path) -> None:
        super().__init__()
        self.model = model
        self.class_map = tf.constant(str(class_map))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def __call__(self, waveform: Any) -> tuple[Any, Any, Any]:
        outputs = self.model(waveform[tf.newaxis], training=False)
        return outputs["scores"], outputs["embeddings"], outputs["log_mel"][0]

    @tf.function(input_signature=[])
    def class_map_path(self) -> Any:
        return self.class_map


def test_hub_source_runs_a_whole_waveform_model_per_patch(
    yamnet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _no_weights_file(monkeypatch, tmp_path)
    monkeypatch.setattr(yamnet_module, "_load_hub_model", lambda handle: FakeHubYamnet(yamnet.patch_model, CLASS_MAP))
    hub = load_yamnet()  # auto: no file -> hub
    assert hub.source == "hub"
    patches = (0.1 * np.random.default_rng(5).standard_normal((3, P.patch_samples))).astype(np.float32)
    hub_embeddings, hub_scores = hub.embed_patches(patches, batch_size=2)
    embeddings, scores = yamnet.embed_patches(patches)
    np.testing.assert_allclose(hub_embeddings, embeddings, atol=1e-4)
    np.testing.assert_allclose(hub_scores, scores, atol=1e-4)
    assert tuple(hub.patch_model(patches)["log_mel"].shape) == (3, P.patch_frames, P.mel_bands)


def test_hub_weights_keep_the_audioset_class_names(
    yamnet: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a weights file, TF Hub's own class map gives the names the music/speech veto needs."""
    hub_assets = tmp_path / "hub-module" / "assets"
    hub_assets.mkdir(parents=True)
    shutil.copy(CLASS_MAP, hub_assets / CLASS_MAP.name)
    _no_weights_file(monkeypatch, tmp_path)
    hub_model = FakeHubYamnet(yamnet.patch_model, hub_assets / CLASS_MAP.name)
    monkeypatch.setattr(yamnet_module, "_load_hub_model", lambda handle: hub_model)
    names = tuple(_class_names())

    hub = load_yamnet()

    assert len(names) == P.yamnet_classes and hub.audioset_classes == names
    assert yamnet.audioset_classes == names  # the weights file's class map, the same names
    kept = tmp_path / "xdg" / "oido" / "yamnet" / CLASS_MAP.name
    assert kept.read_bytes() == CLASS_MAP.read_bytes()
    assert yamnet_module.read_class_map(kept) == names  # where find_audioset_classes looks (user cache)
