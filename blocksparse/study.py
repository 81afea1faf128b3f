"""The study: the sweep over the grid and the presets the notebooks run with."""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import pandas as pd
from torch import Tensor
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .bitstream import encode, rate
from .codebook import fit_codebook
from .codec import MODES, RATIOS, CodecConfig
from .evaluation import evaluate, head_features, result_row
from .model import SplitResNet18
from .training import finetune


def sweep(model: SplitResNet18, data: TensorDataset, modes=MODES, block_sizes=(1, 2, 4, 8),
          ratios=tuple(RATIOS), bits=(2, 4, 8), rate_sample: int | None = 200,
          zero_border: bool = True, finetuned: bool = False, batch_size: int = 256,
          configs: list[CodecConfig] | None = None, coder: str | None = None,
          fit_features: Tensor | None = None, **columns) -> list[dict]:
    """Evaluate every configuration of the grid (or the list ``configs``) on ``data``; one
    results row each (``results.SCHEMA``; ``columns`` such as ``split_at`` are added to every
    row). Split-point features are computed once.

    With ``coder`` ("huffman" or "ans") and ``fit_features`` (split-point features of training
    images), a codebook is fitted per configuration and ``bpp`` is the amortized per-image rate,
    ``bpp_self_contained`` the self-contained one; without, both are the self-contained rate.
    """
    if (coder is None) != (fit_features is None):
        raise ValueError("coder and fit_features go together (both or neither)")
    rows = []
    if configs is None:
        configs = [CodecConfig(bs, r, mode, b, zero_border)
                   for mode, bs, r, b in itertools.product(modes, block_sizes, ratios, bits)]
    z = head_features(model, data, batch_size)
    for cfg in tqdm(configs, desc="sweep"):
        cb = fit_codebook(fit_features, cfg, coder) if coder is not None else None
        ev = evaluate(model, cfg, data, rate_sample, batch_size, features=z, codebook=cb)
        rows.append(result_row(ev, cfg, finetuned=finetuned, **columns))
    return rows


PRESETS = {
    # CI: every code path, tiny sizes
    "ci": dict(n_images=4, n_test=32, rate_sample=4, block_sizes=[2, 4], ratios=[0.5, 0.05], bits=[2],
               finetune_steps=4, eval_every=2, train_subset=64, val_subset=32,
               qualities={"jpeg": [10, 75], "webp": [10, 75], "avif": [10, 75]},
               candidate_ratios=[0.5, 0.05], target_bpp=[8.0], val_rate_sample=4, screen_steps=2, rounds=2, seeds=[0],
               fit_images=16,
               original_mode="channel-wise", original_block_size=4,
               original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # make study: about 20 minutes on 2 CPU cores (AVIF at speed 0 takes ~45 ms an image, so 4 qualities)
    "default": dict(n_images=64, n_test=1000, rate_sample=100, block_sizes=[2, 4], ratios=RATIOS,
                    bits=[2, 4], finetune_steps=150, eval_every=50, train_subset=10000, val_subset=500,
                    qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                               "avif": [0, 30, 60, 90]},
                    candidate_ratios=RATIOS, target_bpp=[1.0], val_rate_sample=50, screen_steps=10, rounds=2,
                    seeds=[0], fit_images=2000,
                    original_mode="channel-wise", original_block_size=4,
                    original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # PRESET=full: the whole grid, converged fine-tuning, 3 seeds, all test images (hours on 2 cores)
    "full": dict(n_images=256, n_test=10000, rate_sample=2000, block_sizes=[1, 2, 4, 8],
                 ratios=RATIOS + [0.001], bits=[2, 4, 8], finetune_steps=4000, eval_every=200,
                 screen_steps=200, rounds=3, seeds=[0, 1, 2], patience=5, fit_images=10000,
                 train_subset=None, val_subset=5000,
                 qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                            "avif": [0, 10, 20, 30, 50, 70, 90]},
                 candidate_ratios=RATIOS + [0.001], target_bpp=[0.5, 1.0, 2.0, 4.0], val_rate_sample=500,
                 original_mode="channel-wise", original_block_size=4,
                 original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
}


def measured_bpp(features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int]) -> float:
    """Mean bpp of the real per-image self-contained streams of ``features`` (e.g. validation images)."""
    return float(np.mean([rate(encode(features[i:i + 1], cfg), input_hw)["bpp"] for i in range(len(features))]))


def candidates_under(model: SplitResNet18, configs: list[CodecConfig], data: TensorDataset,
                     target_bpp: float) -> list[tuple[CodecConfig, float]]:
    """The configurations whose rate, measured on the real streams of ``data`` (validation
    images), is at or under ``target_bpp``; with their measured bpp."""
    z = head_features(model, data)
    hw = tuple(data.tensors[0].shape[-2:])
    rated = [(c, measured_bpp(z, c, hw)) for c in tqdm(configs, desc=f"rates (<= {target_bpp} bpp?)")]
    return [(c, b) for c, b in rated if b <= target_bpp]


def select_after_finetuning(load_model: Callable[[], SplitResNet18], candidates: list[CodecConfig],
                            screen_steps: int, keep: float = 0.5, rounds: int = 2,
                            **finetune_kwargs) -> pd.DataFrame:
    """Successive halving on *post*-fine-tuning validation accuracy.

    Round r fine-tunes every surviving candidate from ``load_model()`` for
    ``screen_steps * 2**r`` steps and keeps the best ``keep`` fraction (at least one) by the
    best validation accuracy it reached; it stops early when one survivor is left. The test
    set is not touched. Returns one row per candidate and round: ``mode, block_size, ratio,
    bits, round, steps, val_accuracy``; the last round's best row is the pick.
    """
    if not candidates:
        raise ValueError("candidates is empty: no configuration reaches the target rate")
    if not 0 < keep <= 1 or rounds < 1 or screen_steps < 1:
        raise ValueError(f"need 0 < keep <= 1, rounds >= 1, screen_steps >= 1; got {keep}, {rounds}, {screen_steps}")
    rows, alive = [], list(candidates)
    for r in range(rounds):
        steps = screen_steps * 2 ** r
        scored = []
        for cfg in alive:
            _, hist = finetune(load_model(), cfg, steps=steps, eval_every=max(1, steps // 4),
                               patience=steps, **finetune_kwargs)
            acc = max(h["val_accuracy"] for h in hist)
            scored.append((acc, cfg))
            rows.append(dict(mode=cfg.mode, block_size=cfg.block_size, ratio=cfg.ratio, bits=cfg.bits,
                             round=r, steps=steps, val_accuracy=acc))
        scored.sort(key=lambda t: -t[0])  # stable: ties keep the candidates' order
        alive = [c for _, c in scored[:max(1, math.ceil(keep * len(scored)))]]
        if len(alive) == 1:
            break
    return pd.DataFrame(rows)
