"""``python blocksparse_utils.py [--mode ... --ratios ...]``: the original script's interface, a sweep of
the ratios of one mode and block size (``study.sweep``, optionally fine-tuned per ratio as the original did),
written as results, the original's JSON layout and a figure; and the argparse types the commands share."""
from __future__ import annotations

import argparse
import datetime
import json

import pandas as pd

from .codec import CodecConfig
from .data import load_dataset
from .evaluation import evaluate, result_row
from .model import load_pretrained
from .plots import plot_accuracy_vs_bpp, save_figure
from .results import original_layout, save_results, to_frame, write_compression_results
from .runtime import default_device, results_dir, set_seed
from .study import sweep
from .training import Budget, accuracy, finetune


def positive(s: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error, not a traceback)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def ratio_arg(s: str) -> float:
    """argparse type: a number in (0, 1]."""
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {v}")
    return v


def sweep_command(a: argparse.Namespace) -> None:
    set_seed(0)
    model = load_pretrained(a.dataset, a.split_at, a.checkpoint).to(default_device())
    data = load_dataset(a.dataset, "test", subset=a.subset)
    rows = sweep(model, data, [a.mode], [a.block_size], a.ratios, a.bits, a.rate_sample, batch_size=a.batch_size)
    if a.finetune_steps:  # as the original: fine-tune per ratio; unlike it, early stopping on validation
        for cfg in [CodecConfig(a.block_size, r, a.mode, b) for r in a.ratios for b in a.bits]:
            budget = Budget(steps=a.finetune_steps, eval_every=max(1, a.finetune_steps // 4))
            tuned, hist = finetune(load_pretrained(a.dataset, a.split_at, a.checkpoint), cfg, budget, a.dataset,
                                   val_subset=a.val_subset)
            rows.append(result_row(evaluate(tuned, cfg, data, a.rate_sample), cfg, dataset=a.dataset,
                                   split_at=a.split_at, finetuned=True, train="all",
                                   val_accuracy=max(h["val_accuracy"] for h in hist)))
    name = f"sweep_{a.mode}_B{a.block_size}"
    path = save_results(rows, vars(a), name)
    df = to_frame(rows)
    write_compression_results(df, results_dir() / f"compression_results_{a.mode}_B{a.block_size}.json")
    ref = accuracy(model, data)
    layout = original_layout(pd.concat([df, to_frame([dict(method="uncompressed", accuracy=ref)])]),
                             8 * data.tensors[0].shape[1], tuple(data.tensors[0].shape[-2:]),
                             datetime.datetime.now().isoformat())
    (results_dir() / f"compression_results_original_{a.mode}_B{a.block_size}.json").write_text(
        json.dumps(layout, indent=4))
    figs = save_figure(plot_accuracy_vs_bpp(df, ref), f"accuracy_vs_compression_{a.mode}_B{a.block_size}")
    print(df[["mode", "block_size", "ratio", "bits", "accuracy", "bpp"]].to_string(index=False))
    print(f"uncompressed accuracy {ref:.4f}\nresults: {path}\nfigures: {', '.join(map(str, figs))}")
