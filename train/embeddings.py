"""YAMNet patch embeddings per clip, computed once and cached on disk.

A clip's entry is keyed by the sha256 of its audio file's bytes and lives under the YAMNet
weights' hash (and the embedder's numerics, see cache_folder), so changing either computes it
again and nothing else does:

    <cache_root>/<cache_folder(embedder)>/<audio_sha256>.npz
        embeddings  float32 [p, 1024]   one YAMNet embedding per patch
        scores      float32 [p, 521]    YAMNet's AudioSet scores per patch (kept for open-set work)
        rms_dbfs    float32 [p]         each patch's RMS level, dB full scale (edge.pipeline's formula)
        key         JSON string         {"format", "audio_sha256", "yamnet_weights_sha256", "front_end"}

Each entry is written to a temporary file in the same directory and renamed into place, so an
interrupted run leaves only complete entries, which the next run reuses. An entry that cannot be
read (truncated, corrupt) or whose key disagrees is computed again and replaced.

Patches are cut exactly as on the edge (`edge.framing.waveform_to_patches`: 5 s -> 10 patches).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from edge.params import DEFAULT_PARAMS, Params

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]

DEFAULT_CACHE_ROOT = Path("data/cache/embeddings")
CACHE_FORMAT = "oido-embeddings/1"
SILENCE_DBFS = -200.0
"""Level given to an all-zero patch (edge.pipeline uses the same)."""
MODEL_DIR_CHARS = 16
"""Characters of the weights' sha256 naming a cache directory."""
DEFAULT_BATCH_PATCHES = 256
"""Patches framed and embedded per round (whole clips; each round's clips are then cached)."""
DEFAULT_YAMNET_BATCH = 64
"""Patches per YAMNet call (measured fastest on 2 CPU cores among 16..256)."""

# Fields of Params that only steer window decisions; they do not change an embedding.
_DECISION_FIELDS = frozenset({"window_seconds", "overlap", "clip_seconds", "silent_patch_dbfs"})


class PatchEmbedder(Protocol):
    """What the cache needs of a YAMNet (train.yamnet.YamnetTF satisfies it).

    An embedder may also have `numerics`: a short tag naming how its arithmetic is set up when
    that changes its outputs ("" or absent: the default), see cache_folder.
    """

    weights_sha256: str

    def embed_patches(self, patches: FloatArray, *, batch_size: int = 64) -> tuple[FloatArray, FloatArray]:
        """patches float32 [p, patch_samples] -> (embeddings float32 [p, 1024], scores float32 [p, 521])."""
        ...


@dataclass(frozen=True)
class ClipEmbeddings:
    """One clip's YAMNet outputs, one row per patch."""

    path: Path
    audio_sha256: str
    embeddings: FloatArray
    """float32 [p, embedding_size]"""
    scores: FloatArray
    """float32 [p, yamnet_classes], YAMNet's AudioSet scores in [0, 1]"""
    rms_dbfs: FloatArray
    """float32 [p], each patch's RMS level in dB full scale (SILENCE_DBFS when all zero)"""

    @property
    def num_patches(self) -> int:
        return int(self.embeddings.shape[0])


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def patch_rms_dbfs(patches: npt.ArrayLike) -> FloatArray:
    """RMS level of each patch float32 [p, n] in dB full scale -> float32 [p] (edge.pipeline's formula)."""
    values = np.asarray(patches, dtype=np.float32)
    rms = np.sqrt(np.mean(np.square(values, dtype=np.float64), axis=1))
    with np.errstate(divide="ignore"):
        levels = np.where(rms > 0, 20.0 * np.log10(rms), SILENCE_DBFS)
    return levels.astype(np.float32)


def front_end_key(params: Params) -> dict[str, Any]:
    """The Params fields that change an embedding (sample rate, STFT, mel, patching)."""
    return {k: v for k, v in params.to_dict().items() if k not in _DECISION_FIELDS}


def cache_folder(embedder: PatchEmbedder) -> str:
    """The cache sub-folder of an embedder's outputs: its weights' hash, plus its `numerics` tag if any.

    TensorFlow's CPU kernels round differently at different thread counts (embeddings differ by
    ~1e-6), and open-set training amplifies that into other heads and other figures; so outputs
    made one way are never mixed with outputs made another way.
    """
    numerics = getattr(embedder, "numerics", "")
    return embedder.weights_sha256[:MODEL_DIR_CHARS] + (f"-{numerics}" if numerics else "")


class EmbeddingCache:
    """Per-clip .npz entries under <root>/<folder>/ (default: the weights' hash), written atomically."""

    def __init__(
        self, root: str | os.PathLike[str], *, weights_sha256: str, params: Params = DEFAULT_PARAMS, folder: str | None = None
    ):
        if not weights_sha256:
            raise ValueError("the YAMNet weights hash is empty: the cache needs it to key entries")
        self.weights_sha256 = weights_sha256
        self.params = params
        self.directory = Path(root) / (folder or weights_sha256[:MODEL_DIR_CHARS])
        self._front_end = front_end_key(params)

    def path_for(self, audio_sha256: str) -> Path:
        return self.directory / f"{audio_sha256}.npz"

    def _key(self, audio_sha256: str) -> dict[str, Any]:
        return {
            "format": CACHE_FORMAT,
            "audio_sha256": audio_sha256,
            "yamnet_weights_sha256": self.weights_sha256,
            "front_end": self._front_end,
        }

    def load(self, audio_sha256: str) -> tuple[FloatArray, FloatArray, FloatArray] | None:
        """(embeddings [p, d], scores [p, c], rms_dbfs [p]) from the cache, or None when absent or unusable."""
        path = self.path_for(audio_sha256)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as entry:
                key = json.loads(str(entry["key"]))
                if key != self._key(audio_sha256):
                    logger.info("cache entry %s was made with other settings; computing it again", path)
                    return None
                embeddings = np.asarray(entry["embeddings"], dtype=np.float32)
                scores = np.asarray(entry["scores"], dtype=np.float32)
                levels = np.asarray(entry["rms_dbfs"], dtype=np.float32)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            logger.warning("cache entry %s is unreadable (%s); computing it again", path, error)
            return None
        if (
            embeddings.ndim != 2
            or scores.ndim != 2
            or len(embeddings) == 0
            or len(embeddings) != len(scores)
            or levels.shape != (len(embeddings),)
            or embeddings.shape[1] != self.params.embedding_size
            or scores.shape[1] != self.params.yamnet_classes
            or not np.all(np.isfinite(embeddings))
        ):
            logger.warning("cache entry %s has bad shapes %s/%s; computing it again", path, embeddings.shape, scores.shape)
            return None
        return embeddings, scores, levels

    def store(self, audio_sha256: str, embeddings: FloatArray, scores: FloatArray, rms_dbfs: FloatArray) -> Path:
        """Write one entry atomically (temporary file in the same directory, then rename)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path_for(audio_sha256)
        descriptor, staged = tempfile.mkstemp(prefix=f".{audio_sha256[:16]}-", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(descriptor, "wb") as stream:
                np.savez(
                    stream,
                    embeddings=np.asarray(embeddings, np.float32),
                    scores=np.asarray(scores, np.float32),
                    rms_dbfs=np.asarray(rms_dbfs, np.float32),
                    key=np.array(json.dumps(self._key(audio_sha256), sort_keys=True)),
                )
            os.replace(staged, path)
        except BaseException:
            Path(staged).unlink(missing_ok=True)
            raise
        return path


def _progress(total: int, initial: int, enabled: bool | None) -> Any:
    """tqdm bar on a terminal (enabled=None decides by isatty), nothing in a pipe."""
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="clip", desc="YAMNet embeddings", disable=None if enabled is None else not enabled, leave=False)


def embed_files(
    paths: Sequence[str | os.PathLike[str]],
    embedder: PatchEmbedder,
    *,
    cache_root: str | os.PathLike[str] | None = DEFAULT_CACHE_ROOT,
    params: Params = DEFAULT_PARAMS,
    batch_patches: int = DEFAULT_BATCH_PATCHES,
    yamnet_batch: int = DEFAULT_YAMNET_BATCH,
    progress: bool | None = None,
) -> list[ClipEmbeddings]:
    """YAMNet embeddings and scores for every audio file, in order, reusing the cache.

    paths: audio files (any format edge.audio.read_audio reads; resampled to params.sample_rate_hz).
    cache_root: where entries live; None computes everything and caches nothing.
    progress: True/False forces the progress bar on/off; None shows it on a terminal only.
    Raises the audio reader's error (a ValueError naming the file) for an unreadable file.
    """
    from edge.audio import read_audio
    from edge.framing import waveform_to_patches

    clip_paths = [Path(p) for p in paths]
    cache = None
    if cache_root is not None:
        cache = EmbeddingCache(cache_root, weights_sha256=embedder.weights_sha256, params=params, folder=cache_folder(embedder))
    hashes = [file_sha256(path) for path in clip_paths]

    results: dict[str, tuple[FloatArray, FloatArray, FloatArray]] = {}
    for audio_sha256 in set(hashes):
        cached = cache.load(audio_sha256) if cache is not None else None
        if cached is not None:
            results[audio_sha256] = cached
    missing: list[tuple[str, Path]] = []
    seen: set[str] = set(results)
    for audio_sha256, path in zip(hashes, clip_paths):
        if audio_sha256 not in seen:
            seen.add(audio_sha256)
            missing.append((audio_sha256, path))
    logger.info(
        "embeddings: %d clip(s), %d from the cache, %d to compute%s",
        len(clip_paths), len(clip_paths) - len(missing), len(missing),
        f" (cache {cache.directory})" if cache is not None else "",
    )

    bar = _progress(len(seen), len(seen) - len(missing), progress)
    try:
        for batch in _batches_of_patches(missing, batch_patches, read_audio, waveform_to_patches, params):
            patches = np.concatenate([clip_patches for _, clip_patches in batch], axis=0)
            embeddings, scores = embedder.embed_patches(patches, batch_size=yamnet_batch)
            embeddings = np.asarray(embeddings, np.float32)
            scores = np.asarray(scores, np.float32)
            if embeddings.shape[0] != len(patches) or scores.shape[0] != len(patches):
                raise RuntimeError(
                    f"YAMNet returned {embeddings.shape[0]} embeddings / {scores.shape[0]} scores "
                    f"for {len(patches)} patches"
                )
            start = 0
            for audio_sha256, clip_patches in batch:
                stop = start + len(clip_patches)
                levels = patch_rms_dbfs(clip_patches)
                results[audio_sha256] = (embeddings[start:stop].copy(), scores[start:stop].copy(), levels)
                if cache is not None:
                    cache.store(audio_sha256, *results[audio_sha256])
                start = stop
            bar.update(len(batch))
    finally:
        bar.close()

    return [
        ClipEmbeddings(path, audio_sha256, *results[audio_sha256]) for path, audio_sha256 in zip(clip_paths, hashes)
    ]


def _batches_of_patches(
    clips: Iterable[tuple[str, Path]],
    batch_patches: int,
    read_audio: Any,
    waveform_to_patches: Any,
    params: Params,
) -> Iterable[list[tuple[str, FloatArray]]]:
    """Group whole clips' patches into batches of about batch_patches patches."""
    batch: list[tuple[str, FloatArray]] = []
    size = 0
    for audio_sha256, path in clips:
        waveform = read_audio(path, target_rate_hz=params.sample_rate_hz)
        clip_patches = np.asarray(waveform_to_patches(waveform, params=params), np.float32)
        batch.append((audio_sha256, clip_patches))
        size += len(clip_patches)
        if size >= batch_patches:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
