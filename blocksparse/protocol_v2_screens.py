"""Protocol v2's screens (``protocol.SCREEN_V2``): which configuration a rung trains, chosen on val-stop.

One screen for every trained family: successive halving of its arms (``halving``; the bottleneck's
recipes x widths, block-sparse's configurations x group-lasso weights), scored on val-stop, never on
val-select or test; under v2.3 (``walk.has_final_round``) two finalists then train as a rung's run
(``final_round``). A screen's file (``data/answer/v2/screens``) is written when it ends, each arm's
row as it finishes, so a screen cut short resumes at its next arm.
"""
from __future__ import annotations

import json
from pathlib import Path

from torch.utils.data import TensorDataset

from .codec import SELECTION_GRID, CodecConfig
from .costs import BOTTLENECK_STRIDES
from .data import load_dataset
from .evaluation import evaluate
from .model import load_pretrained
from .protocol import (BOTTLENECK_RECIPES, BOTTLENECK_WIDTHS, BUDGET, FINAL_KINDS, FINAL_ROUND, SCREEN_V2, VAL_STOP,
                       Budget, stopping_data)
from .protocol_runs import frontier_of, scored
from .protocol_runs import load_run as load_run_v1
from .protocol_runs import train_run as train_run_v1
from .protocol_v2_runs import (PROTOCOL, V2_DIR, block_sparse_name, load_run, measure, run_name, run_there, train_run,
                               v2_card)
from .recipes import make_bottleneck, train_recipe
from .study import candidates_under
from .training import finetune
from .walk import has_final_round

FINAL_DIR = "screens/final"  # v2.3's finalists, relative to a walk's folder: the loser's card stays there


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


def finalists(ranked: list, kind, n: int | None = None) -> list:
    """v2.3's finalists from the halving's last round (``ranked``, best first): the best arm, then the
    best arm of another ``kind(arm)`` (a recipe, a configuration), then the next best, ``n`` in all."""
    n = FINAL_ROUND["arms"] if n is None else n
    out = ranked[:1] + [a for a in ranked[1:] if ranked and kind(a) != kind(ranked[0])][:1]
    return out + [a for a in ranked if a not in out][:max(n - len(out), 0)]


def final_budget(budget: Budget = BUDGET) -> Budget:
    """What v2.3's finalists train with: a rung's run's ``budget`` for ``FINAL_ROUND["steps"]`` steps (the
    budget's own: 1,800). They are scored on ``FINAL_ROUND["images"]`` (val-stop), as the screen's arms are."""
    return budget.replace(steps=FINAL_ROUND["steps"])


def _kept(card: Path) -> Path | None:
    """A finalist's card from an earlier try of this screen, if its files are there too (``card``; None:
    train it). One whose weights did not outlive that session (they are not committed) is removed, to
    be trained again in its place: the final round scores the models it has, never a card alone."""
    if run_there(card):
        return card
    card.unlink(missing_ok=True)
    return None


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
    the pick is the better of two finalists (``finalists``: another recipe) trained as a rung's run with
    ``final_budget(budget)``, the registered ``FINAL_ROUND["steps"]`` whatever ``budget``'s own
    (``final_round``; ``state_dir`` resumes them). ``train_subset``/``stop_subset`` are
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
        final, full = Path(out_dir) / FINAL_DIR, final_budget(budget)

        def train_final(arm):
            done = _kept(final / f"{run_name(split_at, setting(arm), seed)}.json")
            return done if done is not None else train_run(
                split_at, setting(arm), seed, dataset, final, state_dir, full, rung=lmbda, train_subset=train_subset,
                val_subset=stop_subset, select=False)

        def score_final(path):
            m = measure(*load_run(path)[:2], stop)
            return dict(accuracy=m["accuracy"], cross_entropy=m["cross_entropy"], bpp=m["bpp"],
                        objective=m["cross_entropy"] + lmbda * m["bpp"])
        final_rows, best, final_run = final_round("bottleneck", ranked, train_final, score_final, key,
                                                  lambda row: row["objective"], len(settings["rounds"]), full.steps,
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
        final, full = Path(out_dir) / FINAL_DIR, final_budget(budget)

        def train_final(arm):
            name = block_sparse_name(split_at, rung, key(arm), seed)
            if _kept(final / f"{name}.json") is not None:
                return final / f"{name}.json"
            return v2_card(train_run_v1("block-sparse", key(arm), seed, split_at, dataset, final, state_dir, full,
                                         train_subset=train_subset, rung=rung, val_subset=stop_subset, name=name,
                                         select=False))

        def score_final(path):
            tuned, card, codebook = load_run_v1(path)
            return dict(accuracy=scored(tuned, stop, "block-sparse", card["setting"], codebook, dataset)["accuracy"])
        final_rows, best, out["final_run"] = final_round("block-sparse", ranked, train_final, score_final, key,
                                                         lambda row: -row["accuracy"], len(settings["rounds"]),
                                                         full.steps, out_dir, say)
        out["rows"] += final_rows
    if best is not None:
        out["pick"] = key(best)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    partial.unlink(missing_ok=True)
    return path
