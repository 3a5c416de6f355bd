"""Plain numpy versions of every kernel: slow, obviously right, and the tests' oracle."""

from __future__ import annotations

import numpy as np


def mean_pool_normalize(states: np.ndarray, mask: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Masked mean over tokens, then unit L2 norm (as sentence-transformers computes it)."""
    states = np.asarray(states, dtype=np.float64)
    weights = (np.asarray(mask) != 0).astype(np.float64)[:, :, None]
    summed = (states * weights).sum(axis=1)
    counts = np.maximum(weights.sum(axis=1), 1e-9)
    return normalize_rows(summed / counts, eps)


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit norm; rows with norm below eps are divided by eps (zeros stay 0)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    return (x / norms).astype(np.float32)
