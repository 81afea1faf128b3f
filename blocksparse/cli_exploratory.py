"""The exploratory commands (before the protocol): the sweep, the grid at a split, the codec grid,
selection after fine-tuning, and training, shipping and testing the frontier models, references,
bottlenecks and codec classifiers; their rows are added to the results files."""
from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path

import pandas as pd

from .codec import MODES, SELECTION_GRID, CodecConfig
from .data import load_dataset
from .evaluation import evaluate, result_row
from .model import SPLIT_POINTS, checkpoint_card, load_pretrained
from .plots import plot_accuracy_vs_bpp, save_figure
from .runtime import ROOT, default_device, results_dir, set_seed
from .results import load_results, model_key, model_stem, original_layout, save_results, to_frame, write_compression_results
from .baselines import LOSSLESS_FORMATS, LOSSY_FORMATS, QUALITIES, available_formats, codec_row, image_codec_baseline
from .bottleneck_training import SELECT_ON
from .analysis import codec_rate_within
from .stats import ONE_POINT
from .protocol import BUDGET
from .study import candidates_under, select_after_finetuning, split_sweep, sweep
from .shipping import (BOTTLENECK_STRIDE, train_bottleneck_model, train_codec_baseline_model, train_frontier_model,
                       train_reference_model)
from .remeasure import write_reference_pairs
from .training import accuracy, finetune


def positive(s: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error, not a traceback)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def rate_target(s: str) -> float | str:
    """argparse type: a rate in bpp (> 0), or a lossy image format (its rate within one point)."""
    if s in LOSSY_FORMATS:
        return s
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is neither a number nor one of {LOSSY_FORMATS}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {v}")
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


# The kernel's own log lines are not the run's: papermill interrupts a kernel on shutdown, which
# ipykernel logs as "ERROR | KeyboardInterrupt caught in kernel" in a successful run, beside a
# warning per kernel about TCP. Errors in cells still fail the run (they come as messages).


def _add_grid_arguments(ap: argparse.ArgumentParser) -> None:
    """``--modes --block-sizes --ratios --bits``, defaulting to ``SELECTION_GRID``."""
    g = SELECTION_GRID
    ap.add_argument("--modes", nargs="+", default=list(g["modes"]), choices=MODES)
    ap.add_argument("--block-sizes", type=positive, nargs="+", default=list(g["block_sizes"]))
    ap.add_argument("--ratios", type=ratio_arg, nargs="+", default=list(g["ratios"]))
    ap.add_argument("--bits", type=positive, nargs="+", default=list(g["bits"]))


def select_command(argv: list[str]) -> None:
    """Screen every configuration under a target rate by brief fine-tuning (successive halving on
    validation accuracy after fine-tuning); writes ``screening_<split>_<target>bpp.csv/json``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py select")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--target-bpp", type=rate_target, default=1.0,
                    help="the rate to screen under: bpp, or an image format (webp) for the lowest rate at which "
                         "it is within --tolerance of the uncompressed model in codec_grid.csv (point estimate)")
    ap.add_argument("--tolerance", type=float, default=ONE_POINT, help="with a format as --target-bpp")
    _add_grid_arguments(ap)
    ap.add_argument("--screen-steps", type=positive, default=50)
    ap.add_argument("--rounds", type=positive, default=2)
    ap.add_argument("--val-subset", type=positive, default=1000)
    ap.add_argument("--val-rate-sample", type=positive, default=100)
    ap.add_argument("--rate", choices=("self-contained", "amortized"), default="self-contained",
                    help="which streams' rate must reach the target (amortized: ANS codebooks fitted on "
                         "--fit-images training images, the headline's accounting)")
    ap.add_argument("--fit-images", type=positive, default=2000)
    ap.add_argument("--train", choices=("all", "tail"), default="all")
    ap.add_argument("--distill-weight", type=float, default=0.5)
    ap.add_argument("--group-lasso-weight", type=float, default=0.0)
    ap.add_argument("--lrs", type=float, nargs="+", default=None,
                    help="learning rates screened with every configuration (default: fine-tuning's 1e-3)")
    a = ap.parse_args(argv)
    if a.lrs is not None and min(a.lrs) <= 0:
        ap.error(f"--lrs must be positive, got {a.lrs}")
    if isinstance(a.target_bpp, str):  # the image codec's rate within --tolerance, from its grid
        if not (results_dir() / "codec_grid.csv").exists():
            ap.error(f"--target-bpp {a.target_bpp} reads codec_grid.csv: run `python blocksparse_utils.py "
                     "codec-grid` first")
        try:
            row = codec_rate_within(load_results("codec_grid"), a.target_bpp, a.tolerance, dataset=a.dataset)
        except ValueError as e:
            ap.error(f"--target-bpp {a.target_bpp}: {e}")
        a.target_from = dict(method=a.target_bpp, quality=int(row["quality"]), bpp=float(row["bpp"]),
                             accuracy=float(row["accuracy"]), n_images=int(row["n_images"]), tolerance=a.tolerance)
        a.target_bpp = float(row["bpp"])  # the codec's own rate (rounded only in the file name)
        points = "one point" if abs(a.tolerance - 0.01) < 1e-12 else f"{100 * a.tolerance:g} points"
        print(f"target: {a.target_from['method']} q={a.target_from['quality']} is within {points} at "
              f"{a.target_bpp:.3f} bpp ({a.target_from['n_images']:,} test images)", flush=True)
    set_seed(0)
    device = default_device()
    model = load_pretrained(a.dataset, a.split_at).to(device)
    val = load_dataset(a.dataset, "val", subset=a.val_subset)
    grid = [CodecConfig(b, r, m, q) for m in a.modes for b in a.block_sizes for r in a.ratios for q in a.bits]
    fit = load_dataset(a.dataset, "train", subset=a.fit_images) if a.rate == "amortized" else None
    cands = candidates_under(model, grid, load_dataset(a.dataset, "val", subset=a.val_rate_sample), a.target_bpp,
                             fit_data=fit)
    print(f"{len(cands)} of {len(grid)} configurations (one per distinct codec) reach {a.target_bpp} bpp on {a.rate} "
          "validation streams",
          flush=True)
    rates = {c: b for c, b in cands}
    rows = select_after_finetuning(lambda: load_pretrained(a.dataset, a.split_at).to(device), list(rates),
                                   a.screen_steps, rounds=a.rounds, lrs=a.lrs, dataset=a.dataset, val_data=val,
                                   train=a.train, distill_weight=a.distill_weight,
                                   group_lasso_weight=a.group_lasso_weight)
    rows["val_bpp"] = [rates[CodecConfig(int(r.block_size), float(r.ratio), r["mode"], int(r.bits))]
                       for _, r in rows.iterrows()]
    name = f"screening_{a.split_at}_{round(a.target_bpp, 3):g}bpp" + ("_amortized" if a.rate == "amortized" else "")
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    rows.to_csv(d / f"{name}.csv", index=False)
    (d / f"{name}.json").write_text(json.dumps(dict(config=vars(a), checkpoint=checkpoint_card(a.dataset).get("sha256")),
                                               indent=1))
    print(rows.sort_values(["round", "val_accuracy"], ascending=[True, False]).to_string(index=False))


def _schedule_args(ap: argparse.ArgumentParser, seeds: list[int], steps: int, eval_every: int, patience: int,
                   distill_weight: float) -> None:
    """The options every training command shares (its defaults differ per command)."""
    ap.add_argument("--seeds", type=int, nargs="+", default=seeds)
    ap.add_argument("--steps", type=positive, default=steps)
    ap.add_argument("--eval-every", type=positive, default=eval_every)
    ap.add_argument("--patience", type=positive, default=patience)
    ap.add_argument("--lr", type=float, default=BUDGET.lr)
    ap.add_argument("--batch-size", type=positive, default=BUDGET.batch_size)
    ap.add_argument("--distill-weight", type=float, default=distill_weight)
    ap.add_argument("--val-subset", type=positive, default=2000)
    ap.add_argument("--n-test", type=positive, default=None, help="evenly spaced test images (default: all)")


def frontier_command(argv: list[str]) -> None:
    """Fine-tune a chosen configuration once per seed, ship the weights and code tables, test once;
    appends the rows to ``frontier_models.csv`` (and the paired tests to ``frontier_models.json``)."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py frontier")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--block-size", type=positive, required=True)
    ap.add_argument("--ratio", type=ratio_arg, required=True)
    ap.add_argument("--bits", type=positive, required=True)
    _schedule_args(ap, [0, 1, 2], 3000, 150, 5, 0.5)
    ap.add_argument("--train", choices=("all", "tail"), default="all")
    ap.add_argument("--group-lasso-weight", type=float, default=0.0)
    ap.add_argument("--coder", choices=("huffman", "ans"), default="ans")
    ap.add_argument("--fit-images", type=positive, default=5000)
    ap.add_argument("--rate-sample", type=positive, default=1000)
    ap.add_argument("--out", default=str(ROOT / "data" / "frontier"))
    ap.add_argument("--state-dir", default=str(ROOT / "data" / "runs"))
    ap.add_argument("--tag", default="", help="added to the file names, e.g. _tail for an ablation run")
    ap.add_argument("--results", default="frontier_models", help="results file the rows are added to")
    ap.add_argument("--no-ship", dest="ship", action="store_false",
                    help="delete the weights after the test (ablation runs; the card keeps their sha256)")
    ap.add_argument("--monitor-test", type=positive, default=None,
                    help="record accuracy on N evenly spaced TEST images at every evaluation "
                         "(a demonstration of early stopping on the test set; never used for choices)")
    a = ap.parse_args(argv)
    try:
        cfg = CodecConfig(a.block_size, a.ratio, a.mode, a.bits)
    except ValueError as e:
        ap.error(str(e))
    rows = []
    for seed in a.seeds:
        rows.append(train_frontier_model(
            cfg, seed, a.out, a.dataset, a.split_at, a.coder, a.fit_images, a.n_test, a.rate_sample, a.state_dir,
            tag=a.tag, monitor_test=a.monitor_test, ship_weights=a.ship, steps=a.steps, eval_every=a.eval_every,
            patience=a.patience,
            lr=a.lr, batch_size=a.batch_size, train=a.train, distill_weight=a.distill_weight,
            group_lasso_weight=a.group_lasso_weight, val_subset=a.val_subset))
    add_model_rows(rows, a.results, vars(a))


def reference_command(argv: list[str]) -> None:
    """Fine-tune the uncompressed model with the frontier models' budget (no codec), test once;
    rows go to ``reference_models.csv``, and every frontier model is paired with the run of its
    seed in ``frontier_vs_reference.json``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py reference")
    ap.add_argument("--dataset", default="fashion-mnist")
    # patience: the shipped model is the reference's step-0 candidate, so it starts at its best and
    # the first dip of a new schedule would stop it at once; by default it runs the whole budget
    # (the weights kept are still the best on validation, step 0 included)
    _schedule_args(ap, [0, 1, 2], 3000, 150, 1000, 0.5)
    ap.add_argument("--train", choices=("all", "tail"), default="all")
    ap.add_argument("--out", default=str(ROOT / "data" / "reference"))
    ap.add_argument("--models", default=str(ROOT / "data" / "frontier"), help="folder of the frontier models' cards")
    ap.add_argument("--state-dir", default=str(ROOT / "data" / "runs"))
    ap.add_argument("--ship", action="store_true", help="keep the weights (default: the card only)")
    ap.add_argument("--results", default="reference_models")
    ap.add_argument("--pair-only", action="store_true",
                    help="train nothing: pair the models' cards with the reference cards already written")
    a = ap.parse_args(argv)
    if a.pair_only:
        for p in json.loads(write_reference_pairs(Path(a.models), Path(a.out)).read_text()):
            print(f"{p['weights']} vs {p['reference']}: {100 * p['difference']:+.2f} [{100 * p['lo']:+.2f}, "
                  f"{100 * p['hi']:+.2f}] within={p['within']}", flush=True)
        return
    rows = [train_reference_model(seed, a.out, a.dataset, a.n_test, a.state_dir, a.ship, steps=a.steps,
                                  eval_every=a.eval_every, patience=a.patience, lr=a.lr, batch_size=a.batch_size,
                                  train=a.train, distill_weight=a.distill_weight, val_subset=a.val_subset)
            for seed in a.seeds]
    add_model_rows(rows, a.results, vars(a))
    print("wrote", write_reference_pairs(Path(a.models), Path(a.out)))


def bottleneck_command(argv: list[str]) -> None:
    """Train a learned bottleneck per rate weight (the ResNet frozen), ship its weights (small) and
    test it once; rows go to ``bottleneck_models.csv`` (paired tests to its ``_paired.json``)."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py bottleneck")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--rate-weights", type=float, nargs="+", required=True)
    ap.add_argument("--latent-channels", type=positive, default=8)
    ap.add_argument("--stride", type=positive, default=BOTTLENECK_STRIDE,
                    help="encoder downsampling, a power of two >= 2 (7x7 features after layer3: 2 gives 4x4 latents)")
    _schedule_args(ap, [0], 1000, 100, 4, 1.0)
    ap.add_argument("--select-on", choices=SELECT_ON, default="objective")
    ap.add_argument("--prior-lr", type=float, default=None, help="learning rate of the entropy model (default: --lr)")
    ap.add_argument("--tag", default="", help="added to the file names, e.g. _priorlr0.01")
    ap.add_argument("--rate-sample", type=positive, default=1000)
    ap.add_argument("--out", default=str(ROOT / "data" / "frontier"))
    ap.add_argument("--state-dir", default=str(ROOT / "data" / "runs"))
    ap.add_argument("--results", default="bottleneck_models")
    a = ap.parse_args(argv)
    if any(not w >= 0 for w in a.rate_weights):
        ap.error(f"--rate-weights must be >= 0, got {a.rate_weights}")
    if a.stride < 2 or a.stride & (a.stride - 1):
        ap.error(f"--stride must be a power of two >= 2, got {a.stride}")
    rows = [train_bottleneck_model(w, seed, a.out, a.dataset, a.split_at, a.latent_channels, a.n_test,
                                   a.rate_sample, a.state_dir, a.tag, a.stride, steps=a.steps, eval_every=a.eval_every,
                                   patience=a.patience, lr=a.lr, batch_size=a.batch_size,
                                   distill_weight=a.distill_weight, select_on=a.select_on, val_subset=a.val_subset,
                                   **({} if a.prior_lr is None else dict(prior_lr=a.prior_lr)))
            for seed in a.seeds for w in a.rate_weights]
    add_model_rows(rows, a.results, vars(a))


def codec_finetune_command(argv: list[str]) -> None:
    """Fine-tune the classifier on an image codec's decoded images (the help block-sparse gets), test
    once; rows go to ``codec_models.csv``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py codec-finetune")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--format", default="webp", choices=available_formats())
    ap.add_argument("--qualities", type=int, nargs="+", required=True)
    _schedule_args(ap, [0], 1200, 150, 4, 0.5)
    ap.add_argument("--out", default=str(ROOT / "data" / "baselines"))
    ap.add_argument("--state-dir", default=str(ROOT / "data" / "runs"))
    ap.add_argument("--no-ship", dest="ship", action="store_false", help="delete the weights after the test")
    ap.add_argument("--train-subset", type=positive, default=None, help="evenly spaced training images (default: all)")
    ap.add_argument("--results", default="codec_models")
    a = ap.parse_args(argv)
    rows = [train_codec_baseline_model(a.format, q, seed, a.out, a.dataset, a.n_test, a.train_subset, a.val_subset,
                                       state_dir=a.state_dir, ship_weights=a.ship, steps=a.steps,
                                       eval_every=a.eval_every, patience=a.patience, lr=a.lr,
                                       batch_size=a.batch_size, distill_weight=a.distill_weight)
            for seed in a.seeds for q in a.qualities]
    add_model_rows(rows, a.results, vars(a))


def split_sweep_command(argv: list[str]) -> None:
    """The sweep without fine-tuning at one split point (the grid of notebook 03 by default, on the
    same evenly spaced test images); rows go to ``sweep_<split>.csv``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py split-sweep")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", required=True, choices=SPLIT_POINTS)
    _add_grid_arguments(ap)
    ap.add_argument("--n-test", type=positive, default=1000, help="evenly spaced test images")
    ap.add_argument("--rate-sample", type=positive, default=100)
    ap.add_argument("--coder", choices=("huffman", "ans"), default="ans")
    ap.add_argument("--fit-images", type=positive, default=2000)
    a = ap.parse_args(argv)
    model = load_pretrained(a.dataset, a.split_at).to(default_device())
    test = load_dataset(a.dataset, "test", subset=a.n_test)
    try:
        rows = split_sweep(model, test, a.dataset, a.modes, a.block_sizes, a.ratios, a.bits, a.rate_sample,
                           a.coder, a.fit_images)
    except ValueError as e:  # e.g. a block larger than this split's map
        ap.error(str(e))
    print("wrote", save_results(to_frame(rows), dict(vars(a), checkpoint=checkpoint_card(a.dataset).get("sha256")),
                                f"sweep_{a.split_at}"))


def codec_grid_command(argv: list[str]) -> None:
    """Input-image codecs at every quality of their grid, and the uncompressed model, on the same
    test images (default: all 10,000, the images the shipped models are tested on); rows go to
    ``codec_grid.csv``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py codec-grid")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--formats", nargs="+", default=["webp"], choices=available_formats())
    ap.add_argument("--n-test", type=positive, default=None, help="evenly spaced test images (default: all)")
    ap.add_argument("--results", default="codec_grid")
    a = ap.parse_args(argv)
    model = load_pretrained(a.dataset).to(default_device())
    test = load_dataset(a.dataset, "test", subset=a.n_test)
    ref = evaluate(model, None, test)
    rows = [result_row(ref, None, method="uncompressed", dataset=a.dataset)]
    for fmt in a.formats:
        for q in [None] if fmt in LOSSLESS_FORMATS else QUALITIES[fmt]:
            ev = image_codec_baseline(model, test, a.dataset, fmt, q)
            rows.append(codec_row(ev, fmt, q, dataset=a.dataset, finetuned=False))
            print(f"{fmt} q={q}: {100 * ev['accuracy']:.2f}% at {ev['bpp']:.3f} bpp", flush=True)
    save_results(to_frame(rows), dict(command=vars(a), checkpoint=checkpoint_card(a.dataset).get("sha256")), a.results)


def _row_ids(df: pd.DataFrame) -> list[str]:
    """Which model each results row is: the stem of its weights or code tables, else (a row naming
    neither, e.g. the fine-tuned reference) its method, dataset, seed and number of test images."""
    out = []
    for _, r in df.iterrows():
        k = model_key(r["weights"], r["codebook"])
        out.append(model_stem(k) if k else "|".join(str(r[c]) for c in ("method", "dataset", "seed", "n_images")))
    return out


def add_model_rows(rows: list[dict], name: str, command: dict) -> None:
    """Add trained models' rows to results ``name`` (a model's earlier row is replaced) and their
    paired tests against the uncompressed model to ``<name>_paired.json``."""
    paired = []
    for r in rows:
        paired.append(dict(weights=r["weights"] or r.get("card"), reference_accuracy=r.pop("reference_accuracy"),
                           **{k: r[k] for k in ("method", "quality", "seed", "rate_weight") if r.get(k) is not None},
                           **r.pop("paired")))
        r.pop("card", None)
        print(json.dumps(paired[-1] | dict(accuracy=r["accuracy"], bpp=r["bpp"])), flush=True)
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    new = to_frame(rows)
    keys = {model_stem(p["weights"]) for p in paired}  # one model, whether its row names weights or card
    keys |= set(_row_ids(new))  # rows naming neither (a model whose only file is its card) by what they are
    if (d / f"{name}.csv").exists():
        old = load_results(name)
        new = pd.concat([old[~pd.Series(_row_ids(old), index=old.index).isin(keys)], new], ignore_index=True)
    save_results(new, dict(command=command), name)
    pj = d / f"{name}_paired.json"
    prev = [p for p in (json.loads(pj.read_text()) if pj.exists() else []) if model_stem(p["weights"]) not in keys]
    pj.write_text(json.dumps(prev + paired, indent=1, default=float))


def sweep_command(a: argparse.Namespace) -> None:
    set_seed(0)
    model = load_pretrained(a.dataset, a.split_at, a.checkpoint).to(default_device())
    data = load_dataset(a.dataset, "test", subset=a.subset)
    rows = sweep(model, data, [a.mode], [a.block_size], a.ratios, a.bits, a.rate_sample, batch_size=a.batch_size)
    if a.finetune_steps:  # as the original: fine-tune per ratio; unlike it, early stopping on validation
        for cfg in [CodecConfig(a.block_size, r, a.mode, b) for r in a.ratios for b in a.bits]:
            tuned, hist = finetune(load_pretrained(a.dataset, a.split_at, a.checkpoint), cfg, a.dataset,
                                   steps=a.finetune_steps, eval_every=max(1, a.finetune_steps // 4),
                                   patience=4, val_subset=a.val_subset)
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
