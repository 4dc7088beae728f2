"""Two-dimensional t-SNE maps of image and question representations for the report."""

from __future__ import annotations

import numpy as np

from microvqa_pp.release import overlap

EXACT_MAX_POINTS = 200
"""Up to this many points t-SNE uses exact gradients, whose cost grows with the square of the count."""


def tsne_points(vectors: np.ndarray, perplexity: float, iterations: int, seed: int) -> tuple[np.ndarray | None, str]:
    """Embed rows in 2-D with t-SNE; return the points (None when too few) and a note for the reader.

    The perplexity is lowered to (n - 1) / 3 when there are too few points for it, the bound that
    Rtsne enforces (3 x perplexity < n - 1). Inputs wider than 50 dimensions are first reduced
    with PCA, as is usual before t-SNE.
    """
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    count = len(vectors)
    if count < 5:
        return None, f"t-SNE skipped: only {count} points."
    note = f"perplexity {perplexity:g}, {iterations} iterations"
    used = perplexity
    if count - 1 < 3 * perplexity:
        used = (count - 1) / 3
        note = f"perplexity lowered from {perplexity:g} to {used:.1f} because there are only {count} points; {iterations} iterations"
    if vectors.shape[1] > 50:
        vectors = PCA(n_components=min(50, count), random_state=seed).fit_transform(vectors)
    # Exact gradients are more accurate than the Barnes-Hut approximation, and for a few hundred
    # points they take no longer.
    method = "exact" if count <= EXACT_MAX_POINTS else "barnes_hut"
    points = TSNE(n_components=2, perplexity=used, max_iter=iterations, init="pca", learning_rate="auto", random_state=seed, method=method).fit_transform(vectors)
    return points, note


def dense_matrix(representation: overlap.Representation, seed: int) -> np.ndarray:
    """Return the representation's rows as a dense float matrix for t-SNE."""
    vectors = representation.vectors
    if representation.kind == "phash":
        return np.unpackbits(vectors.astype(">u8").view(np.uint8).reshape(len(vectors), 8), axis=1).astype(np.float64)
    if hasattr(vectors, "toarray"):
        if vectors.shape[1] > 50 and vectors.shape[0] > 2:
            from sklearn.decomposition import TruncatedSVD

            components = min(50, vectors.shape[1] - 1, vectors.shape[0] - 1)
            return TruncatedSVD(n_components=components, random_state=seed).fit_transform(vectors)
        return vectors.toarray()
    return np.asarray(vectors, dtype=np.float64)


def subsample(count: int, limit: int, seed: int) -> np.ndarray:
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, size=limit, replace=False))
