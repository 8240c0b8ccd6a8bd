"""Benchmark the Oído edge pipeline against the other ways of running YAMNet, in one run.

    python scripts/bench.py                 # full run (< 10 min on 2 cores): reports/bench.json, reports/bench.md
    python scripts/bench.py --quick         # a few seconds of audio, one repeat (CI)
    python scripts/bench.py --systems oido,rerun_window --repeats 5

Every system gets the same audio: the fold-5 clips (from data/, else the ESC-50 assets)
and a long replay stream made of them, fed in microphone-sized blocks. The systems:

  oido                 the edge pipeline: each 0.975 s patch runs YAMNet + head once (every 0.48 s),
                       3 s window decisions every 1.5 s from cached patch probabilities (ai-edge-litert)
  oido_48k             the same fed the stream at 48 kHz, as most USB microphones deliver it, resampled
                       to 16 kHz in the stream by the pipeline (the Pi's real cost: issue #4's RTF <= 0.01)
  rerun_window         the tutorial's streaming: every 1.5 s, YAMNet + head over the whole 3 s window
                       (6 patches with YAMNet's end padding): same models, same runtime
  mediapipe            MediaPipe AudioClassifier, AUDIO_STREAM mode, Google's int8 YAMNet, fed the
                       latest 0.975 s every patch hop (as Google's raspberry-pi example does)
  oido_float           the Oído models in float32: convert's float export if it wrote one, else a float
                       conversion of the same TF models made here (cached), ai-edge-litert
  oido_dynamic         convert's dynamic-range YAMNet candidate (int8 arithmetic), when convert kept another
  oido_tflite214       the Oído models under tflite-runtime 2.14 (numpy<2 venv), and
  oido_float_tflite214, oido_dynamic_tflite214  the variants there
  asset_yamnet         the published-weights file yamnet_public_int8w.tflite + the Oído head, ai-edge-litert
  asset_yamnet_tflite214  the same under tflite-runtime 2.14
  tf_reference         the workstation's float reference: TensorFlow YAMNet (train.yamnet) + the Keras head

Each system runs in its own process pinned to one core (scripts/bench_systems.py) so
process CPU time and peak RSS are its own; systems are interleaved round-robin and
repeated (--repeats), and the report gives medians and each system's ratio to Oído
(ratios hold on a shared machine, absolute times do not). The physical limit, this
core's float32 and int8 multiply-add rates, comes from scripts/bench_limits.py.
Whatever cannot run here is reported as "unavailable: <reason>".
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = Path(__file__).resolve().parent
for _path in (REPO_ROOT, SCRIPTS):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from bench_limits import YAMNET_MACS_PER_PATCH  # noqa: E402
from edge.params import DEFAULT_PARAMS, Params  # noqa: E402

logger = logging.getLogger("bench")

FloatArray = npt.NDArray[np.float32]

REPORT_FORMAT = "oido-bench/1"
SECONDS_PER_HOUR = 3600.0
DEFAULT_CLASSES = ("crying_baby", "clock_alarm", "toilet_flush", "water_drops")
"""The default task's ESC-50 categories, used when no trained model names the labels."""
TEST_FOLD = 5
"""The held-out ESC-50 fold the benchmark audio comes from."""
STREAM_SEED = 5
"""Seed of the order the clips are replayed in."""
DEFAULT_BLOCK_SECONDS = 0.1
"""Audio handed over per push, like a microphone callback."""
DEFAULT_STREAM_SECONDS = 300.0
"""Replay stream length: five minutes of the shuffled fold-5 clips keeps the default run under
10 minutes on 2 cores (0 = every clip once, 520 s with the default classes)."""
QUICK_STREAM_SECONDS = 6.0
"""--quick: stream length (two window decisions after the first 3 s)."""
QUICK_CLIPS_PER_CLASS = 1
"""--quick: fold-5 clips per class for the accuracy figure."""
WORKER_TIMEOUT_SECONDS = 900.0
"""Longest one system's process may run before it is reported as failed."""
LIMIT_REPEATS = 15
"""Timed calls per multiply-add rate measurement (median)."""
QUICK_LIMIT_REPEATS = 3
TARGET_RERUN_RATIO = 1.5
"""The re-run-the-window way must cost at least this many times Oído's CPU per hour."""
TARGET_QUANT_SPEEDUP = 2.0
"""Oído quantized should be this many times faster per patch than Oído float."""
TARGET_REAL_TIME_FACTOR = 0.01
"""Oído with 48 kHz input must use at most this much of one core (an hour of audio in 36 CPU s)."""
MICROPHONE_RATE_HZ = 48000
"""Rate the oido_48k system gets its audio at (what most USB microphones record)."""
MEDIAPIPE_MODEL = "google_yamnet_classification_int8.tflite"
ASSET_YAMNET = "yamnet_public_int8w.tflite"
MICROPHONE_STREAM_FILE = "stream48k.npy"

VARIANT_SYSTEMS = ("oido_float", "oido_float_tflite214", "oido_dynamic", "oido_dynamic_tflite214")
"""Systems that run conversions of the Oído models other than the exported one."""

SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_NUM_INTRAOP_THREADS": "1",
    "TF_NUM_INTEROP_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "GLOG_minloglevel": "2",
}
"""Environment of every measurement process: one thread for BLAS/OpenMP/TF, quiet logs."""


# --------------------------------------------------------------------------- audio


@dataclass
class Clip:
    name: str
    label: str
    waveform: FloatArray
    """float32 [n] in [-1, 1] at 16 kHz."""


def _read_16k(path: Path, *, sample_rate_hz: int) -> FloatArray:
    """The project's own reader (edge.audio): mono float32 at sample_rate_hz, whatever the file's rate."""
    from edge.audio import read_audio

    return read_audio(path, target_rate_hz=sample_rate_hz)


def load_fold5_clips(
    *,
    data_dir: Path,
    assets_dir: Path,
    labels: Sequence[str],
    background_label: Optional[str],
    params: Params,
) -> Tuple[List[Clip], str]:
    """The fold-5 clips of `labels`: from data/testData.json when prepared, else the ESC-50 assets.

    Returns (clips, source description). Raises FileNotFoundError naming what is missing.
    """
    test_json = data_dir / "testData.json"
    if test_json.is_file():
        entries = json.loads(test_json.read_text())
        clips = [
            Clip(entry["fileName"], entry["className"], _read_16k(data_dir / "audio" / entry["fileName"], sample_rate_hz=params.sample_rate_hz))
            for entry in entries
            if int(entry.get("fold", TEST_FOLD)) == TEST_FOLD and entry["className"] in labels
        ]
        if clips:
            return clips, f"{test_json} (fold {TEST_FOLD})"
    esc50 = assets_dir / "esc50"
    meta = esc50 / "meta" / "esc50.csv"
    if not meta.is_file():
        raise FileNotFoundError(
            f"no benchmark audio: neither {test_json} (run oido-train prepare) nor {meta} (the ESC-50 assets) exists"
        )
    import csv

    clips = []
    with meta.open(newline="") as handle:
        for row in csv.DictReader(handle):
            if int(row["fold"]) == TEST_FOLD and row["category"] in labels and (esc50 / "audio" / row["filename"]).is_file():
                clips.append(
                    Clip(row["filename"], row["category"], _read_16k(esc50 / "audio" / row["filename"], sample_rate_hz=params.sample_rate_hz))
                )
    if background_label and background_label in labels:
        for path in sorted((esc50 / "esc10-16k").glob(f"{TEST_FOLD}-*.flac")):
            clips.append(Clip(path.name, background_label, _read_16k(path, sample_rate_hz=params.sample_rate_hz)))
    if not clips:
        raise FileNotFoundError(f"no fold-{TEST_FOLD} clip of {list(labels)} in {esc50}")
    return clips, f"{esc50} (fold {TEST_FOLD}, resampled to {params.sample_rate_hz} Hz)"


def build_stream(clips: Sequence[Clip], *, max_seconds: Optional[float], params: Params) -> FloatArray:
    """The replay stream: every clip once, in a seeded shuffled order, cut to max_seconds."""
    order = np.random.default_rng(STREAM_SEED).permutation(len(clips))
    stream = np.concatenate([clips[i].waveform for i in order]).astype(np.float32)
    if max_seconds is not None:
        stream = stream[: int(round(max_seconds * params.sample_rate_hz))]
    return stream


def write_workdir(workdir: Path, stream: FloatArray, clips: Sequence[Clip], *, params: Params = DEFAULT_PARAMS) -> None:
    """stream.npy, the same at MICROPHONE_RATE_HZ (stream48k.npy), clips.npy (all clips end to end)
    and clips.json (name, class, offset, samples)."""
    from edge.resample import resample

    np.save(workdir / "stream.npy", stream)
    np.save(workdir / MICROPHONE_STREAM_FILE, resample(stream, params.sample_rate_hz, MICROPHONE_RATE_HZ))
    offsets = np.cumsum([0] + [len(clip.waveform) for clip in clips])
    np.save(workdir / "clips.npy", np.concatenate([clip.waveform for clip in clips]).astype(np.float32))
    info = [
        {"name": clip.name, "class": clip.label, "offset": int(offsets[i]), "samples": int(len(clip.waveform))}
        for i, clip in enumerate(clips)
    ]
    (workdir / "clips.json").write_text(json.dumps(info))


# --------------------------------------------------------------------------- machine


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> List[str]:
    """The SIMD flags that decide float vs int8 speed (AVX2/FMA, AVX-512, VNNI; NEON/dotprod on ARM)."""
    interesting = ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx", "asimd", "asimddp", "neon")
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("flags", "features")):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in interesting if flag in present]
    except OSError:
        pass
    return []


def _package_version(name: str) -> Optional[str]:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def machine_info() -> Dict[str, Any]:
    try:
        memory = next(
            int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
        )
    except (OSError, StopIteration):
        memory = None
    return {
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cores": os.cpu_count(),
        "memory_bytes": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": {
            name: _package_version(name)
            for name in ("numpy", "ai-edge-litert", "tensorflow", "tensorflow-cpu", "keras", "mediapipe")
        },
    }


def other_python_versions(python: Path) -> Dict[str, Optional[str]]:
    """python, numpy and tflite-runtime versions of another interpreter (the legacy venv)."""
    code = (
        "import json, platform\nfrom importlib.metadata import version\nout={'python': platform.python_version()}\n"
        "for n in ('numpy','tflite-runtime','ai-edge-litert','mediapipe'):\n"
        "    try: out[n]=version(n)\n    except Exception: pass\nprint(json.dumps(out))"
    )
    try:
        completed = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True)
        return json.loads(completed.stdout)
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError):
        return {}


# --------------------------------------------------------------------------- subprocesses


def measurement_env() -> Dict[str, str]:
    env = dict(os.environ)
    env.update(SINGLE_THREAD_ENV)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def _pin(cpu: Optional[int]) -> Any:
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_json_subprocess(
    command: List[str], *, out: Path, cpu: Optional[int], timeout: float, log_path: Path
) -> Tuple[Optional[Dict[str, Any]], str]:
    """Run a measurement process that writes JSON to `out`; (result or None, error reason)."""
    out.unlink(missing_ok=True)
    with log_path.open("w") as log:
        try:
            completed = subprocess.run(
                command, stdout=log, stderr=subprocess.STDOUT, env=measurement_env(), cwd=str(REPO_ROOT),
                preexec_fn=_pin(cpu), timeout=timeout,
            )
        except subprocess.TimeoutExpired:
            return None, f"timed out after {timeout:.0f} s"
        except OSError as error:
            return None, f"could not start {command[0]}: {error}"
    result = json.loads(out.read_text()) if out.is_file() else None
    if result is not None and "error" not in result and completed.returncode == 0:
        return result, ""
    reason = (result or {}).get("error") or _last_line(log_path) or f"exit code {completed.returncode}"
    return None, reason


def _last_line(path: Path) -> str:
    lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or [""])[-1][:300]


# --------------------------------------------------------------------------- limits


def measure_limits(
    *, workdir: Path, cache_dir: Path, legacy_python: Optional[Path], cpu: Optional[int], quick: bool
) -> Dict[str, Any]:
    """Single-core multiply-add rates: numpy float32/int8, TF-Lite FC under both runtimes."""
    repeats = str(QUICK_LIMIT_REPEATS if quick else LIMIT_REPEATS)
    script = str(SCRIPTS / "bench_limits.py")
    limits: Dict[str, Any] = {
        "yamnet_macs_per_patch": YAMNET_MACS_PER_PATCH,
        "yamnet_macs_per_audio_second": YAMNET_MACS_PER_PATCH * DEFAULT_PARAMS.sample_rate_hz / DEFAULT_PARAMS.hop_samples,
    }
    result, reason = run_json_subprocess(
        [sys.executable, script, "numpy", "--out", str(workdir / "limits_numpy.json"), "--repeats", repeats],
        out=workdir / "limits_numpy.json", cpu=cpu, timeout=WORKER_TIMEOUT_SECONDS, log_path=workdir / "limits_numpy.log",
    )
    limits["numpy"] = result if result is not None else {"unavailable": reason}
    fc_dir = cache_dir / "fc"
    result, reason = run_json_subprocess(
        [sys.executable, script, "build-fc", str(fc_dir), "--out", str(workdir / "limits_build.json")],
        out=workdir / "limits_build.json", cpu=None, timeout=WORKER_TIMEOUT_SECONDS, log_path=workdir / "limits_build.log",
    )
    if result is None:
        limits["tflite_fc"] = {"unavailable": f"could not build the FC probes (needs TensorFlow): {reason}"}
        limits["peak"] = peak_rates(limits)
        return limits
    runtimes: Dict[str, Any] = {}
    interpreters = [("ai-edge-litert", Path(sys.executable))]
    if legacy_python is not None:
        interpreters.append(("tflite-runtime", legacy_python))
    for label, python in interpreters:
        out = workdir / f"limits_fc_{label}.json"
        result, reason = run_json_subprocess(
            [str(python), script, "tflite-fc", str(fc_dir), "--out", str(out), "--repeats", repeats],
            out=out, cpu=cpu, timeout=WORKER_TIMEOUT_SECONDS, log_path=workdir / f"limits_fc_{label}.log",
        )
        runtimes[label] = result if result is not None else {"unavailable": reason}
    if legacy_python is None:
        runtimes["tflite-runtime"] = {"unavailable": "no tflite-runtime 2.14 venv (scripts/legacy_env.sh creates .venv-legacy)"}
    limits["tflite_fc"] = runtimes
    limits["peak"] = peak_rates(limits)
    return limits


def peak_rates(limits: Dict[str, Any]) -> Dict[str, Any]:
    """Best measured single-core rate per arithmetic kind, and overall."""
    best: Dict[str, Tuple[float, str]] = {}

    def offer(kind: str, rate: Optional[float], where: str) -> None:
        if rate and (kind not in best or rate * 1e9 > best[kind][0]):
            best[kind] = (rate * 1e9, where)

    numpy_rates = limits.get("numpy", {})
    offer("float32", numpy_rates.get("float32_matmul", {}).get("gmacs_per_second"), "numpy float32 matmul (BLAS)")
    offer("int8", numpy_rates.get("int8_matmul", {}).get("gmacs_per_second"), "numpy int8 matmul")
    for runtime, measured in limits.get("tflite_fc", {}).items():
        if not isinstance(measured, dict):
            continue
        for kind, rate in measured.get("fc", {}).items():
            offer(kind, rate.get("gmacs_per_second"), f"{runtime} FULLY_CONNECTED {kind}")
    peak: Dict[str, Any] = {kind: {"macs_per_second": value, "measured_by": where} for kind, (value, where) in best.items()}
    if best:
        kind, (value, where) = max(best.items(), key=lambda item: item[1][0])
        peak["overall"] = {"macs_per_second": value, "measured_by": where, "kind": kind}
    return peak


# --------------------------------------------------------------------------- systems


@dataclass
class SystemSpec:
    name: str
    title: str
    runtime: str
    python: Optional[Path]
    spec: Dict[str, Any] = field(default_factory=dict)
    model_files: List[Path] = field(default_factory=list)
    unavailable: Optional[str] = None
    arithmetic: str = "float32"
    """Which measured peak the system's MAC rate compares to: float32, dynamic_int8 or int8."""


def _quantization_kind(description: Optional[str]) -> str:
    text = (description or "").lower()
    if "int8_weights" in text or "dequantized" in text:
        return "float32"  # int8 on disk, dequantized at load: float arithmetic
    if "dynamic" in text or "weight" in text or "hybrid" in text:
        return "dynamic_int8"
    if "int8" in text or "integer" in text or "full" in text:
        return "int8"
    return "float32"


def find_float_export(model_dir: Path, manifest: Optional[Dict[str, Any]]) -> Tuple[Optional[Path], Optional[Path]]:
    """(float YAMNet, float head or None) if the converter wrote a float export, else (None, None).

    Looks at manifest entries that name a float file, then at model/*float*.tflite.
    """
    yamnet: Optional[Path] = None
    head: Optional[Path] = None
    if manifest:
        for key, entry in manifest.items():
            if not isinstance(entry, dict):
                continue
            candidates = [entry] + [value for value in entry.values() if isinstance(value, dict)]
            for candidate in candidates:
                file_name = candidate.get("file")
                if not isinstance(file_name, str) or "float" not in (file_name + key + str(candidate.get("quantization", ""))).lower():
                    continue
                path = model_dir / file_name
                if path.is_file() and path.suffix == ".tflite":
                    if "head" in file_name.lower() or "head" in key.lower():
                        head = head or path
                    elif path.name not in ("yamnet.tflite", "head.tflite"):
                        yamnet = yamnet or path
    for path in sorted(model_dir.glob("*.tflite")):
        name = path.name.lower()
        if "float" in name or "f32" in name:
            if "head" in name:
                head = head or path
            elif "yamnet" in name:
                yamnet = yamnet or path
    return yamnet, head


@dataclass
class Variants:
    """Other conversions of the Oído models: a float export, a dynamic-range YAMNet."""

    float_yamnet: Optional[Path] = None
    float_head: Optional[Path] = None
    float_source: str = ""
    """Where the float files come from, or why there are none."""
    dynamic_yamnet: Optional[Path] = None
    dynamic_source: str = ""


def keras_head_path(model_dir: Path) -> Path:
    """The Keras head model_dir/head.json names (train.head.head_model_path; no TensorFlow needed)."""
    from train.head import HeadError, head_model_path

    try:
        return head_model_path(model_dir)
    except HeadError:  # no (valid) head.json: the callers report the model as missing
        return model_dir / "head.keras"


def ensure_variants(
    *, model_dir: Path, manifest: Optional[Dict[str, Any]], cache_dir: Path, workdir: Path
) -> Variants:
    """Find convert's float export, else convert the same TF models once (cached by their hashes).

    The float32 pair is what "quantized vs float" compares against; the dynamic-range YAMNet
    (int8 arithmetic) shows what that quantization would give when convert kept another one.
    """
    variants = Variants()
    yamnet, head = find_float_export(model_dir, manifest)
    if yamnet is not None:
        variants.float_yamnet, variants.float_head, variants.float_source = yamnet, head, f"convert's float export {yamnet.name}"
    if not manifest:
        reason = "no trained Oído model (model/manifest.json missing)"
        variants.float_source = variants.float_source or reason
        variants.dynamic_source = reason
        return variants
    if _quantization_kind(manifest.get("yamnet", {}).get("quantization")) == "dynamic_int8":
        variants.dynamic_source = "Oído's own YAMNet is dynamic-range: see oido"
    head_keras = keras_head_path(model_dir)
    if not head_keras.is_file():
        reason = f"no {head_keras} to convert"
        variants.float_source = variants.float_source or f"no float export in {model_dir} and {reason}"
        variants.dynamic_source = variants.dynamic_source or reason
        return variants
    if variants.float_yamnet is not None and variants.dynamic_source:
        return variants
    import hashlib

    digest = hashlib.sha256(head_keras.read_bytes())
    digest.update(str(manifest.get("yamnet", {}).get("source_weights_sha256")).encode())
    directory = cache_dir / "variants" / digest.hexdigest()[:16]
    out = workdir / "variants.json"
    logger.info("converting float / dynamic-range variants of the Oído models into %s", directory)
    result, reason = run_json_subprocess(
        [sys.executable, str(SCRIPTS / "bench_limits.py"), "variants", str(directory), "--model-dir", str(model_dir),
         "--out", str(out)],
        out=out, cpu=None, timeout=WORKER_TIMEOUT_SECONDS, log_path=workdir / "variants.log",
    )
    models = (result or {}).get("models", {})
    errors = (result or {}).get("errors", {})
    if variants.float_yamnet is None:
        if "yamnet_float" in models and "head_float" in models:
            variants.float_yamnet, variants.float_head = Path(models["yamnet_float"]), Path(models["head_float"])
            variants.float_source = "float32 conversion of the same TF models, made by the benchmark"
        else:
            variants.float_source = f"no float export in {model_dir}, and converting one failed: {reason or errors}"
    if not variants.dynamic_source:
        if "yamnet_dynamic_range" in models:
            variants.dynamic_yamnet = Path(models["yamnet_dynamic_range"])
            variants.dynamic_source = "convert's dynamic_range candidate, converted by the benchmark"
        else:
            variants.dynamic_source = f"converting the dynamic-range candidate failed: {errors.get('yamnet_dynamic_range') or reason}"
    return variants


def plan_systems(
    *,
    model_dir: Path,
    assets_dir: Path,
    variants: Variants,
    legacy_python: Optional[Path],
    mediapipe_python: Optional[Path],
    mediapipe_reason: str,
    legacy_reason: str,
    common: Dict[str, Any],
) -> List[SystemSpec]:
    """Every system with its spec, or the reason it cannot run here."""
    manifest_path = model_dir / "manifest.json"
    manifest: Optional[Dict[str, Any]] = None
    model_reason = ""
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            model_reason = f"{manifest_path} unreadable ({error})"
    else:
        model_reason = f"no trained Oído model: {manifest_path} missing (run oido-train all and oido-convert)"
    yamnet_file = model_dir / (manifest or {}).get("yamnet", {}).get("file", "yamnet.tflite")
    head_file = model_dir / (manifest or {}).get("head", {}).get("file", "head.tflite")
    labels = list((manifest or {}).get("labels") or DEFAULT_CLASSES)
    params = (manifest or {}).get("params") or DEFAULT_PARAMS.to_dict()
    quant = _quantization_kind((manifest or {}).get("yamnet", {}).get("quantization", "dynamic"))
    python = Path(sys.executable)
    base = dict(common, labels=labels, params=params)

    def spec(name: str, **extra: Any) -> Dict[str, Any]:
        return dict(base, name=name, **extra)

    systems: List[SystemSpec] = []
    oido_files = [yamnet_file, head_file]
    systems.append(
        SystemSpec("oido", "Oído pipeline (patch cache)", "ai-edge-litert", python,
                   spec("oido", kind="pipeline", model_dir=str(model_dir)), oido_files, model_reason or None, quant)
    )
    block_samples = int(common["block_samples"])
    systems.append(
        SystemSpec("oido_48k", f"Oído pipeline, {MICROPHONE_RATE_HZ // 1000} kHz input resampled in stream",
                   "ai-edge-litert", python,
                   spec("oido_48k", kind="pipeline", model_dir=str(model_dir), input_rate_hz=MICROPHONE_RATE_HZ,
                        stream_file=MICROPHONE_STREAM_FILE,
                        stream_block_samples=block_samples * MICROPHONE_RATE_HZ // int(common["sample_rate_hz"])),
                   oido_files, model_reason or None, quant)
    )
    systems.append(
        SystemSpec("rerun_window", "tutorial: re-run YAMNet over each 3 s window", "ai-edge-litert", python,
                   spec("rerun_window", kind="rerun", yamnet=str(yamnet_file), head=str(head_file)), oido_files,
                   model_reason or None, quant)
    )
    mediapipe_model = assets_dir / "yamnet" / MEDIAPIPE_MODEL
    systems.append(
        SystemSpec("mediapipe", "MediaPipe AudioClassifier (AUDIO_STREAM, Google int8 YAMNet)", "mediapipe", mediapipe_python,
                   spec("mediapipe", kind="mediapipe", model=str(mediapipe_model)), [mediapipe_model],
                   mediapipe_reason or (None if mediapipe_model.is_file() else f"{mediapipe_model} missing"), "int8")
    )
    float_yamnet, float_head, float_source = variants.float_yamnet, variants.float_head, variants.float_source
    float_reason = model_reason or (None if float_yamnet else float_source)
    float_head = float_head or head_file
    float_spec = dict(kind="pipeline", yamnet=str(float_yamnet), head=str(float_head))
    float_title = "Oído pipeline, float models" + (f" ({float_source})" if float_yamnet else "")
    systems.append(
        SystemSpec("oido_float", float_title, "ai-edge-litert", python,
                   spec("oido_float", **float_spec), [p for p in (float_yamnet, float_head) if p], float_reason, "float32")
    )
    systems.append(
        SystemSpec("oido_tflite214", "Oído pipeline, tflite-runtime 2.14", "tflite-runtime", legacy_python,
                   spec("oido_tflite214", kind="pipeline", model_dir=str(model_dir)), oido_files,
                   model_reason or legacy_reason or None, quant)
    )
    systems.append(
        SystemSpec("oido_float_tflite214", float_title + ", tflite-runtime 2.14", "tflite-runtime", legacy_python,
                   spec("oido_float_tflite214", **float_spec), [p for p in (float_yamnet, float_head) if p],
                   float_reason or legacy_reason or None, "float32")
    )
    dynamic = variants.dynamic_yamnet
    dynamic_reason = model_reason or (None if dynamic else variants.dynamic_source)
    dynamic_spec = dict(kind="pipeline", yamnet=str(dynamic), head=str(head_file))
    dynamic_title = "Oído pipeline, dynamic-range YAMNet" + (f" ({variants.dynamic_source})" if dynamic else "")
    systems.append(
        SystemSpec("oido_dynamic", dynamic_title, "ai-edge-litert", python, spec("oido_dynamic", **dynamic_spec),
                   [p for p in (dynamic, head_file) if p], dynamic_reason, "dynamic_int8")
    )
    systems.append(
        SystemSpec("oido_dynamic_tflite214", dynamic_title + ", tflite-runtime 2.14", "tflite-runtime", legacy_python,
                   spec("oido_dynamic_tflite214", **dynamic_spec), [p for p in (dynamic, head_file) if p],
                   dynamic_reason or legacy_reason or None, "dynamic_int8")
    )
    asset = assets_dir / "yamnet" / ASSET_YAMNET
    asset_head = str(head_file) if manifest and head_file.is_file() else None
    asset_reason = None if asset.is_file() else f"{asset} missing"
    asset_title = "asset YAMNet (public int8 weights) + Oído head" if asset_head else "asset YAMNet (public int8 weights) + stand-in head"
    systems.append(
        SystemSpec("asset_yamnet", asset_title, "ai-edge-litert", python,
                   spec("asset_yamnet", kind="pipeline", yamnet=str(asset), head=asset_head),
                   [asset] + ([head_file] if asset_head else []), asset_reason, "dynamic_int8")
    )
    systems.append(
        SystemSpec("asset_yamnet_tflite214", asset_title + ", tflite-runtime 2.14", "tflite-runtime", legacy_python,
                   spec("asset_yamnet_tflite214", kind="pipeline", yamnet=str(asset), head=asset_head),
                   [asset] + ([head_file] if asset_head else []), asset_reason or legacy_reason or None, "dynamic_int8")
    )
    tf_reason = None
    if _package_version("tensorflow") is None and _package_version("tensorflow-cpu") is None:
        tf_reason = "TensorFlow not installed (pip install -e '.[train]')"
    elif not keras_head_path(model_dir).is_file():
        tf_reason = f"no Keras head: {keras_head_path(model_dir)} missing (run oido-train all)"
    systems.append(
        SystemSpec("tf_reference", "TensorFlow YAMNet + Keras head (workstation float reference)", "tensorflow", python,
                   spec("tf_reference", kind="tf", model_dir=str(model_dir)),
                   [keras_head_path(model_dir), assets_dir / "yamnet" / ASSET_YAMNET], tf_reason, "float32")
    )
    return systems


def locate_legacy_python(requested: Optional[Path]) -> Tuple[Optional[Path], str]:
    candidates = [requested] if requested else [REPO_ROOT / ".venv-legacy" / "bin" / "python"]
    for candidate in candidates:
        if candidate and candidate.is_file():
            probe = subprocess.run(
                [str(candidate), "-c", "import tflite_runtime.interpreter"], capture_output=True, text=True, timeout=120
            )
            if probe.returncode == 0:
                return candidate, ""
            return None, f"{candidate} cannot import tflite_runtime ({_tail(probe.stderr)}); rerun scripts/legacy_env.sh"
    return None, (
        f"no tflite-runtime 2.14 venv at {candidates[0]}: create it with scripts/legacy_env.sh "
        "(python3.11 -m venv .venv-legacy; pip install tflite-runtime==2.14.0 'numpy<2' soundfile)"
    )


def locate_mediapipe_python(requested: Optional[Path]) -> Tuple[Optional[Path], str]:
    candidates = [requested] if requested else [Path(sys.executable), REPO_ROOT / ".venv-mediapipe" / "bin" / "python"]
    for candidate in candidates:
        if candidate and candidate.is_file():
            probe = subprocess.run(
                [str(candidate), "-c", "import sys; sys.modules['tensorflow'] = None; "
                 "from mediapipe.tasks.python.audio import audio_classifier"],
                capture_output=True, text=True, timeout=120, env=measurement_env(),
            )
            if probe.returncode == 0:
                return candidate, ""
    return None, "mediapipe not installed (pip install mediapipe, or pip install -e '.[bench]')"


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


# --------------------------------------------------------------------------- running


def run_system(
    system: SystemSpec, *, workdir: Path, cpu: Optional[int], accuracy: bool, run_index: int, timeout: float
) -> Tuple[Optional[Dict[str, Any]], str]:
    spec_path = workdir / f"{system.name}.spec.json"
    spec_path.write_text(json.dumps(dict(system.spec, accuracy=accuracy)))
    out = workdir / f"{system.name}.{run_index}.json"
    log_path = workdir / f"{system.name}.{run_index}.log"
    if system.python is None:
        return None, "no Python interpreter for this system"
    command = [str(system.python), str(SCRIPTS / "bench_systems.py"), str(spec_path), "--out", str(out),
               "--launched-at", repr(time.monotonic())]
    result, reason = run_json_subprocess(command, out=out, cpu=cpu, timeout=timeout, log_path=log_path)
    if result is None:
        logger.warning("%s failed: %s (log: %s)", system.name, reason, log_path)
    return result, reason


def _median(values: Sequence[Optional[float]]) -> Optional[float]:
    present = [value for value in values if value is not None]
    return float(np.median(present)) if present else None


def summarize(system: SystemSpec, runs: List[Dict[str, Any]], *, peak: Dict[str, Any]) -> Dict[str, Any]:
    """Medians over repeats of every figure, for one system."""
    def figure(getter: Any) -> Optional[float]:
        values = []
        for run in runs:
            try:
                values.append(getter(run))
            except (KeyError, TypeError, ZeroDivisionError):
                values.append(None)
        return _median(values)

    audio_seconds = runs[0]["stream"]["audio_seconds"]
    cpu = figure(lambda r: r["stream"]["cpu_seconds"])
    patches = runs[0]["stream"]["patches"]
    summary: Dict[str, Any] = {
        "cpu_seconds_per_audio_hour": None if cpu is None else cpu / audio_seconds * SECONDS_PER_HOUR,
        "real_time_factor": None if cpu is None else cpu / audio_seconds,
        "cpu_ms_per_patch": None if cpu is None or not patches else cpu / patches * 1000.0,
        "patches": patches,
        "patches_per_audio_second": patches / audio_seconds,
        "decisions": runs[0]["stream"]["decisions"],
        "patch_latency_median_ms": figure(lambda r: r["stream"]["patch_latency"]["median_ms"]),
        "patch_latency_p99_ms": figure(lambda r: r["stream"]["patch_latency"]["p99_ms"]),
        "patch_cpu_median_ms": figure(lambda r: r["stream"]["patch_cpu"]["median_ms"]),
        "patch_cpu_mean_ms": figure(lambda r: r["stream"]["patch_cpu"]["mean_ms"]),
        "hot_patch_cpu_median_ms": figure(lambda r: r["hot_patch_cpu"]["median_ms"]),
        "hot_patch_latency_median_ms": figure(lambda r: r["hot_patch_latency"]["median_ms"]),
        "patch_cpu_p99_ms": figure(lambda r: r["stream"]["patch_cpu"]["p99_ms"]),
        "decision_latency_median_ms": figure(lambda r: r["stream"]["decision_latency"]["median_ms"]),
        "decision_latency_p99_ms": figure(lambda r: r["stream"]["decision_latency"]["p99_ms"]),
        "peak_rss_bytes": figure(lambda r: r["peak_rss_bytes"]),
        "startup_seconds": figure(lambda r: r["startup_seconds"]),
        "load_seconds": figure(lambda r: r["load_seconds"]),
        "load_cpu_seconds": figure(lambda r: r["load_cpu_seconds"]),
        "wall_seconds": figure(lambda r: r["stream"]["wall_seconds"]),
    }
    if cpu:
        effective = YAMNET_MACS_PER_PATCH * patches / cpu
        summary["effective_macs_per_second"] = effective
        overall = peak.get("overall", {}).get("macs_per_second")
        own = peak.get(system.arithmetic, {}).get("macs_per_second")
        summary["fraction_of_peak"] = effective / overall if overall else None
        summary["fraction_of_own_arithmetic_peak"] = effective / own if own else None
    return summary


RATIO_FIGURES = (
    "cpu_seconds_per_audio_hour",
    "cpu_ms_per_patch",
    "patch_latency_median_ms",
    "patch_cpu_median_ms",
    "hot_patch_cpu_median_ms",
    "decision_latency_median_ms",
    "peak_rss_bytes",
    "startup_seconds",
    "model_bytes",
)


def find_assets(assets_dir: Optional[Path]) -> Path:
    """The assets folder (esc50/, yamnet/) as oido-train finds it (train.assets.find_assets_dir):
    --assets-dir, else $OIDO_ASSETS, else ../shared/assets beside the repository or the working
    directory. FileNotFoundError when the folder given does not exist."""
    from train.assets import AssetError, find_assets_dir

    try:
        found = find_assets_dir(assets_dir=assets_dir)
    except AssetError as error:
        raise FileNotFoundError(str(error).replace("--assets", "--assets-dir")) from None
    return (found or REPO_ROOT.parent / "shared" / "assets").resolve()


def default_cache_dir() -> Path:
    """Where the multiply-add probe models are cached: bench/ in Oído's user cache
    (train.assets.user_cache_dir: $XDG_CACHE_HOME/oido, else ~/.cache/oido)."""
    from train.assets import user_cache_dir

    return user_cache_dir() / "bench"


def run_benchmark(args: argparse.Namespace) -> Dict[str, Any]:
    started = time.monotonic()
    model_dir = args.model_dir.resolve()
    assets_dir = find_assets(args.assets_dir)
    cache_dir = args.cache_dir if args.cache_dir is not None else default_cache_dir()
    manifest_path = model_dir / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    labels = manifest.get("labels") or list(DEFAULT_CLASSES)
    params = Params.from_dict(manifest["params"]) if manifest.get("params") else DEFAULT_PARAMS
    cpu = args.cpu if args.cpu is not None else (max(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None)
    if args.cpu is not None and args.cpu < 0:
        cpu = None
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)

    clips, audio_source = load_fold5_clips(
        data_dir=args.data_dir.resolve(), assets_dir=assets_dir, labels=labels,
        background_label=manifest.get("background_label"), params=params,
    )
    if args.quick:
        per_class: Dict[str, int] = {}
        kept = []
        for clip in clips:
            if per_class.get(clip.label, 0) < QUICK_CLIPS_PER_CLASS:
                per_class[clip.label] = per_class.get(clip.label, 0) + 1
                kept.append(clip)
        clips = kept
    stream_seconds = QUICK_STREAM_SECONDS if args.quick else (args.stream_seconds or None)
    stream = build_stream(clips, max_seconds=stream_seconds, params=params)
    block_samples = max(1, int(round(args.block_seconds * params.sample_rate_hz)))

    machine = machine_info()  # before the run: the load average it started under
    workdir = Path(tempfile.mkdtemp(prefix="oido-bench-"))
    try:
        write_workdir(workdir, stream, clips, params=params)
        legacy_python, legacy_reason = locate_legacy_python(args.legacy_python)
        mediapipe_python, mediapipe_reason = locate_mediapipe_python(args.mediapipe_python)
        logger.info("audio: %d clips, stream %.1f s (%s)", len(clips), len(stream) / params.sample_rate_hz, audio_source)
        logger.info("measuring this core's multiply-add rates")
        limits = measure_limits(workdir=workdir, cache_dir=cache_dir, legacy_python=legacy_python, cpu=cpu, quick=args.quick)
        common = {"workdir": str(workdir), "block_samples": block_samples, "sample_rate_hz": params.sample_rate_hz, "num_threads": 1}
        wanted = [name.strip() for name in (args.systems or "").split(",") if name.strip()]
        if not wanted or set(VARIANT_SYSTEMS) & set(wanted):
            variants = ensure_variants(model_dir=model_dir, manifest=manifest or None, cache_dir=cache_dir, workdir=workdir)
        else:
            variants = Variants(float_source="not asked for (--systems)", dynamic_source="not asked for (--systems)")
        systems = plan_systems(
            model_dir=model_dir, assets_dir=assets_dir, variants=variants,
            legacy_python=legacy_python, mediapipe_python=mediapipe_python,
            mediapipe_reason=mediapipe_reason, legacy_reason=legacy_reason, common=common,
        )
        if wanted:
            unknown = sorted(set(wanted) - {s.name for s in systems})
            if unknown:
                raise SystemExit(f"unknown system(s) {unknown}; choose from {[s.name for s in systems]}")
            systems = [s for s in systems if s.name in wanted]
        runs: Dict[str, List[Dict[str, Any]]] = {s.name: [] for s in systems}
        failures: Dict[str, str] = {}
        runnable = [s for s in systems if s.unavailable is None]
        for repeat in range(repeats):
            # Round-robin, rotated each repeat, so slow drifts of a shared machine hit every system alike.
            shift = repeat % max(1, len(runnable))
            for system in runnable[shift:] + runnable[:shift]:
                if system.name in failures:
                    continue
                logger.info("repeat %d/%d: %s", repeat + 1, repeats, system.name)
                result, reason = run_system(
                    system, workdir=workdir, cpu=cpu, accuracy=(repeat == 0 and not args.no_accuracy),
                    run_index=repeat, timeout=args.timeout,
                )
                if result is None:
                    failures[system.name] = reason
                else:
                    result["round"] = repeat
                    runs[system.name].append(result)
        report_systems = []
        for system in systems:
            entry: Dict[str, Any] = {
                "name": system.name,
                "title": system.title,
                "runtime": system.runtime,
                "arithmetic": system.arithmetic,
                "model_files": [str(path) for path in system.model_files],
                "model_bytes": sum(path.stat().st_size for path in system.model_files if path.is_file()) or None,
            }
            reason = system.unavailable or failures.get(system.name)
            if reason or not runs[system.name]:
                entry["unavailable"] = reason or "produced no result"
            else:
                entry["summary"] = summarize(system, runs[system.name], peak=limits.get("peak", {}))
                entry["summary"]["model_bytes"] = entry["model_bytes"]
                first = runs[system.name][0]
                entry["accuracy"] = first.get("accuracy", {"unavailable": "not measured (--no-accuracy)"})
                entry["versions"] = first.get("runtime", {})
                if "top_labels" in first:
                    entry["top_labels"] = first["top_labels"]
                entry["runs"] = runs[system.name]
            report_systems.append(entry)
        add_ratios(report_systems)
        report = {
            "format": REPORT_FORMAT,
            "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "machine": machine,
            "legacy_env": other_python_versions(legacy_python) if legacy_python else {"unavailable": legacy_reason},
            "config": {
                "quick": bool(args.quick),
                "repeats": repeats,
                "block_samples": block_samples,
                "pinned_cpu": cpu,
                "threads": 1,
                "params": params.to_dict(),
                "model_dir": str(model_dir),
                "model_quantization": manifest.get("yamnet", {}).get("quantization"),
            },
            "audio": {
                "source": audio_source,
                "clips": len(clips),
                "stream_seconds": len(stream) / params.sample_rate_hz,
                "patches_per_audio_second": params.sample_rate_hz / params.hop_samples,
                "decision_hop_seconds": params.decision_hop_seconds,
                "window_seconds": params.window_seconds,
            },
            "limits": limits,
            "systems": report_systems,
        }
        report["checks"] = evaluate_checks(report)
        report["machine"]["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        report["elapsed_seconds"] = time.monotonic() - started
        if args.keep_workdir:
            report["workdir"] = str(workdir)
        return report
    finally:
        if not args.keep_workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run_figures(run: Dict[str, Any]) -> Dict[str, Optional[float]]:
    """The ratio figures of one run (one system, one round)."""
    stream = run["stream"]
    patches = stream["patches"]
    return {
        "cpu_seconds_per_audio_hour": stream["cpu_seconds"] / stream["audio_seconds"] * SECONDS_PER_HOUR,
        "cpu_ms_per_patch": stream["cpu_seconds"] / patches * 1000.0 if patches else None,
        "patch_latency_median_ms": stream["patch_latency"]["median_ms"],
        "patch_cpu_median_ms": stream["patch_cpu"]["median_ms"],
        "hot_patch_cpu_median_ms": (run.get("hot_patch_cpu") or {}).get("median_ms"),
        "decision_latency_median_ms": stream["decision_latency"]["median_ms"],
        "peak_rss_bytes": run.get("peak_rss_bytes"),
        "startup_seconds": run.get("startup_seconds"),
    }


def paired_ratios(runs: List[Dict[str, Any]], base_runs: List[Dict[str, Any]]) -> Dict[str, Optional[float]]:
    """Median over rounds of (figure / base's figure in the same round).

    Pairing each run with the base system's run of the same round cancels the slow drifts
    of a shared machine better than a ratio of medians does.
    """
    base_by_round = {run.get("round"): run_figures(run) for run in base_runs}
    ratios: Dict[str, List[float]] = {name: [] for name in RATIO_FIGURES}
    for run in runs:
        base = base_by_round.get(run.get("round"))
        if base is None:
            continue
        for name, value in run_figures(run).items():
            if value and base.get(name):
                ratios[name].append(value / base[name])
    return {name: (float(np.median(values)) if values else None) for name, values in ratios.items()}


def add_ratios(systems: List[Dict[str, Any]]) -> None:
    """Each available system's figures over Oído's, paired by round (> 1: costs more than Oído)."""
    base = next((s for s in systems if s["name"] == "oido" and s.get("runs")), None)
    if base is None:
        return
    for system in systems:
        if not system.get("runs"):
            continue
        ratios = paired_ratios(system["runs"], base["runs"])
        if system.get("model_bytes") and base.get("model_bytes"):
            ratios["model_bytes"] = system["model_bytes"] / base["model_bytes"]
        system["ratio_to_oido"] = ratios


def _entry(report: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    return next((s for s in report["systems"] if s["name"] == name), None)


def _summary(report: Dict[str, Any], name: str) -> Optional[Dict[str, Any]]:
    return (_entry(report, name) or {}).get("summary")


def _reason(report: Dict[str, Any], name: str) -> str:
    entry = next((s for s in report["systems"] if s["name"] == name), None)
    if entry is None:
        return f"{name} not run (--systems)"
    return entry.get("unavailable", "")


def _per_patch_text(name: str, summary: Dict[str, Any]) -> str:
    """'name: YAMNet+head X ms CPU/patch + Y ms around it' (the pipeline's framing, detector, Python)."""
    model = summary.get("patch_cpu_mean_ms")
    total = summary.get("cpu_ms_per_patch")
    if model is None or total is None:
        return name
    return f"{name}: {model:.2f} ms model CPU per patch (mean) + {max(0.0, total - model):.2f} ms around it"


def evaluate_checks(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The issue's claims, each with its figure, its target, whether it held here, and why."""
    checks: List[Dict[str, Any]] = []
    oido = _summary(report, "oido")
    quant_description = report["config"].get("model_quantization") or "unknown quantization"
    quant_kind = _quantization_kind(report["config"].get("model_quantization") or "dynamic")

    def cost_check(claim: str, other: str, target: float, *, strict: bool, why: str = "") -> None:
        entry: Dict[str, Any] = {"claim": claim, "target": target}
        summary = _summary(report, other)
        ratio = (_entry(report, other) or {}).get("ratio_to_oido", {}).get("cpu_seconds_per_audio_hour")
        if not oido or not summary or ratio is None:
            entry.update(passed=None, note=f"unavailable: {_reason(report, 'oido') or _reason(report, other)}")
        else:
            entry.update(
                value=ratio,
                passed=bool(ratio > target if strict else ratio >= target),
                note=(
                    f"{other}: {summary['cpu_seconds_per_audio_hour']:.1f} CPU s per audio hour "
                    f"({summary['patches_per_audio_second']:.2f} patches/s; {_per_patch_text(other, summary)}) vs Oído "
                    f"{oido['cpu_seconds_per_audio_hour']:.1f} ({oido['patches_per_audio_second']:.2f} patches/s; "
                    f"{_per_patch_text('oido', oido)}); YAMNet work x"
                    f"{summary['patches_per_audio_second'] / oido['patches_per_audio_second']:.2f}{why}"
                ),
            )
        checks.append(entry)

    entry: Dict[str, Any] = {
        "claim": f"Oído with {MICROPHONE_RATE_HZ // 1000} kHz input (resampled in stream) uses <= "
                 f"{TARGET_REAL_TIME_FACTOR} of one core (real-time factor)",
        "target": TARGET_REAL_TIME_FACTOR,
        "kind": "at_most",
    }
    microphone = _summary(report, "oido_48k")
    if not microphone:
        entry.update(passed=None, note=f"unavailable: {_reason(report, 'oido_48k')}")
    else:
        rtf = microphone["real_time_factor"]
        entry.update(
            value=rtf,
            passed=bool(rtf <= TARGET_REAL_TIME_FACTOR),
            note=(
                f"{microphone['cpu_seconds_per_audio_hour']:.1f} CPU s per audio hour "
                f"({_per_patch_text('oido_48k', microphone)}; the 16 kHz stream: "
                f"{_fmt((oido or {}).get('cpu_seconds_per_audio_hour'), '.1f')}); an absolute figure on a shared "
                f"machine (load average {_fmt_load(report['machine'].get('load_average_at_start'))} at the start)"
            ),
        )
    checks.append(entry)
    cost_check("re-running YAMNet over each window costs >= 1.5x Oído's CPU per audio hour (overlap 0.5)",
               "rerun_window", TARGET_RERUN_RATIO, strict=False,
               why="; the window re-run runs every patch of a 3 s window (6 with YAMNet's end padding) every 1.5 s, "
                   "Oído each 0.48 s patch once")
    cost_check("MediaPipe's AudioClassifier on the same hop costs more CPU per audio hour than Oído",
               "mediapipe", 1.0, strict=True,
               why=f"; models: Google's fully int8 YAMNet (int8 activations) vs Oído's YAMNet, {quant_description} "
                   f"({quant_kind} arithmetic)")
    fc = report.get("limits", {}).get("tflite_fc", {})
    for quant, floating, dynamic, runtime in (("oido", "oido_float", "oido_dynamic", "ai-edge-litert"),
                                              ("oido_tflite214", "oido_float_tflite214", "oido_dynamic_tflite214", "tflite-runtime")):
        entry = {"claim": f"Oído quantized >= 2x faster per patch than Oído float under {runtime}",
                 "target": TARGET_QUANT_SPEEDUP}
        q, f, d = _summary(report, quant), _summary(report, floating), _summary(report, dynamic)
        rates = fc.get(runtime, {}).get("fc", {})
        float_rate = rates.get("float32", {}).get("gmacs_per_second")
        why = [f"Oído's YAMNet is {quant_description} ({quant_kind} arithmetic"
               + (": int8 on disk, weights dequantized at load, so float speed by design)" if quant_kind == "float32" else ")")]
        if float_rate:
            kinds = [f"{kind} {rates[kind]['gmacs_per_second']:.1f} (x{rates[kind]['gmacs_per_second'] / float_rate:.2f})"
                     for kind in ("dynamic_int8", "int8") if rates.get(kind, {}).get("gmacs_per_second")]
            why.append(f"{runtime} single-core FULLY_CONNECTED GMAC/s: float32 {float_rate:.1f}, " + ", ".join(kinds)
                       + f" on this CPU ({', '.join(report['machine']['cpu_flags']) or 'SIMD unknown'}; int8 gains "
                       "need int8 dot-product instructions: VNNI on x86, SDOT on ARMv8.2+)")
        if d and f and d.get("patch_cpu_median_ms"):
            why.append(f"the dynamic-range variant: {d['patch_cpu_median_ms']:.2f} ms per patch "
                       f"(x{f['patch_cpu_median_ms'] / d['patch_cpu_median_ms']:.2f} vs float; back to back "
                       f"{_fmt(d.get('hot_patch_cpu_median_ms'), '.2f')} ms)")
        if not q or not f:
            entry.update(passed=None, note=f"unavailable: {_reason(report, floating) or _reason(report, quant)}; " + "; ".join(why))
        else:
            # Model CPU per patch, paired by round: steadier than wall time on a shared machine.
            rounds = paired_ratios(_entry(report, floating)["runs"], _entry(report, quant)["runs"])
            speedup = rounds["patch_cpu_median_ms"] or f["patch_cpu_median_ms"] / q["patch_cpu_median_ms"]
            wall_speedup = rounds["patch_latency_median_ms"] or f["patch_latency_median_ms"] / q["patch_latency_median_ms"]
            entry.update(value=speedup, passed=bool(speedup >= TARGET_QUANT_SPEEDUP),
                         note=f"YAMNet + head CPU per patch {f['patch_cpu_median_ms']:.2f} ms float vs "
                              f"{q['patch_cpu_median_ms']:.2f} ms quantized (wall latency x{wall_speedup:.2f}; back to back "
                              f"{_fmt(f.get('hot_patch_cpu_median_ms'), '.2f')} vs {_fmt(q.get('hot_patch_cpu_median_ms'), '.2f')} ms); "
                              + "; ".join(why))
        checks.append(entry)
    return checks


# --------------------------------------------------------------------------- output


def _fmt(value: Optional[float], spec: str) -> str:
    return "—" if value is None else format(value, spec)


def table_rows(report: Dict[str, Any]) -> Tuple[List[str], List[List[str]]]:
    header = ["system", "runtime", "CPU s / audio h", "RTF", "× Oído", "patch ms med / p99", "patch CPU ms stream / hot", "decision ms med",
              "peak RSS MB", "start-up s", "model MB", "clip acc", "eff. GMAC/s (% peak)"]
    rows = []
    for system in report["systems"]:
        summary = system.get("summary")
        model_mb = _fmt(system["model_bytes"] / 1e6 if system.get("model_bytes") else None, ".2f")
        if not summary:
            rows.append([system["name"], system["runtime"], f"unavailable: {system.get('unavailable')}"] + [""] * 7 + [model_mb, "", ""])
            continue
        ratio = system.get("ratio_to_oido", {}).get("cpu_seconds_per_audio_hour")
        accuracy = system.get("accuracy", {})
        acc = f"{accuracy['accuracy']:.3f} ({accuracy['clips']})" if "accuracy" in accuracy else "n/a"
        eff = summary.get("effective_macs_per_second")
        frac = summary.get("fraction_of_peak")
        rows.append([
            system["name"],
            system["runtime"],
            _fmt(summary["cpu_seconds_per_audio_hour"], ".1f"),
            _fmt(summary["real_time_factor"], ".4f"),
            _fmt(ratio, ".2f"),
            f"{_fmt(summary['patch_latency_median_ms'], '.2f')} / {_fmt(summary['patch_latency_p99_ms'], '.2f')}",
            f"{_fmt(summary['patch_cpu_median_ms'], '.2f')} / {_fmt(summary.get('hot_patch_cpu_median_ms'), '.2f')}",
            _fmt(summary["decision_latency_median_ms"], ".2f"),
            _fmt(summary["peak_rss_bytes"] / 1e6 if summary.get("peak_rss_bytes") else None, ".0f"),
            _fmt(summary["startup_seconds"], ".2f"),
            model_mb,
            acc,
            f"{_fmt(eff / 1e9 if eff else None, '.1f')} ({_fmt(frac * 100 if frac else None, '.0f')}%)",
        ])
    return header, rows


def text_table(header: List[str], rows: List[List[str]]) -> str:
    """Aligned columns; an "unavailable: ..." row prints its reason in full after the first two cells."""
    def spans(row: List[str]) -> bool:
        return len(row) > 2 and str(row[2]).startswith("unavailable")

    measured = [row for row in rows if not spans(row)]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *measured)]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(header, widths))]
    lines.append("  ".join("-" * width for width in widths))
    for row in rows:
        if spans(row):
            lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row[:2], widths)) + "  " + str(row[2]))
        else:
            lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)))
    return "\n".join(lines)


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell).replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def limits_lines(report: Dict[str, Any]) -> List[str]:
    limits = report["limits"]
    lines = [
        f"- YAMNet: {limits['yamnet_macs_per_patch'] / 1e6:.1f} M multiply-adds per patch, "
        f"{limits['yamnet_macs_per_audio_second'] / 1e6:.0f} M per second of audio "
        f"({report['audio']['patches_per_audio_second']:.3f} patches/s)."
    ]
    numpy_rates = limits.get("numpy", {})
    if "float32_matmul" in numpy_rates:
        lines.append(
            f"- numpy (1 BLAS thread): float32 matmul {numpy_rates['float32_matmul']['gmacs_per_second']:.1f} GMAC/s; "
            f"int8→int32 matmul {numpy_rates['int8_matmul']['gmacs_per_second']:.2f} GMAC/s (no BLAS kernel: a floor, not a peak)."
        )
    else:
        lines.append(f"- numpy: unavailable: {numpy_rates.get('unavailable')}")
    fc = limits.get("tflite_fc", {})
    if "unavailable" in fc:
        lines.append(f"- TF-Lite FC probes: unavailable: {fc['unavailable']}")
    for runtime, measured in fc.items():
        if not isinstance(measured, dict):
            continue
        if "unavailable" in measured:
            lines.append(f"- {runtime}: unavailable: {measured['unavailable']}")
            continue
        parts = []
        for kind, rate in measured.get("fc", {}).items():
            parts.append(f"{kind} {rate['gmacs_per_second']:.1f}" if "gmacs_per_second" in rate else f"{kind} unavailable ({rate.get('unavailable')})")
        lines.append(f"- {runtime} {measured.get('version')} one FULLY_CONNECTED [64×1024]·[1024×1024], 1 thread, GMAC/s: " + ", ".join(parts) + ".")
    overall = limits.get("peak", {}).get("overall")
    if overall:
        lines.append(f"- Peak used for \"% peak\": {overall['macs_per_second'] / 1e9:.1f} GMAC/s ({overall['measured_by']}).")
    return lines


def markdown_report(report: Dict[str, Any]) -> str:
    machine = report["machine"]
    header, rows = table_rows(report)
    packages = ", ".join(f"{name} {value}" for name, value in machine["packages"].items() if value)
    legacy = report.get("legacy_env", {})
    legacy_text = (
        ", ".join(f"{name} {value}" for name, value in legacy.items()) if "unavailable" not in legacy else f"unavailable: {legacy['unavailable']}"
    )
    audio = report["audio"]
    config = report["config"]
    lines = [
        "# Oído streaming benchmark",
        "",
        f"- Date: {report['created_utc']}",
        f"- Machine: {machine['cpu_model']}, {machine['cores']} cores (SIMD: {', '.join(machine['cpu_flags']) or '?'}), "
        f"{(machine['memory_bytes'] or 0) / 2**30:.0f} GiB; {machine['platform']}",
        f"- Load average at start / end: {_fmt_load(machine.get('load_average_at_start'))} / {_fmt_load(machine.get('load_average_at_end'))} "
        "(a shared machine: read the ratios, not the absolute times)",
        f"- Python {machine['python']}; {packages}",
        f"- tflite-runtime venv: {legacy_text}",
        f"- Audio: {audio['clips']} clips from {audio['source']}; replay stream {audio['stream_seconds']:.1f} s, "
        f"fed in blocks of {config['block_samples']} samples; window {audio['window_seconds']} s every {audio['decision_hop_seconds']} s",
        f"- Each system in its own process pinned to CPU {config['pinned_cpu']}, 1 thread; {config['repeats']} repeat(s) "
        f"round-robin, medians shown{'; QUICK run' if config['quick'] else ''}; Oído YAMNet quantization: {config.get('model_quantization')}",
        "",
        "## Results",
        "",
        markdown_table(header, rows),
        "",
        "CPU s / audio h: process CPU time (all threads) per hour of audio streamed; RTF the same as a fraction of real time. "
        "× Oído: that cost over Oído's in the same round (median over rounds). Patch ms: wall time to turn one 0.975 s patch into class scores (YAMNet + head; "
        "MediaPipe: classify_async until its result callback); patch CPU ms: the same in process CPU time (median), in the stream and run back to back with warm caches (hot; in the stream other work runs between patches, so weights and code are colder). Decision ms: wall time of the push that produced a decision "
        "(Oído: one new patch + the window mean; re-run: the whole window). Start-up: process launch to the first decision, "
        "audio fed faster than real time. Clip acc: fold-5 clips, decision = argmax of the mean over the clip's patches. "
        "Eff. GMAC/s: 69.2 M × patches run / CPU second, against the best single-core rate measured below.",
        "",
        "## Checks",
        "",
    ]
    for check in report["checks"]:
        status = {True: "PASS", False: "FAIL", None: "N/A"}[check.get("passed")]
        value = f" — {_check_value(check)}" if check.get("value") is not None else ""
        lines.append(f"- **{status}** {check['claim']}{value}. {check.get('note', '')}")
    lines += ["", "## The physical limit (this core)", ""] + limits_lines(report)
    lines += ["", "## Systems", ""]
    for system in report["systems"]:
        versions = ", ".join(f"{k} {v}" for k, v in system.get("versions", {}).items())
        status = f"unavailable: {system['unavailable']}" if "unavailable" in system else versions
        lines.append(f"- `{system['name']}`: {system['title']} — {status}")
        if system.get("top_labels"):
            lines.append(f"  - top AudioSet labels on the stream: {system['top_labels']}")
    lines += ["", f"Generated by `python scripts/bench.py{' --quick' if config['quick'] else ''}` in {report['elapsed_seconds']:.0f} s.", ""]
    return "\n".join(lines)


def _check_value(check: Dict[str, Any], *, markdown: bool = True) -> str:
    """A check's figure: a ratio ('1.60× (target 1.5×)') or an absolute limit ('0.0088 (target <= 0.01)')."""
    if check.get("kind") == "at_most":
        return f"{check['value']:.4f}" + (f" (target <= {check['target']})" if markdown else "")
    times = "×" if markdown else "x"
    return f"{check['value']:.2f}{times}" + (f" (target {check['target']}{times})" if markdown else "")


def _fmt_load(values: Optional[Sequence[float]]) -> str:
    return "?" if not values else "/".join(f"{value:.1f}" for value in values)


def write_reports(report: Dict[str, Any], reports_dir: Path) -> Tuple[Path, Path]:
    reports_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = reports_dir / "bench.json", reports_dir / "bench.md"
    for path, text in ((json_path, json.dumps(report, indent=2)), (md_path, markdown_report(report))):
        partial = path.with_name(f".{path.name}.tmp")
        partial.write_text(text)
        os.replace(partial, path)
    return json_path, md_path


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[1:]))
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_STREAM_SECONDS:.0f} s of audio, 1 repeat, 1 clip per class (CI)")
    parser.add_argument("--repeats", type=int, default=None, help="round-robin repeats (default 3; 1 with --quick)")
    parser.add_argument("--systems", default=None, help="comma-separated subset of systems to run (default: all)")
    parser.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model", help="exported Oído model (manifest.json)")
    parser.add_argument("--data-dir", type=Path, default=REPO_ROOT / "data", help="prepared data (testData.json)")
    parser.add_argument("--assets-dir", type=Path, default=None,
                        help="the folder holding esc50/ and yamnet/ (default: $OIDO_ASSETS, else ../shared/assets)")
    parser.add_argument("--reports-dir", type=Path, default=REPO_ROOT / "reports", help="where bench.json and bench.md go")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the multiply-add probe models are cached (default: ~/.cache/oido/bench, "
                             "$XDG_CACHE_HOME/oido/bench if set)")
    parser.add_argument("--legacy-python", type=Path, default=None, help="python of the tflite-runtime 2.14 venv (default .venv-legacy)")
    parser.add_argument("--mediapipe-python", type=Path, default=None, help="python with mediapipe (default: this one, else .venv-mediapipe)")
    parser.add_argument("--stream-seconds", type=float, default=DEFAULT_STREAM_SECONDS,
                        help=f"replay stream length (default {DEFAULT_STREAM_SECONDS:.0f}; 0: every fold-5 clip once)")
    parser.add_argument("--block-seconds", type=float, default=DEFAULT_BLOCK_SECONDS, help="audio per push, like a microphone block")
    parser.add_argument("--cpu", type=int, default=None, help="core to pin each system to (default: the last one; -1: no pinning)")
    parser.add_argument("--no-accuracy", action="store_true", help="skip the fold-5 clip accuracy")
    parser.add_argument("--timeout", type=float, default=WORKER_TIMEOUT_SECONDS, help="seconds one system's process may take")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the audio, specs and per-run logs")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("-q", "--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        report = run_benchmark(args)
    except FileNotFoundError as error:
        logger.error("%s", error)
        return 2
    json_path, md_path = write_reports(report, args.reports_dir)
    header, rows = table_rows(report)
    if not args.quiet:
        print(text_table(header, rows))
        print()
        for check in report["checks"]:
            status = {True: "PASS", False: "FAIL", None: "N/A "}[check.get("passed")]
            value = f" {_check_value(check, markdown=False)}" if check.get("value") is not None else ""
            print(f"[{status}]{value} {check['claim']}")
        print(f"\nwrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
