"""One benchmarked system, run in its own process (so its peak memory is its own).

scripts/bench.py writes the audio (a long replay stream and the fold-5 clips) into a work
directory and a JSON spec per system, then runs

    python scripts/bench_systems.py SPEC.json --out RESULT.json --launched-at MONOTONIC

with the interpreter the system needs (the project's Python, the tflite-runtime 2.14 venv,
or a MediaPipe venv), pinned to one core. This process:

1. builds the system (imports, model loads) and runs its models once on silence;
2. times HOT_PATCHES patches back to back (the models with warm caches), then
   feeds the stream in microphone-sized blocks as fast as it can, timing process CPU
   (all threads), the wall time of each patch and each decision, and the moment of the
   first decision;
3. notes its peak resident memory (ru_maxrss) right after the stream;
4. classifies each fold-5 clip (when the system has our classes) for clip accuracy.

The systems:

  pipeline     edge.pipeline.StreamingPipeline: each patch runs YAMNet + head once,
               windows from cached patch probabilities (Oído; also with a float export,
               the asset YAMNet, or TensorFlow models behind the same pipeline).
  rerun        the tutorial's streaming: every decision hop, YAMNet + head re-run over
               every patch of the whole window (3 s -> 6 patches with YAMNet's end padding).
  mediapipe    MediaPipe's AudioClassifier in AUDIO_STREAM mode (Google's raspberry-pi
               example): the latest 0.975 s of audio handed over every patch hop.

Runs on numpy 1.26 + Python 3.11 (the tflite-runtime 2.14 venv) as well as numpy 2: only
the standard library and numpy at import time; edge/, TensorFlow or MediaPipe when a
system needs them.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import resource
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import numpy.typing as npt

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

REPO_ROOT = Path(__file__).resolve().parent.parent

MEDIAPIPE_RESULT_TIMEOUT_SECONDS = 30.0
"""Longest wait for one MediaPipe result before the run is declared failed."""
STAND_IN_HEAD_SEED = 7
"""Seed of the random linear head used when a system has YAMNet but no trained head."""
HOT_PATCHES = 10
"""Patches run back to back after the warm-up: the models' cost with warm caches."""
HOT_PATCH_SEED = 11
HOT_PATCH_LEVEL = 0.1
"""RMS of the noise patch used for the back-to-back timing (compute does not depend on content)."""


def noise_patch(samples: int) -> FloatArray:
    return (np.random.default_rng(HOT_PATCH_SEED).standard_normal(samples) * HOT_PATCH_LEVEL).astype(np.float32)


def time_models(yamnet: Any, head: Any, patch: FloatArray, *, count: int) -> List[Tuple[float, float]]:
    """(wall, process CPU) seconds of `count` back-to-back YAMNet + head runs on one patch."""
    timings = []
    for _ in range(count):
        start, cpu_start = time.perf_counter(), time.process_time()
        embedding, _ = yamnet.run(patch)
        head.run(np.asarray(embedding, np.float32)[np.newaxis])
        timings.append((time.perf_counter() - start, time.process_time() - cpu_start))
    return timings


# --------------------------------------------------------------------------- measurement


class Recorder:
    """Per-run counters: patches, decisions, their wall latencies, the first decision's time."""

    def __init__(self) -> None:
        self.patches = 0
        self.decisions = 0
        self.patch_seconds: List[float] = []
        self.patch_cpu_seconds: List[float] = []
        self.decision_seconds: List[float] = []
        self.first_decision_monotonic: Optional[float] = None

    def patch(self, seconds: float, cpu_seconds: float) -> None:
        """One patch: wall and process-CPU seconds of its models (YAMNet + head)."""
        self.patches += 1
        self.patch_seconds.append(seconds)
        self.patch_cpu_seconds.append(cpu_seconds)

    def decision(self, seconds: float, count: int = 1) -> None:
        if count <= 0:
            return
        if self.first_decision_monotonic is None:
            self.first_decision_monotonic = time.monotonic()
        self.decisions += count
        self.decision_seconds.append(seconds)


def latency_summary(seconds: Sequence[float]) -> Dict[str, Optional[float]]:
    """Median and 99th percentile in milliseconds (None when nothing was timed)."""
    if not len(seconds):
        return {"mean_ms": None, "median_ms": None, "p99_ms": None, "count": 0}
    values = np.asarray(seconds, np.float64) * 1000.0
    return {
        "mean_ms": float(np.mean(values)),
        "median_ms": float(np.median(values)),
        "p99_ms": float(np.percentile(values, 99)),
        "count": int(len(values)),
    }


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def loaded_runtimes() -> Dict[str, Optional[str]]:
    """Versions of the numeric runtimes this process imported."""
    from importlib.metadata import PackageNotFoundError, version

    found: Dict[str, Optional[str]] = {"python": platform.python_version(), "numpy": np.__version__}
    for module, distribution in (
        ("ai_edge_litert", "ai-edge-litert"),
        ("tflite_runtime", "tflite-runtime"),
        ("tensorflow", "tensorflow"),
        ("keras", "keras"),
        ("mediapipe", "mediapipe"),
    ):
        if sys.modules.get(module) is not None:
            try:
                found[distribution] = version(distribution)
            except PackageNotFoundError:
                found[distribution] = getattr(sys.modules[module], "__version__", "unknown")
    return found


# --------------------------------------------------------------------------- systems


class System:
    """What the benchmark loop needs of a system."""

    recorder: Recorder
    labels: Optional[Tuple[str, ...]] = None
    """Our class labels when the system was trained on them (clip accuracy), else None."""

    hot_timings: List[Tuple[float, float]] = []
    """(wall, CPU) seconds of HOT_PATCHES back-to-back patches, timed after the warm-up."""

    def warm_up(self) -> None:
        """Run the models once (first-call allocation, graph tracing: start-up, not stream cost),
        then HOT_PATCHES times back to back into self.hot_timings."""

    def push(self, block: FloatArray) -> None:
        """Feed float32 [n] audio at 16 kHz; updates self.recorder."""
        raise NotImplementedError

    def finish(self) -> None:
        """End of the stream."""

    def classify_clip(self, waveform: FloatArray) -> str:
        """The clip's class label (only when self.labels is not None)."""
        raise NotImplementedError


class CpuTimed:
    """Wraps a model's run() and keeps the process CPU seconds of the last call.

    The pipeline times its models in wall seconds only; on a shared machine CPU seconds
    are the steadier figure, so the benchmark wraps the models it hands to the pipeline.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self.last_cpu_seconds = 0.0
        self.total_cpu_seconds = 0.0

    def run(self, *args: Any) -> Any:
        start = time.process_time()
        try:
            return self.model.run(*args)
        finally:
            self.last_cpu_seconds = time.process_time() - start
            self.total_cpu_seconds += self.last_cpu_seconds

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class PipelineSystem(System):
    """edge.pipeline.StreamingPipeline: each patch once, windows from cached probabilities."""

    def __init__(self, pipeline: Any, *, trained: bool, clip_block_samples: int, clip_rate_hz: Optional[int] = None) -> None:
        # Process-CPU timing around the pipeline's own model calls (the pipeline uses what it is given).
        self._yamnet = pipeline.yamnet = CpuTimed(pipeline.yamnet)
        self._head = pipeline.head = CpuTimed(pipeline.head)
        self.pipeline = pipeline
        self.recorder = Recorder()
        self.labels = tuple(pipeline.labels) if trained else None
        self.clip_block_samples = clip_block_samples
        self.clip_rate_hz = clip_rate_hz or pipeline.params.sample_rate_hz
        """Rate of the clips classify_clip gets; resampled to the pipeline's input rate when it differs."""

    def warm_up(self) -> None:
        params = self.pipeline.params
        self.pipeline.yamnet.run(np.zeros(params.patch_samples, np.float32))
        self.pipeline.head.run(np.zeros((1, params.embedding_size), np.float32))
        self.hot_timings = time_models(self._yamnet.model, self._head.model, noise_patch(params.patch_samples), count=HOT_PATCHES)

    def _models_cpu_seconds(self) -> float:
        return self._yamnet.total_cpu_seconds + self._head.total_cpu_seconds

    def _record(self, output: Any, seconds: float, models_cpu_before: float) -> None:
        # Blocks are far shorter than a hop, so a push completes at most one patch and the
        # wrapped models' last call is that patch's; otherwise split the models' CPU evenly.
        patches = len(output.patches)
        if patches == 1:
            patch = output.patches[0]
            self.recorder.patch(patch.yamnet_seconds + patch.head_seconds, self._yamnet.last_cpu_seconds + self._head.last_cpu_seconds)
        elif patches:
            cpu = (self._models_cpu_seconds() - models_cpu_before) / patches
            for patch in output.patches:
                self.recorder.patch(patch.yamnet_seconds + patch.head_seconds, cpu)
        if output.windows:
            self.recorder.decision(seconds, len(output.windows))

    # Only wall clocks per push: process CPU is read around the models (CpuTimed) and around the
    # whole stream, as for MediaPipe, so the harness adds no clock reads per block to Oído's cost.
    def push(self, block: FloatArray) -> None:
        before = self._models_cpu_seconds()
        start = time.perf_counter()
        output = self.pipeline.push(block)
        self._record(output, time.perf_counter() - start, before)

    def finish(self) -> None:
        before = self._models_cpu_seconds()
        start = time.perf_counter()
        output = self.pipeline.flush()
        self._record(output, time.perf_counter() - start, before)

    def classify_clip(self, waveform: FloatArray) -> str:
        from edge.pipeline import classify_clip

        block = self.clip_block_samples
        if self.pipeline.input_rate_hz != self.clip_rate_hz:  # a microphone-rate pipeline hears the clip at its rate
            from edge.resample import resample

            waveform = resample(waveform, self.clip_rate_hz, self.pipeline.input_rate_hz)
            block = block * self.pipeline.input_rate_hz // self.clip_rate_hz
        return classify_clip(self.pipeline, waveform, block_samples=block).label


class RerunWindowSystem(System):
    """The tutorial's streaming: every decision hop, YAMNet over the whole last window.

    Nothing is cached: a 3 s window is framed with YAMNet's end padding (6 patches), each
    patch runs YAMNet, the head runs on the window's embeddings, and the decision is the
    argmax of their mean. Same models and runtime as the Oído pipeline.
    """

    def __init__(self, yamnet: Any, head: Any, *, labels: Sequence[str], params: Any) -> None:
        self.yamnet = yamnet
        self.head = head
        self.labels = tuple(labels)
        self.params = params
        self.recorder = Recorder()
        self._window = np.zeros(0, np.float32)
        self._samples_seen = 0
        self._next_decision_end = params.window_samples

    def warm_up(self) -> None:
        self._classify(np.zeros(self.params.window_samples, np.float32), record=False)
        self.hot_timings = time_models(self.yamnet, self.head, noise_patch(self.params.patch_samples), count=HOT_PATCHES)

    def _classify(self, waveform: FloatArray, *, record: bool) -> FloatArray:
        from edge.framing import waveform_to_patches

        patches = waveform_to_patches(waveform, params=self.params)
        embeddings = []
        yamnet_seconds = []
        for patch in patches:
            start, cpu_start = time.perf_counter(), time.process_time()
            embedding, _ = self.yamnet.run(patch)
            yamnet_seconds.append((time.perf_counter() - start, time.process_time() - cpu_start))
            embeddings.append(np.asarray(embedding, np.float32))
        start, cpu_start = time.perf_counter(), time.process_time()
        probabilities = np.asarray(self.head.run(np.stack(embeddings)), np.float32)
        head_seconds, head_cpu = time.perf_counter() - start, time.process_time() - cpu_start
        if record:
            for seconds, cpu_seconds in yamnet_seconds:
                self.recorder.patch(seconds + head_seconds / len(patches), cpu_seconds + head_cpu / len(patches))
        return probabilities

    def push(self, block: FloatArray) -> None:
        params = self.params
        block = np.asarray(block, np.float32)
        while len(block):
            # Cut the block at the next decision boundary so each window ends where it should.
            take = min(len(block), self._next_decision_end - self._samples_seen)
            self._window = np.concatenate([self._window, block[:take]])[-params.window_samples :]
            self._samples_seen += take
            block = block[take:]
            if self._samples_seen == self._next_decision_end:
                start = time.perf_counter()
                probabilities = self._classify(self._window, record=True)
                int(np.argmax(probabilities.mean(axis=0)))  # the tutorial's decision
                self.recorder.decision(time.perf_counter() - start)
                self._next_decision_end += params.decision_hop_samples

    def classify_clip(self, waveform: FloatArray) -> str:
        # The tutorial's clip evaluation: YAMNet over the whole clip, mean over its patches.
        probabilities = self._classify(np.asarray(waveform, np.float32), record=False)
        return self.labels[int(np.argmax(probabilities.mean(axis=0)))]


class MediaPipeSystem(System):
    """MediaPipe AudioClassifier, AUDIO_STREAM mode, as Google's raspberry-pi example uses it.

    The example keeps a recorder buffer one model input long (0.975 s) and hands it to
    classify_async every input_length x (1 - overlap); here the hop is the Oído patch hop,
    so MediaPipe runs exactly the patches Oído runs. Each call is timed until its result
    callback arrives (the stream stays synchronous: no backlog builds up).
    """

    def __init__(self, model_path: str, *, params: Any, score_threshold: Optional[float] = None) -> None:
        # MediaPipe imports TensorFlow only for doc decorators when it is installed; a Pi has none.
        sys.modules.setdefault("tensorflow", None)  # type: ignore[arg-type]
        from mediapipe.tasks.python.audio import audio_classifier
        from mediapipe.tasks.python.audio.core import audio_task_running_mode
        from mediapipe.tasks.python.components.containers import audio_data
        from mediapipe.tasks.python.core import base_options

        self._audio_data = audio_data.AudioData
        self.params = params
        self.recorder = Recorder()
        self._results = 0
        self._result_ready = threading.Condition()
        self.top_labels: Dict[str, int] = {}

        def on_result(result: Any, timestamp_ms: int) -> None:
            if result.classifications and result.classifications[0].categories:
                name = result.classifications[0].categories[0].category_name
                self.top_labels[name] = self.top_labels.get(name, 0) + 1
            with self._result_ready:
                self._results += 1
                self._result_ready.notify_all()

        options = audio_classifier.AudioClassifierOptions(
            base_options=base_options.BaseOptions(model_asset_path=model_path),
            running_mode=audio_task_running_mode.AudioTaskRunningMode.AUDIO_STREAM,
            max_results=1,
            score_threshold=score_threshold,
            result_callback=on_result,
        )
        self.classifier = audio_classifier.AudioClassifier.create_from_options(options)
        self._timestamp_offset_ms = 0
        self._buffer = np.zeros(0, np.float32)
        self._next_patch_start = 0  # stream sample where the next patch starts
        self._buffer_start = 0  # stream sample of self._buffer[0]

    def warm_up(self) -> None:
        params = self.params
        self._classify(np.zeros(params.patch_samples, np.float32), 0)
        self.recorder = Recorder()
        patch = noise_patch(params.patch_samples)
        for index in range(1, HOT_PATCHES + 1):
            self._classify(patch, index * params.patch_samples)
        self.hot_timings = list(zip(self.recorder.patch_seconds, self.recorder.patch_cpu_seconds))
        # The stream's timestamps must keep increasing after the warm-up patches.
        self._timestamp_offset_ms = int(round((HOT_PATCHES + 1) * params.patch_seconds * 1000))
        self.recorder = Recorder()
        self.top_labels.clear()

    def _classify(self, patch: FloatArray, start_sample: int) -> None:
        expected = self._results + 1
        timestamp_ms = self._timestamp_offset_ms + int(round(start_sample * 1000 / self.params.sample_rate_hz))
        start, cpu_start = time.perf_counter(), time.process_time()
        self.classifier.classify_async(self._audio_data.create_from_array(patch, self.params.sample_rate_hz), timestamp_ms)
        with self._result_ready:
            if not self._result_ready.wait_for(lambda: self._results >= expected, MEDIAPIPE_RESULT_TIMEOUT_SECONDS):
                raise RuntimeError(f"MediaPipe gave no result within {MEDIAPIPE_RESULT_TIMEOUT_SECONDS} s")
        seconds = time.perf_counter() - start
        self.recorder.patch(seconds, time.process_time() - cpu_start)  # all of MediaPipe's threads
        self.recorder.decision(seconds)

    def push(self, block: FloatArray) -> None:
        params = self.params
        self._buffer = np.concatenate([self._buffer, np.asarray(block, np.float32)])
        while self._buffer_start + len(self._buffer) >= self._next_patch_start + params.patch_samples:
            offset = self._next_patch_start - self._buffer_start
            self._classify(np.ascontiguousarray(self._buffer[offset : offset + params.patch_samples]), self._next_patch_start)
            self._next_patch_start += params.hop_samples
            drop = self._next_patch_start - self._buffer_start
            self._buffer = self._buffer[drop:]
            self._buffer_start += drop

    def finish(self) -> None:
        self.classifier.close()


# --------------------------------------------------------------------------- building


class StandInHead:
    """A seeded random linear head + softmax, for YAMNet files benchmarked without a trained head."""

    def __init__(self, *, num_labels: int, embedding_size: int) -> None:
        rng = np.random.default_rng(STAND_IN_HEAD_SEED)
        self.weights = (rng.standard_normal((embedding_size, num_labels)) / np.sqrt(embedding_size)).astype(np.float32)

    def run(self, embeddings: FloatArray) -> FloatArray:
        logits = np.asarray(embeddings, np.float32) @ self.weights
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class TfYamnetAdapter:
    """train.yamnet's TensorFlow YAMNet behind the pipeline's PatchEmbedder interface."""

    def __init__(self, yamnet_tf: Any) -> None:
        import tensorflow as tf

        model = yamnet_tf.patch_model
        samples = yamnet_tf.params.patch_samples

        @tf.function(input_signature=[tf.TensorSpec([samples], tf.float32)])
        def run_patch(patch: Any) -> Any:
            outputs = model(patch[tf.newaxis], training=False)
            return outputs["embeddings"][0], outputs["scores"][0]

        self._run = run_patch

    def run(self, patch: FloatArray) -> Tuple[FloatArray, FloatArray]:
        embedding, scores = self._run(np.asarray(patch, np.float32))
        return embedding.numpy(), scores.numpy()


class KerasHeadAdapter:
    """The Keras head (model/head.json's .keras) behind the pipeline's PatchClassifier interface."""

    def __init__(self, model: Any, *, embedding_size: int) -> None:
        import tensorflow as tf

        @tf.function(input_signature=[tf.TensorSpec([None, embedding_size], tf.float32)])
        def run_head(embeddings: Any) -> Any:
            return model(embeddings, training=False)

        self._run = run_head

    def run(self, embeddings: FloatArray) -> FloatArray:
        return self._run(np.asarray(embeddings, np.float32)).numpy()


def _tflite_models(spec: Dict[str, Any]) -> Tuple[Any, Any, Tuple[str, ...], Any, bool]:
    """(yamnet, head, labels, params, trained) for a TF-Lite system from its spec."""
    from edge.params import DEFAULT_PARAMS, Params
    from edge.yamnet import YamnetTflite

    threads = int(spec.get("num_threads", 1))
    params = Params.from_dict(spec["params"]) if spec.get("params") else DEFAULT_PARAMS
    yamnet = YamnetTflite(spec["yamnet"], num_threads=threads)
    if spec.get("head"):
        from edge.head import HeadTflite

        head: Any = HeadTflite(spec["head"], num_threads=threads)
        labels = tuple(spec["labels"])
        trained = True
    else:
        labels = tuple(spec.get("labels") or ("stand_in_a", "stand_in_b"))
        head = StandInHead(num_labels=len(labels), embedding_size=params.embedding_size)
        trained = False
    return yamnet, head, labels, params, trained


def build_system(spec: Dict[str, Any]) -> System:
    """Import and load what the spec names; the cost counts as the system's start-up."""
    kind = spec["kind"]
    clip_block = int(spec["block_samples"])
    if kind == "mediapipe":
        from edge.params import DEFAULT_PARAMS

        return MediaPipeSystem(spec["model"], params=DEFAULT_PARAMS)
    if kind == "tf":
        return _build_tf_system(spec)
    if kind == "pipeline" and spec.get("model_dir") and not spec.get("yamnet"):
        from edge.pipeline import load_pipeline

        pipeline = load_pipeline(
            spec["model_dir"], num_threads=int(spec.get("num_threads", 1)), input_rate_hz=spec.get("input_rate_hz")
        )
        return PipelineSystem(
            pipeline, trained=True, clip_block_samples=clip_block, clip_rate_hz=int(spec["sample_rate_hz"])
        )
    yamnet, head, labels, params, trained = _tflite_models(spec)
    if kind == "rerun":
        return RerunWindowSystem(yamnet, head, labels=labels, params=params)
    if kind == "pipeline":
        from edge.detect import Detector
        from edge.pipeline import StreamingPipeline

        pipeline = StreamingPipeline(
            yamnet, head, labels=labels, params=params, detector=Detector(labels=labels, params=params)
        )
        return PipelineSystem(pipeline, trained=trained, clip_block_samples=clip_block)
    raise ValueError(f"unknown system kind {kind!r} in the spec; use pipeline, rerun, mediapipe or tf")


def _build_tf_system(spec: Dict[str, Any]) -> System:
    """TensorFlow YAMNet (train.yamnet) + the Keras head, behind the same streaming pipeline."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(int(spec.get("num_threads", 1)))
    tf.config.threading.set_inter_op_parallelism_threads(int(spec.get("num_threads", 1)))
    from edge.detect import Detector
    from edge.pipeline import StreamingPipeline
    from train.head import load_head
    from train.yamnet import load_yamnet

    head = load_head(spec["model_dir"])
    yamnet_tf = load_yamnet(source="auto", params=head.params)
    labels = tuple(head.labels)
    pipeline = StreamingPipeline(
        TfYamnetAdapter(yamnet_tf),
        KerasHeadAdapter(head.model, embedding_size=head.embedding_size),
        labels=labels,
        params=head.params,
        detector=Detector(labels=labels, params=head.params),
    )
    return PipelineSystem(pipeline, trained=True, clip_block_samples=int(spec["block_samples"]))


# --------------------------------------------------------------------------- the run


def run_stream(system: System, stream: FloatArray, *, block_samples: int) -> Dict[str, Any]:
    """Feed the stream block by block; CPU and wall time of the whole feed."""
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for start in range(0, len(stream), block_samples):
        system.push(stream[start : start + block_samples])
    system.finish()
    cpu_seconds = time.process_time() - cpu_start
    wall_seconds = time.perf_counter() - wall_start
    recorder = system.recorder
    return {
        "cpu_seconds": cpu_seconds,
        "wall_seconds": wall_seconds,
        "patches": recorder.patches,
        "decisions": recorder.decisions,
        "patch_latency": latency_summary(recorder.patch_seconds),
        "patch_cpu": latency_summary(recorder.patch_cpu_seconds),
        "decision_latency": latency_summary(recorder.decision_seconds),
    }


def run_accuracy(system: System, clips: FloatArray, clip_info: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Clip accuracy over the fold-5 clips whose class the system knows."""
    if system.labels is None:
        return {"unavailable": "not trained on our classes"}
    known = set(system.labels)
    correct: Dict[str, List[int]] = {}
    for info in clip_info:
        if info["class"] not in known:
            continue
        waveform = clips[info["offset"] : info["offset"] + info["samples"]]
        hit = int(system.classify_clip(waveform) == info["class"])
        correct.setdefault(info["class"], []).append(hit)
    total = sum(len(hits) for hits in correct.values())
    if not total:
        return {"unavailable": f"no fold-5 clip of the system's classes {sorted(known)}"}
    return {
        "clips": total,
        "correct": sum(sum(hits) for hits in correct.values()),
        "accuracy": sum(sum(hits) for hits in correct.values()) / total,
        "per_class": {label: sum(hits) / len(hits) for label, hits in sorted(correct.items())},
    }


def run(spec: Dict[str, Any], *, launched_at: Optional[float]) -> Dict[str, Any]:
    workdir = Path(spec["workdir"])
    # A microphone-rate system gets the same stream at its own rate (the pipeline resamples it).
    stream = np.load(workdir / spec.get("stream_file", "stream.npy"))
    result: Dict[str, Any] = {"system": spec["name"]}
    cpu_start = time.process_time()
    system = build_system(spec)
    system.warm_up()
    ready = time.monotonic()
    result["load_cpu_seconds"] = time.process_time() - cpu_start
    sample_rate = float(spec.get("input_rate_hz") or spec["sample_rate_hz"])
    result["stream"] = run_stream(system, stream, block_samples=int(spec.get("stream_block_samples") or spec["block_samples"]))
    result["stream"]["audio_seconds"] = len(stream) / sample_rate
    result["peak_rss_bytes"] = peak_rss_bytes()
    result["hot_patch_latency"] = latency_summary([wall for wall, _ in system.hot_timings])
    result["hot_patch_cpu"] = latency_summary([cpu for _, cpu in system.hot_timings])
    if launched_at is not None:
        result["load_seconds"] = ready - launched_at
        first = system.recorder.first_decision_monotonic
        result["startup_seconds"] = None if first is None else first - launched_at
    if isinstance(system, MediaPipeSystem):
        result["top_labels"] = dict(sorted(system.top_labels.items(), key=lambda item: -item[1])[:5])
    if spec.get("accuracy"):
        clip_info = json.loads((workdir / "clips.json").read_text())
        clips = np.load(workdir / "clips.npy", mmap_mode="r")
        result["accuracy"] = run_accuracy(system, clips, clip_info)
    result["runtime"] = loaded_runtimes()
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Run one benchmarked system (see scripts/bench.py).")
    parser.add_argument("spec", type=Path, help="the system's JSON spec, written by scripts/bench.py")
    parser.add_argument("--out", type=Path, required=True, help="JSON result file to write")
    parser.add_argument("--launched-at", type=float, default=None, help="time.monotonic() when the parent launched us")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    spec = json.loads(args.spec.read_text())
    try:
        result = run(spec, launched_at=args.launched_at)
    except Exception as error:  # reported as "unavailable: <reason>" by the parent
        traceback.print_exc()
        result = {"system": spec.get("name"), "error": f"{type(error).__name__}: {error}"}
    args.out.write_text(json.dumps(result, indent=2))
    return 0 if "error" not in result else 1


if __name__ == "__main__":
    sys.exit(main())
