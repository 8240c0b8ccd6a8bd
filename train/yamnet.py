"""YAMNet in TensorFlow: float log-mel front end + MobileNet-v1 body, for training and export.

`load_yamnet()` finds the published weights (a TF-Lite copy of TF Hub google/yamnet/1,
read by `train.yamnet_weights`) and rebuilds the network as a Keras 3 functional model,
`YamnetTF.patch_model`: one 0.975 s patch of 16 kHz audio in, its 1024-D embedding,
521 AudioSet scores and 96x64 log-mel spectrogram out. The front end is float TF ops
(tf.signal), so the model exports with TFLiteConverter and the same numbers reach the Pi.

On a networked machine without the TF-Lite copy, it falls back to TF Hub google/yamnet/1
(which takes a whole waveform: each patch is run through it on its own), cached in the user
cache (``~/.cache/oido/tfhub``) unless ``$TFHUB_CACHE_DIR`` says otherwise; its AudioSet class
map is kept beside where the weights file would be, so the class names are found as for the file.

Architecture and front end follow tensorflow/models research/audioset/yamnet
(features.py, yamnet.py); every size comes from `edge.params.Params`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params
from train.assets import (
    YAMNET_ENV,
    YAMNET_WEIGHTS_FILE,
    AssetError,
    find_yamnet_weights,
    repo_root,
    user_cache_dir,
    yamnet_candidates,
)
from train.yamnet_weights import YamnetWeights, read_yamnet_weights

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

Source = Literal["auto", "tflite", "hub"]
MelChoice = Literal["exact", "file"]

WEIGHTS_FILE_NAME = YAMNET_WEIGHTS_FILE
"""The TF-Lite copy of the public YAMNet weights the project reads."""
WEIGHTS_ENV_VAR = YAMNET_ENV
"""Environment variable that may name the weights file."""
HUB_HANDLE = "https://tfhub.dev/google/yamnet/1"
"""TF Hub model used when no weights file is found."""
HUB_CACHE_ENV = "TFHUB_CACHE_DIR"
"""tensorflow_hub's cache folder variable; unset, Oído uses ``user_cache_dir() / "tfhub"``."""


def default_weight_paths(*, assets_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Every place `load_yamnet(source="auto")` may read the weights file from, in search order.

    The first given of ``assets_dir`` (``--assets``), $OIDO_YAMNET_TFLITE, $OIDO_ASSETS (as
    train.assets.yamnet_candidates), then yamnet/ in ../shared/assets beside the repository
    root and beside the working directory, then the user cache (~/.cache/oido/yamnet). It only
    lists: find_weights_file decides, and fails on a given place that lacks the file.
    """
    explicit, implicit = yamnet_candidates(assets_dir=assets_dir)
    unique: list[Path] = []
    for _, path in explicit + implicit:
        if path not in unique:
            unique.append(path)
    return unique


def find_weights_file(
    *, weights_path: str | os.PathLike[str] | None = None, assets_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The weights file: ``weights_path`` (``--yamnet-weights``), else ``assets_dir`` (``--assets``),
    else $OIDO_YAMNET_TFLITE, else $OIDO_ASSETS, else the shared assets, else the user cache;
    None when none was given and none holds it (then TF Hub). AssetError, naming it and the fix,
    when the place given does not hold the file (train.assets.find_yamnet_weights)."""
    return find_yamnet_weights(weights_path=weights_path, assets_dir=assets_dir)


CLASS_MAP_FILE_NAME = "yamnet_class_map.csv"
"""YAMNet's AudioSet class list (index, mid, display_name), kept beside the weights."""


def read_class_map(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Display names of YAMNet's classes in score order, from yamnet_class_map.csv. ValueError if unreadable."""
    import csv

    try:
        with open(path, newline="", encoding="utf-8") as stream:
            rows = list(csv.DictReader(stream))
        return tuple(row["display_name"] for row in sorted(rows, key=lambda row: int(row["index"])))
    except (OSError, KeyError, ValueError, csv.Error) as error:
        raise ValueError(
            f"{path}: cannot read YAMNet's class map ({error}); use {CLASS_MAP_FILE_NAME} from the YAMNet release "
            "(index,mid,display_name)"
        ) from None


def class_map_candidates(
    weights_path: str | os.PathLike[str] | None = None, *, assets_dir: str | os.PathLike[str] | None = None
) -> list[Path]:
    """Where yamnet_class_map.csv may be, in order: beside the weights, then beside every path
    default_weight_paths lists (the user cache's yamnet/ holds the TF Hub model's, see hub_class_names)."""
    places = [Path(weights_path)] if weights_path is not None else []
    places += default_weight_paths(assets_dir=assets_dir)
    candidates: list[Path] = []
    for place in places:
        if place.parent / CLASS_MAP_FILE_NAME not in candidates:
            candidates.append(place.parent / CLASS_MAP_FILE_NAME)
    return candidates


def find_audioset_classes(
    weights_path: str | os.PathLike[str] | None = None, *, assets_dir: str | os.PathLike[str] | None = None
) -> tuple[str, ...]:
    """YAMNet's class names from the first class map of class_map_candidates; () when there is
    none (no weights file here and TF Hub's YAMNet never loaded on this machine)."""
    for candidate in class_map_candidates(weights_path, assets_dir=assets_dir):
        if candidate.is_file():
            return read_class_map(candidate)
    return ()


def _where_to_put_weights() -> str:
    return (
        f"put {WEIGHTS_FILE_NAME} in {repo_root().parent / 'shared' / 'assets' / 'yamnet'}/ "
        f"or {user_cache_dir() / 'yamnet'}/, or pass --yamnet-weights FILE or --assets DIR (the folder holding yamnet/)"
    )


def _hub_failure_message(error: BaseException, *, searched: bool) -> str:
    """One sentence: why TF Hub failed (its own words kept) and what to do."""
    cause = " ".join(str(error).split()) or type(error).__name__
    module_dir = hub_module_dir()
    if module_dir.is_dir() and not isinstance(error, ImportError):
        # downloaded once: a damaged copy (tensorflow/hub#896) fails the same way on every run
        return (
            f"TF Hub's cached YAMNet in {module_dir} does not load ({cause}): delete that folder "
            f"to download it again, or {_where_to_put_weights()}."
        )
    found = "YAMNet weights not found and " if searched else ""
    return f"{found}TF Hub's YAMNet ({HUB_HANDLE}) could not be loaded ({cause}): {_where_to_put_weights()}."


# --- TF Hub ------------------------------------------------------------------------


def hub_cache_dir(*, env: Mapping[str, str] | None = None) -> Path:
    """Where TF Hub downloads go: ``$TFHUB_CACHE_DIR``, else ``user_cache_dir() / "tfhub"``."""
    env = os.environ if env is None else env
    return Path(env[HUB_CACHE_ENV]).expanduser() if env.get(HUB_CACHE_ENV) else user_cache_dir(env=env) / "tfhub"


def hub_module_dir(handle: str = HUB_HANDLE, *, env: Mapping[str, str] | None = None) -> Path:
    """The folder tensorflow_hub unpacks ``handle`` into: hub_cache_dir() / sha1(handle), as its
    compressed-module resolver names it."""
    return hub_cache_dir(env=env) / hashlib.sha1(handle.encode("utf-8")).hexdigest()


@contextmanager
def _hub_cache_default() -> Iterator[Path]:
    """``$TFHUB_CACHE_DIR`` set to hub_cache_dir() while TF Hub loads, unless the user set it:
    tensorflow_hub reads nothing else and would otherwise cache in /tmp/tfhub_modules."""
    previous = os.environ.get(HUB_CACHE_ENV)
    cache = hub_cache_dir()
    if previous:
        yield cache
        return
    os.environ[HUB_CACHE_ENV] = str(cache)
    try:
        yield cache
    finally:
        if previous is None:
            os.environ.pop(HUB_CACHE_ENV, None)
        else:
            os.environ[HUB_CACHE_ENV] = previous


def hub_class_names(hub_model: Any) -> tuple[str, ...]:
    """YAMNet's class names from a TF Hub model's own class map (the CSV asset its
    ``class_map_path()`` names), in score order; () with a warning if it has none.

    The CSV is also kept as the user cache's yamnet/yamnet_class_map.csv (unless one is there),
    where find_audioset_classes looks, so the names are found as for the weights file's.
    """
    try:
        value = hub_model.class_map_path()
        value = value.numpy() if hasattr(value, "numpy") else value
        source = Path(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        names = read_class_map(source)
    except (AttributeError, TypeError, ValueError, OSError) as error:
        logger.warning("TF Hub's YAMNet gives no readable class map (%s): no AudioSet class names, so no veto", error)
        return ()
    kept = user_cache_dir() / "yamnet" / CLASS_MAP_FILE_NAME
    if not kept.is_file():
        try:
            kept.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=kept.parent, prefix=".class-map-", delete=False) as partial:
                pass
            try:
                shutil.copyfile(source, partial.name)
                os.replace(partial.name, kept)
            finally:
                Path(partial.name).unlink(missing_ok=True)
            logger.info("kept TF Hub YAMNet's class map as %s", kept)
        except OSError as error:
            logger.warning("cannot keep TF Hub YAMNet's class map in %s (%s); this run has it", kept, error)
    return names


# --- front end ---------------------------------------------------------------------


def mel_weight_matrix(params: Params = DEFAULT_PARAMS) -> FloatArray:
    """float32 [spectrum_bins, mel_bands]: STFT magnitude -> mel, as YAMNet's features.py builds it."""
    import tensorflow as tf

    matrix = tf.signal.linear_to_mel_weight_matrix(
        num_mel_bins=params.mel_bands,
        num_spectrogram_bins=params.spectrum_bins,
        sample_rate=params.sample_rate_hz,
        lower_edge_hertz=params.mel_min_hz,
        upper_edge_hertz=params.mel_max_hz,
    )
    return np.asarray(matrix.numpy(), dtype=np.float32)


def log_mel_spectrogram(waveform: Any, mel_matrix: Any, *, params: Params = DEFAULT_PARAMS) -> Any:
    """YAMNet's log-mel front end in TF ops (no padding: frames start at sample 0, hop apart).

    Args:
        waveform: float32 tensor [..., n] in [-1, 1] at params.sample_rate_hz, n >= stft_window_samples.
        mel_matrix: float32 [spectrum_bins, mel_bands].

    Returns:
        float32 tensor [..., 1 + (n - stft_window_samples) // stft_hop_samples, mel_bands]:
        log(mel magnitude + log_offset).
    """
    import tensorflow as tf

    spectrogram = tf.abs(
        tf.signal.stft(
            waveform,
            frame_length=params.stft_window_samples,
            frame_step=params.stft_hop_samples,
            fft_length=params.fft_length,
            window_fn=tf.signal.hann_window,  # periodic Hann, as the published file's window constant
            pad_end=False,
        )
    )
    mel = tf.tensordot(spectrogram, tf.cast(mel_matrix, tf.float32), axes=1)
    return tf.math.log(mel + params.log_offset)


# --- the model ---------------------------------------------------------------------


def _keras() -> Any:
    import keras  # Keras 3 (tf.keras may be Keras 2 where tf_keras is installed)

    return keras


def _log_mel_layer_class() -> type:
    keras = _keras()

    class LogMelSpectrogram(keras.layers.Layer):
        """Keras layer: waveform patches [b, patch_samples] -> log-mel [b, patch_frames, mel_bands]."""

        def __init__(self, mel_matrix: FloatArray, *, params: Params = DEFAULT_PARAMS, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.params = params
            self.mel_matrix = self.add_weight(
                name="mel_matrix",
                shape=mel_matrix.shape,
                initializer=keras.initializers.Constant(np.asarray(mel_matrix, np.float32)),
                trainable=False,
            )

        def call(self, waveform: Any) -> Any:
            return log_mel_spectrogram(waveform, self.mel_matrix, params=self.params)

        def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
            return (input_shape[0], self.params.patch_frames, self.params.mel_bands)

    return LogMelSpectrogram


def build_patch_model(
    weights: YamnetWeights, *, params: Params = DEFAULT_PARAMS, mel_matrix: FloatArray | None = None
) -> Any:
    """YAMNet as a Keras 3 functional model with the given weights.

    Args:
        weights: float weights read by `read_yamnet_weights`.
        params: sizes; must match the weights.
        mel_matrix: float32 [spectrum_bins, mel_bands]; default: the exact float matrix of
            tf.signal.linear_to_mel_weight_matrix (the file's copy is int8-rounded).

    Returns:
        keras.Model: waveform float32 [b, patch_samples] -> {"embeddings": [b, embedding_size],
        "scores": [b, yamnet_classes] (sigmoid), "log_mel": [b, patch_frames, mel_bands]}.
    """
    keras = _keras()
    frames = 1 + (params.patch_samples - params.stft_window_samples) // params.stft_hop_samples
    if frames != params.patch_frames:
        raise ValueError(f"params give {frames} STFT frames per patch, not patch_frames={params.patch_frames}")
    if mel_matrix is None:
        mel_matrix = mel_weight_matrix(params)

    waveform = keras.Input(shape=(params.patch_samples,), dtype="float32", name="waveform")
    log_mel = _log_mel_layer_class()(mel_matrix, params=params, name="log_mel")(waveform)
    net = keras.layers.Reshape((params.patch_frames, params.mel_bands, 1), name="patch")(log_mel)
    conv_layers = []
    for conv in weights.convs:
        spec = conv.spec
        name = spec.name.replace("/", "_")
        if spec.kind == "depthwise":
            layer = keras.layers.DepthwiseConv2D(
                kernel_size=conv.kernel.shape[:2], strides=spec.stride, padding="same", activation="relu", name=name
            )
        else:
            layer = keras.layers.Conv2D(
                filters=spec.channels,
                kernel_size=conv.kernel.shape[:2],
                strides=spec.stride,
                padding="same",
                activation="relu",
                name=name,
            )
        net = layer(net)
        conv_layers.append((layer, conv))
    embeddings = keras.layers.GlobalAveragePooling2D(name="embeddings")(net)
    dense = keras.layers.Dense(params.yamnet_classes, name="logits")
    scores = keras.layers.Activation("sigmoid", name="scores")(dense(embeddings))
    model = keras.Model(
        inputs=waveform,
        outputs={"embeddings": embeddings, "scores": scores, "log_mel": log_mel},
        name="yamnet_patch",
    )
    for layer, conv in conv_layers:
        layer.set_weights([conv.kernel, conv.bias])
    dense.set_weights([weights.dense_kernel, weights.dense_bias])
    return model


def _hub_patch_model(hub_model: Any, *, params: Params = DEFAULT_PARAMS) -> Any:
    """Keras model running TF Hub YAMNet (whole-waveform API) on each patch of a batch."""
    import tensorflow as tf

    keras = _keras()

    class HubYamnetPatches(keras.layers.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.hub_model = hub_model

        def call(self, patches: Any) -> Any:
            def one_patch(patch: Any) -> tuple[Any, Any, Any]:
                # A waveform of exactly one patch gives exactly one patch (YAMNet pads nothing).
                scores, embeddings, log_mel = self.hub_model(patch)
                return embeddings[0], scores[0], log_mel[: params.patch_frames]

            return tf.map_fn(
                one_patch,
                patches,
                fn_output_signature=(
                    tf.TensorSpec([params.embedding_size], tf.float32),
                    tf.TensorSpec([params.yamnet_classes], tf.float32),
                    tf.TensorSpec([params.patch_frames, params.mel_bands], tf.float32),
                ),
            )

        def compute_output_shape(self, input_shape: Sequence[int | None]) -> Any:
            batch = input_shape[0]
            return (
                (batch, params.embedding_size),
                (batch, params.yamnet_classes),
                (batch, params.patch_frames, params.mel_bands),
            )

    waveform = keras.Input(shape=(params.patch_samples,), dtype="float32", name="waveform")
    embeddings, scores, log_mel = HubYamnetPatches(name="hub_yamnet")(waveform)
    return keras.Model(
        inputs=waveform,
        outputs={"embeddings": embeddings, "scores": scores, "log_mel": log_mel},
        name="yamnet_patch_hub",
    )


# --- the public object -------------------------------------------------------------


@dataclass
class YamnetTF:
    """TensorFlow YAMNet, per patch.

    Attributes:
        patch_model: keras.Model, waveform float32 [b, patch_samples] -> dict embeddings
            [b, embedding_size], scores [b, yamnet_classes], log_mel [b, patch_frames, mel_bands].
        source: "tflite" (weights read from a file) or "hub" (TF Hub google/yamnet/1).
        weights_sha256: sha256 of the weights file (for "hub": of the model's variables).
        weights_path: the weights file, or None for "hub".
        weights: the float weights read from the file (None for "hub").
        params: the sizes the model was built with.
        mel_matrix: float32 [spectrum_bins, mel_bands] the front end uses (None: the exact one).
        audioset_classes: the display names of the scores, in score order, from the class map
            beside the weights file or TF Hub's own; () if neither could be read.
    """

    patch_model: Any
    source: str
    weights_sha256: str
    weights_path: Path | None = None
    weights: YamnetWeights | None = None
    params: Params = DEFAULT_PARAMS
    mel_matrix: FloatArray | None = field(default=None, repr=False)
    audioset_classes: tuple[str, ...] = field(default=(), repr=False)
    _batch_fn: Any = field(default=None, repr=False)
    _log_mel_fn: Any = field(default=None, repr=False)
    _serving_fn: Any = field(default=None, repr=False)

    @property
    def float_weights(self) -> list[FloatArray]:
        """All of patch_model's weights as float32 arrays (mel matrix first, then convs, dense)."""
        return [np.asarray(array, np.float32) for array in self.patch_model.get_weights()]

    def _batch_function(self) -> Callable[[Any], Any]:
        if self._batch_fn is None:
            import tensorflow as tf

            model = self.patch_model

            @tf.function(input_signature=[tf.TensorSpec([None, self.params.patch_samples], tf.float32)])
            def run_batch(patches: Any) -> Any:
                outputs = model(patches, training=False)
                return outputs["embeddings"], outputs["scores"]

            self._batch_fn = run_batch
        return self._batch_fn

    def embed_patches(
        self, patches: npt.ArrayLike, *, batch_size: int = 64, progress: bool = False
    ) -> tuple[FloatArray, FloatArray]:
        """YAMNet embeddings and scores of patches.

        Args:
            patches: float32 [p, patch_samples] in [-1, 1] at params.sample_rate_hz
                (frame waveforms with edge.framing.waveform_to_patches).
            batch_size: patches run through the model at once.
            progress: show a progress bar (only on a terminal).

        Returns:
            (embeddings float32 [p, embedding_size], scores float32 [p, yamnet_classes]).
        """
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 2 or patches.shape[1] != self.params.patch_samples:
            raise ValueError(
                f"patches must be float32 [p, {self.params.patch_samples}], got shape {list(patches.shape)}; "
                "frame the waveform with edge.framing.waveform_to_patches first"
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        run_batch = self._batch_function()
        embeddings = np.zeros((len(patches), self.params.embedding_size), np.float32)
        scores = np.zeros((len(patches), self.params.yamnet_classes), np.float32)
        starts = range(0, len(patches), batch_size)
        if progress and sys.stderr.isatty():
            from tqdm import tqdm

            starts = tqdm(starts, desc="YAMNet", unit="batch")
        for start in starts:
            batch_embeddings, batch_scores = run_batch(patches[start : start + batch_size])
            embeddings[start : start + batch_size] = batch_embeddings.numpy()
            scores[start : start + batch_size] = batch_scores.numpy()
        return embeddings, scores

    def log_mel(self, waveform: npt.ArrayLike) -> FloatArray:
        """Log-mel spectrogram of a whole waveform, framed without padding.

        Args:
            waveform: float32 [n] in [-1, 1] at params.sample_rate_hz, n >= stft_window_samples.

        Returns:
            float32 [1 + (n - stft_window_samples) // stft_hop_samples, mel_bands].
        """
        waveform = np.asarray(waveform, dtype=np.float32)
        if waveform.ndim != 1 or waveform.shape[0] < self.params.stft_window_samples:
            raise ValueError(
                f"waveform must be float32 [n] with n >= {self.params.stft_window_samples}, "
                f"got shape {list(waveform.shape)}"
            )
        if self._log_mel_fn is None:
            import tensorflow as tf

            mel_matrix = tf.constant(self.mel_matrix if self.mel_matrix is not None else mel_weight_matrix(self.params))
            params = self.params

            @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
            def log_mel_fn(samples: Any) -> Any:
                return log_mel_spectrogram(samples, mel_matrix, params=params)

            self._log_mel_fn = log_mel_fn
        return np.asarray(self._log_mel_fn(waveform).numpy(), dtype=np.float32)

    def serving_function(self) -> Any:
        """tf.function of ONE patch with every weight a graph constant, for TF-Lite export.

        waveform float32 [patch_samples] -> {"embeddings": [embedding_size], "scores":
        [yamnet_classes], "log_mel": [patch_frames, mel_bands]}.

        The Keras model's variables are frozen into constants first: a concrete function
        that still reads variables converts to a ~50 KB TF-Lite file without its weights.
        """
        if self._serving_fn is None:
            import tensorflow as tf
            from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

            model = self.patch_model
            spec = tf.TensorSpec([self.params.patch_samples], tf.float32, name="waveform")

            @tf.function(input_signature=[spec])
            def serve_with_variables(waveform: Any) -> dict[str, Any]:
                outputs = model(waveform[tf.newaxis], training=False)
                return {name: value[0] for name, value in outputs.items()}

            with_variables = serve_with_variables.get_concrete_function()
            frozen = convert_variables_to_constants_v2(with_variables)
            structure = with_variables.structured_outputs

            @tf.function(input_signature=[spec])
            def serve(waveform: Any) -> dict[str, Any]:
                return tf.nest.pack_sequence_as(structure, frozen(waveform))

            self._serving_fn = serve
        return self._serving_fn

    def concrete_function(self) -> Any:
        """The concrete function of `serving_function()` (its only signature)."""
        return self.serving_function().get_concrete_function()

    def export_module(self) -> Any:
        """tf.Module holding `serving_function()` as ``serve``: no variables, one signature.

        Convert with ``tf.lite.TFLiteConverter.from_concrete_functions([yamnet.concrete_function()],
        yamnet.export_module())``; the file then has the signature "serving_default" with input
        "waveform" and outputs "embeddings", "scores", "log_mel" (~15 MB as float32).
        """
        import tensorflow as tf

        module = tf.Module(name="yamnet_patch")
        module.serve = self.serving_function()
        return module


# --- loading -----------------------------------------------------------------------


def _load_hub_model(handle: str = HUB_HANDLE) -> Any:
    """TF Hub YAMNet, downloaded once into hub_cache_dir(). Raises whatever hub raises (offline,
    no tensorflow_hub, a damaged cached copy)."""
    import tensorflow_hub as hub

    with _hub_cache_default():
        return hub.load(handle)


def _variables_sha256(module: Any) -> str:
    digest = hashlib.sha256()
    variables = sorted(getattr(module, "variables", None) or [], key=lambda variable: variable.name)
    for variable in variables:
        digest.update(variable.name.encode())
        digest.update(np.ascontiguousarray(variable.numpy()).tobytes())
    if not variables:
        digest.update(f"hub:{HUB_HANDLE}".encode())
    return digest.hexdigest()


def _from_tflite(path: Path, params: Params, mel: MelChoice) -> YamnetTF:
    weights = read_yamnet_weights(path, params=params)
    if not np.isclose(weights.log_offset, params.log_offset):
        raise ValueError(
            f"{path}: log offset {weights.log_offset} differs from params.log_offset={params.log_offset}; "
            "use params matching the weights file"
        )
    mel_matrix = weights.mel_matrix if mel == "file" else mel_weight_matrix(params)
    model = build_patch_model(weights, params=params, mel_matrix=mel_matrix)
    try:
        classes = find_audioset_classes(path)
    except ValueError as error:  # the weights still work; only the names (for a veto) are missing
        logger.warning("%s", error)
        classes = ()
    return YamnetTF(
        patch_model=model,
        source="tflite",
        weights_sha256=weights.sha256,
        weights_path=path,
        weights=weights,
        params=params,
        mel_matrix=mel_matrix,
        audioset_classes=classes,
    )


def _from_hub(params: Params, *, searched: bool) -> YamnetTF:
    try:
        hub_model = _load_hub_model(HUB_HANDLE)
    except Exception as error:  # no tensorflow_hub, no network, a broken cache ...
        raise AssetError(_hub_failure_message(error, searched=searched)) from error
    return YamnetTF(
        patch_model=_hub_patch_model(hub_model, params=params),
        source="hub",
        weights_sha256=_variables_sha256(hub_model),
        params=params,
        audioset_classes=hub_class_names(hub_model),
    )


def load_yamnet(
    *,
    source: Source = "auto",
    weights_path: str | os.PathLike[str] | None = None,
    params: Params = DEFAULT_PARAMS,
    mel: MelChoice = "exact",
    assets_dir: str | os.PathLike[str] | None = None,
) -> YamnetTF:
    """Build TensorFlow YAMNet from the published weights.

    Args:
        source: "tflite" reads the weights file; "hub" wraps TF Hub google/yamnet/1; "auto"
            uses the weights file if one is found (see `find_weights_file`), else TF Hub.
        weights_path: the weights file (yamnet_public_int8w.tflite, ``--yamnet-weights``);
            overrides the search.
        params: sizes (sample rate, patch, mel bands ...).
        mel: "exact" builds the mel matrix with tf.signal as YAMNet's features.py does;
            "file" uses the weights file's copy, which the TF-Lite converter rounded to int8
            (reproduces that file's graph exactly; embeddings differ from "exact" by cosine < 0.001).
        assets_dir: the assets root (``--assets``) holding yamnet/; overrides the environment.

    Returns:
        The model with its source and weight hash.

    Raises:
        AssetError: the weights file given (argument or environment) is missing, or none was
            found and TF Hub could not be loaded; the message says what to do.
        ValueError: naming the file, when the weights file is not a usable YAMNet.
    """
    if source not in ("auto", "tflite", "hub"):
        raise ValueError(f"source must be 'auto', 'tflite' or 'hub', got {source!r}")
    if mel not in ("exact", "file"):
        raise ValueError(f"mel must be 'exact' or 'file', got {mel!r}")
    if source == "hub":
        return _from_hub(params, searched=False)
    path = find_weights_file(weights_path=weights_path, assets_dir=assets_dir)
    if path is not None:
        return _from_tflite(path, params, mel)
    if source == "tflite":
        raise AssetError(f"YAMNet weights not found: {_where_to_put_weights()}.")
    logger.info("no YAMNet weights file found; trying TF Hub %s", HUB_HANDLE)
    return _from_hub(params, searched=True)
