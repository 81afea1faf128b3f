"""The protocol's runs (``protocol``): train a candidate, score it on val-select, test a chosen model once.

A run is one family at one split, one setting (a codec configuration, a rate weight, a quality)
and one seed, trained with ``protocol.BUDGET`` and early stopping on val-stop. Its card
(``<name>.json`` in ``data/answer``) records the budget, the val-stop history and the val-select
result (accuracy, real-stream rate, per-image correctness), never a test number; ``test_run``
adds the one test evaluation of a model the rule has chosen, and refuses a second.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from .baselines import code_images, image_codec_baseline
from .codebook import codebook_bytes, fit_codebook, load_codebook, save_codebook
from .codec import CodecConfig
from .data import load_dataset
from .evaluation import evaluate, head_features
from .model import SplitResNet18, checkpoint_card, load_pretrained, save_weights
from .protocol import BUDGET, VAL_SELECT, VAL_STOP, Budget, selection_data, stopping_data
from .results import pack_correct
from .runtime import DATA_DIR, ROOT
from .training import finetune

ANSWER_DIR = DATA_DIR / "answer"
TRAINED = ("reference", "block-sparse", "webp-finetuned")  # the families this module trains so far
FIT_IMAGES = 5000  # evenly spaced training images the code tables are fitted on


def run_name(family: str, setting: dict, seed: int, split_at: str | None = None) -> str:
    """A run's file stem, e.g. ``block-sparse_layer3_global_B2_r0.01_2b_gl1e-05_seed0``."""
    if family == "reference":
        return f"reference_seed{seed}"
    if family == "block-sparse":
        s = setting
        return (f"block-sparse_{split_at}_{s['mode']}_B{s['block_size']}_r{s['ratio']:g}_{s['bits']}b"
                f"_gl{s.get('group_lasso_weight', 0):g}_seed{seed}")
    if family == "webp-finetuned":
        return f"webp-finetuned_q{setting['quality']}_seed{seed}"
    raise ValueError(f"family must be one of {TRAINED}, got {family!r}")


def _in_repo(p: Path) -> str:
    p = p.resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def _config(setting: dict) -> CodecConfig:
    try:
        return CodecConfig(setting["block_size"], setting["ratio"], setting["mode"], setting["bits"])
    except KeyError as e:
        raise ValueError(f"setting: a block-sparse setting needs {e.args[0]!r}") from None


def _scored(model: SplitResNet18, data: TensorDataset, family: str, setting: dict, codebook, dataset: str) -> dict:
    """Accuracy, real-stream rate and per-image correctness of a finished model on ``data``."""
    if family == "reference":
        ev = evaluate(model, None, data)
    elif family == "block-sparse":
        ev = evaluate(model, _config(setting), data, codebook=codebook)
    else:  # webp-finetuned: the classifier of decoded images, on images coded at the quality
        ev = image_codec_baseline(model, data, dataset, "webp", setting["quality"])
    out = dict(accuracy=ev["accuracy"], n_images=ev["n_images"], correct=pack_correct(ev["correct"].numpy()))
    for k in ("bpp", "bpp_payload"):
        if k in ev:
            out[k] = float(ev[k])
    return out


def train_run(family: str, setting: dict, seed: int, split_at: str | None = None, dataset: str = "fashion-mnist",
              out_dir: str | Path = ANSWER_DIR, state_dir: str | Path | None = None, budget: Budget = BUDGET,
              train_subset: int | None = None, fit_images: int = FIT_IMAGES) -> Path:
    """Train one candidate with ``budget`` (early stopping on val-stop), ship its weights
    (``model.save_weights``), score the shipped weights on val-select, write its card; returns the
    card's path. The test set is not touched. ``train_subset`` (evenly spaced training images) is
    for tests only: a reported run trains on the whole training split."""
    if family not in TRAINED:
        raise ValueError(f"family must be one of {TRAINED}, got {family!r}")
    if family == "block-sparse" and split_at is None:
        raise ValueError("split_at: a block-sparse run needs its split")
    split_at = split_at if family == "block-sparse" else None  # the others do not depend on the split
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = run_name(family, setting, seed, split_at)
    state = None
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        state = Path(state_dir) / f"{name}.state.pt"
    train = load_dataset(dataset, "train", subset=train_subset)
    stop = stopping_data(dataset)
    kwargs = dict(budget.kwargs(), train_data=train, val_data=stop, seed=seed, state_path=state)
    model = load_pretrained(dataset, split_at or "layer1")
    cfg = None
    if family == "block-sparse":
        cfg = _config(setting)
        kwargs["group_lasso_weight"] = float(setting.get("group_lasso_weight", 0.0))
    elif family == "webp-finetuned":
        coded, _ = code_images(train, dataset, "webp", setting["quality"])
        coded_stop, _ = code_images(stop, dataset, "webp", setting["quality"])
        kwargs |= dict(train_data=coded, val_data=coded_stop, teacher_inputs=train.tensors[0])
    tuned, history = finetune(model, cfg, dataset, **kwargs)
    weights = out / f"{name}.pt"
    sha = save_weights(tuned, weights)
    tuned = load_pretrained(dataset, split_at or "layer1", weights=weights)  # what ships is what is measured
    card = dict(family=family, split_at=split_at, setting=setting, seed=seed, dataset=dataset,
                budget=budget.asdict(), protocol=dict(stop=VAL_STOP, select=VAL_SELECT, stop_images=len(stop.tensors[1]),
                                                      train_images=len(train.tensors[1])),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                weights=weights.name, sha256=sha, torch=torch.__version__)
    codebook = None
    if family == "block-sparse":
        codebook = fit_codebook(head_features(tuned, load_dataset(dataset, "train", subset=fit_images)), cfg, "ans")
        cb_path = out / f"{name}.codebook"
        save_codebook(codebook, cb_path)
        card |= dict(codebook=cb_path.name, codebook_bytes=codebook_bytes(codebook), fit_images=fit_images)
    card["val_select"] = _scored(tuned, selection_data(dataset), family, setting, codebook, dataset)
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def load_run(card_path: str | Path) -> tuple[SplitResNet18, dict, object]:
    """(model, card, codebook or None) of a run's card; the weights' sha256 must be the card's."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    weights = p.with_name(card["weights"])
    if not weights.exists():
        raise ValueError(f"card_path: {p} names weights {weights.name}, which are not there")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != card["sha256"]:
        raise ValueError(f"card_path: {weights} are not the weights of {p} (sha256 differs)")
    model = load_pretrained(card["dataset"], card["split_at"] or "layer1", weights=weights)
    codebook = load_codebook(p.with_name(card["codebook"])) if card.get("codebook") else None
    return model, card, codebook


def test_run(card_path: str | Path, n_test: int | None = None) -> dict:
    """The one test evaluation of a chosen run: all test images (``n_test`` evenly spaced ones for
    tests of this code only), recorded on its card as ``test`` (accuracy, rate, per-image
    correctness). A card that already holds a test result is a ValueError: test is touched once."""
    p = Path(card_path)
    model, card, codebook = load_run(p)
    if "test" in card:
        raise ValueError(f"card_path: {p} was tested already (test is touched once per model)")
    test = load_dataset(card["dataset"], "test", subset=n_test)
    card["test"] = _scored(model, test, card["family"], card["setting"], codebook, card["dataset"])
    p.write_text(json.dumps(card, indent=1, default=float))
    return card
