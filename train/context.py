"""A context head's input: each patch's embedding with the mean of the patches just before it.

Measured and not kept (README, "Results"): `oido-train ablation --variants default,context` and
`oido-train loco --context-patches 3`. With `context_patches = k > 0` a head takes 2 x 1024
values per patch: the patch's YAMNet embedding, then the mean of the embeddings of the k patches
before it (k x 0.48 s of the recent past). Before a run of patches has k, the missing ones are its
first patch, so the first patch of a clip or a stream is its own context. k = 0 is the tutorial's
head: the embedding alone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


def context_features(embeddings: npt.ArrayLike, context_patches: int) -> FloatArray:
    """float32 [p, 1024] consecutive patches -> the head's input, float32 [p, 1024] (k = 0) or [p, 2048]."""
    values = np.asarray(embeddings, np.float32)
    if context_patches < 0:
        raise ValueError(f"context_patches must be >= 0, got {context_patches}")
    if context_patches == 0 or len(values) == 0:
        return values
    padded = np.concatenate([np.repeat(values[:1], context_patches, axis=0), values[:-1]])
    total = np.zeros(values.shape, np.float64)
    for start in range(context_patches):
        total += padded[start : start + len(values)]
    return np.concatenate([values, (total / context_patches).astype(np.float32)], axis=1)
