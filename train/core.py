"""What `oido-train` does, as plain functions (train/cli.py only parses arguments and calls these).

    prepare   -> data/ (train.prepare.prepare_dataset)
    embed     -> data/cache/embeddings/<yamnet hash>/<audio hash>.npz (train.embeddings)
    fit       -> model/head.json + model/head-<sha>.keras, reports/training_curves.png (train.head)
    evaluate  -> model/eval.json, reports/confusion.png; head.json "metrics.evaluation" (train.evaluate)
    cv        -> reports/cv.json, reports/cv_confusion.png
    plot-clip -> reports/<clip>.png (train.plots)
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params
from train.embeddings import ClipEmbeddings, embed_files, patch_rms_dbfs
from train.evaluate import (
    CROSS_VALIDATION_FILE,
    EVALUATION_FILE,
    audible_masks,
    cross_validate,
    evaluate_head,
    format_cross_validation,
    format_report,
)
from train.head import DEFAULT_TRAIN_CONFIG, HeadError, TrainConfig, TrainedHead

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_DATA_DIR = Path("data")
DEFAULT_MODEL_DIR = Path("model")
DEFAULT_REPORTS_DIR = Path("reports")
CACHE_SUBDIR = Path("cache") / "embeddings"
"""Embedding cache, inside the data directory."""
TRAINING_CURVES_PNG = "training_curves.png"
CONFUSION_PNG = "confusion.png"
CV_CONFUSION_PNG = "cv_confusion.png"
TRAINED_ON_KEY = "trained_on"
"""head.json: {"sources": [...]}, the recordings the head was trained on (see check_head_not_trained_on_test)."""


class Split(NamedTuple):
    """One split's clips, in entry order."""

    embeddings: list[FloatArray]
    """float32 [p_i, 1024] per clip"""
    labels: npt.NDArray[np.int64]
    names: list[str]
    sources: list[str]
    folds: list[int]
    levels_dbfs: list[FloatArray]
    """float32 [p_i] patch RMS levels per clip"""
    train_only: list[bool]
    """Extra background clips (DatasetEntry.train_only): trained on, never tested."""


@dataclass
class EmbeddedDataset:
    """A prepared data set with every clip's YAMNet outputs (same order as its entries)."""

    dataset: Any
    """train.datasets.PreparedDataset"""
    train: list[ClipEmbeddings]
    test: list[ClipEmbeddings]
    yamnet_weights_sha256: str
    seconds: float = 0.0

    @property
    def labels(self) -> list[str]:
        return list(self.dataset.labels)

    def split(self, name: str) -> Split:
        """The clips of 'train', 'test' or 'all' (train then test)."""
        if name == "all":
            entries = list(self.dataset.train) + list(self.dataset.test)
            clips = self.train + self.test
        else:
            entries = list(getattr(self.dataset, name))
            clips = getattr(self, name)
        return Split(
            embeddings=[clip.embeddings for clip in clips],
            labels=np.array([entry.class_number for entry in entries], dtype=np.int64),
            names=[entry.file_name for entry in entries],
            sources=[entry.source for entry in entries],
            folds=[entry.fold for entry in entries],
            levels_dbfs=[clip.rms_dbfs for clip in clips],
            train_only=[entry.train_only for entry in entries],
        )


@dataclass
class RunSummary:
    """What `run_all` measured, for the CLI to print."""

    seconds: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- steps


def prepare(
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    classes: Sequence[str] | None = None,
    own_data_dir: Path | None = None,
    background: str | None = "esc10",
    extra_background: str | None = None,
    false_alarms: Path | None = None,
    esc50_dir: Path | None = None,
    assets_dir: Path | None = None,
    progress: bool = True,
) -> Any:
    """train.prepare.prepare_dataset into data_dir; returns the PreparedDataset.

    esc50_dir: the ESC-50 folder; assets_dir: the assets root holding esc50/ (``--assets``);
    both None: found by train.assets.find_esc50.
    """
    from train.prepare import prepare_dataset

    return prepare_dataset(
        classes=classes,
        esc50_dir=esc50_dir,
        assets_dir=assets_dir,
        out_dir=data_dir,
        background=background,
        own_data_dir=own_data_dir,
        extra_background=extra_background,
        false_alarms=false_alarms,
        progress=progress,
    )


class LazyYamnet:
    """train.yamnet's YAMNet, built on first use: with every embedding cached, a run needs only
    the weights' hash (sha256 of the weights file), not the TensorFlow model (~1-2 s to build)."""

    def __init__(
        self,
        *,
        source: str = "auto",
        weights_path: Path | None = None,
        assets_dir: Path | None = None,
        params: Params = DEFAULT_PARAMS,
    ):
        from train.yamnet import find_weights_file
        from train.yamnet_weights import file_sha256

        self.source = source
        self.params = params
        self.assets_dir = assets_dir
        self._model: Any = None
        self.weights_path: Path | None = None
        if source != "hub":  # a location given that lacks the file raises here, as load_yamnet does
            self.weights_path = find_weights_file(weights_path=weights_path, assets_dir=assets_dir)
        if self.weights_path is not None:
            self.weights_sha256: str = file_sha256(self.weights_path)
        else:  # TF Hub, or no file: load now so a missing file fails here with YAMNet's own message
            self.weights_sha256 = self.model.weights_sha256

    @property
    def model(self) -> Any:
        """The train.yamnet.YamnetTF, built now if needed."""
        if self._model is None:
            from train.yamnet import load_yamnet

            started = time.perf_counter()
            source = "tflite" if self.weights_path is not None else self.source
            self._model = load_yamnet(source=source, weights_path=self.weights_path, params=self.params,  # type: ignore[arg-type]
                                      assets_dir=self.assets_dir)  # fmt: skip
            if self.weights_path is not None and self._model.weights_sha256 != self.weights_sha256:
                raise RuntimeError(f"{self.weights_path} changed while loading (sha256 differs); run again")
            logger.info(
                "YAMNet (%s, weights %s...) ready in %.1f s",
                self._model.source, self._model.weights_sha256[:16], time.perf_counter() - started,
            )  # fmt: skip
        return self._model

    @property
    def numerics(self) -> str:
        """'' at one TensorFlow CPU thread (the CLI's --threads default), else "tf-threads-N"
        ("tf-threads-auto": TensorFlow's choice): its kernels round differently per thread count,
        so embedding caches keep the two apart (train.embeddings.cache_folder)."""
        threads = 0
        if "tensorflow" in sys.modules:
            import tensorflow as tf

            threads = tf.config.threading.get_intra_op_parallelism_threads()
        return "" if threads == 1 else f"tf-threads-{threads or 'auto'}"

    def embed_patches(self, patches: FloatArray, *, batch_size: int = 64) -> tuple[FloatArray, FloatArray]:
        """patches float32 [p, patch_samples] -> (embeddings float32 [p, 1024], scores float32 [p, 521])."""
        return self.model.embed_patches(patches, batch_size=batch_size)

    def log_mel(self, waveform: FloatArray) -> FloatArray:
        """float32 [n] -> log-mel float32 [frames, mel_bands] (YAMNet's front end)."""
        return self.model.log_mel(waveform)


def load_embedder(
    *,
    source: str = "auto",
    weights_path: Path | None = None,
    assets_dir: Path | None = None,
    params: Params = DEFAULT_PARAMS,
) -> LazyYamnet:
    """The YAMNet embeddings come from (train.yamnet.load_yamnet), built when first needed.

    weights_path: the weights file (``--yamnet-weights``); else it is searched for
    (train.yamnet.find_weights_file), with assets_dir (``--assets``) as the assets root holding
    yamnet/. A location given (either, or $OIDO_YAMNET_TFLITE / $OIDO_ASSETS) that lacks the
    file raises AssetError: it is never skipped for another copy.
    """
    if source not in ("auto", "tflite", "hub"):
        raise ValueError(f"YAMNet source must be 'auto', 'tflite' or 'hub', got {source!r}")
    return LazyYamnet(source=source, weights_path=weights_path, assets_dir=assets_dir, params=params)


def embed_dataset(
    dataset: Any,
    embedder: Any,
    *,
    cache_root: Path | None = None,
    params: Params = DEFAULT_PARAMS,
    progress: bool | None = None,
) -> EmbeddedDataset:
    """Embeddings of every train and test clip, from the cache where possible.

    cache_root: None means <data_dir>/cache/embeddings.
    """
    started = time.perf_counter()
    root = Path(dataset.data_dir) / CACHE_SUBDIR if cache_root is None else Path(cache_root)
    entries = list(dataset.train) + list(dataset.test)
    clips = embed_files(
        [dataset.audio_path(entry) for entry in entries], embedder, cache_root=root, params=params, progress=progress
    )
    seconds = time.perf_counter() - started
    logger.info("embeddings of %d clips ready in %.1f s", len(clips), seconds)
    return EmbeddedDataset(
        dataset=dataset,
        train=clips[: len(dataset.train)],
        test=clips[len(dataset.train) :],
        yamnet_weights_sha256=embedder.weights_sha256,
        seconds=seconds,
    )


def fit(
    embedded: EmbeddedDataset,
    *,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    params: Params = DEFAULT_PARAMS,
    model_dir: Path = DEFAULT_MODEL_DIR,
    reports_dir: Path | None = DEFAULT_REPORTS_DIR,
) -> TrainedHead:
    """Train the head on the training folds' patches, save it to model_dir, plot its curves."""
    from train.head import fit_head, save_head

    train = embedded.split("train")
    result = fit_head(
        train.embeddings, train.labels, num_labels=len(embedded.labels), config=config,
        groups=train.sources, patch_levels_dbfs=train.levels_dbfs,
    )  # fmt: skip
    dataset = embedded.dataset
    counts = dataset.counts()
    head = TrainedHead(
        model=result.model,
        labels=embedded.labels,
        background_label=dataset.background_label,
        params=params,
        train_config=config,
        yamnet_weights_sha256=embedded.yamnet_weights_sha256,
        embedding_size=int(train.embeddings[0].shape[1]),
        metrics={"training": result.metrics()},
        history=result.history,
        extra={
            "task": dataset.task,
            "test_fold": dataset.test_fold,
            "clips": counts,
            TRAINED_ON_KEY: trained_on_record([train.sources[index] for index in result.train_clips]),
            "validation_split": "by clip, whole source recordings per side, stratified by class",
            "class_weights": (
                {embedded.labels[k]: v for k, v in result.class_weights.items()} if result.class_weights else None
            ),
        },
    )
    save_head(head, model_dir)
    last = result.metrics()["final_epoch"]
    logger.info(
        "trained the head: training patch accuracy %.3f%s",
        last.get("accuracy", float("nan")),
        f", validation patch accuracy {last['val_accuracy']:.3f}" if "val_accuracy" in last else "",
    )
    if reports_dir is not None:
        from train.plots import plot_training_curves

        note = ""
        if result.silent_patches:
            note = (
                f"{result.silent_patches} silent training patches (< {config.silent_patch_dbfs:g} dBFS) are trained "
                "towards the uniform distribution, whose entropy keeps the training loss above 0; "
                "validation figures leave silent patches out"
            )
        plot_training_curves(
            result.history, Path(reports_dir) / TRAINING_CURVES_PNG, title=f"Head training ({dataset.task})", note=note
        )
    return head


def trained_on_record(sources: Sequence[str]) -> dict[str, Any]:
    """head.json's "trained_on": the source recordings of the clips a head was trained on."""
    return {"sources": sorted(set(sources))}


def check_head_not_trained_on_test(extra: dict[str, Any], dataset: Any, *, json_path: Path) -> None:
    """HeadError naming head.json when a test clip's source was among the head's training sources.

    extra: head.json's other fields (TrainedHead.extra); a head without a "trained_on" record
    (older, or from fit-openset) is not checked. dataset: the train.datasets.PreparedDataset to
    score on. A source the data set itself has in both training and test folds is not counted:
    ESC-50's own folds split four recordings that way (data/README.md), and a head trained on
    those folds is scored like that by design. What is caught is a source that moved from the
    training folds to the test fold since the head was fitted.
    """
    record = extra.get(TRAINED_ON_KEY)
    trained = record.get("sources") if isinstance(record, dict) else None
    if not isinstance(trained, list):
        return
    tested = {entry.source for entry in dataset.test}
    moved = sorted((tested & set(trained)) - {entry.source for entry in dataset.train})
    if moved:
        clips = sum(entry.source in moved for entry in dataset.test)
        raise HeadError(
            f"{json_path} was trained on {len(moved)} source recording(s) that are now in the test fold "
            f"{dataset.test_fold} ({clips} test clip(s); e.g. {', '.join(moved[:3])}): the folds changed since the "
            "head was fitted, so its test figures would be inflated: fit it again (oido-train fit) on this data"
        )


def check_head_fits_data(head: TrainedHead, embedded: EmbeddedDataset, *, model_dir: Path) -> None:
    """HeadError naming head.json when the head's labels or YAMNet differ from the data's, or it was
    trained on a test clip's source recording (check_head_not_trained_on_test)."""
    json_path = Path(model_dir) / "head.json"
    if list(head.labels) != embedded.labels:
        raise HeadError(
            f"{json_path} has labels {head.labels} but the data set has {embedded.labels}: "
            "retrain with oido-train fit (or point --data-dir at the data it was trained on)"
        )
    if head.yamnet_weights_sha256 != embedded.yamnet_weights_sha256:
        raise HeadError(
            f"{json_path} was trained on YAMNet weights {head.yamnet_weights_sha256[:16]}..., the embeddings "
            f"come from {embedded.yamnet_weights_sha256[:16]}...: retrain with oido-train fit"
        )
    check_head_not_trained_on_test(head.extra, embedded.dataset, json_path=json_path)


def evaluate(
    head: TrainedHead,
    embedded: EmbeddedDataset,
    *,
    model_dir: Path = DEFAULT_MODEL_DIR,
    reports_dir: Path | None = DEFAULT_REPORTS_DIR,
) -> dict[str, Any]:
    """Clip-level evaluation on the test fold, decided as the edge decides.

    Writes model_dir/eval.json and reports_dir/confusion.png, and adds a summary to head.json's
    "metrics" as "evaluation".
    """
    from train.datasets import write_json_atomic
    from train.head import read_head_metadata, write_head_metadata

    check_head_fits_data(head, embedded, model_dir=model_dir)
    test = embedded.split("test")
    report = evaluate_head(
        head.predict, test.embeddings, test.labels, head.labels,
        background_label=head.background_label, clip_names=test.names,
        clip_audible=audible_masks(test.levels_dbfs, head.params),
    )  # fmt: skip
    report["task"] = embedded.dataset.task
    report["test_fold"] = embedded.dataset.test_fold
    report["decision"] = (
        "edge.pipeline.decide: argmax of the mean of the clip's patch probabilities over its audible patches "
        f"(>= {head.params.silent_patch_dbfs:g} dBFS)"
    )
    Path(model_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(model_dir) / EVALUATION_FILE, report)

    summary = {key: report[key] for key in ("accuracy", "accuracy_text", "macro_f1", "test_fold")}
    for part in ("targets", "background"):
        if part in report:
            summary[part] = {key: report[part][key] for key in ("accuracy", "accuracy_text")}
    metadata = read_head_metadata(model_dir)
    metadata.setdefault("metrics", {})["evaluation"] = summary
    write_head_metadata(model_dir, metadata)
    head.metrics["evaluation"] = summary

    if reports_dir is not None:
        from train.plots import plot_confusion_matrix

        plot_confusion_matrix(
            report["confusion"], head.labels, Path(reports_dir) / CONFUSION_PNG,
            title=f"Test fold {embedded.dataset.test_fold} ({embedded.dataset.task})",
        )  # fmt: skip
    return report


def cross_validation(
    embedded: EmbeddedDataset,
    *,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    reports_dir: Path = DEFAULT_REPORTS_DIR,
    repeats: int = 1,
) -> dict[str, Any]:
    """k-fold cross-validation over all clips by fold; writes reports/cv.json and cv_confusion.png.

    repeats > 1 runs it again with seeds config.seed + 1, + 2, ... (another validation split,
    initialisation and shuffling each time): with 32 clips a fold one clip is 3 points of a
    fold's accuracy, so a single seed's mean moves by a clip or two. The summary is the first
    seed's, plus "repeats" (each seed's mean) and "mean_accuracy_over_repeats".
    """
    from dataclasses import replace

    from train.datasets import write_json_atomic
    from train.evaluate import summarize_repeats
    from train.plots import plot_confusion_matrix

    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    started = time.perf_counter()
    clips = embedded.split("all")
    summaries = [
        cross_validate(
            clips.embeddings,
            clips.labels,
            clips.folds,
            embedded.labels,
            background_label=embedded.dataset.background_label,
            config=replace(config, seed=config.seed + repeat),
            groups=clips.sources,
            clip_names=clips.names,
            patch_levels_dbfs=clips.levels_dbfs,
            train_only=clips.train_only,
        )
        for repeat in range(repeats)
    ]
    summary = summaries[0]
    if repeats > 1:
        summary.update(summarize_repeats(summaries))
    summary["task"] = embedded.dataset.task
    summary["seconds"] = time.perf_counter() - started
    Path(reports_dir).mkdir(parents=True, exist_ok=True)
    write_json_atomic(Path(reports_dir) / CROSS_VALIDATION_FILE, summary)
    plot_confusion_matrix(
        summary["overall"]["confusion"], embedded.labels, Path(reports_dir) / CV_CONFUSION_PNG,
        title=f"{len(summary['folds'])}-fold cross-validation ({embedded.dataset.task}, seed {config.seed})",
    )  # fmt: skip
    return summary


def plot_clip_file(
    audio_path: Path,
    *,
    head: TrainedHead,
    embedder: Any,
    out_path: Path,
) -> tuple[Path, str]:
    """Waveform, log-mel and patch probabilities of one audio file as a PNG; returns (png, decision):
    the decided label, or edge.pipeline.SILENCE when no patch is audible."""
    from edge.audio import read_audio
    from edge.framing import waveform_to_patches
    from edge.pipeline import SILENCE, decide
    from train.plots import plot_clip

    if embedder.weights_sha256 != head.yamnet_weights_sha256:
        logger.warning("the head was trained on other YAMNet weights than the ones loaded; its scores may be off")
    params = head.params
    waveform = read_audio(audio_path, target_rate_hz=params.sample_rate_hz)
    patches = waveform_to_patches(waveform, params=params)
    embeddings, _ = embedder.embed_patches(patches)
    probabilities = head.predict(embeddings)
    audible = params.audible(patch_rms_dbfs(patches))
    # log-mel needs one STFT window of audio; the clip is at least that after framing pads it.
    padded = np.pad(waveform, (0, max(0, params.stft_window_samples - len(waveform))))
    log_mel = embedder.log_mel(padded)
    png = plot_clip(padded, log_mel, probabilities, head.labels, out_path, params=params, title=Path(audio_path).name, audible=audible)
    return png, head.labels[decide(probabilities, audible)] if audible.any() else SILENCE


def run_all(
    *,
    data_dir: Path = DEFAULT_DATA_DIR,
    model_dir: Path = DEFAULT_MODEL_DIR,
    reports_dir: Path = DEFAULT_REPORTS_DIR,
    classes: Sequence[str] | None = None,
    own_data_dir: Path | None = None,
    background: str | None = "esc10",
    extra_background: str | None = None,
    false_alarms: Path | None = None,
    esc50_dir: Path | None = None,
    assets_dir: Path | None = None,
    config: TrainConfig = DEFAULT_TRAIN_CONFIG,
    yamnet_source: str = "auto",
    yamnet_weights: Path | None = None,
    progress: bool | None = None,
) -> tuple[dict[str, Any], RunSummary]:
    """prepare + embed + fit + evaluate: the main job. Returns (evaluation report, timings)."""
    summary = RunSummary()
    started = time.perf_counter()
    dataset = prepare(
        data_dir=data_dir, classes=classes, own_data_dir=own_data_dir, background=background,
        extra_background=extra_background, false_alarms=false_alarms, esc50_dir=esc50_dir, assets_dir=assets_dir,
        progress=progress is not False,
    )  # fmt: skip
    summary.seconds["prepare"] = time.perf_counter() - started

    mark = time.perf_counter()
    embedder = load_embedder(source=yamnet_source, weights_path=yamnet_weights, assets_dir=assets_dir)
    embedded = embed_dataset(dataset, embedder, progress=progress)
    summary.seconds["embed"] = time.perf_counter() - mark

    mark = time.perf_counter()
    head = fit(embedded, config=config, model_dir=model_dir, reports_dir=reports_dir)
    summary.seconds["fit"] = time.perf_counter() - mark

    mark = time.perf_counter()
    report = evaluate(head, embedded, model_dir=model_dir, reports_dir=reports_dir)
    summary.seconds["evaluate"] = time.perf_counter() - mark
    summary.seconds["total"] = time.perf_counter() - started
    summary.evaluation = report
    return report, summary


__all__ = [
    "EmbeddedDataset",
    "RunSummary",
    "cross_validation",
    "embed_dataset",
    "evaluate",
    "fit",
    "format_cross_validation",
    "format_report",
    "load_embedder",
    "plot_clip_file",
    "prepare",
    "run_all",
]
