"""How far each section of an amortized stream is from its information limit, measured.

``section_limits`` fits every position and value model that ``codebook`` offers on training
features (never test), codes the given images with each, and returns one row per model: the real
bits of each section (``rate``), the information content of the same symbols under the fitted
model (``model_bits``, what an ideal coder with that model spends), and two references for the
positions that need no stream: an unordered set of k cells under a uniform model,
``log2 C(cells, k)``, and the static per-cell keep probability applied to every cell.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
from torch import Tensor

from . import priors
from .codebook import POSITION_MODELS, VALUE_MODELS, codebook_bytes, encode_batch, fit_codebook, geometry, rate
from .codetables import cell_flags
from .codec import CodecConfig, analyze
from .data import load_dataset
from .evaluation import head_features
from .model import load_pretrained
from .protocol import selection_data
from .runtime import ROOT


def section_limits(fit_features: Tensor, features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int]) -> pd.DataFrame:
    """One row per (position model, value model) with ANS, and the default choice of
    ``fit_codebook`` marked ``chosen``: mean bits per image of each section, real and under the
    model, ``bpp`` of the real streams, ``codebook_bytes``; ``uniform_set_bits`` and
    ``all_cells_prior_bits`` are the positions' references (the same in every row)."""
    if not isinstance(features, Tensor) or len(features) < 1:
        raise ValueError("features must be a non-empty tensor [N, C, H, W]")
    chosen = fit_codebook(fit_features, cfg, "ans")
    cells, _ = geometry(cfg, tuple(features.shape[1:]))
    a, fa = analyze(features, cfg), analyze(fit_features, cfg)
    flat, fit_flat = cell_flags(a, cfg), cell_flags(fa, cfg)
    p = priors.cell_probabilities(fit_flat.sum(0), len(fit_features))
    all_cells = -np.where(flat, np.log2(p), np.log2(1 - p)).sum(1).mean()
    uniform = np.mean([(math.lgamma(cells + 1) - math.lgamma(k + 1) - math.lgamma(cells - k + 1)) / math.log(2)
                       for k in flat.sum(1)])
    rows = []
    for coding in POSITION_MODELS:
        for values in VALUE_MODELS:
            try:
                cb = fit_codebook(fit_features, cfg, "ans", coding, value_model=values)
            except ValueError:  # a per-channel table too large for this configuration
                continue
            r = [rate(b, input_hw, cb) for b in encode_batch(features, cb)]
            mean = {f"{k}_bits": float(np.mean([x["breakdown"][k] for x in r])) for k in ("header", "positions", "values",
                                                                                        "padding")}
            model = {f"{k}_model_bits": float(np.mean([x["model_bits"][k] for x in r])) for k in ("positions", "values")}
            rows.append(dict(position_coding=coding, value_model=values, bpp=float(np.mean([x["bpp"] for x in r])),
                             **mean, **model, codebook_bytes=codebook_bytes(cb),
                             chosen=(coding, values) == (chosen.position_coding, chosen.value_model),
                             uniform_set_bits=float(uniform), all_cells_prior_bits=float(all_cells),
                             n_images=len(features), n_fit=len(fit_features)))
    return pd.DataFrame(rows)


def render_limits(table: pd.DataFrame) -> str:
    """The README's codec block: a one-line caption and ``to_markdown`` of the mean bits per image of
    each section, real and under the fitted model, per position and value model; the caption names
    the images measured (``images``, e.g. ``"val-select"``)."""
    cols = ["position_coding", "value_model", "chosen", "bpp", "positions_bits", "positions_model_bits",
            "values_bits", "values_model_bits", "header_bits", "padding_bits", "codebook_bytes"]
    r = table.iloc[0]
    caption = (f"Bits per image of each section ({int(r['n_images'])} {r['images']} images, tables fitted on "
               f"{int(r['n_fit'])} training images); the positions' references: "
               f"{r['uniform_set_bits']:.1f} bits for an unordered set under a uniform model, "
               f"{r['all_cells_prior_bits']:.1f} bits for the per-cell prior applied to every cell.")
    return caption + "\n\n" + table[cols].round(3).to_markdown(index=False)


ANSWER_MODEL = ROOT / "data" / "answer" / "block-sparse_layer3_global_B4_r0.05_2b_gl1e-05_seed0.json"


def codec_limits(card: Path = ANSWER_MODEL, fit_images: int = 3000, n_images: int = 500) -> pd.DataFrame:
    """Each stream section against its information limit (``limits.section_limits``) for a shipped
    block-sparse model of the answer (its card; default the one after layer3: global, B=4, ratio
    0.05, 2 bits): code tables fitted on its own head's features of ``fit_images`` evenly spaced
    training images, streams of ``n_images`` evenly spaced val-select images (the table marks
    ``fit_codebook``'s default, a choice: no test image is read). Prints the table (mean bits per
    image) and returns it, with ``images="val-select"``."""
    c = json.loads(Path(card).read_text())
    s = c["setting"]
    cfg = CodecConfig(s["block_size"], s["ratio"], s["mode"], s["bits"])
    weights = Path(card).with_name(c["weights"])
    model = load_pretrained(c["dataset"], c["split_at"], weights=weights, device="cpu")
    fit = head_features(model, load_dataset(c["dataset"], "train", subset=fit_images))
    val = head_features(model, selection_data(c["dataset"], subset=n_images))
    table = section_limits(fit, val, cfg, (28, 28)).assign(images="val-select")
    print(f"\nstream sections against their limits: {weights.name}, {cfg}, ANS; tables fitted on {fit_images} "
          f"training images, {n_images} val-select images (bits per image; *_model_bits: the information content "
          f"under the fitted model)")
    print(table.round(2).to_markdown(index=False))
    return table
