"""Protocol v2's runs (``protocol.PROTOCOL_V2``): a run's name, its training, its files and its scores.

A v2 card (``data/answer/v2/<name>.json``) is a v1 card (``protocol_runs``) plus the recipe. The
learned bottleneck's runs are trained here (``train_run``); block-sparse's, WebP's and the
reference's are v1's recipe (``protocol_runs.train_run``), their cards marked as v2's (``v2_card``).
What ships is what is measured: ``measure`` scores a network and its bottleneck on real streams,
``load_run`` reads them back against their sha256, ``remeasure_run`` measures them again. The
screens that choose a rung's run are in ``protocol_v2_screens``; the walk, in ``protocol_v2``.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .bottleneck import Bottleneck, load_bottleneck, save_bottleneck
from .bottleneck_training import evaluate_bottleneck
from .data import load_dataset
from .model import checkpoint_card, load_pretrained, save_weights
from .protocol import (BUDGET, PROTOCOL_V2, PROTOCOL_V2_1, PROTOCOL_V2_2, PROTOCOL_V2_3, PROTOCOL_V2_4, PROTOCOL_V2_5,
                       VAL_SELECT, VAL_STOP, Budget, selection_data, stopping_data)
from .protocol_runs import against_card, scored, state_name
from .protocol_runs import run_name as run_name_v1
from .protocol_runs import load_run as load_run_v1
from .protocol_runs import remeasure_run as remeasure_run_v1
from .recipes import make_bottleneck, train_recipe
from .results import pack_correct
from .runtime import DATA_DIR, machine, module_device
from .student import StudentBottleneck, load_student, save_student

PROTOCOL = PROTOCOL_V2_5  # the version this code writes on its cards and screens (v2 as amended)
VERSIONS = (PROTOCOL_V2, PROTOCOL_V2_1, PROTOCOL_V2_2, PROTOCOL_V2_3, PROTOCOL_V2_4, PROTOCOL_V2_5)  # the cards of every one are v2's
V2_DIR = DATA_DIR / "answer" / "v2"
V1_DIR = DATA_DIR / "answer"


def run_name(split_at: str, setting: dict, seed: int) -> str:
    """A bottleneck run's file stem, e.g. ``bottleneck_layer3_two-stage_M24_lmbda3.2_seed0``."""
    return f"bottleneck_{split_at}_{setting['recipe']}_M{setting['latent_channels']}_lmbda{setting['lmbda']:g}_seed{seed}"


@torch.no_grad()
def measure(model, bn, data: TensorDataset, batch_size: int = 250) -> dict:
    """Accuracy on what the decoder returns, cross-entropy, and the rate of real per-image streams
    (bpp = 8 x bytes / input pixels), with per-image correctness."""
    model.eval()
    bn.eval()
    x, y = data.tensors
    device = module_device(model)
    if isinstance(bn, Bottleneck):  # v1's anchor: its exact image-by-image path and its own streams
        ev = evaluate_bottleneck(model, bn, data)
        ce = 0.0
        for s in range(0, len(x), batch_size):
            z = model.head(x[s:s + batch_size].to(device)).float()
            ce += float(F.cross_entropy(model.tail(bn(z)[0]).float(), y[s:s + batch_size].to(device), reduction="sum"))
        return dict(accuracy=ev["accuracy"], cross_entropy=ce / len(x), bpp=float(ev["bpp"]), n_images=len(x),
                    correct=ev["correct"].numpy())
    correct, ce, nbytes = [], 0.0, 0
    for s in range(0, len(x), batch_size):
        z = model.head(x[s:s + batch_size].to(device)).float()
        streams = bn.encode_batch(z)
        nbytes += sum(len(b) for b in streams)
        logits = model.tail(bn.decode_batch(streams, z.shape[1:])).float()
        yb = y[s:s + batch_size].to(device)
        ce += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct.append((logits.argmax(1) == yb).cpu().numpy())
    correct = np.concatenate(correct)
    return dict(accuracy=float(correct.mean()), cross_entropy=ce / len(x), bpp=bpp(nbytes, tuple(x.shape[-2:]), len(x)),
                n_images=len(x), correct=correct)


def train_run(split_at: str, setting: dict, seed: int, dataset: str = "fashion-mnist", out_dir: str | Path = V2_DIR,
              state_dir: str | Path | None = None, budget: Budget = BUDGET, rung: float | None = None,
              train_subset: int | None = None, val_subset: int | None = None, progress: bool = False,
              select: bool = True) -> Path:
    """Train one bottleneck run with ``budget`` (the recipe of ``setting``, early stopping on
    val-stop), write its weights, score what ships on val-select (``select``; v2.3's finalists are
    scored on val-stop by their screen, and the pick on val-select by ``promote``), write its card;
    returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = run_name(split_at, setting, seed)
    if (out / f"{name}.json").exists():
        raise ValueError(f"out_dir: {out / name}.json exists (a finished run): delete it first to retrain")
    state = Path(state_dir) / state_name(name, budget) if state_dir is not None else None
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
    train = load_dataset(dataset, "train", subset=train_subset)
    stop = stopping_data(dataset, val_subset)
    model = load_pretrained(dataset, split_at)
    bn = make_bottleneck(setting["recipe"], model, setting["latent_channels"], setting["stride"], seed)
    bn, history = train_recipe(model, bn, setting["recipe"], float(setting["lmbda"]), budget, train, stop, seed,
                               state_path=state, progress=progress)
    weights = out / f"{name}.pt"
    sha = save_weights(model, weights)
    model = load_pretrained(dataset, split_at, weights=weights)  # what ships is what is measured
    bn_path = out / f"{name}.bottleneck.pt"
    if isinstance(bn, StudentBottleneck):
        save_student(bn, bn_path, lmbda=float(setting["lmbda"]))
        bn = load_student(bn_path, module_device(model))
    else:
        save_bottleneck(bn, bn_path, float(setting["lmbda"]))
        bn = load_bottleneck(bn_path, module_device(model))
    card = dict(protocol=PROTOCOL, family="bottleneck", split_at=split_at, setting=setting, seed=seed,
                dataset=dataset, rung=rung, budget=budget.asdict(),
                images=dict(stop=VAL_STOP, select=VAL_SELECT, stop_images=len(stop.tensors[1]),
                            train_images=len(train.tensors[1])),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history, weights=weights.name,
                sha256=sha, bottleneck=bn_path.name, bottleneck_sha256=hashlib.sha256(bn_path.read_bytes()).hexdigest(),
                torch=torch.__version__, machine=machine())
    if select:
        card["val_select"] = select_bottleneck(model, bn, dataset, val_subset)
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def select_bottleneck(model, bn, dataset: str, val_subset: int | None) -> dict:
    """A bottleneck run's score on val-select (``measure``; per-image correctness packed), its card's ``val_select``."""
    m = measure(model, bn, selection_data(dataset, subset=val_subset))
    return dict(accuracy=m["accuracy"], n_images=m["n_images"], bpp=m["bpp"], cross_entropy=m["cross_entropy"],
                correct=pack_correct(m["correct"]))


def promote(final_card: str | Path, out_dir: str | Path = V2_DIR, val_subset: int | None = None) -> Path:
    """v2.3: the screen's winning finalist made its rung's run. Its files are copied beside the walk's
    cards, and what ships is scored on val-select (the first time a val-select image meets it), as
    every rung's run is; the finalist's own card stays with its screen. Returns the rung's card."""
    src = Path(final_card)
    card = json.loads(src.read_text())
    if "val_select" in card:
        raise ValueError(f"final_card: {src} has a val-select score already; a finalist is scored there only once promoted")
    out = Path(out_dir)
    if (out / src.name).exists():
        raise ValueError(f"out_dir: {out / src.name} exists (a finished run): delete it first to promote again")
    for f in shipped_files(card):
        shutil.copy2(src.with_name(f), out / f)
    dst = out / src.name
    dst.write_text(json.dumps(card, indent=1, default=float))
    if card["family"] == "bottleneck" and "recipe" in card["setting"]:
        model, bn, _ = load_run(dst)
        card["val_select"] = select_bottleneck(model, bn, card["dataset"], val_subset)
    else:
        model, _, codebook = load_run_v1(dst)
        card["val_select"] = scored(model, selection_data(card["dataset"], subset=val_subset), card["family"],
                                    card["setting"], codebook, card["dataset"])
    card["final_round"] = src.relative_to(out).as_posix() if src.is_relative_to(out) else str(src)
    dst.write_text(json.dumps(card, indent=1, default=float))
    return dst


def load_run(card_path: str | Path) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """(network, bottleneck, card) of a v2 bottleneck run from its shipped files, each checked
    against the sha256 its card records."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    if card.get("family") != "bottleneck" or "recipe" not in card.get("setting", {}):
        raise ValueError(f"card_path: {p} is not a v2 bottleneck run (v1's recipe: protocol_runs.load_run)")
    for key, name in (("sha256", "weights"), ("bottleneck_sha256", "bottleneck")):
        f = p.with_name(card[name])
        if not f.exists():
            raise ValueError(f"card_path: {p} names {name} {f.name}, which are not there")
        if hashlib.sha256(f.read_bytes()).hexdigest() != card[key]:
            raise ValueError(f"card_path: {f} are not the {name} of {p} (sha256 differs)")
    model = load_pretrained(card["dataset"], card["split_at"], weights=p.with_name(card["weights"]))
    f = p.with_name(card["bottleneck"])
    bn = load_bottleneck(f, module_device(model)) if card["setting"]["recipe"] == "joint" else load_student(
        f, module_device(model))
    return model, bn, card


def remeasure_run(card_path: str | Path, n_test: int | None = None) -> dict:
    """``protocol_runs.remeasure_run`` for a v2 run: a tested card's shipped files measured again on
    ``n_test`` evenly spaced test images, beside its own test on the same images (a v1-recipe card in
    v2's folder goes to ``protocol_runs.remeasure_run``)."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    if card.get("family") != "bottleneck" or "recipe" not in card.get("setting", {}):
        return remeasure_run_v1(p, n_test)
    if "test" not in card:
        raise ValueError(f"card_path: {p} has no test result to re-measure against")
    model, bn, _ = load_run(p)
    m = measure(model, bn, load_dataset(card["dataset"], "test", subset=n_test))
    return against_card(p, card, dict(accuracy=m["accuracy"], correct=pack_correct(m["correct"]), bpp=m["bpp"]), n_test)


def block_sparse_name(split_at: str, rung: float, setting: dict, seed: int) -> str:
    """A v2 block-sparse run's file stem: v1's with its rung, since two rungs' screens may pick one
    configuration (a refinement rung between two coarse ones)."""
    return run_name_v1("block-sparse", setting, seed, split_at).replace(
        f"block-sparse_{split_at}_", f"block-sparse_{split_at}_rung{rung:g}_", 1)


def shipped_files(card: dict) -> list[str]:
    """The files a run ships beside its card: network, bottleneck (and the bottleneck's own card, which
    ``bottleneck.read_weights_file`` reads), code tables; the ones its card names."""
    files = [card[k] for k in ("weights", "bottleneck", "codebook") if card.get(k)]
    if card.get("bottleneck"):
        files.append(Path(card["bottleneck"]).with_suffix(".json").name)
    return files


def files_there(card: dict) -> bool:
    """Whether every file a run ships (``shipped_files``) is beside its card (``card["path"]``): weights
    are committed only where they ship, so a run of an earlier session may have only its card."""
    folder = Path(card["path"]).parent
    return bool(card.get("weights")) and all((folder / f).is_file() for f in shipped_files(card))


def run_there(card_path: Path) -> bool:
    """Whether the card at ``card_path`` exists and every file it ships is beside it (``files_there``)."""
    return card_path.is_file() and files_there(json.loads(card_path.read_text()) | dict(path=str(card_path)))


def v2_card(path: Path) -> Path:
    """A v1-recipe run's card made a v2 card: ``protocol`` says the version, v1's record of the images
    (its ``protocol`` dict) moves to ``images``, as v2's own cards hold it."""
    card = json.loads(path.read_text())
    path.write_text(json.dumps(card | dict(protocol=PROTOCOL, images=card.get("protocol")), indent=1, default=float))
    return path
