"""Shipped models measured again from their cards (instead of retraining), cached per card; the
fine-tuned reference paired with them from the cards alone."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .bottleneck import load_bottleneck
from .bottleneck_training import (bottleneck_row, evaluate_bottlenecks)
from .cache import cached, is_cached
from .analysis import pair_with_reference
from .stats import within
from .codebook import load_codebook
from .codec import CodecConfig
from .evaluation import evaluate, result_row
from .data import load_dataset
from .model import SplitResNet18, checkpoint_card, load_pretrained
from .results import REFERENCE_NAME, read_cards, to_frame
from .runtime import in_repo, module_device, results_dir


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
            paired.append(dict(weights=in_repo(c), reference_accuracy=card["reference_accuracy"],
                               **card["test_paired"]))
            continue
        key = (card["dataset"], card["split_at"])
        if key not in refs:  # the shipped model, loaded once per split
            refs[key] = _reference_evaluation(load_pretrained(*key), test)
        ev = evaluate(load_pretrained(*key, weights=weights), cfg, test, rate_sample, codebook=load_codebook(cb_path))
        rows.append(result_row(ev, cfg, dataset=card["dataset"], split_at=card["split_at"], finetuned=True,
                               train=card["schedule"].get("train", "all"), seed=card["seed"],
                               val_accuracy=card["val_accuracy"], weights=in_repo(weights), codebook=in_repo(cb_path)))
        paired.append(dict(weights=in_repo(weights), reference_accuracy=refs[key]["accuracy"],
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
    # a frontier model not in the cache is measured here, one at a time (minutes each on a CPU at full size):
    # a bar counts them (bottlenecks not cached were measured together above)
    to_measure = sum(not is_cached(f"{kind}_model", keys[c], recompute) for c in cards) if kind == "frontier" else 0
    for c in tqdm(cards, desc=f"{kind} models ({to_measure} to measure)", disable=not to_measure):
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
        weights = in_repo(c.with_suffix(".pt"))
        rows.append(bottleneck_row(ev, card["lmbda"], dataset=card["dataset"], split_at=card["split_at"],
                                   finetuned=True, seed=card["seed"], val_accuracy=card["val_accuracy"],
                                   weights=weights))
        paired.append(dict(weights=weights, reference_accuracy=ref["accuracy"],
                           **within(ref["correct"].numpy(), ev["correct"].numpy())))
    return rows, paired
