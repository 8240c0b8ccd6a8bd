"""oido-convert: checked exports, errors that name the file, the same decisions in every runtime.

Groups
- Runtime parity (no TensorFlow): model/golden.json, written by the last `oido-convert`, replayed
  through the edge pipeline in the INSTALLED runtime. `scripts/legacy_env.sh` runs this file under
  tflite-runtime 2.14 + numpy<2 and `scripts/edge_env.sh` under ai-edge-litert, both without
  TensorFlow, so the same test proves both runtimes give the exported decisions. Skipped until
  model/ and data/ exist. Golden file: regenerate it by re-running `oido-convert` (every export
  rewrites model/golden.json; nothing under model/ is committed).
- Checks and bad files (no TensorFlow; a TF-Lite runtime and the shared YAMNet asset).
- Export (pytest.importorskip("tensorflow")): head conversion per quantization, the YAMNet recipe on
  a miniature YAMNet, bad heads, atomic writes, and one full export into a temporary directory (slow).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from convert.errors import ConvertError
from convert.parity import GOLDEN_NAME, check_golden, read_golden
from convert.sanity import (
    MIN_YAMNET_BYTES,
    TONE_AMPLITUDE,
    TONE_CLASSES,
    check_yamnet_file,
    find_class_map,
    read_class_map,
    silence,
    tone,
)
from edge.detect import DetectorConfig
from edge.errors import ManifestError, ModelError
from edge.manifest import MANIFEST_NAME, load_manifest
from edge.params import DEFAULT_PARAMS
from fixtures.assets import YAMNET_CLASS_MAP, YAMNET_TFLITE

REPO = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(os.environ.get("OIDO_MODEL_DIR", REPO / "model"))
"""The export the runtime-parity tests replay ($OIDO_MODEL_DIR overrides model/)."""
DATA_DIR = Path(os.environ.get("OIDO_DATA_DIR", REPO / "data"))
ASSET_YAMNET = YAMNET_TFLITE
CLASS_MAP = YAMNET_CLASS_MAP
EXPORTED = ("yamnet.tflite", "head.tflite", MANIFEST_NAME, GOLDEN_NAME)


def needs_runtime() -> None:
    from edge.runtime import available_backend

    if available_backend() is None:
        pytest.skip("no TF-Lite runtime installed")


def needs_export() -> None:
    """Skip unless `oido-convert` has exported model/ from the prepared data/."""
    needs_runtime()
    missing = [name for name in EXPORTED if not (MODEL_DIR / name).is_file()]
    if missing or not (DATA_DIR / "testData.json").is_file():
        pytest.skip(f"no exported model to check (missing {missing or ['data/testData.json']}): run oido-convert")


def copy_export(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED:
        shutil.copy2(MODEL_DIR / name, target / name)
    return target


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under directory (names relative) with its bytes."""
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


# --- runtime parity: the exported decisions in the installed runtime (no TensorFlow) ----------


GOLDEN_ROUNDING = 1e-5
"""golden.json keeps 6 decimals: the largest difference a replay by the runtime that made it may show."""


def test_exported_model_gives_the_golden_decisions_in_this_runtime() -> None:
    """Meaningful across runtimes: scripts/edge_env.sh (ai-edge-litert) and scripts/legacy_env.sh
    (tflite-runtime 2.14) replay the workstation's golden.json. In the runtime that made it (the
    workstation) `not report.failures` compares the export with itself and cannot fail; there the
    test checks what can: every golden row was replayed, and reproduced to golden's rounding."""
    needs_export()
    golden = read_golden(MODEL_DIR)
    assert {"backend", "version"} <= set(golden["runtime"]), "golden.json does not say which runtime made it"
    report = check_golden(MODEL_DIR, DATA_DIR)
    assert [clip.file_name for clip in report.clips] == [entry["fileName"] for entry in golden["clips"]]
    assert report.clips, "golden.json lists no clips"
    assert not report.failures, report.describe()  # cross-runtime: the decisions agree within golden's tolerances
    if report.same_runtime:  # a self-check: it must reproduce golden.json row by row
        assert report.decisions_equal == len(golden["clips"]), report.describe()
        assert report.largest_difference <= GOLDEN_ROUNDING, report.describe()


def test_golden_file_of_another_export_is_refused(tmp_path: Path) -> None:
    needs_export()
    model_dir = copy_export(tmp_path / "model")
    golden = read_golden(model_dir)
    golden["yamnet_sha256"] = "0" * 64
    (model_dir / GOLDEN_NAME).write_text(json.dumps(golden))
    with pytest.raises(ManifestError, match=GOLDEN_NAME):
        check_golden(model_dir, DATA_DIR, limit=1)


def test_manifest_of_another_model_is_refused_naming_the_file(tmp_path: Path) -> None:
    needs_export()
    if not ASSET_YAMNET.is_file():
        pytest.skip(f"YAMNet asset missing: {ASSET_YAMNET}")
    model_dir = copy_export(tmp_path / "model")
    shutil.copy2(ASSET_YAMNET, model_dir / "yamnet.tflite")  # another model under the manifest's name
    with pytest.raises(ManifestError, match="yamnet.tflite"):
        load_manifest(model_dir)


# --- checks and bad files (no TensorFlow) ----------------------------------------------------


@pytest.mark.parametrize(
    "targets, float_wrong, quantized_wrong, met",
    [(32, 2, 2, True), (32, 2, 3, True), (32, 2, 4, False), (8, 2, 2, True), (8, 0, 1, True), (8, 0, 2, False)],
)
def test_parity_judges_what_quantization_costs_not_the_heads_accuracy(
    targets: int, float_wrong: int, quantized_wrong: int, met: bool
) -> None:
    """30/32 float and 30/32 quantized is a faithful export (the head's accuracy is the head's); the
    quantized model may lose one clip against float, on the default 32 targets and on 8 of own data."""
    from convert.parity import ClipOutcome, ParityReport

    labels = ["kettle", "door", "other"]

    def decided(i: int, wrong: int) -> int:
        return (i + (i < wrong)) % 2  # the first `wrong` clips take the other target label

    clips = [
        ClipOutcome(file_name=f"{i}.wav", class_name=labels[i % 2], true_index=i % 2,
                    float_index=decided(i, float_wrong), quantized_index=decided(i, quantized_wrong),
                    float_mean=(0.5, 0.5, 0.0), quantized_mean=(0.5, 0.5, 0.0), patches=10, cosine_min=1.0)
        for i in range(targets)
    ] + [ClipOutcome(file_name="o.wav", class_name="other", true_index=2, float_index=2, quantized_index=2,
                     float_mean=(0.0, 0.0, 1.0), quantized_mean=(0.0, 0.0, 1.0), patches=10, cosine_min=1.0)]  # fmt: skip
    report = ParityReport(
        labels=labels, background_label="other", clips=clips, cosine={"mean": 1.0, "p1": 1.0, "min": 1.0},
        sizes_bytes={"yamnet": 1, "head": 1}, latency_ms={}, quantization={}, runtime={}, sha256={},
    )  # fmt: skip
    summary = report.summary()
    assert summary["accuracy"]["target_clips"]["float"]["correct"] == targets - float_wrong  # still reported
    assert summary["targets_met"]["accuracy_target_clips"] is met
    assert summary["targets_met"]["accuracy_all_clips"] is met  # the background clip is right on both paths
    (row,) = [line for line in report.to_markdown().splitlines() if line.startswith("| accuracy, target clips")]
    floor = targets - float_wrong - 1
    assert row == (f"| accuracy, target clips: float / quantized | {targets - float_wrong}/{targets} / "
                   f"{targets - quantized_wrong}/{targets} | quantized >= {floor}/{targets} (float - 1) | "
                   f"{'yes' if met else 'NO'} |")  # fmt: skip


@pytest.mark.parametrize("right, met", [(31, True), (30, False)])
def test_the_default_task_goal_is_judged_only_for_the_default_tasks_targets(right: int, met: bool) -> None:
    """The default task's own goal (31 of 32 targets, quantized) has a row of its own, for a head of
    the default four classes (with or without `other`), and none for a head of other labels."""
    from convert.parity import DEFAULT_TASK_LABELS, ClipOutcome, ParityReport

    def report(labels: list[str]) -> ParityReport:
        clips = [
            ClipOutcome(file_name=f"{i}.wav", class_name=labels[i % 4], true_index=i % 4,
                        float_index=i % 4 if i < right else (i + 1) % 4, quantized_index=i % 4 if i < right else (i + 1) % 4,
                        float_mean=(0.25,) * len(labels), quantized_mean=(0.25,) * len(labels), patches=10, cosine_min=1.0)
            for i in range(32)
        ]  # fmt: skip
        return ParityReport(
            labels=labels, background_label="other", clips=clips, cosine={"mean": 1.0, "p1": 1.0, "min": 1.0},
            sizes_bytes={"yamnet": 1, "head": 1}, latency_ms={}, quantization={}, runtime={}, sha256={},
        )  # fmt: skip

    default = report([*DEFAULT_TASK_LABELS, "other"])
    assert default.summary()["targets_met"]["default_task_accuracy"] is met
    (row,) = [line for line in default.to_markdown().splitlines() if "default task's goal" in line]
    assert row.endswith(f"| {right}/32 | >= 31/32 | {'yes' if met else 'NO'} |")
    own = report(["kettle", "door", "bell", "dog", "other"])
    assert "default_task_accuracy" not in own.summary()["targets_met"]
    assert "default task" not in own.to_markdown()


def test_the_default_task_labels_of_parity_are_prepares() -> None:
    pytest.importorskip("tensorflow")  # the workstation side, where train is installed
    from convert.parity import DEFAULT_TASK_LABELS
    from train.prepare import DEFAULT_CLASSES

    assert DEFAULT_TASK_LABELS == DEFAULT_CLASSES


def test_class_map_is_read_in_score_order() -> None:
    if not CLASS_MAP.is_file():
        pytest.skip(f"class map missing: {CLASS_MAP}")
    names = read_class_map(CLASS_MAP)
    assert len(names) == DEFAULT_PARAMS.yamnet_classes
    assert names[0] == "Speech"
    assert "Silence" in names and all(name in names for name in TONE_CLASSES)


def test_unreadable_class_map_raises_convert_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "classes.csv"
    path.write_text("no,columns,here\n1,2,3\n")
    with pytest.raises(ConvertError, match="classes.csv"):
        read_class_map(path)


def test_probe_sounds_are_what_they_claim() -> None:
    beep = tone()
    assert beep.dtype == np.float32 and len(beep) > DEFAULT_PARAMS.patch_samples
    assert np.isclose(np.abs(beep).max(), TONE_AMPLITUDE, atol=1e-3)
    spectrum = np.abs(np.fft.rfft(beep))
    peak_hz = np.argmax(spectrum) * DEFAULT_PARAMS.sample_rate_hz / len(beep)
    assert abs(peak_hz - 1000.0) < 2.0
    assert not silence().any()


def test_synthesized_speech_probe_is_audible() -> None:
    pytest.importorskip("soxr")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    from convert.sanity import synthesized_speech

    speech = synthesized_speech()
    assert len(speech) > DEFAULT_PARAMS.sample_rate_hz  # over a second
    assert np.sqrt(np.mean(speech**2)) > 0.01


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_tflite_raises_model_error_naming_the_file(tmp_path: Path, damage: str) -> None:
    needs_runtime()
    if not ASSET_YAMNET.is_file():
        pytest.skip(f"YAMNet asset missing: {ASSET_YAMNET}")
    from edge.yamnet import YamnetTflite

    path = tmp_path / "yamnet.tflite"
    data = ASSET_YAMNET.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match=str(path)):
        YamnetTflite(path)


def test_weightless_stub_fails_the_yamnet_check(tmp_path: Path) -> None:
    stub = tmp_path / "stub.tflite"
    stub.write_bytes(b"\0" * 1000)
    with pytest.raises(ConvertError, match="yamnet.tflite.*weights are missing"):
        check_yamnet_file(stub, class_names=["x"] * DEFAULT_PARAMS.yamnet_classes, probes={})
    assert MIN_YAMNET_BYTES > 1000


def test_yamnet_without_named_outputs_fails_the_check() -> None:
    needs_runtime()
    if not (ASSET_YAMNET.is_file() and CLASS_MAP.is_file()):
        pytest.skip("YAMNet asset missing")
    probes = {"silence": (silence(), ("Silence",))}
    with pytest.raises(ConvertError, match="not named outputs"):
        check_yamnet_file(ASSET_YAMNET, class_names=read_class_map(CLASS_MAP), probes=probes)


# --- export (TensorFlow) ---------------------------------------------------------------------

LABELS = ["tone", "noise"]


def keras_head(
    num_labels: int = len(LABELS), *, embedding_size: int = 1024, hidden_units: int = 32, seed: int = 0
) -> Any:
    pytest.importorskip("tensorflow")
    from train.head import build_head, seed_everything

    seed_everything(seed, deterministic=False)
    return build_head(num_labels, embedding_size=embedding_size, hidden_units=hidden_units)


def save_trained_head(model_dir: Path, model: Any, *, labels: list[str], yamnet_sha256: str = "a" * 64) -> None:
    from train.head import TrainConfig, TrainedHead, save_head

    save_head(
        TrainedHead(
            model=model,
            labels=labels,
            background_label=None,
            params=DEFAULT_PARAMS,
            train_config=TrainConfig(hidden_units=int(model.layers[1].units)),
            yamnet_weights_sha256=yamnet_sha256,
            embedding_size=int(model.inputs[0].shape[-1]),
        ),
        model_dir,
    )


def fake_embeddings(count: int, *, seed: int = 1) -> np.ndarray:
    """Non-negative, sparse-ish vectors shaped like YAMNet embeddings (mean-pooled ReLU)."""
    rng = np.random.default_rng(seed)
    return (np.maximum(rng.normal(0.0, 1.0, (count, 1024)), 0.0) * rng.uniform(0.2, 2.0, (count, 1))).astype(np.float32)


@pytest.mark.parametrize("quantization", ["dynamic_range", "full_int8", "int8_weights"])
def test_head_conversion_agrees_with_keras_and_stays_loadable_in_tflite_runtime_2_14(
    tmp_path: Path, quantization: str
) -> None:
    needs_runtime()
    model = keras_head()
    from convert.export import convert_head
    from convert.graph import TfliteGraph
    from edge.head import HeadTflite

    embeddings = fake_embeddings(64)
    data = convert_head(
        model, quantization=quantization, calibration_embeddings=fake_embeddings(32, seed=2), params=DEFAULT_PARAMS
    )
    graph = TfliteGraph(data)
    dense_versions = {graph.op_version(op) for op in graph.graph.operators if graph.op_name(op) == "FULLY_CONNECTED"}
    assert dense_versions and max(dense_versions) < 12  # v12 = per-channel int8 dense, unknown to 2.14
    assert graph.tensor_name(graph.inputs[0]) == "embeddings"
    assert [graph.tensor_name(i) for i in graph.outputs] == ["probabilities"]
    if quantization != "full_int8":
        assert graph.count_types().get("INT8", 0) >= 1  # quantized, not float

    path = tmp_path / "head.tflite"
    path.write_bytes(data)
    probabilities = HeadTflite(path).run(embeddings)
    expected = np.asarray(model(embeddings), np.float32)
    step = 1 / 256 if quantization == "full_int8" else 0.0
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3 + len(LABELS) * step)
    assert np.mean(np.argmax(probabilities, 1) == np.argmax(expected, 1)) >= 0.95
    assert np.max(np.abs(probabilities - expected)) < 0.05


def mini_yamnet() -> Any:
    """A miniature YAMNet with the real front end (train.yamnet) and the real output contract."""
    tf = pytest.importorskip("tensorflow")
    import keras

    from train.yamnet import log_mel_spectrogram, mel_weight_matrix

    params = DEFAULT_PARAMS
    mel = mel_weight_matrix(params)

    class LogMel(keras.layers.Layer):
        def call(self, waveform: Any) -> Any:
            return log_mel_spectrogram(waveform, mel, params=params)

        def compute_output_shape(self, shape: Any) -> Any:
            return (shape[0], params.patch_frames, params.mel_bands)

    keras.utils.set_random_seed(0)
    waveform = keras.Input(shape=(params.patch_samples,), name="waveform")
    log_mel = LogMel(name="log_mel")(waveform)
    net = keras.layers.Reshape((params.patch_frames, params.mel_bands, 1))(log_mel)
    net = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(net)
    net = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", activation="relu")(net)
    net = keras.layers.Conv2D(params.embedding_size, 1, padding="same", activation="relu")(net)
    embeddings = keras.layers.GlobalAveragePooling2D()(net)
    scores = keras.layers.Dense(params.yamnet_classes, activation="sigmoid")(embeddings)
    model = keras.Model(waveform, {"embeddings": embeddings, "scores": scores, "log_mel": log_mel})

    @tf.function(input_signature=[tf.TensorSpec([params.patch_samples], tf.float32)])
    def serve(patch: Any) -> Any:
        outputs = model(patch[tf.newaxis], training=False)
        return {name: value[0] for name, value in outputs.items()}

    return SimpleNamespace(model=model, concrete_function=serve.get_concrete_function)


def test_yamnet_recipe_keeps_the_front_end_and_depthwise_convs_float(tmp_path: Path) -> None:
    needs_runtime()
    standin = mini_yamnet()
    from convert.export import convert_yamnet
    from convert.graph import TfliteGraph
    from edge.yamnet import YamnetTflite
    from tensorflow.lite.python.schema_py_generated import TensorType

    rng = np.random.default_rng(0)
    patches = (rng.normal(0, 0.1, (6, DEFAULT_PARAMS.patch_samples)) * rng.uniform(0.01, 1, (6, 1))).astype(np.float32)
    candidates = {
        c.name: c
        for c in convert_yamnet(
            standin,
            quantizations=["dynamic_range", "full_int8", "int8_weights"],
            calibration_patches=patches,
            params=DEFAULT_PARAMS,
        )
    }
    assert set(candidates) == {"dynamic_range", "full_int8", "int8_weights"}
    expected = {k: np.asarray(v)[0] for k, v in standin.model(patches[:1]).items()}

    for name, candidate in candidates.items():
        assert candidate.error is None, candidate.error
        graph = TfliteGraph(candidate.model_bytes, source=name)
        assert graph.tensor_name(graph.inputs[0]) == "waveform"
        assert [graph.tensor_name(i) for i in graph.outputs] == ["embeddings", "scores", "log_mel"]
        front_end = graph.ancestors(graph.output_with_shape((DEFAULT_PARAMS.patch_frames, DEFAULT_PARAMS.mel_bands)))
        for index in front_end:  # no op of the front end computes with or reads int8
            op = graph.graph.operators[index]
            types = {graph.graph.tensors[t].type for t in list(op.inputs) + list(op.outputs) if t >= 0}
            assert TensorType.INT8 not in types, graph.op_name(op)
        assert all(graph.model.buffers[entry.buffer].data is not None for entry in graph.model.metadata or [])
        hybrid = {graph.op_name(graph.graph.operators[i]) for i in graph.quantized_weight_ops()}
        if name == "dynamic_range":
            assert "DEPTHWISE_CONV_2D" not in hybrid and "CONV_2D" in hybrid
        if name == "int8_weights":
            assert not hybrid and any(graph.op_name(op) == "DEQUANTIZE" for op in graph.graph.operators)

        path = tmp_path / f"{name}.tflite"
        path.write_bytes(candidate.model_bytes)
        outputs = YamnetTflite(path).run_all(patches[0])
        assert outputs.log_mel is not None
        assert np.allclose(outputs.log_mel, expected["log_mel"], atol=1e-3)  # the front end is float everywhere
        if name != "full_int8":
            cosine = np.dot(outputs.embedding, expected["embeddings"]) / (
                np.linalg.norm(outputs.embedding) * np.linalg.norm(expected["embeddings"])
            )
            assert cosine > 0.99


def test_hybrid_ops_too_coarse_on_builtin_kernels_compute_in_float_from_int8_weights() -> None:
    needs_runtime()
    standin = mini_yamnet()
    from convert.export import convert_yamnet
    from convert.graph import TfliteGraph

    rng = np.random.default_rng(1)
    patches = (rng.normal(0, 0.1, (4, DEFAULT_PARAMS.patch_samples))).astype(np.float32)

    def dynamic_range(floor: float) -> Any:
        (candidate,) = convert_yamnet(
            standin,
            quantizations=["dynamic_range"],
            calibration_patches=patches,
            params=DEFAULT_PARAMS,
            hybrid_op_cosine_floor=floor,
        )
        assert candidate.error is None, candidate.error
        return candidate, TfliteGraph(candidate.model_bytes, source="dynamic_range")

    lenient, graph = dynamic_range(0.5)  # every op is accurate enough alone: all stay hybrid
    assert len(graph.quantized_weight_ops()) == 2  # the pointwise conv and the scores dense layer
    assert not any(graph.op_name(op) == "DEQUANTIZE" for op in graph.graph.operators)
    assert "all >= 0.5" in lenient.notes[-1]

    strict, graph = dynamic_range(1.0)  # no int8 op reaches cosine 1 exactly: all go float, int8 stays on disk
    assert not graph.quantized_weight_ops()
    assert sum(graph.op_name(op) == "DEQUANTIZE" for op in graph.graph.operators) == 2
    assert graph.count_types().get("INT8", 0) == 2
    assert "dequantized to float" in strict.notes[-1] and "conv2d" in strict.notes[-1]


def write_tiny_data(
    data_dir: Path, *, labels: list[str] = LABELS, clips_per_label: int = 3, test_per_label: int = 2
) -> None:
    """A prepared data/ of synthetic 2 s clips: label 0 tones, label 1 noise."""
    from edge.audio import write_wav

    rng = np.random.default_rng(0)
    rate = DEFAULT_PARAMS.sample_rate_hz
    time_s = np.arange(2 * rate) / rate
    (data_dir / "audio").mkdir(parents=True)
    splits: dict[str, list[dict[str, Any]]] = {"trainData.json": [], "testData.json": []}
    for number, label in enumerate(labels):
        for index in range(clips_per_label + test_per_label):
            if number == 0:
                waveform = 0.3 * np.sin(2 * np.pi * rng.uniform(500, 2000) * time_s)
            else:
                waveform = rng.normal(0, 0.1, len(time_s))
            name = f"{label}-{index}.wav"
            write_wav(data_dir / "audio" / name, waveform.astype(np.float32), rate_hz=rate)
            split = "trainData.json" if index < clips_per_label else "testData.json"
            fold = 1 if split == "trainData.json" else 5
            splits[split].append(
                {"fileName": name, "className": label, "classNumber": number, "fold": fold, "source": name}
            )
    for name, entries in splits.items():
        (data_dir / name).write_text(json.dumps(entries))
    (data_dir / "classes.json").write_text(json.dumps({"labels": labels, "background_label": None, "task": "test"}))


def previous_model(model_dir: Path) -> dict[str, bytes]:
    """Stand-ins for a previous export, to prove a failed export leaves them alone."""
    for name in ("yamnet.tflite", "head.tflite", MANIFEST_NAME, GOLDEN_NAME):
        (model_dir / name).write_bytes(f"previous {name}".encode())
    return snapshot(model_dir)


def assert_untouched(model_dir: Path, before: dict[str, bytes]) -> None:
    assert snapshot(model_dir) == before
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".")], "temporary files left in model/"


class StubYamnet:
    """Enough of train.yamnet.YamnetTF for export's input checks (no conversion happens)."""

    weights_sha256 = "a" * 64
    weights_path = CLASS_MAP.parent / "yamnet_public_int8w.tflite"

    def embed_patches(self, patches: np.ndarray, **_: Any) -> tuple[np.ndarray, np.ndarray]:
        count = len(patches)
        return fake_embeddings(count, seed=count), np.zeros((count, DEFAULT_PARAMS.yamnet_classes), np.float32)


@pytest.mark.parametrize(
    "chosen_for, expected",
    [
        ("other", {"beep": 0.5, "speech": 0.5}),  # left over from an earlier head: ignored
        ("this", {"beep": 0.97, "speech": 0.9}),  # calibrated for this head
        (None, {"beep": 0.97, "speech": 0.9}),  # hand-written, names no head
    ],
)
def test_thresholds_file_is_used_only_for_the_head_it_was_chosen_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, chosen_for: str | None, expected: dict[str, float]
) -> None:
    from convert.export import resolve_thresholds

    head = SimpleNamespace(labels=["beep", "speech", "other"], background_label="other",
                           extra={"head_sha256": "c" * 64})  # fmt: skip
    document: dict[str, Any] = {"thresholds": {"beep": 0.97, "speech": 0.9}}
    if chosen_for is not None:
        document["head_sha256"] = "c" * 64 if chosen_for == "this" else "d" * 64
    (tmp_path / "thresholds.json").write_text(json.dumps(document))
    with caplog.at_level("WARNING"):
        thresholds, source = resolve_thresholds(tmp_path, head)
    assert thresholds == expected
    assert source == ("default" if chosen_for == "other" else "thresholds.json")
    assert ("chosen for another head" in caplog.text) == (chosen_for == "other")


def test_stale_thresholds_of_other_labels_do_not_stop_an_export(tmp_path: Path) -> None:
    """After the quick start, training your own classes with `fit` must still convert."""
    from convert.export import resolve_thresholds

    stale = {"thresholds": {"crying_baby": 0.9998, "water_drops": 0.98}, "head_sha256": "d" * 64}
    (tmp_path / "thresholds.json").write_text(json.dumps(stale))
    head = SimpleNamespace(labels=["door", "kettle", "other"], background_label="other",
                           extra={"head_sha256": "c" * 64})  # fmt: skip
    assert resolve_thresholds(tmp_path, head) == ({"door": 0.5, "kettle": 0.5}, "default")


def test_calibrated_thresholds_follow_their_head_and_not_the_next_one(tmp_path: Path) -> None:
    """calibrate tags thresholds.json with its head; a later plain `fit` head exports with the defaults."""
    from convert.export import load_trained_head, resolve_thresholds
    from train.openset import Calibration, update_thresholds

    save_trained_head(tmp_path, keras_head(seed=0), labels=LABELS)
    calibration = Calibration(
        thresholds={"tone": 0.97, "noise": 0.9}, target_false_per_hour=2.0, validation_hours=0.8,
        validation_targets=64, sweep={}, expected={},
    )  # fmt: skip
    update_thresholds(tmp_path, calibration, DetectorConfig(thresholds=calibration.thresholds))
    calibrated = load_trained_head(tmp_path, params=DEFAULT_PARAMS, yamnet_sha256=None)
    tagged = json.loads((tmp_path / "thresholds.json").read_text())
    assert tagged["head_sha256"] == calibrated.extra["head_sha256"]
    assert resolve_thresholds(tmp_path, calibrated) == ({"tone": 0.97, "noise": 0.9}, "head.json")

    save_trained_head(tmp_path, keras_head(seed=1), labels=LABELS)  # `oido-train fit`: no thresholds of its own
    retrained = load_trained_head(tmp_path, params=DEFAULT_PARAMS, yamnet_sha256=None)
    assert resolve_thresholds(tmp_path, retrained) == ({"tone": 0.5, "noise": 0.5}, "default")


def test_export_repeats_the_calibration_warning_of_the_thresholds_it_ships(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """fit-openset keeps its warnings (a class its thresholds never light) in head.json; the export says them again."""
    from convert.export import ExportInputError, export_model
    from train.openset import Calibration, update_thresholds

    save_trained_head(tmp_path, keras_head(seed=0), labels=LABELS)
    warning = "class 'tone': its calibrated threshold 0.99999 misses all 10 of its validation targets"
    calibration = Calibration(
        thresholds={"tone": 0.99999, "noise": 0.9}, target_false_per_hour=2.0, validation_hours=0.8,
        validation_targets=20, sweep={}, expected={}, warnings=(warning,),
    )  # fmt: skip
    update_thresholds(tmp_path, calibration, DetectorConfig(thresholds=calibration.thresholds))
    with caplog.at_level("WARNING", logger="convert.export"), pytest.raises(ExportInputError, match="trainData.json not found"):
        export_model(tmp_path, tmp_path / "no-data", yamnet=StubYamnet())
    assert f"were calibrated with a warning: {warning}" in caplog.text


@pytest.mark.parametrize(
    "problem, match",
    [
        ("embedding_size", r"head-[0-9a-f]{16}\.keras takes 512-value embeddings"),
        ("label_count", r"outputs 2 classes but .*head\.json lists 3 labels"),
        ("missing_head", r"head\.json not found"),
        ("other_yamnet", r"head\.json: the head was trained on embeddings of YAMNet weights"),
    ],
)
def test_export_refuses_a_bad_head_naming_the_file_and_writes_nothing(tmp_path: Path, problem: str, match: str) -> None:
    pytest.importorskip("tensorflow")
    from convert.export import export_model

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    data_dir = tmp_path / "data"
    write_tiny_data(data_dir)
    if problem != "missing_head":
        model = keras_head(embedding_size=512 if problem == "embedding_size" else 1024)
        save_trained_head(
            model_dir, model, labels=LABELS, yamnet_sha256="b" * 64 if problem == "other_yamnet" else "a" * 64
        )
    if problem == "label_count":
        metadata = json.loads((model_dir / "head.json").read_text())
        metadata["labels"] = LABELS + ["extra"]
        (model_dir / "head.json").write_text(json.dumps(metadata))
    before = previous_model(model_dir)
    with pytest.raises(ConvertError, match=match):
        export_model(model_dir, data_dir, yamnet=StubYamnet())
    assert_untouched(model_dir, before)


def test_a_file_failing_its_check_leaves_the_previous_model_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("tensorflow")
    needs_runtime()
    if not (ASSET_YAMNET.is_file() and CLASS_MAP.is_file()):
        pytest.skip("YAMNet asset missing")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    import convert.export as export
    from convert.export import Candidate, ExportOptions

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    data_dir = tmp_path / "data"
    write_tiny_data(data_dir)
    save_trained_head(model_dir, keras_head(), labels=LABELS)
    before = previous_model(model_dir)
    # The converter "succeeds" with a YAMNet that lacks named outputs: the check must stop it.
    monkeypatch.setattr(
        export, "convert_yamnet", lambda *a, **k: [Candidate("dynamic_range", ASSET_YAMNET.read_bytes())]
    )
    with pytest.raises(ConvertError, match="yamnet.tflite.*failed its check"):
        export.export_model(
            model_dir,
            data_dir,
            yamnet=StubYamnet(),
            options=ExportOptions(quantization="dynamic_range", latency_rounds=1),
        )
    assert_untouched(model_dir, before)


@pytest.mark.slow
def test_full_export_writes_a_checked_model_that_replays_its_golden_decisions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("tensorflow")
    needs_runtime()
    if not (ASSET_YAMNET.is_file() and CLASS_MAP.is_file()):
        pytest.skip("YAMNet asset missing")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    import convert.export as export
    from convert.export import ExportOptions, clip_patches, read_clips
    from train.head import TrainConfig, fit_head
    from train.yamnet import load_yamnet

    yamnet = load_yamnet(source="tflite", weights_path=ASSET_YAMNET)
    data_dir = tmp_path / "data"
    write_tiny_data(data_dir)
    model_dir = tmp_path / "model"
    clips = read_clips(data_dir, "trainData.json", labels=LABELS)
    embeddings = [yamnet.embed_patches(clip_patches(c, data_dir, params=DEFAULT_PARAMS))[0] for c in clips]
    fit = fit_head(
        embeddings,
        [c.class_number for c in clips],
        num_labels=2,
        config=TrainConfig(hidden_units=32, epochs=5, validation_fraction=0.0, deterministic=False),
    )
    save_trained_head(model_dir, fit.model, labels=LABELS, yamnet_sha256=yamnet.weights_sha256)

    killed = model_dir / ".export-left-by-a-killed-run"  # SIGKILL or a power cut mid-export
    killed.mkdir()
    (killed / "candidate-full_int8.tflite").write_bytes(b"0" * 1000)
    options = ExportOptions(calibration_patches=8, latency_rounds=1, latency_patches=4)
    with caplog.at_level("WARNING", logger="convert.export"):
        result = export.export_model(model_dir, data_dir, yamnet=yamnet, options=options)
    assert not killed.exists()
    # No background class and no chosen thresholds: the export says what that means on a device.
    assert "has no background class and no chosen thresholds: on the device every class fires at 0.5" in caplog.text

    manifest = load_manifest(model_dir, check_models=True)
    assert manifest.labels == tuple(LABELS)
    assert manifest.thresholds == {"tone": 0.5, "noise": 0.5}  # no thresholds from training: defaults
    trials = manifest.evaluation["quantization"]["trials"]
    assert set(trials) == {"dynamic_range", "full_int8", "int8_weights"}  # auto tried them all
    assert all("latency_ms" in trial and "cosine" in trial for trial in trials.values())
    assert manifest.yamnet.quantization in trials and trials[manifest.yamnet.quantization]["accurate"]
    assert manifest.head.quantization == manifest.yamnet.quantization  # the head is quantized the same way
    assert set(manifest.yamnet.outputs) == {"embeddings", "scores", "log_mel"}
    assert MIN_YAMNET_BYTES <= (model_dir / "yamnet.tflite").stat().st_size <= 4.2e6
    assert (model_dir / "head.tflite").stat().st_size <= 0.6e6
    assert {"tensorflow", "numpy", "python", "oido"} <= set(manifest.versions)
    summary = manifest.evaluation["parity"]
    assert summary["embedding_cosine"]["mean"] >= 0.995
    assert summary["decisions_agree"]["agree"] == summary["clips"] == 4
    assert json.loads((model_dir / "parity.json").read_text())["per_clip"]
    assert "| embedding cosine" in (model_dir / "parity.md").read_text()
    # golden.json comes from this runtime and this code: the replay is a self-check, so it must
    # reproduce every row (the Pi environments compare other runtimes against model/golden.json)
    replay = check_golden(model_dir, data_dir)
    assert replay.same_runtime and replay.golden_runtime == summary["runtime"]
    assert (len(replay.clips), replay.decisions_equal) == (4, 4) and not replay.failures
    assert replay.largest_difference <= GOLDEN_ROUNDING, replay.describe()
    assert f"kept {manifest.yamnet.quantization}" in result.summary()

    # A second export whose head fails its check changes nothing of the first.
    before = snapshot(model_dir)
    options = ExportOptions(quantization="int8_weights", evaluate=False, latency_rounds=1, latency_patches=4)

    def failing_head_check(path: Path, **_: Any) -> Any:
        raise ConvertError(f"head.tflite (exported to {path}) failed its check: test; not written")

    monkeypatch.setattr(export, "check_head_file", failing_head_check)
    with pytest.raises(ConvertError, match="head.tflite"):
        export.export_model(model_dir, data_dir, yamnet=yamnet, options=options)
    assert snapshot(model_dir) == before
    assert not [p for p in os.listdir(model_dir) if p.startswith(".")]


# --- the command line ------------------------------------------------------------------------


def test_check_without_an_export_fails_naming_the_missing_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from convert.cli import main

    assert main(["check", "--model-dir", str(tmp_path), "--data-dir", str(tmp_path)]) == 1
    assert str(tmp_path / GOLDEN_NAME) in caplog.text


def test_unknown_quantization_is_a_usage_error() -> None:
    from convert.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--quantization", "float16"])
    assert exit_info.value.code == 2


def test_export_without_a_trained_head_exits_2_naming_head_json(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("tensorflow")
    from convert.cli import EXIT_USAGE, main

    assert main(["-q", "--model-dir", str(tmp_path), "--data-dir", str(tmp_path)]) == EXIT_USAGE
    assert str(tmp_path / "head.json") in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_export_without_prepared_data_exits_2_as_oido_train_does_before_yamnet_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("tensorflow")
    import train.yamnet
    from convert.cli import EXIT_USAGE, main
    from train.cli import EXIT_USAGE as TRAIN_EXIT_USAGE

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_trained_head(model_dir, keras_head(), labels=LABELS)
    before = snapshot(model_dir)

    def no_yamnet(**_: Any) -> Any:
        raise AssertionError("YAMNet loaded before the missing data was noticed")

    monkeypatch.setattr(train.yamnet, "load_yamnet", no_yamnet)
    status = main(["-q", "export", "--model-dir", str(model_dir), "--data-dir", str(tmp_path / "data")])
    assert status == EXIT_USAGE == TRAIN_EXIT_USAGE
    assert f"{tmp_path / 'data' / 'trainData.json'} not found" in caplog.text and "oido-train prepare" in caplog.text
    assert snapshot(model_dir) == before


def test_export_takes_the_assets_folder_as_oido_train_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """`oido-convert --assets DIR` finds YAMNet's weights and class map in DIR/yamnet first, and a
    DIR that does not exist stops the export naming it, before anything is written."""
    pytest.importorskip("tensorflow")
    if not ASSET_YAMNET.is_file():
        pytest.skip(f"needs the YAMNet weights at {ASSET_YAMNET}")
    from convert.cli import main
    from train.yamnet import load_yamnet

    monkeypatch.delenv("OIDO_YAMNET_TFLITE", raising=False)
    monkeypatch.delenv("OIDO_ASSETS", raising=False)
    assets = tmp_path / "my-assets"
    (assets / "yamnet").mkdir(parents=True)
    (assets / "yamnet" / ASSET_YAMNET.name).symlink_to(ASSET_YAMNET)
    shutil.copy(CLASS_MAP, assets / "yamnet" / CLASS_MAP.name)
    yamnet = load_yamnet(source="tflite", assets_dir=assets)
    assert yamnet.weights_path == assets / "yamnet" / ASSET_YAMNET.name
    assert find_class_map(None, assets_dir=assets) == assets / "yamnet" / CLASS_MAP.name

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    save_trained_head(model_dir, keras_head(2), labels=["beep", "other"])
    write_tiny_data(tmp_path / "data", labels=["beep", "other"])
    before = snapshot(model_dir)
    missing = tmp_path / "no-such-assets"
    arguments = ["-q", "--model-dir", str(model_dir), "--data-dir", str(tmp_path / "data"), "--assets", str(missing)]
    assert main(arguments) == 2  # a usage error, as oido-train's for the same folder
    assert str(missing) in caplog.text
    assert snapshot(model_dir) == before


def test_an_all_zero_embedding_is_no_match_for_a_real_one() -> None:
    from convert.export import cosine_stats
    from convert.parity import row_cosines

    real = np.array([[1.0, 2.0], [0.0, 0.0], [3.0, 4.0]])
    other = np.array([[2.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    assert row_cosines(real, other).tolist() == pytest.approx([1.0, 1.0, 0.0])  # same, both silent, one lost
    assert cosine_stats(real, other)["min"] == 0.0


def test_with_no_accurate_candidate_one_that_keeps_every_patch_beats_one_that_loses_some() -> None:
    from convert.export import Candidate, choose_candidate

    def candidate(name: str, mean: float, p1: float) -> Candidate:
        stats = {"mean": mean, "p1": p1, "min": p1}
        return Candidate(name, model_bytes=b"x", cosine=stats, cosine_builtin_kernels=dict(stats),
                         latency_ms={"median": 1.0, "p99": 1.0})  # fmt: skip

    lossy, even = candidate("full_int8", 0.994, 0.40), candidate("dynamic_range", 0.993, 0.99)
    best, reason = choose_candidate([lossy, even], cosine_target=0.995, cosine_floor=0.98)
    assert best is even and "1st percentile 0.9900" in reason


def test_check_of_a_golden_file_without_clips_fails_and_limit_must_check_one(tmp_path: Path) -> None:
    from convert.cli import main as convert_main

    needs_export()
    model_dir = copy_export(tmp_path / "model")
    with pytest.raises(SystemExit) as usage:
        convert_main(["check", "--model-dir", str(model_dir), "--data-dir", str(DATA_DIR), "--limit", "0"])
    assert usage.value.code == 2
    golden = read_golden(model_dir)
    golden["clips"] = []
    (model_dir / GOLDEN_NAME).write_text(json.dumps(golden))
    with pytest.raises(ManifestError, match="holds no clips, so it checks nothing"):
        check_golden(model_dir, DATA_DIR)

