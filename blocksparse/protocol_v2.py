"""Protocol v2's runs (``protocol.PROTOCOL_V2``): screens, trainings, the walk, the confirmation's
tests and the budget sensitivity, for both trained families (tables and reports: ``report_v2``).

A v2 card (``data/answer/v2/<name>.json``) is a v1 card (``protocol_runs``) plus the recipe; its
screens lie in ``data/answer/v2/screens``. Every screen scores its arms on val-stop
(``protocol.SCREEN_V2``), every pick reads val-select, and the test set is read only by the
confirmation of an operating point's seeds.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .bottleneck import Bottleneck, load_bottleneck, save_bottleneck
from .bottleneck_training import evaluate_bottleneck
from .costs import BOTTLENECK_STRIDES
from .codec import SELECTION_GRID, CodecConfig
from .data import load_dataset
from .evaluation import evaluate
from .model import checkpoint_card, load_pretrained, save_weights
from .protocol import (BOTTLENECK_RECIPES, BOTTLENECK_WIDTHS, BUDGET, CONFIRM_CONFIDENCE, FINAL_KINDS, FINAL_ROUND,
                       SENSITIVITY_FACTOR, PROTOCOL_V2, PROTOCOL_V2_1, PROTOCOL_V2_2, PROTOCOL_V2_3, PROTOCOL_V2_4,
                       PROTOCOL_V2_5,
                       SCREEN_V2, SEEDS_V2, SPLIT_POINTS, VAL_SELECT, VAL_STOP, Budget, selection_data, stopping_data)
from .protocol_runs import against_card, frontier_of, scored, state_name
from .protocol_runs import run_name as run_name_v1
from .protocol_runs import load_run as load_run_v1
from .protocol_runs import remeasure_run as remeasure_run_v1
from .protocol_runs import train_run as train_run_v1
from .recipes import make_bottleneck, train_recipe
from .study import candidates_under
from .training import finetune
from .walk import has_final_round, ladder, operating_rung, pick, walked
from .results import pack_correct, unpack_correct
from .runtime import DATA_DIR, module_device
from .stats import hierarchical_bootstrap, paired_test
from .student import StudentBottleneck, load_student, save_student

PROTOCOL = PROTOCOL_V2_5  # the version this code writes on its cards and screens (v2 as amended)
VERSIONS = (PROTOCOL_V2, PROTOCOL_V2_1, PROTOCOL_V2_2, PROTOCOL_V2_3, PROTOCOL_V2_4, PROTOCOL_V2_5)  # the cards of every one are v2's
# Every walk v2 makes: the two trained families at each split, and WebP with a fine-tuned classifier
# once (input compression: no split), which reuses v1's runs of the same recipe (v2, v2.2).
WALKS = tuple((split, family) for split in SPLIT_POINTS for family in ("block-sparse", "bottleneck")) + (
    (None, "webp-finetuned"),)
V2_DIR = DATA_DIR / "answer" / "v2"
V1_DIR = DATA_DIR / "answer"
FINAL_DIR = "screens/final"  # v2.3's finalists, relative to a walk's folder: the loser's card stays there


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


def _arm(split_at: str, recipe: str, width: int, lmbda: float, steps: int, seed: int, dataset: str,
         train: TensorDataset, guard: TensorDataset, budget: Budget):
    model = load_pretrained(dataset, split_at)
    bn = make_bottleneck(recipe, model, width, BOTTLENECK_STRIDES[split_at], seed)
    # one evaluation at the end (and step 0): an arm keeps its last weights unless training made it worse
    bn, _ = train_recipe(model, bn, recipe, lmbda, budget.replace(steps=steps, eval_every=steps), train, guard, seed)
    return model, bn


def screen_path(out_dir: str | Path, split_at: str, rung: float, family: str = "bottleneck") -> Path:
    name = f"bottleneck_{split_at}_lmbda{rung:g}" if family == "bottleneck" else f"block-sparse_{split_at}_{rung:g}bpp"
    return Path(out_dir) / "screens" / f"{name}.json"


def halving(arms: list, rounds, keep: int, key, run, score, partial: Path, log=print, words=str) -> tuple[list[dict], object]:
    """Successive halving, resumable arm by arm: round r trains each surviving arm for ``rounds[r]``
    steps (``run(arm, steps)``: the row's scores) and keeps the ``keep`` best by ``score(row)``
    (lowest first; ties keep the arms' order). Each row (``round``, ``steps``, ``key(arm)``, the
    scores) is written to ``partial`` as it finishes, and a row found there is not trained again.
    Returns (every row in order, the last round's arms best first; [] without arms)."""
    done = json.loads(partial.read_text()) if partial.exists() else []
    rows, scored = [], []
    for rnd, steps in enumerate(rounds if arms else ()):
        scored = []
        for arm in arms:
            k = key(arm)
            row = next((r for r in done if r["round"] == rnd and all(r[f] == v for f, v in k.items())), None)
            if row is None:
                row = dict(round=rnd, steps=steps, **k, **run(arm, steps))
                done.append(row)
                partial.parent.mkdir(parents=True, exist_ok=True)
                partial.write_text(json.dumps(done, indent=1, default=float))
            rows.append(row)
            scored.append((row, arm))
            log(f"round {rnd}: {words(row)}")
        scored.sort(key=lambda t: score(t[0]))
        arms = [a for _, a in scored[:keep]]
    return rows, [a for _, a in scored]


def finalists(ranked: list, kind, n: int = FINAL_ROUND["arms"]) -> list:
    """v2.3's finalists from the halving's last round (``ranked``, best first): the best arm, then the
    best arm of another ``kind(arm)`` (a recipe, a configuration), then the next best, ``n`` in all."""
    out = ranked[:1] + [a for a in ranked[1:] if ranked and kind(a) != kind(ranked[0])][:1]
    return out + [a for a in ranked if a not in out][:max(n - len(out), 0)]


def final_round(family: str, ranked: list, train, score, key, order, rnd: int, steps: int, out_dir: str | Path,
                log=print) -> tuple[list[dict], object, str]:
    """v2.3's final round of a ``family``'s screen: its ``finalists`` (of another ``FINAL_KINDS`` kind)
    among the halving's last round (``ranked``, best first), each trained as a rung's run (``train(arm)``:
    its card's path in ``out_dir / FINAL_DIR``, resumable) and scored on val-stop (``score(path)``); the
    best by ``order(row)`` (lowest first; a tie keeps the better arm of the halving). Returns (the rows,
    the best arm, its card relative to ``out_dir``)."""
    arms = finalists(ranked, lambda arm: tuple(key(arm)[k] for k in FINAL_KINDS[family]))
    rows = []
    for arm in arms:
        path = Path(train(arm))
        row = dict(round=rnd, steps=steps, **key(arm), **score(path),
                   card=path.relative_to(out_dir).as_posix())
        log(f"final round: {row}")
        rows.append(row)
    i = min(range(len(rows)), key=lambda j: order(rows[j]))
    return rows, arms[i], rows[i]["card"]


def screen_bottleneck(split_at: str, lmbda: float, dataset: str = "fashion-mnist", out_dir: str | Path = V2_DIR,
                      budget: Budget = BUDGET, settings: dict = SCREEN_V2, seed: int = 0,
                      train_subset: int | None = None, stop_subset: int | None = None, log=print,
                      state_dir: str | Path | None = None) -> Path:
    """The v2 screen of one bottleneck rung: every recipe x width (``BOTTLENECK_RECIPES`` x
    ``BOTTLENECK_WIDTHS``) trained ``settings["rounds"][0]`` steps from the shipped model and scored on
    val-stop by cross-entropy + lambda x bpp of real streams; the best ``keep`` trained again for
    ``rounds[1]`` steps and scored; the lowest is the pick. An arm keeps its last weights unless they
    score worse than its start on every tenth val-stop image. Each arm's row is written as it finishes
    (``.partial.json``), so a screen cut short resumes at its next arm. Under v2.3 (``walk.has_final_round``)
    the pick is the better of two finalists (``finalists``: another recipe) trained with ``budget`` as
    a rung's run (``final_round``; ``state_dir`` resumes them). ``train_subset``/``stop_subset`` are
    for tests of this code only. Writes the screen; returns its path."""
    path = screen_path(out_dir, split_at, lmbda)
    if path.exists():
        raise ValueError(f"out_dir: {path} exists (a finished screen): delete it first to screen again")
    train = load_dataset(dataset, "train", subset=train_subset)
    stop = stopping_data(dataset, stop_subset)
    guard = TensorDataset(*(t[::10] for t in stop.tensors))  # an arm's own check against its start: 1 in 10 images

    def run(arm, steps):
        model, bn = _arm(split_at, *arm, lmbda, steps, seed, dataset, train, guard, budget)
        m = measure(model, bn, stop)
        return dict(accuracy=m["accuracy"], cross_entropy=m["cross_entropy"], bpp=m["bpp"],
                    objective=m["cross_entropy"] + lmbda * m["bpp"])
    partial = path.with_suffix(".partial.json")  # each arm's row as it finishes: a screen resumes arm by arm
    key = lambda arm: dict(recipe=arm[0], latent_channels=arm[1])  # noqa: E731
    rows, ranked = halving([(r, w) for r in BOTTLENECK_RECIPES for w in BOTTLENECK_WIDTHS], settings["rounds"],
                           settings["keep"], key, run, lambda row: row["objective"], partial,
                           lambda m: log(f"screen {split_at} lmbda={lmbda:g} {m}"),
                           lambda r: f"{r['recipe']} M={r['latent_channels']}: acc {r['accuracy']:.4f} bpp {r['bpp']:.3f} "
                                     f"objective {r['objective']:.4f}")
    setting = lambda arm: dict(recipe=arm[0], latent_channels=arm[1], lmbda=lmbda,  # noqa: E731
                               stride=BOTTLENECK_STRIDES[split_at])
    best, final_run = ranked[0], None
    if has_final_round(split_at, "bottleneck"):
        final = Path(out_dir) / FINAL_DIR

        def train_final(arm):
            done = final / f"{run_name(split_at, setting(arm), seed)}.json"
            return done if done.exists() else train_run(
                split_at, setting(arm), seed, dataset, final, state_dir, budget, rung=lmbda, train_subset=train_subset,
                val_subset=stop_subset, select=False)

        def score_final(path):
            m = measure(*load_run(path)[:2], stop)
            return dict(accuracy=m["accuracy"], cross_entropy=m["cross_entropy"], bpp=m["bpp"],
                        objective=m["cross_entropy"] + lmbda * m["bpp"])
        final_rows, best, final_run = final_round("bottleneck", ranked, train_final, score_final, key,
                                                  lambda row: row["objective"], len(settings["rounds"]), budget.steps,
                                                  out_dir, lambda m: log(f"screen {split_at} lmbda={lmbda:g} {m}"))
        rows += final_rows
    out = dict(protocol=PROTOCOL, family="bottleneck", split_at=split_at, lmbda=lmbda, settings=dict(settings),
               budget=budget.asdict(), images=dict(screen=VAL_STOP, n=len(stop.tensors[1])), rows=rows,
               pick=setting(best), final_run=final_run)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    partial.unlink(missing_ok=True)
    return path


def screen_block_sparse(split_at: str, rung: float, dataset: str = "fashion-mnist", out_dir: str | Path = V2_DIR,
                        budget: Budget = BUDGET, settings: dict = SCREEN_V2, grid: dict = SELECTION_GRID, seed: int = 0,
                        train_subset: int | None = None, stop_subset: int | None = None, log=print,
                        state_dir: str | Path | None = None) -> Path:
    """The v2 screen of one block-sparse rung (target bpp of amortized streams): the configurations of
    ``grid`` at or under the rung (rated on every tenth val-stop image, code tables fitted on 2,000
    training images), their frontier (``protocol_runs.frontier_of``), the ``config_arms`` most accurate
    before any training on val-stop, each with every group-lasso weight of the screen: successive
    halving as the bottleneck's (``settings["rounds"]`` steps, the best ``keep``), scored by accuracy on
    every val-stop image. Resumes arm by arm. Under v2.3 the pick is the better of two finalists
    (another configuration) trained as a rung's run, as the bottleneck's screen does. Writes the
    screen (pick None: no configuration under the rung)."""
    path = screen_path(out_dir, split_at, rung, "block-sparse")
    if path.exists():
        raise ValueError(f"out_dir: {path} exists (a finished screen): delete it first to screen again")
    train = load_dataset(dataset, "train", subset=train_subset)
    stop = stopping_data(dataset, stop_subset)
    guard = TensorDataset(*(t[::10] for t in stop.tensors))
    model = load_pretrained(dataset, split_at)
    configs = [CodecConfig(b, r, m, bits) for m in grid["modes"] for b in grid["block_sizes"] for r in grid["ratios"]
               for bits in grid["bits"]]
    rated = candidates_under(model, configs, guard, rung, fit_data=load_dataset(dataset, "train", subset=2000))
    front = frontier_of(rated)
    before = sorted(((evaluate(model, c, stop, rate_sample=1)["accuracy"], i, c) for i, c in enumerate(front)),
                    key=lambda t: (-t[0], t[1]))
    top = [c for _, _, c in before[:settings["config_arms"]]]
    out = dict(protocol=PROTOCOL, family="block-sparse", split_at=split_at, rung=rung, settings=dict(settings),
               budget=budget.asdict(), images=dict(screen=VAL_STOP, n=len(stop.tensors[1])),
               candidates=[dict(mode=c.mode, block_size=c.block_size, ratio=c.ratio, bits=c.bits, bpp=b) for c, b in rated],
               untrained=[dict(mode=c.mode, block_size=c.block_size, ratio=c.ratio, bits=c.bits, accuracy=a)
                          for a, _, c in before], rows=[], pick=None)

    def run(arm, steps):
        cfg, g = arm
        tuned, _ = finetune(load_pretrained(dataset, split_at), cfg, budget.replace(steps=steps, eval_every=steps),
                            dataset, train_data=train, val_data=guard, seed=seed, group_lasso_weight=g, progress=False)
        return dict(accuracy=evaluate(tuned, cfg, stop, rate_sample=1)["accuracy"])
    partial = path.with_suffix(".partial.json")
    key = lambda arm: dict(mode=arm[0].mode, block_size=arm[0].block_size, ratio=arm[0].ratio,  # noqa: E731
                           bits=arm[0].bits, group_lasso_weight=arm[1])
    say = lambda m: log(f"screen block-sparse {split_at} {rung:g} bpp {m}")  # noqa: E731
    out["rows"], ranked = halving([(c, g) for c in top for g in settings["group_lasso_weights"]], settings["rounds"],
                                  settings["keep"], key, run, lambda row: -row["accuracy"], partial, say,
                                  lambda r: f"{r['mode']} B={r['block_size']} r={r['ratio']} {r['bits']}b "
                                            f"gl={r['group_lasso_weight']:g}: acc {r['accuracy']:.4f}")
    best = ranked[0] if ranked else None
    if best is not None and has_final_round(split_at, "block-sparse"):
        final = Path(out_dir) / FINAL_DIR

        def train_final(arm):
            name = block_sparse_name(split_at, rung, key(arm), seed)
            if (final / f"{name}.json").exists():
                return final / f"{name}.json"
            return _v2_card(train_run_v1("block-sparse", key(arm), seed, split_at, dataset, final, state_dir, budget,
                                         train_subset=train_subset, rung=rung, val_subset=stop_subset, name=name,
                                         select=False))

        def score_final(path):
            tuned, card, codebook = load_run_v1(path)
            return dict(accuracy=scored(tuned, stop, "block-sparse", card["setting"], codebook, dataset)["accuracy"])
        final_rows, best, out["final_run"] = final_round("block-sparse", ranked, train_final, score_final, key,
                                                         lambda row: -row["accuracy"], len(settings["rounds"]),
                                                         budget.steps, out_dir, say)
        out["rows"] += final_rows
    if best is not None:
        out["pick"] = key(best)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    partial.unlink(missing_ok=True)
    return path


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
                torch=torch.__version__)
    if select:
        card["val_select"] = _select_bottleneck(model, bn, dataset, val_subset)
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def _select_bottleneck(model, bn, dataset: str, val_subset: int | None) -> dict:
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
    files = [card[k] for k in ("weights", "bottleneck", "codebook") if card.get(k)]
    if card.get("bottleneck"):  # a bottleneck's own card beside it (``bottleneck.read_weights_file``)
        files.append(Path(card["bottleneck"]).with_suffix(".json").name)
    for f in files:
        shutil.copy2(src.with_name(f), out / f)
    dst = out / src.name
    dst.write_text(json.dumps(card, indent=1, default=float))
    if card["family"] == "bottleneck" and "recipe" in card["setting"]:
        model, bn, _ = load_run(dst)
        card["val_select"] = _select_bottleneck(model, bn, card["dataset"], val_subset)
    else:
        model, _, codebook = load_run_v1(dst)
        card["val_select"] = scored(model, selection_data(card["dataset"], subset=val_subset), card["family"],
                                    card["setting"], codebook, card["dataset"])
    card["final_round"] = src.relative_to(out).as_posix() if src.is_relative_to(out) else str(src)
    dst.write_text(json.dumps(card, indent=1, default=float))
    return dst


def read_cards(folder: str | Path = V2_DIR, reuse_dir: str | Path | None = V1_DIR) -> list[dict]:
    """Every v2 run's card (screens are not cards), each with its ``path``: v1's runs of WebP with a
    fine-tuned classifier in ``reuse_dir`` (reused: the same recipe), then ``folder``'s, then the
    seed-0 runs trained again for a test (``folder/retrained``: see ``confirmation_steps``). The
    walk reads the first card of a rung; a confirmation, the last of each seed."""
    out = []
    if reuse_dir is not None:
        for p in sorted(Path(reuse_dir).glob("webp-finetuned_*.json")):
            out.append(json.loads(p.read_text()) | dict(path=str(p)))
    for p in sorted(Path(folder).glob("*.json")) + sorted((Path(folder) / "retrained").glob("*.json")):
        card = json.loads(p.read_text())
        if card.get("protocol") in VERSIONS and "family" in card:
            out.append(card | dict(path=str(p)))
    return out


def reference(v1_dir: str | Path = V1_DIR, seed: int = 0) -> dict:
    """The reference's card of ``seed`` (v1's: the same recipe, reused by v2)."""
    p = Path(v1_dir) / f"reference_seed{seed}.json"
    if not p.exists():
        raise ValueError(f"v1_dir: no reference card {p} (v2 reuses v1's reference)")
    return json.loads(p.read_text())


def next_step(split_at: str, family: str = "bottleneck", out_dir: str | Path = V2_DIR,
              v1_dir: str | Path = V1_DIR) -> dict | None:
    """The next step of the v2 walk of ``family`` at ``split_at``: a screen of the next rung, the
    training of its pick (seed 0), or None when the walk has ended (the operating point's seeds and
    their confirmation are the next stage)."""
    if (split_at, family) not in WALKS:
        raise ValueError(f"family, split_at: v2 walks {', '.join(f'{f} at {s}' for s, f in WALKS[-3:])} (and the "
                         f"trained families at every split), got {family!r} at {split_at!r}")
    cards, ref = read_cards(out_dir, v1_dir), reference(v1_dir)
    _, rung = ladder(family, walked(cards, family, split_at, ref))
    if rung is None:  # the walk has ended: the confirmation's steps of this family and split, then the reference's
        steps = [s for s in confirmation_steps(cards, reference_cards(out_dir, v1_dir), ref)
                 if s["family"] == "reference" or (s["family"], s["split_at"]) == (family, split_at)]
        return steps[0] if steps else None
    if family == "webp-finetuned":  # quality is its one knob: no screen
        return dict(action="train", family=family, split_at=None, rung=rung, seed=0, setting=dict(quality=int(rung)))
    sp = screen_path(out_dir, split_at, rung, family)
    if not sp.exists():
        return dict(action="screen", family=family, split_at=split_at, rung=rung)
    sc = json.loads(sp.read_text())
    step = dict(action="train", family=family, split_at=split_at, rung=rung, seed=0, setting=sc["pick"])
    if sc.get("final_run"):  # v2.3: the pick's run exists already (the final round's): it is promoted
        step["final_run"] = str(Path(out_dir) / sc["final_run"])
    return step


def reference_cards(out_dir: str | Path = V2_DIR, v1_dir: str | Path = V1_DIR) -> dict[int, dict]:
    """seed -> the reference's card: v1's seeds 0-2 (reused), v2's 3 and 4; each with its ``path``."""
    out = {c["seed"]: c for c in read_cards(out_dir) if c["family"] == "reference"}
    for seed in (0, 1, 2):
        p = Path(v1_dir) / f"reference_seed{seed}.json"
        if p.exists():
            out[seed] = json.loads(p.read_text()) | dict(path=str(p))
    return out


def block_sparse_name(split_at: str, rung: float, setting: dict, seed: int) -> str:
    """A v2 block-sparse run's file stem: v1's with its rung, since two rungs' screens may pick one
    configuration (a refinement rung between two coarse ones)."""
    return run_name_v1("block-sparse", setting, seed, split_at).replace(
        f"block-sparse_{split_at}_", f"block-sparse_{split_at}_rung{rung:g}_", 1)


def _v2_card(path: Path) -> Path:
    """A v1-recipe run's card made a v2 card: ``protocol`` says the version, v1's record of the images
    (its ``protocol`` dict) moves to ``images``, as v2's own cards hold it."""
    card = json.loads(path.read_text())
    path.write_text(json.dumps(card | dict(protocol=PROTOCOL, images=card.get("protocol")), indent=1, default=float))
    return path


def run_next(split_at: str, family: str = "bottleneck", out_dir: str | Path = V2_DIR,
             state_dir: str | Path | None = None, log=print) -> Path | None:
    """Carry out ``next_step``; returns the file it wrote (None: nothing left to walk)."""
    step = next_step(split_at, family, out_dir)
    log(f"v2 step: {step}")
    if step is None:
        return None
    if step["action"] == "screen":
        screen = screen_bottleneck if family == "bottleneck" else screen_block_sparse
        return screen(split_at, step["rung"], out_dir=out_dir, log=log, state_dir=state_dir)
    if step.get("final_run"):
        return promote(step["final_run"], out_dir)
    if step["action"] == "test":
        test_run(step["card"], read_cards(out_dir), reference())
        return Path(step["card"])
    seed = step.get("seed", 0)
    walk_dir = out_dir
    if step.get("retrain"):  # the walk's seed 0 of an operating point, its files gone: trained again beside it
        out_dir = Path(out_dir) / "retrained"
    if step.get("replace"):  # a confirmation's run, untested, its files gone: trained again in its place
        Path(step["replace"]).unlink()
    if step["family"] == "reference":  # seeds 3 and 4: v1's recipe, in v2's folder
        card = _v2_card(train_run_v1("reference", {}, seed, None, out_dir=out_dir, state_dir=state_dir))
    elif step["family"] == "bottleneck":
        card = train_run(split_at, step["setting"], seed, out_dir=out_dir, state_dir=state_dir, rung=step["rung"],
                         progress=True)
    elif step["family"] == "webp-finetuned":  # v1's recipe (a classifier of decoded images), in v2's folder
        card = _v2_card(train_run_v1("webp-finetuned", step["setting"], seed, None, out_dir=out_dir,
                                     state_dir=state_dir, rung=step["rung"]))
    elif step["setting"] is None:  # no configuration under the rung: a card that says so, missed
        p = Path(out_dir) / f"block-sparse_{split_at}_rung{step['rung']:g}_none.json"
        p.write_text(json.dumps(dict(protocol=PROTOCOL, family=family, split_at=split_at, seed=0, rung=step["rung"],
                                     setting={}, val_select=None), indent=1))
        return p
    else:
        card = _v2_card(train_run_v1("block-sparse", step["setting"], seed, split_at, out_dir=out_dir,
                                     state_dir=state_dir, rung=step["rung"],  # v1's run: the same budget
                                     name=block_sparse_name(split_at, step["rung"], step["setting"], seed)))
    if step.get("confirmation"):  # a confirmation's seed (the operating point's, or the reference's 3-4), chosen
        # already: tested at once, so that no weights but seed 0's (which ship) need outlive the session
        test_run(card, read_cards(walk_dir), reference())
    return card


# The commit that pre-registered v2's rules (``protocol.py``'s v2 section), before any v2 run, and
# the one that amended them (v2.1) before any v2 run finished.
RULES_COMMIT = "90cf9d2"
AMENDMENT_COMMIT = "4577835"
AMENDMENT_V2_2_COMMIT = "1a3470a"  # v2.2: the walk of WebP with a fine-tuned classifier below quality 50
AMENDMENT_V2_3_COMMIT = "dfc7444"  # v2.3: every screen ends with a final round at the full budget
AMENDMENT_V2_4_COMMIT = "798c99b"  # v2.4: the walks at layer2 and layer1 pick at -0.4 point; the walk's power
AMENDMENT_V2_5_COMMIT = "363aa64"  # v2.5: they pick at -0.3 point; the walk's power with its simulation's error


# ---------------------------------------------------------------------------
# step 3: the operating point's seeds, tested once each, confirm it or not
# ---------------------------------------------------------------------------
def operating_point(cards: list[dict], family: str, split_at: str, ref: dict) -> dict | None:
    """The seed-0 card of ``family``'s operating point at ``split_at`` once its walk has ended: the
    picked rung of lowest rate in walking order (None: the walk goes on, or no rung was picked)."""
    best = operating_rung(family, walked(cards, family, split_at, ref))
    if best is None:
        return None
    return next(c for c in cards if c["family"] == family and c["split_at"] == split_at and c["seed"] == 0
                and float(c["rung"]) == best)


def _files_there(card: dict) -> bool:
    """Whether every file a run ships (network, bottleneck, code tables) is beside its card."""
    folder = Path(card["path"]).parent
    return bool(card.get("weights")) and all((folder / card[k]).is_file() for k in ("weights", "bottleneck", "codebook")
                                            if card.get(k))


def _seed_step(run: dict | None, seed: int) -> dict | None:
    """What one seed of a confirmation still needs (None: tested). A run whose files are there is
    tested; without them (they did not outlive a session; v1 kept only its cards), the walk's own
    seed-0 card stays as the walk decided and seed 0 is trained again into ``retrained/``; any other
    untested run is trained again in its place."""
    if run is None:
        return dict(action="train", seed=seed, confirmation=True)
    if "test" in run:
        return None
    if _files_there(run) and run.get("protocol") in VERSIONS:
        return dict(action="test", card=run["path"])
    if seed == 0 and Path(run["path"]).parent.name != "retrained":
        return dict(action="train", seed=0, confirmation=True, retrain=True)
    return dict(action="train", seed=seed, confirmation=True, replace=run["path"])


def seed_runs(cards: list[dict], op: dict) -> dict[int, dict]:
    """seed -> the card of each seed of the operating point ``op`` (its family, split, rung and setting)."""
    return {c["seed"]: c for c in cards if c["family"] == op["family"] and c["split_at"] == op["split_at"]
            and float(c["rung"]) == float(op["rung"]) and c["setting"] == op["setting"]}


def confirmation_steps(cards: list[dict], ref_cards: dict[int, dict], ref: dict) -> list[dict]:
    """What the confirmations still need, in order: per operating point found (``WALKS``), seed 0's
    test and its seeds 1-4 (each trained and tested in one step); the reference's seeds 3 and 4
    (v1's recipe, in v2's folder), likewise. A seed 0 whose weights are not there (a walk's run
    whose weights did not outlive its session; v1's reused WebP runs kept only their cards) is
    trained again with the same recipe and seed into ``retrained/`` and tested: the walk keeps the
    pick it made on the first card. ``ref_cards``: seed -> the reference's card (v1's 0-2, v2's 3-4)."""
    steps, any_op = [], False
    for split, family in WALKS:
        op = operating_point(cards, family, split, ref)
        if op is None:
            continue
        any_op = True
        runs = seed_runs(cards, op)
        for seed in SEEDS_V2:
            step = _seed_step(runs.get(seed), seed)
            if step is not None:
                steps.append(step | dict(family=family, split_at=split, rung=op["rung"], setting=op["setting"])
                             if step["action"] == "train" else step | dict(family=family, split_at=split))
    for seed in SEEDS_V2 if any_op else ():
        step = _seed_step(ref_cards.get(seed), seed)
        if step is not None:
            steps.append(step | dict(family="reference", split_at=None))
    return steps


def confirm(cards: list[dict], ref_cards: dict[int, dict], family: str, split_at: str, ref: dict) -> dict | None:
    """The confirmation of ``family``'s operating point at ``split_at`` on test: the hierarchical
    bootstrap of its seeds' difference from the reference's same seeds at ``CONFIRM_CONFIDENCE``;
    ``within`` is the verdict. None until every seed of both is tested."""
    op = operating_point(cards, family, split_at, ref)
    if op is None:
        return None
    runs = seed_runs(cards, op)
    if any(s not in runs or "test" not in runs[s] or s not in ref_cards or "test" not in ref_cards[s] for s in SEEDS_V2):
        return None
    x = np.stack([unpack_correct(runs[s]["test"]["correct"]) for s in SEEDS_V2])
    r = np.stack([unpack_correct(ref_cards[s]["test"]["correct"]) for s in SEEDS_V2])
    hb = hierarchical_bootstrap(x, r, CONFIRM_CONFIDENCE, n_boot=20000)
    return hb | dict(family=family, split_at=split_at, rung=op["rung"], setting=op["setting"],
                     bpp=float(np.mean([runs[s]["test"]["bpp"] for s in SEEDS_V2])), confidence=CONFIRM_CONFIDENCE)


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


def test_run(card_path: str | Path, cards: list[dict], ref: dict, n_test: int | None = None) -> dict:
    """The one test evaluation of a v2 run that a confirmation needs (a seed of an operating point, or
    the reference's seed 3 or 4); refused for any other card, and for a card tested already."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    if "test" in card:
        raise ValueError(f"card_path: {p} was tested already (test is touched once per model)")
    if card.get("protocol") not in VERSIONS:
        raise ValueError(f"card_path: {p} is not a v2 card: v2 writes no test into v1's archive")
    if card["family"] == "reference" and card["seed"] not in set(SEEDS_V2) - {0, 1, 2}:
        raise ValueError(f"card_path: {p} is a reference seed v1 tested; v2 trains and tests only seeds 3 and 4")
    if card["family"] != "reference":
        op = operating_point(cards, card["family"], card["split_at"], ref)
        if op is None or float(op["rung"]) != float(card["rung"]) or op["setting"] != card["setting"]:
            raise ValueError(f"card_path: {p} is not a seed of an operating point v2's walk has found: not tested")
    test = load_dataset(card["dataset"], "test", subset=n_test)
    if card["family"] == "bottleneck":
        model, bn, _ = load_run(p)
        m = measure(model, bn, test)
        card["test"] = dict(accuracy=m["accuracy"], n_images=m["n_images"], bpp=m["bpp"], correct=pack_correct(m["correct"]))
    else:  # v1's recipe in v2's folder: block-sparse, WebP with a fine-tuned classifier, the reference's seeds 3-4
        model, _, cb = load_run_v1(p)
        card["test"] = scored(model, test, card["family"], card["setting"], cb, card["dataset"])
    p.write_text(json.dumps(card, indent=1, default=float))
    return card


# ---------------------------------------------------------------------------
# budget sensitivity (``protocol.SENSITIVITY_FACTOR``): after layer3, seed 0, val-select only
# ---------------------------------------------------------------------------
SENSITIVITY_DIR = V2_DIR / "sensitivity"


def sensitivity_budget(budget: Budget = BUDGET) -> Budget:
    """The budget with ``SENSITIVITY_FACTOR`` times the steps, evaluated as many times (every
    ``SENSITIVITY_FACTOR`` x ``eval_every`` steps)."""
    return budget.replace(steps=budget.steps * SENSITIVITY_FACTOR, eval_every=budget.eval_every * SENSITIVITY_FACTOR)


def sensitivity_subjects(v1_cards: list[dict], v2_cards: list[dict], split_at: str = "layer3") -> list[dict]:
    """What the sensitivity trains with 4x the budget: the reference, and per trained family its v2
    operating point at ``split_at`` (else its closest seed-0 rung on val-select, v2's before v1's)."""
    ref = next(c for c in v1_cards if c["family"] == "reference" and c["seed"] == 0)
    out = [dict(family="reference", split_at=None, setting={}, base=ref)]
    for family in ("block-sparse", "bottleneck"):
        op = operating_point(v2_cards, family, split_at, ref)
        if op is None:
            runs = [c for cards in (v2_cards, v1_cards) for c in cards if c["family"] == family
                    and c.get("split_at") == split_at and c["seed"] == 0 and c.get("val_select")]
            if not runs:
                continue
            best = max(runs, key=lambda c: pick(c, ref)["difference"])  # of equals the first: v2's
            op = best
        out.append(dict(family=family, split_at=split_at, setting=op["setting"], base=op))
    return out


def sensitivity_run(subject: dict, out_dir: str | Path = SENSITIVITY_DIR, state_dir: str | Path | None = None,
                    dataset: str = "fashion-mnist") -> Path:
    """Train one subject of ``sensitivity_subjects`` with ``sensitivity_budget()``; its card (val-select only)."""
    budget = sensitivity_budget()
    family, setting = subject["family"], subject["setting"]
    if family == "bottleneck" and "recipe" in setting:
        card = train_run(subject["split_at"], setting, 0, dataset, out_dir, state_dir, budget, rung=subject["base"].get("rung"))
    else:  # the reference, block-sparse and v1's joint bottleneck: v1's run, the budget 4x
        card = train_run_v1(family, setting, 0, subject["split_at"], dataset, out_dir, state_dir, budget=budget,
                            rung=subject["base"].get("rung"))
    card.write_text(json.dumps(json.loads(card.read_text()) | dict(protocol=PROTOCOL, sensitivity=True), indent=1,
                               default=float))
    return card


GAP_COLUMNS = ("classifier", "images", "n_images", "accuracy", "diff", "diff_lo", "diff_hi")


def classifier_gap(ref: dict, dataset: str = "fashion-mnist", model=None) -> pd.DataFrame:
    """WebP as is classifies decoded images with the shipped model, which is not fine-tuned: its gap to
    the reference on *uncompressed* val-select images (paired with the reference's seed 0) is a bound
    no WebP quality can beat. One row (``classifier_gap.csv``)."""
    data = selection_data(dataset)
    ev = evaluate(model if model is not None else load_pretrained(dataset), None, data)
    p = paired_test(unpack_correct(ref["val_select"]["correct"]), ev["correct"].numpy())
    return pd.DataFrame([dict(classifier="shipped model (WebP as is)", images=VAL_SELECT, n_images=ev["n_images"],
                              accuracy=ev["accuracy"], diff=p["difference"], diff_lo=p["lo"], diff_hi=p["hi"])],
                        columns=list(GAP_COLUMNS))
