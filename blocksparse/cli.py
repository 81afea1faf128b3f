"""Command line: ``python blocksparse_utils.py [pretrain|bench|notebooks|<sweep options>]``."""
from __future__ import annotations

import argparse
import datetime
import json
import queue
import statistics
import sys
import time
from pathlib import Path

import pandas as pd
import papermill as pm
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines as pm_engines
from papermill.log import logger as pm_log
import torch
import zstandard

from . import codebook as cbk
from .bitstream import decode, encode
from .codec import MODES, RATIOS, SELECTION_GRID, CodecConfig, compress
from .data import load_dataset
from .evaluation import evaluate, result_row
from .model import SPLIT_POINTS, checkpoint_card, load_pretrained
from .plots import plot_accuracy_vs_bpp, save_figure
from .runtime import NOTEBOOK_DIR, ROOT, default_device, figures_dir, results_dir, set_seed
from .results import load_results, model_key, model_stem, original_layout, save_results, to_frame, write_compression_results
from .baselines import LOSSLESS_FORMATS, LOSSY_FORMATS, QUALITIES, available_formats, codec_row, image_codec_baseline
from .bottleneck_training import SELECT_ON
from .analysis import codec_rate_within
from .stats import ONE_POINT
from .report_format import fmt_points
from .study import (BOTTLENECK_STRIDE, PRESETS, candidates_under, select_after_finetuning,
                    split_sweep, sweep, train_bottleneck_model, train_codec_baseline_model, train_frontier_model,
                    train_reference_model, write_reference_pairs)
from .training import accuracy, finetune, pretrain
from .cli_protocol import protocol_command

def _positive(s: str) -> int:
    """argparse type: an integer >= 1 (anything else is a usage error, not a traceback)."""
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def _target(s: str) -> float | str:
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


def _ratio(s: str) -> float:
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
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
CELL_TIMEOUT = 3 * 3600  # seconds; the longest cell of PRESET=full fine-tunes for hours on 2 cores
POLL_SLICE = 2.0  # seconds: the longest wait for one message before the socket is polled again


def sliced_get_msg(get_msg, step: float = POLL_SLICE):
    """``get_msg(timeout)`` of a kernel channel, waiting in slices of ``step`` seconds.

    The asyncio poll of a kernel's shell socket can miss the wake-up of a reply that has
    arrived (nbclient issue 312, seen here in notebook 07's widget cell: kernel idle, the
    reply never read until the cell timeout, hours later); polling again finds it. Raises
    ``Empty`` only once the whole ``timeout`` has passed (never for ``None``).
    """
    async def sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return sliced


class _SlicedPollClient(PapermillNotebookClient):
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        kc.shell_channel.get_msg = sliced_get_msg(kc.shell_channel.get_msg)
        return kc


class SlicedPollEngine(NBClientEngine):
    """papermill's nbclient engine with ``sliced_get_msg`` on the shell channel."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
        return _SlicedPollClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log=pm_log, log_output=log_output,
                                 stdout_file=stdout_file, stderr_file=stderr_file, **kwargs).execute()


pm_engines.register("bsu-sliced", SlicedPollEngine)


def run_notebooks(preset: str = "default", out_dir: str | Path = ROOT / "build" / "notebooks",
                  only: list[str] | None = None) -> list[Path]:
    """Execute notebooks 01-07 in order with papermill, injecting the preset's parameters
    (each notebook gets the ones its ``parameters`` cell declares). Returns the executed copies."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    for nb in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
        if only and not any(nb.name.startswith(o) for o in only):
            continue
        declared = pm.inspect_notebook(str(nb))
        params = {k: v for k, v in PRESETS[preset].items() if k in declared}
        print(f"[{preset}] {nb.name} {params}", flush=True)
        t0 = time.time()
        # a cell that waits longer than CELL_TIMEOUT fails the run instead of hanging it; the engine
        # polls the shell socket again every POLL_SLICE (a missed reply hung notebook 07 before)
        pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(NOTEBOOK_DIR),
                            kernel_name="python3", progress_bar=False, execution_timeout=CELL_TIMEOUT,
                            extra_arguments=KERNEL_ARGS, engine_name="bsu-sliced")
        print(f"[{preset}] {nb.name} done in {time.time() - t0:.0f} s", flush=True)
        done.append(out_dir / nb.name)
    return done




def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["pretrain"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py pretrain")
        ap.add_argument("--dataset", default="fashion-mnist")
        ap.add_argument("--epochs", type=_positive, default=5)
        ap.add_argument("--batch-size", type=_positive, default=128)
        ap.add_argument("--lr", type=float, default=0.1)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--subset", type=int, default=None)
        ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast: auto = where it measures faster (CUDA, CPUs with AMX)")
        ap.add_argument("--resume", action="store_true")
        ap.add_argument("--anneal-at", type=int, default=None,
                        help="follow the one-cycle schedule for K-1 epochs, then anneal to zero in epoch K and stop")
        a = ap.parse_args(argv[1:])
        card = pretrain(a.dataset, a.epochs, a.batch_size, a.lr, a.seed, a.resume, a.subset,
                        bf16={"auto": None, "on": True, "off": False}[a.bf16], anneal_at=a.anneal_at)
        print(json.dumps(card, indent=2))
        return
    commands = {"select": _select_command, "frontier": _frontier_command, "bottleneck": _bottleneck_command,
                "codec-finetune": _codec_finetune_command, "split-sweep": _split_sweep_command,
                "codec-grid": _codec_grid_command, "reference": _reference_command, "protocol": protocol_command}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if argv[:1] == ["bench"]:
        return benchmark()
    if argv[:1] == ["codec-limits"]:  # the README's codec block, from the shipped layer2 model
        from .limits import render_limits
        from .report import splice_readme
        table = codec_limits()
        results_dir().mkdir(parents=True, exist_ok=True)
        table.to_csv(results_dir() / "codec_limits.csv", index=False)
        splice_readme(ROOT / "README.md", render_limits(table), "codec-limits")
        return
    if argv[:1] == ["notebooks"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py notebooks")
        ap.add_argument("--preset", default="default", choices=tuple(PRESETS))
        ap.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
        ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 01 03")
        a = ap.parse_args(argv[1:])
        paths = run_notebooks(a.preset, a.out, a.only)
        print("executed notebooks:", *paths, f"figures: {figures_dir()}", f"results: {results_dir()}", sep="\n  ")
        return
    ap = argparse.ArgumentParser(description="Sweep the ratios of one mode and block size "
                                 "(the original script's interface) and write results and a figure.")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--mode", default="channel-wise", choices=MODES)
    ap.add_argument("--block-size", type=_positive, default=4)
    ap.add_argument("--bits", type=_positive, nargs="+", default=[2, 4, 8])
    ap.add_argument("--ratios", type=_ratio, nargs="+", default=RATIOS)
    ap.add_argument("--batch-size", type=_positive, default=128)
    ap.add_argument("--subset", nargs="?", const=1000, type=_positive, default=None,
                    help="evaluate N evenly spaced test images (default N=1000)")
    ap.add_argument("--rate-sample", type=_positive, default=200)
    ap.add_argument("--checkpoint", default=None, help="a ResNet-18 state_dict (default: the shipped one)")
    ap.add_argument("--finetune-steps", type=int, default=200,
                    help="fine-tune the whole network per ratio for this many steps, early stopping on "
                         "validation (0: no fine-tuning)")
    ap.add_argument("--val-subset", type=_positive, default=1000)
    a = ap.parse_args(argv)
    if a.finetune_steps < 0:
        ap.error(f"--finetune-steps must be >= 0, got {a.finetune_steps}")
    try:
        _sweep_command(a)
    except ValueError as e:  # bad values that argparse cannot see (e.g. a block larger than the map)
        ap.error(str(e))


def _add_grid_arguments(ap: argparse.ArgumentParser) -> None:
    """``--modes --block-sizes --ratios --bits``, defaulting to ``SELECTION_GRID``."""
    g = SELECTION_GRID
    ap.add_argument("--modes", nargs="+", default=list(g["modes"]), choices=MODES)
    ap.add_argument("--block-sizes", type=_positive, nargs="+", default=list(g["block_sizes"]))
    ap.add_argument("--ratios", type=_ratio, nargs="+", default=list(g["ratios"]))
    ap.add_argument("--bits", type=_positive, nargs="+", default=list(g["bits"]))


def _select_command(argv: list[str]) -> None:
    """Screen every configuration under a target rate by brief fine-tuning (successive halving on
    validation accuracy after fine-tuning); writes ``screening_<split>_<target>bpp.csv/json``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py select")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--target-bpp", type=_target, default=1.0,
                    help="the rate to screen under: bpp, or an image format (webp) for the lowest rate at which "
                         "it is within --tolerance of the uncompressed model in codec_grid.csv (point estimate)")
    ap.add_argument("--tolerance", type=float, default=ONE_POINT, help="with a format as --target-bpp")
    _add_grid_arguments(ap)
    ap.add_argument("--screen-steps", type=_positive, default=50)
    ap.add_argument("--rounds", type=_positive, default=2)
    ap.add_argument("--val-subset", type=_positive, default=1000)
    ap.add_argument("--val-rate-sample", type=_positive, default=100)
    ap.add_argument("--rate", choices=("self-contained", "amortized"), default="self-contained",
                    help="which streams' rate must reach the target (amortized: ANS codebooks fitted on "
                         "--fit-images training images, the headline's accounting)")
    ap.add_argument("--fit-images", type=_positive, default=2000)
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
        print(f"target: {a.target_from['method']} q={a.target_from['quality']} is within {fmt_points(a.tolerance)} at "
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
    ap.add_argument("--steps", type=_positive, default=steps)
    ap.add_argument("--eval-every", type=_positive, default=eval_every)
    ap.add_argument("--patience", type=_positive, default=patience)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=_positive, default=64)
    ap.add_argument("--distill-weight", type=float, default=distill_weight)
    ap.add_argument("--val-subset", type=_positive, default=2000)
    ap.add_argument("--n-test", type=_positive, default=None, help="evenly spaced test images (default: all)")


def _frontier_command(argv: list[str]) -> None:
    """Fine-tune a chosen configuration once per seed, ship the weights and code tables, test once;
    appends the rows to ``frontier_models.csv`` (and the paired tests to ``frontier_models.json``)."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py frontier")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--mode", required=True, choices=MODES)
    ap.add_argument("--block-size", type=_positive, required=True)
    ap.add_argument("--ratio", type=_ratio, required=True)
    ap.add_argument("--bits", type=_positive, required=True)
    _schedule_args(ap, [0, 1, 2], 3000, 150, 5, 0.5)
    ap.add_argument("--train", choices=("all", "tail"), default="all")
    ap.add_argument("--group-lasso-weight", type=float, default=0.0)
    ap.add_argument("--coder", choices=("huffman", "ans"), default="ans")
    ap.add_argument("--fit-images", type=_positive, default=5000)
    ap.add_argument("--rate-sample", type=_positive, default=1000)
    ap.add_argument("--out", default=str(ROOT / "data" / "frontier"))
    ap.add_argument("--state-dir", default=str(ROOT / "data" / "runs"))
    ap.add_argument("--tag", default="", help="added to the file names, e.g. _tail for an ablation run")
    ap.add_argument("--results", default="frontier_models", help="results file the rows are added to")
    ap.add_argument("--no-ship", dest="ship", action="store_false",
                    help="delete the weights after the test (ablation runs; the card keeps their sha256)")
    ap.add_argument("--monitor-test", type=_positive, default=None,
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
    _add_model_rows(rows, a.results, vars(a))


def _reference_command(argv: list[str]) -> None:
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
    _add_model_rows(rows, a.results, vars(a))
    print("wrote", write_reference_pairs(Path(a.models), Path(a.out)))


def _bottleneck_command(argv: list[str]) -> None:
    """Train a learned bottleneck per rate weight (the ResNet frozen), ship its weights (small) and
    test it once; rows go to ``bottleneck_models.csv`` (paired tests to its ``_paired.json``)."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py bottleneck")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--rate-weights", type=float, nargs="+", required=True)
    ap.add_argument("--latent-channels", type=_positive, default=8)
    ap.add_argument("--stride", type=_positive, default=BOTTLENECK_STRIDE,
                    help="encoder downsampling, a power of two >= 2 (7x7 features after layer3: 2 gives 4x4 latents)")
    _schedule_args(ap, [0], 1000, 100, 4, 1.0)
    ap.add_argument("--select-on", choices=SELECT_ON, default="objective")
    ap.add_argument("--prior-lr", type=float, default=None, help="learning rate of the entropy model (default: --lr)")
    ap.add_argument("--tag", default="", help="added to the file names, e.g. _priorlr0.01")
    ap.add_argument("--rate-sample", type=_positive, default=1000)
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
    _add_model_rows(rows, a.results, vars(a))


def _codec_finetune_command(argv: list[str]) -> None:
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
    ap.add_argument("--train-subset", type=_positive, default=None, help="evenly spaced training images (default: all)")
    ap.add_argument("--results", default="codec_models")
    a = ap.parse_args(argv)
    rows = [train_codec_baseline_model(a.format, q, seed, a.out, a.dataset, a.n_test, a.train_subset, a.val_subset,
                                       state_dir=a.state_dir, ship_weights=a.ship, steps=a.steps,
                                       eval_every=a.eval_every, patience=a.patience, lr=a.lr,
                                       batch_size=a.batch_size, distill_weight=a.distill_weight)
            for seed in a.seeds for q in a.qualities]
    _add_model_rows(rows, a.results, vars(a))


def _split_sweep_command(argv: list[str]) -> None:
    """The sweep without fine-tuning at one split point (the grid of notebook 03 by default, on the
    same evenly spaced test images); rows go to ``sweep_<split>.csv``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py split-sweep")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", required=True, choices=SPLIT_POINTS)
    _add_grid_arguments(ap)
    ap.add_argument("--n-test", type=_positive, default=1000, help="evenly spaced test images")
    ap.add_argument("--rate-sample", type=_positive, default=100)
    ap.add_argument("--coder", choices=("huffman", "ans"), default="ans")
    ap.add_argument("--fit-images", type=_positive, default=2000)
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


def _codec_grid_command(argv: list[str]) -> None:
    """Input-image codecs at every quality of their grid, and the uncompressed model, on the same
    test images (default: all 10,000, the images the shipped models are tested on); rows go to
    ``codec_grid.csv``."""
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py codec-grid")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--formats", nargs="+", default=["webp"], choices=available_formats())
    ap.add_argument("--n-test", type=_positive, default=None, help="evenly spaced test images (default: all)")
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


def _add_model_rows(rows: list[dict], name: str, command: dict) -> None:
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


def _sweep_command(a: argparse.Namespace) -> None:
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


def _timings(f, n: int, warmup: int) -> list[float]:
    """Seconds of ``n`` calls of ``f`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        f()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return times


def benchmark() -> None:
    """Encode/decode speed on a [128, 64, 32, 32] ReLU tensor (4x4, ratio 0.1, channel-wise,
    4 bits) in MB/s of float32 input, with zstd level 3 on the raw bytes for reference; then
    batch-1 latency at the operating point (a [1, 64, 28, 28] ReLU map, global, 4x4, ratio
    0.005, 2 bits; self-contained and with a fitted ANS codebook) against the shipped model's
    head on one image, and the batched per-image encoder cost. Prints, asserts nothing."""
    set_seed(0)
    x = torch.randn(128, 64, 32, 32).relu()
    cfg = CodecConfig(4, 0.1, "channel-wise", 4)
    mb = x.numel() * 4 / 1e6

    def best(f, k=5):
        return min(_timings(f, k, warmup=1))

    blob = encode(x, cfg)
    raw = x.numpy().tobytes()
    z = zstandard.ZstdCompressor(level=3).compress(raw)
    rows = [("blocksparse encode", best(lambda: encode(x, cfg)), len(blob)),
            ("blocksparse decode", best(lambda: decode(blob)), len(blob)),
            ("blocksparse compress (no entropy coding)", best(lambda: compress(x, cfg)), len(blob)),
            ("zstd-3 compress (lossless)", best(lambda: zstandard.ZstdCompressor(level=3).compress(raw)), len(z)),
            ("zstd-3 decompress", best(lambda: zstandard.ZstdDecompressor().decompress(z)), len(z))]
    print(f"input: {tuple(x.shape)} float32 = {mb:.1f} MB; {cfg}; torch threads {torch.get_num_threads()}")
    for name, t, size in rows:
        print(f"{name:42s} {mb / t:8.1f} MB/s  ({1000 * t:6.1f} ms, stream {size / 1e6:.3f} MB)")

    # batch-1 latency at the operating point: what one request costs next to the head's compute
    def median_ms(f, n=200):  # (median, min) in ms; the min shows what a busy machine hides
        times = _timings(f, n, warmup=5)
        return 1000 * statistics.median(times), 1000 * min(times)

    op = CodecConfig(4, 0.005, "global", 2)
    one = torch.randn(1, 64, 28, 28).relu()
    cb = cbk.fit_codebook(torch.randn(256, 64, 28, 28).relu(), op, "ans")  # synthetic ReLU maps, like `one`
    sc, amortized = encode(one, op), cbk.encode_batch(one, cb)[0]
    model = load_pretrained(device="cpu")
    image = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        head = median_ms(lambda: model.head(image))
    latency = [("self-contained", median_ms(lambda: encode(one, op)), median_ms(lambda: decode(sc)), len(sc)),
               ("ans codebook", median_ms(lambda: cbk.encode_batch(one, cb)),
                median_ms(lambda: cbk.decode(amortized, cb)), len(amortized))]
    print(f"\nbatch 1, median (min) of 200 calls: {tuple(one.shape)} ReLU map, {op}")
    print(f"{'head':16s} {head[0]:8.3f} ms ({head[1]:.3f})  shipped model, 1x1x28x28, cpu, no_grad, eval")
    for name, enc, dec, size in latency:
        print(f"{name:16s} encode {enc[0]:8.3f} ms ({enc[1]:.3f}) = {enc[0] / head[0]:6.3f}x head;  decode "
              f"{dec[0]:8.3f} ms ({dec[1]:.3f}) = {dec[0] / head[0]:6.3f}x head;  stream {size} bytes")
    batch = torch.randn(256, 64, 28, 28).relu()
    per_image = 1000 * best(lambda: cbk.encode_batch(batch, cb), k=3) / len(batch)
    print(f"encode_batch of 256 images (ans codebook, best of 3): {per_image:.3f} ms per image "
          f"({1000 / per_image:.0f} images/s, {per_image / head[0]:.3f}x the batch-1 head)")
    codec_limits()


SHIPPED_LAYER2 = ROOT / "data" / "frontier" / "layer2_global_B2_r0.005_2b_gl_seed0.pt"


def codec_limits(weights: Path = SHIPPED_LAYER2, fit_images: int = 3000, n_test: int = 500) -> pd.DataFrame:
    """Each stream section against its information limit (``limits.section_limits``) for the shipped
    layer2 model (global, B=2, ratio 0.005, 2 bits): code tables fitted on its own head's features of
    ``fit_images`` evenly spaced training images, streams of ``n_test`` evenly spaced test images.
    Prints the table (mean bits per image) and returns it."""
    from .evaluation import head_features
    from .limits import section_limits
    cfg = CodecConfig(2, 0.005, "global", 2)
    model = load_pretrained("fashion-mnist", "layer2", weights=weights, device="cpu")
    fit = head_features(model, load_dataset("fashion-mnist", "train", subset=fit_images))
    test = head_features(model, load_dataset("fashion-mnist", "test", subset=n_test))
    table = section_limits(fit, test, cfg, (28, 28))
    print(f"\nstream sections against their limits: {weights.name}, {cfg}, ANS; tables fitted on {fit_images} "
          f"training images, {n_test} test images (bits per image; *_model_bits: the information content "
          f"under the fitted model)")
    print(table.round(2).to_markdown(index=False))
    return table


if __name__ == "__main__":
    main()
