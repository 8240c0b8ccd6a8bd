"""PNG figures: training curves, confusion matrix, and one clip's waveform / log-mel / patch scores.

The clip figure is the TF.js tutorial's visualisation: the waveform, its log-mel spectrogram,
and a patches x classes heatmap of the head's probabilities, with the clip's decision (the
edge's: argmax of the mean over patches). matplotlib runs on the Agg backend (no display).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DPI = 110
"""Resolution of every PNG (a 10 x 8 inch figure -> 1100 x 880 pixels)."""


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    """Save a figure as PNG via a temporary file and a rename; close it."""
    plt = _pyplot()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.stem}.{os.getpid()}.tmp.png")
    try:
        figure.savefig(staged, dpi=DPI, format="png", bbox_inches="tight")
        os.replace(staged, target)
    finally:
        plt.close(figure)
        staged.unlink(missing_ok=True)
    logger.info("wrote %s", target)
    return target


def plot_training_curves(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike[str], *, title: str = "Head training", note: str = ""
) -> Path:
    """Loss and accuracy per epoch, training and (when present) validation, side by side; note: a caption."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    if not history.get("loss"):
        raise ValueError("history has no 'loss' values: nothing to plot")
    epochs = np.arange(1, len(history["loss"]) + 1)
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for axis, metric, name in ((loss_axis, "loss", "cross-entropy loss"), (accuracy_axis, "accuracy", "patch accuracy")):
        axis.plot(epochs, history[metric], "o-", markersize=3, label="training")
        if history.get(f"val_{metric}"):
            axis.plot(epochs, history[f"val_{metric}"], "s--", markersize=3, label="validation (held-out clips)")
        axis.set_xlabel("epoch")
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.set_ylabel(name)
        axis.grid(alpha=0.3)
        axis.legend()
    accuracy_axis.set_ylim(0.0, 1.02)
    figure.suptitle(title)
    if note:
        figure.text(0.5, -0.02, note, ha="center", va="top", fontsize=9, color="dimgray")
    return _save(figure, path)


def plot_confusion_matrix(
    confusion: npt.ArrayLike, labels: Sequence[str], path: str | os.PathLike[str], *, title: str = "Confusion (clips)"
) -> Path:
    """Counts per (true, decided) pair, shaded by the share of the true class's clips."""
    plt = _pyplot()
    matrix = np.asarray(confusion, dtype=np.int64)
    if matrix.shape != (len(labels), len(labels)):
        raise ValueError(f"confusion must be [{len(labels)}, {len(labels)}], got {matrix.shape}")
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 2.0 + 0.9 * len(labels)
    figure, axis = plt.subplots(figsize=(size + 1.5, size), constrained_layout=True)
    image = axis.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(len(labels)):
        for column in range(len(labels)):
            dark = shares[row, column] > 0.6
            axis.text(column, row, str(matrix[row, column]), ha="center", va="center",
                      color="white" if dark else "black", fontsize=11)  # fmt: skip
    axis.set_xticks(range(len(labels)), labels, rotation=35, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("decided")
    axis.set_ylabel("true")
    accuracy = np.trace(matrix) / max(int(matrix.sum()), 1)
    axis.set_title(f"{title}\naccuracy {np.trace(matrix)}/{matrix.sum()} = {100 * accuracy:.1f}%")
    figure.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    return _save(figure, path)


def patch_cells(num_patches: int, *, params: Params = DEFAULT_PARAMS) -> tuple[npt.NDArray[np.float64], float]:
    """Where plot_clip's heatmap draws each patch: (edges float64 [num_patches + 1] in s, end in s).

    Cell k is one hop wide, centred on patch k's centre (k x hop + patch / 2: 0.4875 s, 0.9675 s, ...),
    so its colour sits over the middle of the audio that produced it and the cells tile the axis.
    `end` is where the last patch's audio ends ((num_patches - 1) x hop + patch: 5.295 s for 10):
    the time axis reaches at least that far.
    """
    if num_patches < 1:
        raise ValueError(f"need at least one patch, got {num_patches}")
    centres = np.arange(num_patches) * params.hop_seconds + params.patch_seconds / 2
    edges = np.append(centres - params.hop_seconds / 2, centres[-1] + params.hop_seconds / 2)
    return edges, (num_patches - 1) * params.hop_seconds + params.patch_seconds


def clip_decision_text(mean: npt.ArrayLike, labels: Sequence[str], *, silent: bool, params: Params = DEFAULT_PARAMS) -> str:
    """plot_clip's heading: the edge's decision for the clip (argmax of `mean`, float [len(labels)],
    the mean over its voting patches), or "silence" when no patch is audible (edge.pipeline.SILENCE):
    the argmax of what YAMNet makes of silence is no decision."""
    from edge.pipeline import SILENCE

    if silent:
        return f"decision: {SILENCE} (no patch reaches {params.silent_patch_dbfs:g} dBFS)"
    values = np.asarray(mean, dtype=np.float64)
    decision = int(np.argmax(values))
    return f"decision: {labels[decision]} (mean p {values[decision]:.2f})"


def plot_clip(
    waveform: npt.ArrayLike,
    log_mel: npt.ArrayLike,
    probabilities: npt.ArrayLike,
    labels: Sequence[str],
    path: str | os.PathLike[str],
    *,
    params: Params = DEFAULT_PARAMS,
    title: str = "",
    audible: npt.ArrayLike | None = None,
) -> Path:
    """The tutorial's three panels for one clip, on one time axis.

    waveform: float32 [n] in [-1, 1] at params.sample_rate_hz; log_mel: float32 [frames, mel_bands]
    (frames every params.stft_hop_seconds); probabilities: float32 [patches, len(labels)], patch k
    starting at k x params.hop_seconds; audible: bool [patches], those that vote (None: all).
    Each patch's cell is centred on the patch (patch_cells); patches that do not vote are hatched
    grey. The title ends with the edge's decision for the clip, "silence" when no patch votes.
    """
    from edge.pipeline import voting_mean

    plt = _pyplot()
    samples = np.asarray(waveform, dtype=np.float32)
    spectrogram = np.asarray(log_mel, dtype=np.float32)
    scores = np.asarray(probabilities, dtype=np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(labels) or len(scores) == 0:
        raise ValueError(f"probabilities must be [patches >= 1, {len(labels)}], got {scores.shape}")
    voting = np.ones(len(scores), bool) if audible is None else np.asarray(audible, bool).reshape(-1)
    mean = voting_mean(scores, voting)
    seconds = len(samples) / params.sample_rate_hz

    # A narrow second column holds the colour bars, so the three panels share one time axis.
    figure, axes = plt.subplots(
        3, 2, figsize=(10, 8), constrained_layout=True,
        gridspec_kw={"height_ratios": [1, 1.3, 1.3], "width_ratios": [1, 0.025]},
    )  # fmt: skip
    (wave_axis, wave_bar), (mel_axis, mel_bar), (score_axis, score_bar) = axes
    wave_bar.axis("off")
    mel_axis.sharex(wave_axis)
    score_axis.sharex(wave_axis)

    wave_axis.plot(np.arange(len(samples)) / params.sample_rate_hz, samples, linewidth=0.5)
    wave_axis.set_ylabel("amplitude")
    wave_axis.set_ylim(-1.05, 1.05)
    wave_axis.set_title("waveform")
    wave_axis.tick_params(labelbottom=False)

    frames_end = (len(spectrogram) - 1) * params.stft_hop_seconds + params.stft_window_seconds
    image = mel_axis.imshow(
        spectrogram.T, aspect="auto", origin="lower", interpolation="nearest", cmap="magma",
        extent=(0.0, frames_end, 0, spectrogram.shape[1]),
    )  # fmt: skip
    mel_axis.set_ylabel("mel band")
    mel_axis.set_title(f"log-mel spectrogram ({params.mel_bands} bands, {params.mel_min_hz:.0f}-{params.mel_max_hz:.0f} Hz)")
    mel_axis.tick_params(labelbottom=False)
    figure.colorbar(image, cax=mel_bar, label="log mel")

    edges, patches_end = patch_cells(len(scores), params=params)
    # Silent patches do not vote: masked out of the mesh, their cells show hatched grey instead of a colour.
    shown = np.ma.masked_array(scores.T, mask=np.broadcast_to(~voting, scores.T.shape))
    for k in np.flatnonzero(~voting):
        score_axis.axvspan(edges[k], edges[k + 1], facecolor="lightgray", edgecolor="darkgray", hatch="//",
                           linewidth=0, zorder=0)
    mesh = score_axis.pcolormesh(edges, np.arange(len(labels) + 1), shown, cmap="viridis", vmin=0.0, vmax=1.0)
    means = [f" ({mean[i]:.2f})" if voting.any() else "" for i in range(len(labels))]  # no mean of silence
    score_axis.set_yticks(np.arange(len(labels)) + 0.5, [f"{label}{means[i]}" for i, label in enumerate(labels)])
    score_axis.invert_yaxis()  # first label on top
    silent_note = f"; hatched: silent patches (< {params.silent_patch_dbfs:g} dBFS), which do not vote" if not voting.all() else ""
    score_axis.set_xlabel(f"time (s); a patch's cell is centred on the patch{silent_note}")
    score_axis.set_title("head probability per patch (label: mean over the audible patches)")
    figure.colorbar(mesh, cax=score_bar, label="probability")
    wave_axis.set_xlim(0.0, max(seconds, patches_end))

    heading = clip_decision_text(mean, labels, silent=not voting.any(), params=params)
    figure.suptitle(f"{title}  —  {heading}" if title else heading)
    return _save(figure, path)
