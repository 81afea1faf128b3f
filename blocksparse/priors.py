"""Static models of an amortized stream's positions and values, fitted on training features (numpy only).

Two models that ``codebook`` offers beside its per-symbol tables, for the ANS coder:

- **prior positions**: one keep probability per position cell (per channel, row and column where
  the mode has channels), ``(count + ALPHA) / (n_fit + 2 ALPHA)``. The cells are coded as
  Bernoulli bits in order of decreasing probability, ``CHUNK`` at a time, up to the chunk that
  holds the image's last kept cell: the decoder knows how many cells were kept (the count is in
  the stream), so it stops there, and the rarely kept tail costs nothing.
- **per-channel values**: one table of quantized levels per channel and context, the context
  being the largest level among the block's earlier pixels (``0``: none; else ``1 +`` its bit
  length). Values are coded pixel slot by pixel slot (every kept block's first pixel, then every
  block's second, ...), so the decoder knows each context when it needs it.
"""
from __future__ import annotations

import numpy as np

ALPHA = 0.5  # add-half (Krichevsky-Trofimov) smoothing of fitted counts
CHUNK = 64  # prior position cells coded (and decoded) at a time


def cell_probabilities(counts: np.ndarray, n_fit: int) -> np.ndarray:
    """Keep probability of every cell from how many of ``n_fit`` fitting images kept it."""
    return (np.asarray(counts, np.float64) + ALPHA) / (n_fit + 2 * ALPHA)


def cell_order(p: np.ndarray) -> np.ndarray:
    """The order cells are coded in: decreasing keep probability, ties in cell order."""
    return np.argsort(-p, kind="stable")


def coded_cells(ordered: np.ndarray) -> np.ndarray:
    """Cells coded per image: up to the end of the chunk holding its last kept cell (0 if none).
    ``ordered``: [N, cells] bool, the keep flags in coding order."""
    n, cells = ordered.shape
    any_kept = ordered.any(1)
    last = cells - 1 - np.argmax(ordered[:, ::-1], 1)
    return np.where(any_kept, np.minimum((last // CHUNK + 1) * CHUNK, cells), 0)


def prior_field(flat: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image of each coded bit, the bits, their keep probabilities) of ``flat`` [N, cells] bool
    under the prior ``p``, images in order."""
    order = cell_order(p)
    ordered = flat[:, order]
    m = coded_cells(ordered)
    sel = np.arange(flat.shape[1])[None, :] < m[:, None]
    img = np.nonzero(sel)[0]
    return img, ordered[sel].astype(np.int64), np.broadcast_to(p[order], flat.shape)[sel]


def prior_bits(flat: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Information content (bits) of each image's prior position field."""
    img, bits, q = prior_field(flat, p)
    cost = np.where(bits == 1, -np.log2(q), -np.log2(1 - q))
    return np.bincount(img, cost, minlength=len(flat))


def context_classes(levels: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """[K, B*B] context of every pixel slot of every kept block: 0 where no earlier slot of the
    block is valid, else 1 + the bit length of the largest earlier valid level."""
    lv = np.where(valid, levels, -1).astype(np.int64)
    prev = np.maximum.accumulate(np.concatenate([np.full((len(lv), 1), -1), lv[:, :-1]], 1), 1)
    return np.where(prev < 0, 0, 1 + np.frexp(np.maximum(prev, 0).astype(np.float64))[1])


def value_contexts(bits: int) -> int:
    """Contexts per channel of the per-channel value model."""
    return bits + 2


def value_probabilities(counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[len(rows), L] smoothed probabilities of the table rows ``rows`` of ``counts`` [R, L]."""
    c = np.asarray(counts, np.float64)[rows] + ALPHA
    return c / c.sum(1, keepdims=True)
