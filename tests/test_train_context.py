"""train.context: the input of the context head that `oido-train ablation` measures."""

from __future__ import annotations

import numpy as np
import pytest

from train.context import context_features

EMBEDDING = 1024


def _embeddings(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, EMBEDDING)).astype(np.float32)


def test_no_context_is_the_embedding_itself() -> None:
    embeddings = _embeddings(7)
    np.testing.assert_array_equal(context_features(embeddings, 0), embeddings)
    assert context_features(np.zeros((0, EMBEDDING), np.float32), 3).shape == (0, EMBEDDING)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_second_half_is_the_mean_of_the_k_patches_before(k: int) -> None:
    embeddings = _embeddings(12)
    features = context_features(embeddings, k)
    assert features.shape == (12, 2 * EMBEDDING)
    np.testing.assert_array_equal(features[:, :EMBEDDING], embeddings)
    for t in range(12):
        before = [embeddings[max(i, 0)] for i in range(t - k, t)]  # before the run: its first patch
        np.testing.assert_allclose(features[t, EMBEDDING:], np.mean(before, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(features[0, EMBEDDING:], embeddings[0])


def test_the_past_changes_the_context_not_the_embedding() -> None:
    embeddings = _embeddings(6)
    after_silence = context_features(np.concatenate([np.zeros((3, EMBEDDING), np.float32), embeddings]), 3)[3:]
    alone = context_features(embeddings, 3)
    np.testing.assert_array_equal(after_silence[:, :EMBEDDING], alone[:, :EMBEDDING])
    assert not np.allclose(after_silence[0, EMBEDDING:], alone[0, EMBEDDING:])


def test_negative_context_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        context_features(_embeddings(2), -1)
