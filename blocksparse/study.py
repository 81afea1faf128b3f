"""The study: the sweep over the grid, candidates under a rate, selection after fine-tuning, the presets."""
from __future__ import annotations

import itertools
import math
from typing import Callable

import numpy as np
import pandas as pd
from torch import Tensor
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .bitstream import bpp, encode, rate
from .codebook import Codebook, encode_batch, fit_codebook
from .codec import MODES, RATIOS, CodecConfig, distinct_configs
from .evaluation import evaluate, head_features, result_row
from .data import load_dataset
from .model import SplitResNet18
from .training import Budget, finetune


def sweep(model: SplitResNet18, data: TensorDataset, modes=MODES, block_sizes=(1, 2, 4, 8),
          ratios=tuple(RATIOS), bits=(2, 4, 8), rate_sample: int | None = 200,
          zero_border: bool = True, finetuned: bool = False, batch_size: int = 256,
          configs: list[CodecConfig] | None = None, coder: str | None = None,
          fit_features: Tensor | None = None, executor=None, **columns) -> list[dict]:
    """Evaluate every configuration of the grid (or the list ``configs``) on ``data``; one
    results row each (``results.SCHEMA``; ``columns`` such as ``split_at`` are added to every
    row), in the order of the configurations. Split-point features are computed once, here.

    With ``coder`` ("huffman" or "ans") and ``fit_features`` (split-point features of training
    images), a codebook is fitted per configuration and ``bpp`` is the amortized per-image rate,
    ``bpp_self_contained`` the self-contained one; without, both are the self-contained rate.

    ``executor`` runs the configurations as independent tasks (``_sweep_task``): anything with
    ``submit(fn, *args)`` returning a future with ``result()``, such as a
    ``concurrent.futures`` executor or a ``dask.distributed.Client`` (which gets the model,
    data and features scattered to every worker once). Default: one after another, in this
    process. A task depends only on its arguments, so the rows are the same whoever runs them.
    With a process pool every task pickles its arguments (features included); prefer dask there.
    """
    if (coder is None) != (fit_features is None):
        raise ValueError("coder and fit_features go together (both or neither)")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise ValueError(f"executor must have a submit(fn, *args) method, got {type(executor).__name__}")
    if configs is None:
        configs = [CodecConfig(bs, r, mode, b, zero_border)
                   for mode, bs, r, b in itertools.product(modes, block_sizes, ratios, bits)]
    z = head_features(model, data, batch_size)
    columns = dict(finetuned=finetuned, **columns)
    if executor is None:
        return [_sweep_task(model, cfg, data, z, rate_sample, batch_size, coder, fit_features, columns)
                for cfg in tqdm(configs, desc="sweep")]
    shared = [model, data, z, fit_features]
    if callable(getattr(executor, "scatter", None)):  # dask: ship the big arguments to each worker once
        shared = [v if v is None else executor.scatter(v, broadcast=True, hash=False) for v in shared]
    m, d, f, fit = shared
    futures = [executor.submit(_sweep_task, m, cfg, d, f, rate_sample, batch_size, coder, fit, columns)
               for cfg in configs]
    return [fut.result() for fut in tqdm(futures, desc="sweep")]


def _sweep_task(model: SplitResNet18, cfg: CodecConfig, data: TensorDataset, features: Tensor,
                rate_sample: int | None, batch_size: int, codebook_coder: str | None,
                fit_features: Tensor | None, columns: dict) -> dict:
    """One configuration of ``sweep``: fit its codebook (with ``codebook_coder``), evaluate it
    on ``features`` of ``data``, return its results row. Top-level so executors can pickle it."""
    cb = fit_codebook(fit_features, cfg, codebook_coder) if codebook_coder is not None else None
    ev = evaluate(model, cfg, data, rate_sample, batch_size, features=features, codebook=cb)
    return result_row(ev, cfg, **columns)


PRESETS = {
    # CI: every code path, tiny sizes
    "ci": dict(n_examples=4, n_test=32, rate_sample=4, block_sizes=[2, 4], ratios=[0.5, 0.05], bits=[2],
               finetune_steps=4, eval_every=2, train_subset=64, val_subset=32,
               qualities={"jpeg": [10, 75], "webp": [10, 75], "avif": [10, 75]},
               candidate_ratios=[0.5, 0.05], target_bpp=[8.0], val_rate_sample=4, screen_steps=2, rounds=2, seeds=[0],
               fit_images=16, frontier_n_test=32, bottleneck_rate_sample=4, demo_steps=4, recompute=False,
               original_block_size=4,
               original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # make study: about 20 minutes on 2 CPU cores (AVIF at speed 0 takes ~45 ms an image, so 4 qualities)
    "default": dict(n_examples=64, n_test=1000, rate_sample=100, block_sizes=[2, 4], ratios=RATIOS,
                    bits=[2, 4], finetune_steps=150, eval_every=50, train_subset=10000, val_subset=500,
                    qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                               "avif": [0, 30, 60, 90]},
                    candidate_ratios=RATIOS, target_bpp=[1.0], val_rate_sample=50, screen_steps=10, rounds=2,
                    seeds=[0], fit_images=2000, bottleneck_rate_sample=1000, demo_steps=24, recompute=False,
                    original_block_size=4,
                    original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # PRESET=full: the whole grid, converged fine-tuning, 3 seeds, all test images (hours on 2 cores)
    "full": dict(n_examples=256, n_test=10000, rate_sample=2000, block_sizes=[1, 2, 4, 8],
                 ratios=RATIOS + [0.001], bits=[2, 4, 8], finetune_steps=4000, eval_every=200,
                 screen_steps=200, rounds=3, seeds=[0, 1, 2], fit_images=10000, recompute=False,
                 bottleneck_rate_sample=10000, demo_steps=300,
                 train_subset=None, val_subset=5000,
                 qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                            "avif": [0, 10, 20, 30, 50, 70, 90]},
                 candidate_ratios=RATIOS + [0.001], target_bpp=[0.5, 1.0, 2.0, 4.0], val_rate_sample=500,
                 original_block_size=4,
                 original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
}


def measured_bpp(features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int],
                 codebook: Codebook | None = None) -> float:
    """Mean bpp of the real per-image streams of ``features`` (e.g. validation images):
    self-contained ones, or with ``codebook`` the amortized ones."""
    if codebook is None:
        return float(np.mean([rate(encode(features[i:i + 1], cfg), input_hw)["bpp"] for i in range(len(features))]))
    return float(np.mean([bpp(len(b), input_hw) for b in encode_batch(features, codebook)]))


def candidates_under(model: SplitResNet18, configs: list[CodecConfig], data: TensorDataset,
                     target_bpp: float, fit_data: TensorDataset | None = None,
                     coder: str = "ans") -> list[tuple[CodecConfig, float]]:
    """The configurations whose rate, measured on the real streams of ``data`` (validation
    images), is at or under ``target_bpp``; with their measured bpp.

    Without ``fit_data`` the rate is the self-contained streams'; with it (training images),
    each configuration's codebook is fitted (``coder``) on their features and the rate is the
    amortized streams' (the headline's accounting; the codebook ships once and is not counted).
    Configurations that are the same codec on these features (``codec.distinct_configs``) are
    measured and returned once, as the first of them.
    """
    z = head_features(model, data)
    fit = head_features(model, fit_data) if fit_data is not None else None
    hw = tuple(data.tensors[0].shape[-2:])
    rated = [(c, measured_bpp(z, c, hw, None if fit is None else fit_codebook(fit, c, coder)))
             for c in tqdm(distinct_configs(configs, tuple(z.shape[1:])), desc=f"rates (<= {target_bpp} bpp?)")]
    return [(c, b) for c, b in rated if b <= target_bpp]


def select_after_finetuning(load_model: Callable[[], SplitResNet18], candidates: list[CodecConfig],
                            screen_steps: int, budget: Budget = Budget(), keep: float = 0.5, rounds: int = 2,
                            lrs: list[float] | None = None, group_lasso_weights: list[float] | None = None,
                            evals: int = 4, **finetune_kwargs) -> pd.DataFrame:
    """Successive halving on *post*-fine-tuning validation accuracy.

    The arms are the ``candidates``, each with every learning rate of ``lrs`` (default: only
    ``budget.lr``) and every block group-lasso weight of
    ``group_lasso_weights`` (default: only ``group_lasso_weight`` if given, else 0; the rows then
    carry ``group_lasso_weight``). Round r fine-tunes every surviving arm from
    ``load_model()`` with ``budget``, for ``screen_steps * 2**r`` steps, and keeps the best ``keep`` fraction (at
    least one) by the best validation accuracy it reached (evaluated before training and ``evals``
    times during it, evenly); it stops early when one survivor is
    left. The test set is not touched. Returns one row per arm and round: ``mode, block_size,
    ratio, bits, lr, round, steps, val_accuracy``; the last round's best row is the pick.
    """
    if not candidates:
        raise ValueError("candidates is empty: no configuration reaches the target rate")
    if not isinstance(evals, int) or evals < 1:
        raise ValueError(f"evals must be an integer >= 1, got {evals!r}")
    if not 0 < keep <= 1 or rounds < 1 or screen_steps < 1:
        raise ValueError(f"need 0 < keep <= 1, rounds >= 1, screen_steps >= 1; got {keep}, {rounds}, {screen_steps}")
    if lrs is not None and (not len(lrs) or not all(isinstance(v, (int, float)) and v > 0 for v in lrs)):
        raise ValueError(f"lrs must be positive learning rates, got {lrs!r}")
    lrs = list(lrs) if lrs else [budget.lr]
    gl = finetune_kwargs.pop("group_lasso_weight", 0.0)
    gls = list(group_lasso_weights) if group_lasso_weights else [gl]
    if not all(isinstance(v, (int, float)) and v >= 0 for v in gls):
        raise ValueError(f"group_lasso_weights must be numbers >= 0, got {group_lasso_weights!r}")
    rows, alive = [], [(cfg, lr, g) for cfg in candidates for lr in lrs for g in gls]
    for r in range(rounds):
        steps = screen_steps * 2 ** r
        scored = []
        for cfg, lr, g in alive:
            arm = budget.replace(steps=steps, eval_every=max(1, steps // evals), lr=lr)
            _, hist = finetune(load_model(), cfg, arm, group_lasso_weight=g, **finetune_kwargs)
            acc = max(h["val_accuracy"] for h in hist)
            scored.append((acc, (cfg, lr, g)))
            rows.append(dict(mode=cfg.mode, block_size=cfg.block_size, ratio=cfg.ratio, bits=cfg.bits, lr=lr,
                             **(dict(group_lasso_weight=g) if group_lasso_weights else {}),
                             round=r, steps=steps, val_accuracy=acc))
        scored.sort(key=lambda t: -t[0])  # stable: ties keep the arms' order
        alive = [arm for _, arm in scored[:max(1, math.ceil(keep * len(scored)))]]
        if len(alive) == 1:
            break
    return pd.DataFrame(rows)


def split_sweep(model: SplitResNet18, test: TensorDataset, dataset: str = "fashion-mnist", modes=MODES,
                block_sizes=(2, 4), ratios=tuple(RATIOS), bits=(2, 4), rate_sample: int | None = 100,
                coder: str | None = "ans", fit_images: int = 2000, executor=None) -> list[dict]:
    """The study's sweep at ``model``'s split point, without fine-tuning: the uncompressed row,
    then every configuration of the grid with amortized streams whose code tables are fitted on
    ``fit_images`` evenly spaced training images' features (``coder``; None: self-contained).
    Every row names its ``split_at``."""
    columns = dict(dataset=dataset, split_at=model.split_at, finetuned=False)
    fit = head_features(model, load_dataset(dataset, "train", subset=fit_images)) if coder else None
    return [result_row(evaluate(model, None, test), **columns)] + sweep(
        model, test, modes, block_sizes, ratios, bits, rate_sample, coder=coder, fit_features=fit,
        executor=executor, **columns)
