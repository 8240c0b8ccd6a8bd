"""The physical limit: this machine's single-core multiply-add rate, float32 and int8.

YAMNet costs YAMNET_MACS_PER_PATCH multiply-adds per patch; at one patch per hop that
is ~144 M per second of audio. How close a system comes to the limit is
``YAMNET_MACS_PER_PATCH x patches run / CPU second`` over the best rate measured here.

Three measurements, each its own subcommand (scripts/bench.py runs them as subprocesses,
one thread each, so BLAS and TF-Lite use one core):

    python scripts/bench_limits.py numpy --out F.json          # numpy float32 matmul (BLAS), int8->int32 matmul
    python scripts/bench_limits.py build-fc DIR --out F.json   # TensorFlow writes float / dynamic-range / int8 FC models
    python scripts/bench_limits.py tflite-fc DIR --out F.json  # runs them under whichever TF-Lite runtime is importable
    python scripts/bench_limits.py variants DIR --model-dir model --out F.json
                                   # float32 and dynamic-range conversions of the same Oído models

The TF-Lite models are one FULLY_CONNECTED layer of [FC_ROWS, FC_INNER] x [FC_INNER, FC_OUTER]
(67 M multiply-adds, about one YAMNet patch), in the three arithmetic kinds the Oído models use:
float32, dynamic-range (int8 weights, float activations) and full int8. They load in
tflite-runtime 2.14 too (per-tensor int8 dense layers, FULLY_CONNECTED <= v9).

Runs on numpy 1.26 and Python 3.11 (the tflite-runtime 2.14 venv) as well as numpy 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent

YAMNET_MACS_PER_PATCH = 69_200_000
"""Multiply-adds of one YAMNet patch (Plakal & Ellis; ../shared/assets/yamnet/README.md)."""

FC_ROWS = 64
"""Rows (batch) of the FULLY_CONNECTED probe: enough to keep the kernels in their fast path."""
FC_INNER = 1024
"""Input features of the probe (YAMNet's widest layers are 1024 channels)."""
FC_OUTER = 1024
"""Output features of the probe."""
FC_KINDS = ("float32", "dynamic_int8", "int8")
"""float32 weights and activations; int8 weights + float activations; int8 weights and activations."""
NUMPY_FLOAT_SIZE = 1024
"""Side of the square float32 matrices multiplied with BLAS."""
NUMPY_INT8_SIZE = 256
"""Side of the int8 matrices (numpy's integer matmul is a plain loop: keep it small)."""
SEED = 20240501
"""Seed of the probe matrices."""


def _median_process_seconds(run: Callable[[], Any], *, repeats: int, warmup: int = 1) -> float:
    """Median process CPU time of one call of `run` (all threads of this process count)."""
    for _ in range(warmup):
        run()
    timings: List[float] = []
    for _ in range(repeats):
        start = time.process_time()
        run()
        timings.append(time.process_time() - start)
    return float(np.median(timings))


def _rate(macs: int, seconds: float) -> Dict[str, Any]:
    return {
        "macs": int(macs),
        "seconds": seconds,
        "gmacs_per_second": (macs / seconds / 1e9) if seconds > 0 else None,
    }


def blas_info() -> Dict[str, Any]:
    """Which BLAS numpy uses and with how many threads (threadpoolctl when installed)."""
    info: Dict[str, Any] = {"OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS")}
    try:
        from threadpoolctl import threadpool_info  # optional
    except ImportError:
        return info
    info["threadpools"] = [
        {key: pool.get(key) for key in ("internal_api", "version", "num_threads", "architecture")}
        for pool in threadpool_info()
    ]
    return info


def measure_numpy(*, repeats: int) -> Dict[str, Any]:
    """numpy float32 matmul (BLAS) and int8 x int8 -> int32 matmul rates on this process's threads.

    Run with OPENBLAS_NUM_THREADS=1 (scripts/bench.py sets it) for a single-core figure.
    """
    rng = np.random.default_rng(SEED)
    a = rng.standard_normal((NUMPY_FLOAT_SIZE, NUMPY_FLOAT_SIZE)).astype(np.float32)
    b = rng.standard_normal((NUMPY_FLOAT_SIZE, NUMPY_FLOAT_SIZE)).astype(np.float32)
    float_seconds = _median_process_seconds(lambda: a @ b, repeats=repeats)
    ai = rng.integers(-128, 128, (NUMPY_INT8_SIZE, NUMPY_INT8_SIZE), dtype=np.int8)
    bi = rng.integers(-128, 128, (NUMPY_INT8_SIZE, NUMPY_INT8_SIZE), dtype=np.int8)
    int8_seconds = _median_process_seconds(
        lambda: np.matmul(ai, bi, dtype=np.int32), repeats=max(1, repeats // 3)
    )
    return {
        "numpy": np.__version__,
        "blas": blas_info(),
        "float32_matmul": dict(_rate(NUMPY_FLOAT_SIZE**3, float_seconds), shape=[NUMPY_FLOAT_SIZE] * 3),
        "int8_matmul": dict(
            _rate(NUMPY_INT8_SIZE**3, int8_seconds),
            shape=[NUMPY_INT8_SIZE] * 3,
            note="numpy integer matmul has no BLAS kernel: a lower bound, not the int8 peak",
        ),
    }


def fc_model_path(directory: Path, kind: str) -> Path:
    return directory / f"fc_{FC_ROWS}x{FC_INNER}x{FC_OUTER}_{kind}.tflite"


def build_fc_models(directory: Path) -> Dict[str, Any]:
    """Write the three FULLY_CONNECTED probes with TensorFlow (skips files already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = {kind: fc_model_path(directory, kind) for kind in FC_KINDS}
    if all(path.is_file() and path.stat().st_size > 0 for path in paths.values()):
        return {"models": {kind: str(path) for kind, path in paths.items()}, "built": False}
    import tensorflow as tf

    rng = np.random.default_rng(SEED)
    weights = (rng.standard_normal((FC_INNER, FC_OUTER)) / np.sqrt(FC_INNER)).astype(np.float32)

    class FullyConnected(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.kernel = tf.constant(weights)

        @tf.function(input_signature=[tf.TensorSpec([FC_ROWS, FC_INNER], tf.float32)])
        def __call__(self, x: Any) -> Any:
            return tf.matmul(x, self.kernel)

    module = FullyConnected()

    def representative() -> Any:
        for _ in range(8):
            yield [rng.standard_normal((FC_ROWS, FC_INNER)).astype(np.float32)]

    for kind, path in paths.items():
        converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
        if kind != "float32":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if kind == "int8":
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # TF 2.21's per-channel dense layers (FULLY_CONNECTED v12) do not load in tflite-runtime 2.14.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
        flatbuffer = converter.convert()
        partial = path.with_suffix(".tmp")
        partial.write_bytes(flatbuffer)
        os.replace(partial, path)
        logger.info("wrote %s (%d bytes)", path, len(flatbuffer))
    return {"models": {kind: str(path) for kind, path in paths.items()}, "built": True, "tensorflow": tf.__version__}


FLOAT_YAMNET_FILE = "yamnet_float.tflite"
FLOAT_HEAD_FILE = "head_float.tflite"
DYNAMIC_YAMNET_FILE = "yamnet_dynamic_range.tflite"


def _freeze(function: Any) -> Any:
    """Keras 3 keeps weights as resource variables: fold them into constants before converting."""
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    return convert_variables_to_constants_v2(function)


def _write_atomic(path: Path, data: bytes) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_bytes(data)
    os.replace(partial, path)
    logger.info("wrote %s (%d bytes)", path, len(data))


def build_variants(model_dir: Path, directory: Path) -> Dict[str, Any]:
    """Other conversions of the Oído models, for comparing arithmetic on the same network.

    From the same TensorFlow models convert starts from (train.yamnet's YAMNet, model/head.json's .keras):
      yamnet_float.tflite, head_float.tflite   float32 (for when convert wrote no float export);
      yamnet_dynamic_range.tflite              convert's dynamic-range candidate (int8 weights,
                                               int8 arithmetic in hybrid kernels), when convert
                                               kept another quantization.
    Skips files already in `directory` (the caller keys it by the models' hashes). A variant
    that fails to convert is reported with its error; the others are still written.
    """
    paths = {"yamnet_float": directory / FLOAT_YAMNET_FILE, "head_float": directory / FLOAT_HEAD_FILE,
             "yamnet_dynamic_range": directory / DYNAMIC_YAMNET_FILE}
    if all(path.is_file() for path in paths.values()):
        return {"models": {key: str(path) for key, path in paths.items()}, "built": False}
    import tensorflow as tf

    from train.head import load_head
    from train.yamnet import load_yamnet

    directory.mkdir(parents=True, exist_ok=True)
    head = load_head(model_dir)
    yamnet = load_yamnet(source="auto", params=head.params)
    keras_head = head.model

    @tf.function(input_signature=[tf.TensorSpec([None, head.embedding_size], tf.float32, name="embeddings")])
    def serve_head(embeddings: Any) -> Any:
        return keras_head(embeddings, training=False)

    result: Dict[str, Any] = {"models": {}, "errors": {}, "built": True, "tensorflow": tf.__version__}
    for key, function in (("yamnet_float", yamnet.concrete_function()), ("head_float", serve_head.get_concrete_function())):
        if not paths[key].is_file():
            converter = tf.lite.TFLiteConverter.from_concrete_functions([_freeze(function)])
            _write_atomic(paths[key], bytes(converter.convert()))
        result["models"][key] = str(paths[key])
    if not paths["yamnet_dynamic_range"].is_file():
        try:
            from convert.export import convert_yamnet

            (candidate,) = convert_yamnet(
                yamnet, quantizations=["dynamic_range"],
                calibration_patches=np.zeros((0, head.params.patch_samples), np.float32), params=head.params,
            )
            if candidate.model_bytes is None:
                raise RuntimeError(candidate.error or "no bytes")
            _write_atomic(paths["yamnet_dynamic_range"], bytes(candidate.model_bytes))
        except Exception as error:  # convert's API may differ: that variant is then reported unavailable
            result["errors"]["yamnet_dynamic_range"] = f"{type(error).__name__}: {error}"
    if paths["yamnet_dynamic_range"].is_file():
        result["models"]["yamnet_dynamic_range"] = str(paths["yamnet_dynamic_range"])
    return result


def _load_interpreter(path: Path) -> Any:
    """A one-thread interpreter from ai-edge-litert, else tflite-runtime (as edge.runtime does)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter(model_path=str(path), num_threads=1)


def runtime_name_and_version() -> Dict[str, Optional[str]]:
    """The TF-Lite runtime this process uses: ai-edge-litert first, then tflite-runtime."""
    try:
        import ai_edge_litert  # noqa: F401
        from importlib.metadata import version

        return {"runtime": "ai-edge-litert", "version": version("ai-edge-litert")}
    except ImportError:
        pass
    try:
        import tflite_runtime

        return {"runtime": "tflite-runtime", "version": getattr(tflite_runtime, "__version__", None)}
    except ImportError:
        return {"runtime": None, "version": None}


def measure_tflite_fc(directory: Path, *, repeats: int) -> Dict[str, Any]:
    """Multiply-add rate of each FC probe under this process's TF-Lite runtime, one thread."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((FC_ROWS, FC_INNER)).astype(np.float32)
    rates: Dict[str, Any] = {}
    for kind in FC_KINDS:
        path = fc_model_path(directory, kind)
        if not path.is_file():
            rates[kind] = {"unavailable": f"{path} missing: run `bench_limits.py build-fc {directory}` first"}
            continue
        try:
            interpreter = _load_interpreter(path)
            interpreter.allocate_tensors()
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            seconds = _median_process_seconds(interpreter.invoke, repeats=repeats, warmup=2)
        except Exception as error:  # a runtime that cannot load the op: reported, not fatal
            rates[kind] = {"unavailable": f"{type(error).__name__}: {error}"}
            continue
        rates[kind] = dict(_rate(FC_ROWS * FC_INNER * FC_OUTER, seconds), shape=[FC_ROWS, FC_INNER, FC_OUTER])
    return dict(runtime_name_and_version(), numpy=np.__version__, python=platform.python_version(), fc=rates)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("numpy", "build-fc", "tflite-fc", "variants"))
    parser.add_argument("directory", nargs="?", type=Path, help="where the FC probe models (or the model variants) go")
    parser.add_argument("--model-dir", type=Path, default=None, help="variants: the model directory (head.json + its .keras)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per measurement (median)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))  # train/, convert/ for the variants
    if args.command != "numpy" and args.directory is None:
        parser.error(f"{args.command} needs the FC model directory")
    if args.command == "numpy":
        result = measure_numpy(repeats=args.repeats)
    elif args.command == "build-fc":
        result = build_fc_models(args.directory)
    elif args.command == "variants":
        if args.model_dir is None:
            parser.error("variants needs --model-dir")
        result = build_variants(args.model_dir, args.directory)
    else:
        result = measure_tflite_fc(args.directory, repeats=args.repeats)
    args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
