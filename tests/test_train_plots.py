"""train.plots.plot_clip: where each patch's evidence is drawn, what does not vote, and silence."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.params import DEFAULT_PARAMS

LABELS = ["crying_baby", "clock_alarm", "toilet_flush"]


def test_each_patch_cell_is_one_hop_wide_and_centred_on_its_patch() -> None:
    from train.plots import patch_cells

    params = DEFAULT_PARAMS
    edges, end = patch_cells(10, params=params)
    centres = (edges[:-1] + edges[1:]) / 2
    patch_centres = np.arange(10) * params.hop_seconds + params.patch_seconds / 2  # 0.4875 s, 0.9675 s, ...
    np.testing.assert_allclose(centres, patch_centres)
    np.testing.assert_allclose(np.diff(edges), params.hop_seconds)  # the cells tile the axis
    assert centres[0] == pytest.approx(0.4875) and centres[9] == pytest.approx(4.8075)
    assert end == pytest.approx(5.295)  # patch 9 covers 4.32-5.295 s: the time axis reaches that far
    other = DEFAULT_PARAMS.with_changes(patch_hop_frames=24)  # geometry follows the params, no bare 0.48
    np.testing.assert_allclose(np.diff(patch_cells(3, params=other)[0]), 0.24)
    with pytest.raises(ValueError, match="at least one patch"):
        patch_cells(0)


def test_a_clip_without_an_audible_patch_is_headed_silence_not_a_class() -> None:
    from train.plots import clip_decision_text

    assert clip_decision_text([0.2, 0.34, 0.46], LABELS, silent=False) == "decision: toilet_flush (mean p 0.46)"
    assert clip_decision_text([0.2, 0.34, 0.46], LABELS, silent=True) == "decision: silence (no patch reaches -90 dBFS)"


def _drawn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, audible: Any) -> Any:
    """plot_clip's figure, kept open instead of saved."""
    pytest.importorskip("matplotlib")
    import train.plots as plots

    figures = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or Path(path))
    rng = np.random.default_rng(0)
    waveform = 0.2 * rng.standard_normal(DEFAULT_PARAMS.clip_samples).astype(np.float32)
    frames = 1 + (len(waveform) - DEFAULT_PARAMS.stft_window_samples) // DEFAULT_PARAMS.stft_hop_samples
    log_mel = rng.normal(size=(frames, DEFAULT_PARAMS.mel_bands)).astype(np.float32)
    probabilities = np.tile(np.array([[0.2, 0.34, 0.46]], np.float32), (10, 1))
    probabilities[[0, 1, 8, 9]] = [0.9, 0.05, 0.05]  # the edges of the clip: silent in the tests below
    plots.plot_clip(waveform, log_mel, probabilities, LABELS, tmp_path / "clip.png", title="x.wav", audible=audible)
    return figures[0]


def test_the_heatmap_centres_cells_on_patches_and_hatches_the_ones_that_do_not_vote(monkeypatch, tmp_path) -> None:
    from matplotlib.collections import QuadMesh

    audible = np.array([False, False, True, True, True, True, True, True, False, False])
    figure = _drawn(monkeypatch, tmp_path, audible)
    score_axis = figure.axes[4]
    mesh = next(child for child in score_axis.get_children() if isinstance(child, QuadMesh))
    x = mesh.get_coordinates()[0, :, 0]
    np.testing.assert_allclose(x, np.arange(11) * 0.48 + 0.4875 - 0.24)
    assert score_axis.get_xlim()[1] == pytest.approx(5.295)  # patch 9 ends there, after the 5 s of audio
    masked = np.ma.getmaskarray(mesh.get_array()).reshape(len(LABELS), 10)
    assert (masked == ~audible).all()  # silent patches draw no colour...
    hatched = [p for p in score_axis.patches if p.get_hatch() == "//"]
    assert len(hatched) == 4  # ...but a hatched grey cell each
    # Over every patch crying_baby would win (0.48); the audible ones say toilet_flush.
    assert figure._suptitle.get_text() == "x.wav  —  decision: toilet_flush (mean p 0.46)"


def test_a_silent_clip_plots_silence_not_the_argmax_of_its_silent_patches(monkeypatch, tmp_path) -> None:
    figure = _drawn(monkeypatch, tmp_path, np.zeros(10, bool))
    assert figure._suptitle.get_text() == "x.wav  —  decision: silence (no patch reaches -90 dBFS)"
    labels = [tick.get_text() for tick in figure.axes[4].get_yticklabels()]
    assert labels == LABELS  # no "mean over the audible patches" of none


def test_plot_clip_file_says_silence_for_a_file_of_digital_zeros(tmp_path: Path) -> None:
    """The console line of `oido-train plot-clip` (the decision plot_clip_file returns) names no
    class for a file YAMNet cannot hear, and names the argmax for one it can."""
    sf = pytest.importorskip("soundfile")
    from edge.pipeline import SILENCE
    from train.core import plot_clip_file

    params = DEFAULT_PARAMS

    class Head:
        labels = LABELS
        yamnet_weights_sha256 = "same"

        def __init__(self) -> None:
            self.params = params

        def predict(self, embeddings: np.ndarray) -> np.ndarray:
            return np.tile(np.array([0.2, 0.34, 0.46], np.float32), (len(embeddings), 1))

    class Embedder:
        weights_sha256 = "same"

        def embed_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return np.zeros((len(patches), 1024), np.float32), np.zeros((len(patches), 521), np.float32)

        def log_mel(self, waveform: np.ndarray) -> np.ndarray:
            return np.zeros((max(1, len(waveform) // params.stft_hop_samples), params.mel_bands), np.float32)

    rate = params.sample_rate_hz
    zeros, noise = tmp_path / "zeros.wav", tmp_path / "noise.wav"
    sf.write(zeros, np.zeros(3 * rate, np.float32), rate, subtype="FLOAT")
    sf.write(noise, (0.1 * np.random.default_rng(0).standard_normal(3 * rate)).astype(np.float32), rate, subtype="FLOAT")
    _, decision = plot_clip_file(zeros, head=Head(), embedder=Embedder(), out_path=tmp_path / "zeros.png")
    assert decision == SILENCE
    _, decision = plot_clip_file(noise, head=Head(), embedder=Embedder(), out_path=tmp_path / "noise.png")
    assert decision == "toilet_flush"
