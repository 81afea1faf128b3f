"""The study: the sweep over the grid and the presets the notebooks run with."""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .bitstream import encode, rate
from .bottleneck import Bottleneck, load_bottleneck, save_bottleneck
from .bottleneck_training import (best_evaluation, bottleneck_row, evaluate_bottleneck, evaluate_bottlenecks,
                                  train_bottleneck)
from .cache import cached, is_cached
from .analysis import pair_with_reference
from .stats import within
from .baselines import code_images, codec_row, image_codec_baseline
from .codebook import Codebook, codebook_bytes, encode_batch, fit_codebook, load_codebook, save_codebook
from .codec import MODES, RATIOS, CodecConfig, distinct_configs
from .evaluation import evaluate, head_features, result_row
from .data import load_dataset
from .model import SplitResNet18, checkpoint_card, load_pretrained
from .results import REFERENCE_NAME, pack_correct, read_cards, to_frame
from .runtime import ROOT, module_device, results_dir
from .training import finetune


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
               original_mode="channel-wise", original_block_size=4,
               original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # make study: about 20 minutes on 2 CPU cores (AVIF at speed 0 takes ~45 ms an image, so 4 qualities)
    "default": dict(n_examples=64, n_test=1000, rate_sample=100, block_sizes=[2, 4], ratios=RATIOS,
                    bits=[2, 4], finetune_steps=150, eval_every=50, train_subset=10000, val_subset=500,
                    qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                               "avif": [0, 30, 60, 90]},
                    candidate_ratios=RATIOS, target_bpp=[1.0], val_rate_sample=50, screen_steps=10, rounds=2,
                    seeds=[0], fit_images=2000, bottleneck_rate_sample=1000, demo_steps=24, recompute=False,
                    original_mode="channel-wise", original_block_size=4,
                    original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
    # PRESET=full: the whole grid, converged fine-tuning, 3 seeds, all test images (hours on 2 cores)
    "full": dict(n_examples=256, n_test=10000, rate_sample=2000, block_sizes=[1, 2, 4, 8],
                 ratios=RATIOS + [0.001], bits=[2, 4, 8], finetune_steps=4000, eval_every=200,
                 screen_steps=200, rounds=3, seeds=[0, 1, 2], patience=5, fit_images=10000, recompute=False,
                 bottleneck_rate_sample=10000, demo_steps=300,
                 train_subset=None, val_subset=5000,
                 qualities={"jpeg": [1, 5, 10, 20, 30, 50, 70, 90, 95], "webp": [0, 5, 10, 20, 30, 50, 70, 90, 95],
                            "avif": [0, 10, 20, 30, 50, 70, 90]},
                 candidate_ratios=RATIOS + [0.001], target_bpp=[0.5, 1.0, 2.0, 4.0], val_rate_sample=500,
                 original_mode="channel-wise", original_block_size=4,
                 original_modes=["channel-wise", "region-wise", "global"], original_ratios=[1.0, 0.5, 0.3, 0.1, 0.05]),
}


def measured_bpp(features: Tensor, cfg: CodecConfig, input_hw: tuple[int, int],
                 codebook: Codebook | None = None) -> float:
    """Mean bpp of the real per-image streams of ``features`` (e.g. validation images):
    self-contained ones, or with ``codebook`` the amortized ones."""
    if codebook is None:
        return float(np.mean([rate(encode(features[i:i + 1], cfg), input_hw)["bpp"] for i in range(len(features))]))
    return float(np.mean([8 * len(b) / (input_hw[0] * input_hw[1]) for b in encode_batch(features, codebook)]))


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


_FINETUNE_LR = inspect.signature(finetune).parameters["lr"].default


def select_after_finetuning(load_model: Callable[[], SplitResNet18], candidates: list[CodecConfig],
                            screen_steps: int, keep: float = 0.5, rounds: int = 2, lrs: list[float] | None = None,
                            group_lasso_weights: list[float] | None = None, **finetune_kwargs) -> pd.DataFrame:
    """Successive halving on *post*-fine-tuning validation accuracy.

    The arms are the ``candidates``, each with every learning rate of ``lrs`` (default: only
    ``finetune``'s own, or ``lr`` if given) and every block group-lasso weight of
    ``group_lasso_weights`` (default: only ``group_lasso_weight`` if given, else 0; the rows then
    carry ``group_lasso_weight``). Round r fine-tunes every surviving arm from
    ``load_model()`` for ``screen_steps * 2**r`` steps and keeps the best ``keep`` fraction (at
    least one) by the best validation accuracy it reached; it stops early when one survivor is
    left. The test set is not touched. Returns one row per arm and round: ``mode, block_size,
    ratio, bits, lr, round, steps, val_accuracy``; the last round's best row is the pick.
    """
    if not candidates:
        raise ValueError("candidates is empty: no configuration reaches the target rate")
    if not 0 < keep <= 1 or rounds < 1 or screen_steps < 1:
        raise ValueError(f"need 0 < keep <= 1, rounds >= 1, screen_steps >= 1; got {keep}, {rounds}, {screen_steps}")
    if lrs is not None and (not len(lrs) or not all(isinstance(v, (int, float)) and v > 0 for v in lrs)):
        raise ValueError(f"lrs must be positive learning rates, got {lrs!r}")
    lr = finetune_kwargs.pop("lr", _FINETUNE_LR)  # the one arm's rate when lrs is not given
    lrs = list(lrs) if lrs else [lr]
    gl = finetune_kwargs.pop("group_lasso_weight", 0.0)
    gls = list(group_lasso_weights) if group_lasso_weights else [gl]
    if not all(isinstance(v, (int, float)) and v >= 0 for v in gls):
        raise ValueError(f"group_lasso_weights must be numbers >= 0, got {group_lasso_weights!r}")
    rows, alive = [], [(cfg, lr, g) for cfg in candidates for lr in lrs for g in gls]
    for r in range(rounds):
        steps = screen_steps * 2 ** r
        scored = []
        for cfg, lr, g in alive:
            _, hist = finetune(load_model(), cfg, steps=steps, eval_every=max(1, steps // 4),
                               patience=steps, lr=lr, group_lasso_weight=g, **finetune_kwargs)
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


def _in_repo(p: Path) -> str:
    """``p`` relative to the repository when it lies inside it (results name shipped files portably)."""
    p = p.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def config_name(cfg: CodecConfig, split_at: str = "layer1") -> str:
    """A file-name-safe label of a configuration, e.g. ``layer1_global_B4_r0.005_2b``."""
    return f"{split_at}_{cfg.mode}_B{cfg.block_size}_r{cfg.ratio:g}_{cfg.bits}b"


def _state_path(state_dir: str | Path | None, name: str) -> Path | None:
    """Where a training run named ``name`` keeps its resumable state (None: not resumable)."""
    if state_dir is None:
        return None
    state = Path(state_dir) / f"{name}.state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    return state


def _save_fp16(model: torch.nn.Module, path: Path) -> str:
    """Save ``model``'s weights as shipped (float16) to ``path``; returns the file's sha256."""
    torch.save({k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _schedule(kwargs: dict) -> dict:
    """The plain settings among a run's keyword arguments, for its card."""
    return {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, type(None)))}


def _against_uncompressed(dataset: str, split_at: str, test: TensorDataset, ev: dict) -> dict:
    """The uncompressed model on the same test images, and the paired test of ``ev`` against it."""
    ref = evaluate(load_pretrained(dataset, split_at), None, test)
    return dict(paired=within(ref["correct"].numpy(), ev["correct"].numpy()), reference_accuracy=ref["accuracy"])


def train_frontier_model(cfg: CodecConfig, seed: int, out_dir: str | Path, dataset: str = "fashion-mnist",
                         split_at: str = "layer1", coder: str = "ans", fit_images: int = 5000,
                         n_test: int | None = None, rate_sample: int | None = 1000, state_dir: str | Path | None = None,
                         tag: str = "", monitor_test: int | None = None, ship_weights: bool = True,
                         **finetune_kwargs) -> dict:
    """Fine-tune one chosen configuration with one seed, ship it, and test it once.

    Writes to ``out_dir``: the fine-tuned weights (fp16) ``<name>_seed<k>.pt`` with a card
    (``.json``: configuration, seed, schedule, validation history, test accuracy, sha256), the
    code tables fitted on the fine-tuned head's training features ``<name>_seed<k>.codebook``.
    The test set (``n_test`` evenly spaced images, default all) is evaluated once, with the
    uncompressed model on the same images for a paired comparison. Training resumes from
    ``state_dir`` after an interruption. Returns the results row (``results.SCHEMA``) plus
    ``paired`` (``analysis.within`` against the uncompressed model).

    ``tag`` goes into the file names (e.g. ``_tail`` for an ablation run). ``monitor_test``
    (a demonstration of the original script's optimism, not a result) records the accuracy on
    that many evenly spaced *test* images at every evaluation in the history as
    ``test_accuracy``; it never influences training or the choice of weights.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{config_name(cfg, split_at)}{tag}_seed{seed}"
    state = _state_path(state_dir, name)
    model = load_pretrained(dataset, split_at)
    if monitor_test is not None:
        finetune_kwargs["monitor"] = dict(test=load_dataset(dataset, "test", subset=monitor_test))
    tuned, history = finetune(model, cfg, dataset, seed=seed, state_path=state, **finetune_kwargs)
    weights = out / f"{name}.pt"
    sha = _save_fp16(tuned, weights)
    tuned = load_pretrained(dataset, split_at, weights=weights)  # measure the weights as shipped (fp16)
    cb = fit_codebook(head_features(tuned, load_dataset(dataset, "train", subset=fit_images)), cfg, coder)
    cb_path = out / f"{name}.codebook"
    save_codebook(cb, cb_path)
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate(tuned, cfg, test, rate_sample, codebook=cb)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, split_at, test, ev)
    card = dict(dataset=dataset, split_at=split_at, mode=cfg.mode, block_size=cfg.block_size, ratio=cfg.ratio,
                bits=cfg.bits, seed=seed, schedule=_schedule(finetune_kwargs),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=max(h["val_accuracy"] for h in history), test_accuracy=ev["accuracy"],
                test_images=ev["n_images"], monitor_images=monitor_test, codebook=cb_path.name,
                codebook_bytes=codebook_bytes(cb),
                dtype="float16", sha256=sha)
    card_path = weights.with_suffix(".json")
    row = result_row(ev, cfg, dataset=dataset, split_at=split_at, finetuned=True,
                     train=finetune_kwargs.get("train", "all"), seed=seed, val_accuracy=card["val_accuracy"],
                     weights=_in_repo(weights) if ship_weights else None, codebook=_in_repo(cb_path))
    # the one test evaluation, recorded: what notebook 05 reports for weights that are not shipped
    card |= dict(weights_shipped=ship_weights, test_row=row, test_paired=against["paired"],
                 reference_accuracy=against["reference_accuracy"], test_correct=pack_correct(ev["correct"].numpy()))
    card_path.write_text(json.dumps(card, indent=1, default=float))
    if not ship_weights:
        weights.unlink()
    return row | against | dict(card=_in_repo(card_path))


def refit_codebook(card_path: str | Path, fit_images: int = 5000) -> Path:
    """Fit a shipped block-sparse model's code tables again with this codec version (``fit_codebook``
    on its fine-tuned head's features of ``fit_images`` evenly spaced training images, the coder of
    its old tables where readable, else ANS), write them over its ``.codebook`` and record the new
    size on its card. The model's weights (the ``.pt`` beside the card) must be shipped."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    weights = card_path.with_suffix(".pt")
    if not weights.exists():
        raise ValueError(f"card_path: {card_path} has no shipped weights to fit code tables on")
    cfg = CodecConfig(card["block_size"], card["ratio"], card["mode"], card["bits"])
    model = load_pretrained(card["dataset"], card["split_at"], weights=weights)
    cb = fit_codebook(head_features(model, load_dataset(card["dataset"], "train", subset=fit_images)), cfg, "ans")
    path = card_path.with_name(card["codebook"])
    save_codebook(cb, path)
    card |= dict(codebook_bytes=codebook_bytes(cb), fit_images=fit_images)
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return path


def train_reference_model(seed: int, out_dir: str | Path, dataset: str = "fashion-mnist", n_test: int | None = None,
                          state_dir: str | Path | None = None, ship_weights: bool = False, tag: str = "",
                          **finetune_kwargs) -> dict:
    """The second reference: the uncompressed model fine-tuned with the budget the frontier models
    get (``finetune_kwargs``: steps, learning rate, distillation from the shipped model...), with no
    codec, so that "within one point" can be asked of extra training as well as of the shipped model.

    The whole network sees the original images (the split does not matter without a codec; no
    group-lasso: there are no blocks to select). Tested once on ``n_test`` evenly spaced test
    images (default all), with a paired test against the shipped model on the same images. Writes
    the card ``uncompressed_finetuned<tag>_seed<k>.json`` to ``out_dir`` (schedule, validation
    history, test accuracy, sha256 of the fp16 weights, the per-image correctness ``test_correct``
    that later pairings read) and the weights beside it when ``ship_weights``. Returns the results
    row (method ``uncompressed``, ``finetuned`` true) plus ``paired``, ``reference_accuracy`` and ``card``.
    """
    if finetune_kwargs.get("group_lasso_weight"):
        raise ValueError("group_lasso_weight: the reference has no codec, hence no blocks to penalize")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{REFERENCE_NAME}{tag}_seed{seed}"
    tuned, history = finetune(load_pretrained(dataset), None, dataset, seed=seed,
                              state_path=_state_path(state_dir, name), **finetune_kwargs)
    weights = out / f"{name}.pt"
    sha = _save_fp16(tuned, weights)
    tuned = load_pretrained(dataset, weights=weights)  # measure the weights as they would ship (fp16)
    if not ship_weights:
        weights.unlink()
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate(tuned, None, test)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, "layer1", test, ev)
    row = result_row(ev, None, dataset=dataset, finetuned=True, train=finetune_kwargs.get("train", "all"), seed=seed,
                     val_accuracy=max(h["val_accuracy"] for h in history),
                     weights=_in_repo(weights) if ship_weights else None)
    card = dict(dataset=dataset, method="uncompressed", seed=seed, schedule=_schedule(finetune_kwargs),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=row["val_accuracy"], test_accuracy=ev["accuracy"], test_images=ev["n_images"],
                dtype="float16", sha256=sha, weights_shipped=ship_weights, test_row=row,
                test_paired=against["paired"], reference_accuracy=against["reference_accuracy"],
                test_correct=pack_correct(ev["correct"].numpy()))
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return row | against | dict(card=_in_repo(card_path))


def weights_from_state(state_path: str | Path, card_path: str | Path, out_dir: str | Path) -> Path:
    """Write the fp16 weights a finished run's resumable state holds (its best, as ``finetune``
    restores them) to ``out_dir/<card's name>.pt`` (torch's archive names its records after the
    file, so the name is part of the bytes), and check they are the weights the card describes
    (its sha256): how a model whose weights were not shipped is measured again on the machine
    that trained it. ValueError (and no file) when they are not."""
    st = torch.load(state_path, weights_only=False, map_location="cpu")
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    model = load_pretrained(card["dataset"], card.get("split_at", "layer1"))
    model.load_state_dict(st["best"])
    out = Path(out_dir) / f"{card_path.stem}.pt"
    if out.resolve() == card_path.with_suffix(".pt").resolve():
        raise ValueError(f"out_dir: {out_dir} holds the card; write the rebuilt weights elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    if _save_fp16(model, out) != card["sha256"]:
        out.unlink()
        raise ValueError(f"state_path: {state_path} does not hold the weights of {card_path} (sha256 differs)")
    return out


def record_test_correct(card_path: str | Path, weights: str | Path | None = None,
                        shipped_correct: np.ndarray | None = None) -> np.ndarray:
    """Add ``test_correct`` (the per-image correctness of the card's one test) to a block-sparse
    model's card that predates it: the model (``weights``, default the shipped ``.pt`` beside the
    card, whose sha256 must be the card's) is evaluated again on the same test images. Its
    accuracy must equal the card's ``test_accuracy`` and, where the card recorded its paired test
    against the shipped model (``test_paired``), the images only one of the two got right must be
    the same counts (``shipped_correct``: the shipped model on those images, computed if not
    given); else ValueError and the card is left unchanged. Returns the vector."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    weights = Path(weights) if weights is not None else card_path.with_suffix(".pt")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != card["sha256"]:
        raise ValueError(f"weights: {weights} are not the weights of {card_path} (sha256 differs)")
    cfg = CodecConfig(card["block_size"], card["ratio"], card["mode"], card["bits"])
    test = load_dataset(card["dataset"], "test", subset=card["test_images"])  # all of them: the whole split
    ev = evaluate(load_pretrained(card["dataset"], card["split_at"], weights=weights), cfg, test, rate_sample=1)
    if ev["accuracy"] != card["test_accuracy"]:
        raise ValueError(f"card_path: {card_path} records test accuracy {card['test_accuracy']}, these weights give "
                         f"{ev['accuracy']} on the same images")
    correct = ev["correct"].numpy()
    if "test_paired" in card:
        if shipped_correct is None:
            shipped_correct = evaluate(load_pretrained(card["dataset"], card["split_at"]), None, test)["correct"].numpy()
        again = within(shipped_correct, correct)
        was = card["test_paired"]
        if (again["a_only"], again["b_only"]) != (was["a_only"], was["b_only"]):
            raise ValueError(f"card_path: {card_path} records {was['a_only']}/{was['b_only']} images right only by "
                             f"the shipped model/only by this one, these weights give {again['a_only']}/{again['b_only']}")
    card["test_correct"] = pack_correct(correct)
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return correct


def reference_cards(models: str | Path, references: str | Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """The block-sparse models' cards in the folder ``models`` and the fine-tuned reference's in
    ``references`` (``results.read_cards``)."""
    return (read_cards(Path(models).glob("layer*.json")), read_cards(Path(references).glob(f"{REFERENCE_NAME}*.json")))


def write_reference_pairs(models: str | Path, references: str | Path) -> Path:
    """Pair every block-sparse model's card in the folder ``models`` with the fine-tuned reference
    of its seed among the cards in ``references`` (``analysis.pair_with_reference``); writes and
    returns ``frontier_vs_reference.json`` in the results folder (an empty list without a reference)."""
    pairs = pair_with_reference(*reference_cards(models, references))
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    (d / "frontier_vs_reference.json").write_text(json.dumps(pairs, indent=1, default=float))
    return d / "frontier_vs_reference.json"


_REFERENCES: dict[tuple, dict] = {}


def _reference_evaluation(model: SplitResNet18, test: TensorDataset) -> dict:
    """``evaluate(model, None, test)`` of the shipped (uncompressed) model, computed once per process
    for the same model and images: re-measuring N cards needs it N times (40 s each on all 10,000
    test images on 2 CPU cores). Keyed by the model's split and parameters and the images' contents
    (a fingerprint: sums and the labels' bytes), so another checkpoint or other images are evaluated
    afresh."""
    x, y = test.tensors
    with torch.no_grad():
        weights = float(sum(p.double().sum() for p in model.state_dict().values() if p.is_floating_point()))
    key = (model.split_at, len(x), hashlib.sha256(y.numpy().tobytes()).hexdigest(), float(x.double().sum()), weights)
    if key not in _REFERENCES:
        _REFERENCES[key] = evaluate(model, None, test)
    return _REFERENCES[key]


def remeasure_frontier_models(cards: list[str | Path], n_test: int | None = None,
                              rate_sample: int | None = 1000) -> tuple[list[dict], list[dict]]:
    """Re-measure shipped fine-tuned models (their ``.json`` cards in ``data/frontier``) instead of
    retraining them: accuracy on ``n_test`` evenly spaced test images (default all) with its
    interval, rate from real amortized per-image streams with the shipped code tables, and a
    paired test against the uncompressed model on the same images. Returns the results rows
    (each naming its ``weights`` and ``codebook``) and the paired tests.

    A card whose weights were not shipped (``weights_shipped`` false, e.g. extra seeds kept out of
    the repository for its size) cannot be re-measured: its row and paired test are the ones
    recorded at its one test evaluation (``test_row``, ``test_paired``), with ``weights`` empty
    and the paired test keyed by the card's path; left out (with a printed line) when that test
    was on other images than ``n_test``'s."""
    rows, paired, refs = [], [], {}
    for c in map(Path, cards):
        card = json.loads(c.read_text())
        cfg = CodecConfig(card["block_size"], card["ratio"], card["mode"], card["bits"])
        weights, cb_path = c.with_suffix(".pt"), c.with_name(card["codebook"])
        test = load_dataset(card["dataset"], "test", subset=n_test)
        if not card.get("weights_shipped", True):
            if "test_row" not in card:
                raise ValueError(f"cards: {c} has neither shipped weights nor a recorded test_row")
            if card["test_row"]["n_images"] != len(test):  # e.g. a quick preset: report it where it can be
                print(f"{c.name}: weights not shipped, tested on {card['test_row']['n_images']} images, not "
                      f"these {len(test)}: left out")
                continue
            rows.append(card["test_row"])
            paired.append(dict(weights=_in_repo(c), reference_accuracy=card["reference_accuracy"],
                               **card["test_paired"]))
            continue
        key = (card["dataset"], card["split_at"])
        if key not in refs:  # the shipped model, loaded once per split
            refs[key] = _reference_evaluation(load_pretrained(*key), test)
        ev = evaluate(load_pretrained(*key, weights=weights), cfg, test, rate_sample, codebook=load_codebook(cb_path))
        rows.append(result_row(ev, cfg, dataset=card["dataset"], split_at=card["split_at"], finetuned=True,
                               train=card["schedule"].get("train", "all"), seed=card["seed"],
                               val_accuracy=card["val_accuracy"], weights=_in_repo(weights), codebook=_in_repo(cb_path)))
        paired.append(dict(weights=_in_repo(weights), reference_accuracy=refs[key]["accuracy"],
                           **within(refs[key]["correct"].numpy(), ev["correct"].numpy())))
    return rows, paired


def remeasure_cached(cards: list[str | Path], kind: str, recompute: bool = False, **settings) -> pd.DataFrame:
    """``remeasure_frontier_models`` (``kind="frontier"``) or ``remeasure_bottleneck_models``
    (``"bottleneck"``) of every card, each card's result cached on its own (``cache.cached``, keyed
    by the card's name and sha256, ``settings`` and the checkpoint), so a new model is measured
    without measuring the others again. Returns the rows; their paired tests in ``attrs["paired"]``."""
    measure = {"frontier": remeasure_frontier_models, "bottleneck": remeasure_bottleneck_models}
    if kind not in measure:
        raise ValueError(f"kind must be one of {sorted(measure)}, got {kind!r}")
    frames, paired = [], []
    cards = [Path(c) for c in cards]
    keys = {}
    for c in cards:
        card = json.loads(c.read_text())
        keys[c] = dict(card=c.name, sha256=card["sha256"], checkpoint=checkpoint_card(card["dataset"]).get("sha256"),
                       **settings)
    ahead = {}
    if kind == "bottleneck":  # the ones not cached are measured together: one head pass per split
        todo = [c for c in cards if not is_cached(f"{kind}_model", keys[c], recompute)]
        if todo:
            rows, p = remeasure_bottleneck_models(todo, **settings)
            ahead = {c: ([r], [q]) for c, r, q in zip(todo, rows, p)}
    for c in cards:
        def one(c=c):
            rows, p = ahead[c] if c in ahead else measure[kind]([c], **settings)
            frame = to_frame(rows)
            frame.attrs["paired"] = p
            return frame
        f = cached(f"{kind}_model", keys[c], one, recompute)
        frames.append(f)
        paired += f.attrs.get("paired", [])
    out = to_frame(pd.concat(frames, ignore_index=True)) if frames else to_frame([])
    out.attrs["paired"] = paired
    return out


BOTTLENECK_STRIDE = inspect.signature(Bottleneck).parameters["stride"].default


def bottleneck_name(lmbda: float, latent_channels: int, seed: int, split_at: str = "layer1", tag: str = "",
                    stride: int = BOTTLENECK_STRIDE) -> str:
    """A file-name-safe label of a learned bottleneck, e.g. ``bottleneck_layer1_M8_lmbda0.5_seed0``
    (``_S2`` after the channels for a stride other than the default)."""
    s = "" if stride == BOTTLENECK_STRIDE else f"_S{stride}"
    return f"bottleneck_{split_at}_M{latent_channels}{s}_lmbda{lmbda:g}{tag}_seed{seed}"


def train_bottleneck_model(lmbda: float, seed: int, out_dir: str | Path, dataset: str = "fashion-mnist",
                           split_at: str = "layer1", latent_channels: int = 8, n_test: int | None = None,
                           rate_sample: int | None = 1000, state_dir: str | Path | None = None,
                           tag: str = "", stride: int = BOTTLENECK_STRIDE, **train_kwargs) -> dict:
    """Train one learned bottleneck (``bottleneck_training.train_bottleneck``, ResNet frozen) at rate weight
    ``lmbda``, ship it and test it once.

    Writes ``<name>.pt`` (the bottleneck's weights only, float16: the ResNet is the shipped
    checkpoint) and its card ``<name>.json`` (architecture, schedule, validation history, test
    accuracy, sha256) to ``out_dir``. The test set (``n_test`` evenly spaced images, default all)
    is evaluated once, the rate from real per-image ANS streams of ``rate_sample`` of them, with
    the uncompressed model on the same images for a paired comparison. Returns the results row
    plus ``paired`` and ``reference_accuracy``. ``stride``: the encoder's downsampling (a smaller
    one for the smaller maps of later splits: 7x7 after layer3 gives 2x2 latents at stride 4).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = bottleneck_name(lmbda, latent_channels, seed, split_at, tag, stride)
    state = _state_path(state_dir, name)
    model = load_pretrained(dataset, split_at)
    torch.manual_seed(seed)  # the bottleneck's initial weights
    bn = Bottleneck(in_channels=model.split_channels, latent_channels=latent_channels,
                    stride=stride).to(module_device(model))
    bn, history = train_bottleneck(model, bn, lmbda, dataset, seed=seed, state_path=state, **train_kwargs)
    best = best_evaluation(history, train_kwargs.get("select_on", "objective"))
    weights = out / f"{name}.pt"
    save_bottleneck(bn, weights, lmbda)  # written first so the shipped (float16) weights are what is tested
    bn = load_bottleneck(weights, module_device(model))
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate_bottleneck(model, bn, test, rate_sample)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, split_at, test, ev)
    save_bottleneck(bn, weights, lmbda, dataset=dataset, split_at=split_at, seed=seed,
                    base_checkpoint=checkpoint_card(dataset).get("sha256"), schedule=_schedule(train_kwargs),
                    history=history, val_accuracy=best["val_accuracy"], test_accuracy=ev["accuracy"],
                    test_images=ev["n_images"], test_bpp=ev["bpp"])
    row = bottleneck_row(ev, lmbda, dataset=dataset, split_at=split_at, finetuned=True, seed=seed,
                         val_accuracy=best["val_accuracy"], weights=_in_repo(weights))
    return row | against


def remeasure_bottleneck_models(cards: list[str | Path], n_test: int | None = None,
                                rate_sample: int | None = 1000) -> tuple[list[dict], list[dict]]:
    """Re-measure shipped learned bottlenecks (their ``.json`` cards) instead of retraining them:
    the same measurement as ``train_bottleneck_model``'s test, the frozen head run once for all
    the cards of one split (``evaluate_bottlenecks``). Returns (rows, paired tests), one each per
    card, in the cards' order."""
    cards = [Path(c) for c in cards]
    loaded = []
    for c in cards:
        card = json.loads(c.read_text())
        if "test_accuracy" not in card:  # save_bottleneck's first card, before the model's one test
            raise ValueError(f"{c} is not a finished model's card (no test_accuracy): is its run still going?")
        loaded.append(card)
    results = {}
    for key in dict.fromkeys((card["dataset"], card["split_at"]) for card in loaded):
        model = load_pretrained(*key)
        test = load_dataset(key[0], "test", subset=n_test)
        ref = _reference_evaluation(model, test)
        group = [i for i, card in enumerate(loaded) if (card["dataset"], card["split_at"]) == key]
        bns = [load_bottleneck(cards[i].with_suffix(".pt"), module_device(model)) for i in group]
        for i, ev in zip(group, evaluate_bottlenecks(model, bns, test, rate_sample)):
            results[i] = (ev, ref)
    rows, paired = [], []
    for i, (c, card) in enumerate(zip(cards, loaded)):
        ev, ref = results[i]
        weights = _in_repo(c.with_suffix(".pt"))
        rows.append(bottleneck_row(ev, card["lmbda"], dataset=card["dataset"], split_at=card["split_at"],
                                   finetuned=True, seed=card["seed"], val_accuracy=card["val_accuracy"],
                                   weights=weights))
        paired.append(dict(weights=weights, reference_accuracy=ref["accuracy"],
                           **within(ref["correct"].numpy(), ev["correct"].numpy())))
    return rows, paired


def train_codec_baseline_model(fmt: str, quality: int | None, seed: int, out_dir: str | Path,
                               dataset: str = "fashion-mnist", n_test: int | None = None,
                               train_subset: int | None = None, val_subset: int | None = 2000,
                               state_dir: str | Path | None = None, ship_weights: bool = True,
                               **finetune_kwargs) -> dict:
    """The same help for an input-image codec: fine-tune the classifier on its decoded images.

    The training and validation images are coded with ``fmt`` at ``quality`` and decoded; the
    whole classifier is fine-tuned on them with ``training.finetune`` and the budget given in
    ``finetune_kwargs`` (as block-sparse's frontier models), distilling from the uncompressed
    model on the *original* images, as block-sparse's teacher sees uncompressed features.
    Early stopping on the decoded validation images; the test set (``n_test`` evenly spaced
    images, default all) is coded and evaluated once, with the uncompressed model on the same
    original images for a paired comparison. Writes the card ``<fmt>_q<quality>_finetuned_seed<k>.json``
    (and the fp16 weights beside it when ``ship_weights``). Returns the results row plus
    ``paired`` and ``reference_accuracy``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{fmt}_q{quality}_finetuned_seed{seed}"
    state = _state_path(state_dir, name)
    train = load_dataset(dataset, "train", subset=train_subset)
    coded_train, train_bytes = code_images(train, dataset, fmt, quality)
    coded_val, _ = code_images(load_dataset(dataset, "val", subset=val_subset), dataset, fmt, quality)
    tuned, history = finetune(load_pretrained(dataset), None, dataset, seed=seed, state_path=state,
                              train_data=coded_train, val_data=coded_val, teacher_inputs=train.tensors[0],
                              **finetune_kwargs)
    weights = out / f"{name}.pt"
    sha = _save_fp16(tuned, weights)
    tuned = load_pretrained(dataset, weights=weights)  # measure the weights as they would ship (fp16)
    if not ship_weights:
        weights.unlink()
    test = load_dataset(dataset, "test", subset=n_test)
    ev = image_codec_baseline(tuned, test, dataset, fmt, quality)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, "layer1", test, ev)  # the split does not change the whole network
    card = dict(dataset=dataset, format=fmt, quality=quality, seed=seed, schedule=_schedule(finetune_kwargs),
                train_images=len(train),
                train_bpp=8 * float(train_bytes.mean()) / (train.tensors[0].shape[-2] * train.tensors[0].shape[-1]),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=max(h["val_accuracy"] for h in history), test_accuracy=ev["accuracy"],
                test_images=ev["n_images"], test_bpp=ev["bpp"], dtype="float16", sha256=sha,
                weights_shipped=ship_weights)
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1))
    row = codec_row(ev, fmt, quality, dataset=dataset, finetuned=True, train="all", seed=seed,
                    val_accuracy=card["val_accuracy"], weights=_in_repo(weights) if ship_weights else None)
    return row | against | dict(card=_in_repo(card_path))


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
