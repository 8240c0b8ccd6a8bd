"""scripts/bench.py: the report's structure, and that every system produced figures (never speed gates).

The fast tests drive the benchmark's pieces with fake models (numpy only). The quick run
(`python scripts/bench.py --quick`: a few seconds of audio, one repeat) needs the ESC-50
assets beside the repository; it checks the JSON and markdown reports, not how fast anything is.
"""

from __future__ import annotations

import importlib.util
import json
import operator
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, Tuple

import numpy as np
import pytest

from edge.params import DEFAULT_PARAMS

REPO = Path(__file__).resolve().parent.parent
from fixtures.assets import ASSETS  # noqa: E402

MODEL_DIR = REPO / "model"
FIGURES = (
    "cpu_seconds_per_audio_hour",
    "real_time_factor",
    "cpu_ms_per_patch",
    "patch_latency_median_ms",
    "patch_latency_p99_ms",
    "patch_cpu_median_ms",
    "hot_patch_cpu_median_ms",
    "peak_rss_bytes",
    "startup_seconds",
    "model_bytes",
)


def _load(name: str) -> ModuleType:
    path = REPO / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"oido_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench")
bench_systems = _load("bench_systems")


class FakeYamnet:
    """Counts patches; the embedding is the patch's mean level repeated."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, patch: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        level = float(np.mean(np.abs(patch)))
        return np.full(DEFAULT_PARAMS.embedding_size, level, np.float32), np.zeros(DEFAULT_PARAMS.yamnet_classes, np.float32)


class FakeHead:
    """Two labels: 'loud' when the embedding level is above 0.1."""

    def run(self, embeddings: np.ndarray) -> np.ndarray:
        loud = (np.asarray(embeddings)[:, 0] > 0.1).astype(np.float32)
        return np.stack([1.0 - loud, loud], axis=1).astype(np.float32)


def _feed(system: Any, seconds: float, *, block_samples: int = 1600, level: float = 0.5) -> None:
    stream = np.full(int(seconds * DEFAULT_PARAMS.sample_rate_hz), level, np.float32)
    for start in range(0, len(stream), block_samples):
        system.push(stream[start : start + block_samples])


def test_rerun_window_runs_six_patches_per_decision_every_decision_hop() -> None:
    yamnet = FakeYamnet()
    system = bench_systems.RerunWindowSystem(yamnet, FakeHead(), labels=("quiet", "loud"), params=DEFAULT_PARAMS)
    _feed(system, 6.0)
    # windows end at 3.0, 4.5 and 6.0 s; a 3 s window is 6 patches with YAMNet's end padding
    assert system.recorder.decisions == 3
    assert yamnet.calls == 3 * DEFAULT_PARAMS.patches_in(DEFAULT_PARAMS.window_samples) == 18
    assert system.recorder.patches == 18
    assert system.recorder.first_decision_monotonic is not None


def test_rerun_window_does_more_yamnet_work_than_the_cached_pipeline_on_the_same_audio() -> None:
    from edge.pipeline import StreamingPipeline

    cached_yamnet, rerun_yamnet = FakeYamnet(), FakeYamnet()
    pipeline = bench_systems.PipelineSystem(
        StreamingPipeline(cached_yamnet, FakeHead(), labels=("quiet", "loud")), trained=True, clip_block_samples=1024
    )
    rerun = bench_systems.RerunWindowSystem(rerun_yamnet, FakeHead(), labels=("quiet", "loud"), params=DEFAULT_PARAMS)
    for system in (pipeline, rerun):
        _feed(system, 30.0)
    assert pipeline.recorder.decisions == rerun.recorder.decisions
    assert rerun_yamnet.calls >= 1.5 * cached_yamnet.calls


def test_rerun_window_clip_decision_is_the_argmax_of_the_mean_over_the_clip() -> None:
    system = bench_systems.RerunWindowSystem(FakeYamnet(), FakeHead(), labels=("quiet", "loud"), params=DEFAULT_PARAMS)
    clip = np.full(DEFAULT_PARAMS.clip_samples, 0.5, np.float32)
    assert system.classify_clip(clip) == "loud"
    assert system.classify_clip(np.zeros_like(clip)) == "quiet"


def test_latency_summary_gives_median_and_p99_in_milliseconds() -> None:
    summary = bench_systems.latency_summary([0.001] * 99 + [0.1])
    assert summary["median_ms"] == pytest.approx(1.0)
    assert 1.0 < summary["p99_ms"] <= 100.0
    assert summary["count"] == 100
    assert bench_systems.latency_summary([])["median_ms"] is None


def test_stand_in_head_gives_probabilities() -> None:
    head = bench_systems.StandInHead(num_labels=3, embedding_size=DEFAULT_PARAMS.embedding_size)
    probabilities = head.run(np.ones((2, DEFAULT_PARAMS.embedding_size), np.float32))
    assert probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_float_export_is_found_by_file_name_or_manifest(tmp_path: Path) -> None:
    assert bench.find_float_export(tmp_path, None) == (None, None)
    (tmp_path / "yamnet_float.tflite").write_bytes(b"x")
    assert bench.find_float_export(tmp_path, None) == (tmp_path / "yamnet_float.tflite", None)
    (tmp_path / "y32.tflite").write_bytes(b"x")
    manifest = {"variants": {"yamnet": {"file": "y32.tflite", "quantization": "float32"}}}
    assert bench.find_float_export(tmp_path, manifest)[0] == tmp_path / "y32.tflite"


def test_quantization_descriptions_map_to_the_measured_arithmetic() -> None:
    assert bench._quantization_kind("float32") == "float32"
    assert bench._quantization_kind("dynamic_range_int8") == "dynamic_int8"
    assert bench._quantization_kind("int8 weights, float activations") == "dynamic_int8"
    assert bench._quantization_kind("full_int8") == "int8"
    assert bench._quantization_kind("int8_weights") == "float32"  # dequantized at load time


def test_peak_rates_take_the_best_measurement_of_each_kind() -> None:
    limits = {
        "numpy": {"float32_matmul": {"gmacs_per_second": 30.0}, "int8_matmul": {"gmacs_per_second": 0.5}},
        "tflite_fc": {
            "ai-edge-litert": {"fc": {"float32": {"gmacs_per_second": 40.0}, "int8": {"gmacs_per_second": 45.0}}},
            "tflite-runtime": {"fc": {"float32": {"gmacs_per_second": 15.0}, "int8": {"unavailable": "x"}}},
        },
    }
    peak = bench.peak_rates(limits)
    assert peak["float32"]["macs_per_second"] == pytest.approx(40e9)
    assert peak["int8"]["macs_per_second"] == pytest.approx(45e9)
    assert peak["overall"]["kind"] == "int8"


def test_stream_is_the_clips_in_a_seeded_order() -> None:
    clips = [bench.Clip(f"c{i}", "x", np.full(10, i, np.float32)) for i in range(5)]
    first = bench.build_stream(clips, max_seconds=None, params=DEFAULT_PARAMS)
    again = bench.build_stream(clips, max_seconds=None, params=DEFAULT_PARAMS)
    np.testing.assert_array_equal(first, again)
    assert sorted(set(first.tolist())) == [0, 1, 2, 3, 4] and len(first) == 50


# --------------------------------------------------------------------------- the quick run


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> Tuple[Dict[str, Any], str]:
    if not (ASSETS / "esc50" / "meta" / "esc50.csv").is_file():
        pytest.skip(f"ESC-50 assets not found at {ASSETS}")
    reports = tmp_path_factory.mktemp("bench")
    assert bench.main(["--quick", "--quiet", "--reports-dir", str(reports), "--model-dir", str(MODEL_DIR),
                       "--assets-dir", str(ASSETS)]) == 0
    return json.loads((reports / "bench.json").read_text()), (reports / "bench.md").read_text()


def test_quick_report_names_machine_config_audio_limits_and_checks(quick_report: Tuple[Dict[str, Any], str]) -> None:
    report, _ = quick_report
    assert report["format"] == bench.REPORT_FORMAT
    assert report["machine"]["cpu_model"] and report["machine"]["cores"] >= 1 and report["machine"]["python"]
    assert report["config"]["quick"] is True and report["config"]["repeats"] == 1
    assert 0 < report["audio"]["stream_seconds"] <= bench.QUICK_STREAM_SECONDS
    assert report["limits"]["yamnet_macs_per_patch"] == bench.YAMNET_MACS_PER_PATCH
    assert report["limits"]["numpy"]["float32_matmul"]["gmacs_per_second"] > 0
    assert len(report["checks"]) == len(CHECKS)


# Each check of the report: a piece of its claim, the systems it compares, and how its value meets its target.
CHECKS = (
    ("uses <= 0.01 of one core", ("oido_48k",), operator.le),
    ("re-running YAMNet over each window costs >= 1.5x", ("oido", "rerun_window"), operator.ge),
    ("MediaPipe's AudioClassifier on the same hop costs more", ("oido", "mediapipe"), operator.gt),
    ("faster per patch than Oído float under ai-edge-litert", ("oido", "oido_float"), operator.ge),
    ("faster per patch than Oído float under tflite-runtime", ("oido_tflite214", "oido_float_tflite214"), operator.ge),
)


def test_each_check_holds_exactly_when_its_value_meets_its_target(quick_report: Tuple[Dict[str, Any], str]) -> None:
    report, _ = quick_report
    measured = {system["name"] for system in report["systems"] if "summary" in system}
    for check, (claim, systems, meets) in zip(report["checks"], CHECKS):
        assert claim in check["claim"], (claim, check["claim"])
        if set(systems) <= measured:
            assert isinstance(check["passed"], bool) and check["value"] > 0, check
            assert check["passed"] == meets(check["value"], check["target"]), check
        else:  # a system it compares is not measured here: no verdict, and the note says why
            assert check["passed"] is None and "value" not in check and check["note"].startswith("unavailable: "), check


def expected_available(report: Dict[str, Any]) -> Dict[str, bool]:
    """Which systems must have run here, from what this machine has: the exported model, the YAMNet
    assets, TensorFlow with the Keras head, mediapipe, the tflite-runtime 2.14 venv (.venv-legacy)."""
    model = (MODEL_DIR / "manifest.json").is_file()
    asset = (ASSETS / "yamnet" / bench.ASSET_YAMNET).is_file()
    tensorflow = importlib.util.find_spec("tensorflow") is not None and model and bench.keras_head_path(MODEL_DIR).is_file()
    legacy = (REPO / ".venv-legacy" / "bin" / "python").is_file()
    mediapipe = (importlib.util.find_spec("mediapipe") is not None or (REPO / ".venv-mediapipe" / "bin" / "python").is_file()) \
        and (ASSETS / "yamnet" / bench.MEDIAPIPE_MODEL).is_file()
    # The float pair comes from convert's float export or TensorFlow; the dynamic-range YAMNet from TensorFlow,
    # unless the exported YAMNet is already dynamic-range (then it is oido itself).
    own_is_dynamic = bench._quantization_kind(report["config"]["model_quantization"] or "dynamic") == "dynamic_int8"
    floating = model and (tensorflow or bench.find_float_export(MODEL_DIR, None)[0] is not None)
    dynamic = tensorflow and not own_is_dynamic
    return {
        "oido": model, "oido_48k": model, "rerun_window": model, "mediapipe": mediapipe,
        "oido_float": floating, "oido_tflite214": model and legacy, "oido_float_tflite214": floating and legacy,
        "oido_dynamic": dynamic, "oido_dynamic_tflite214": dynamic and legacy,
        "asset_yamnet": asset, "asset_yamnet_tflite214": asset and legacy, "tf_reference": tensorflow,
    }


def test_every_system_installed_here_has_figures_and_the_others_say_why_not(
    quick_report: Tuple[Dict[str, Any], str]
) -> None:
    report, _ = quick_report
    expected = expected_available(report)
    assert sorted(system["name"] for system in report["systems"]) == sorted(expected)
    assert {system["name"]: "summary" in system for system in report["systems"]} == expected, \
        {system["name"]: system.get("unavailable") for system in report["systems"]}
    for system in report["systems"]:
        if "unavailable" in system:
            assert isinstance(system["unavailable"], str) and system["unavailable"], system["name"]
            continue
        summary = system["summary"]
        for figure in FIGURES:
            assert summary[figure] is not None and summary[figure] > 0, (system["name"], figure)
        assert summary["patches"] > 0 and summary["decisions"] > 0, system["name"]
        assert "accuracy" in system["accuracy"] or "unavailable" in system["accuracy"], system["name"]


def test_the_asset_yamnet_runs_without_a_trained_model(quick_report: Tuple[Dict[str, Any], str]) -> None:
    report, _ = quick_report
    asset = next(system for system in report["systems"] if system["name"] == "asset_yamnet")
    assert "summary" in asset, asset.get("unavailable")


def test_oido_and_the_rerun_way_run_when_a_model_is_exported(quick_report: Tuple[Dict[str, Any], str]) -> None:
    report, _ = quick_report
    if not (REPO / "model" / "manifest.json").is_file():
        pytest.skip("no exported model (model/manifest.json)")
    systems = {system["name"]: system for system in report["systems"]}
    for name in ("oido", "rerun_window"):
        assert "summary" in systems[name], systems[name].get("unavailable")
        assert "accuracy" in systems[name]["accuracy"]
    assert systems["rerun_window"]["ratio_to_oido"]["cpu_seconds_per_audio_hour"] is not None


def test_the_48k_microphone_stream_is_resampled_in_stream_and_checked_against_rtf(
    quick_report: Tuple[Dict[str, Any], str]
) -> None:
    report, markdown = quick_report
    if not (REPO / "model" / "manifest.json").is_file():
        pytest.skip("no exported model (model/manifest.json)")
    systems = {system["name"]: system for system in report["systems"]}
    microphone, oido = systems["oido_48k"], systems["oido"]
    assert "summary" in microphone, microphone.get("unavailable")
    # The same audio at three times the rate, resampled by the pipeline: the same patches and decisions.
    assert microphone["summary"]["patches"] == oido["summary"]["patches"]
    assert microphone["summary"]["decisions"] == oido["summary"]["decisions"]
    assert microphone["accuracy"]["clips"] == oido["accuracy"]["clips"]
    (check,) = [c for c in report["checks"] if c.get("kind") == "at_most"]
    assert check["target"] == bench.TARGET_REAL_TIME_FACTOR
    assert check["value"] == pytest.approx(microphone["summary"]["real_time_factor"])
    assert "(target <= 0.01)" in markdown


def test_mediapipe_runs_when_installed(quick_report: Tuple[Dict[str, Any], str]) -> None:
    if importlib.util.find_spec("mediapipe") is None:  # importing it here would pull in TensorFlow
        pytest.skip("mediapipe not installed (pip install -e '.[bench]')")
    report, _ = quick_report
    mediapipe = next(system for system in report["systems"] if system["name"] == "mediapipe")
    assert "summary" in mediapipe, mediapipe.get("unavailable")
    assert mediapipe["accuracy"] == {"unavailable": "not trained on our classes"}


def test_markdown_report_has_date_machine_table_and_every_system(quick_report: Tuple[Dict[str, Any], str]) -> None:
    report, markdown = quick_report
    assert report["created_utc"] in markdown
    assert report["machine"]["cpu_model"] in markdown
    assert "| system |" in markdown
    for system in report["systems"]:
        assert f"| {system['name']} |" in markdown
        if "unavailable" in system:
            assert "unavailable: " in markdown
