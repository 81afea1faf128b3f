"""``python blocksparse_utils.py protocol ...``: the protocol's runs (``protocol_runs``) from the shell."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd

from . import answer, cache, power, protocol_v2, protocol_v2_runs, report_v2
from .model import SPLIT_POINTS
from .protocol import BUDGET, CONFIRM_CONFIDENCE, POWER_CURVE_SIMS, SEEDS_V2
from .costs import costs, latencies
from .protocol_runs import (ANSWER_DIR, TRAINED, answer_markdown, next_steps, prune, run_step,
                            test_run, test_shipped_model, train_run)
from .report import budget_markdown, splice, splice_glance
from .runtime import ROOT, in_repo, machine, results_dir

# resumable states live outside the work tree; they last as long as the machine (a new session may
# start on a new one: a run is made, tested and committed within one session)
STATE_DIR = Path.home() / ".cache" / "blocksparse" / "runs"


def _setting(s: str) -> dict:
    try:
        v = json.loads(s)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"--setting must be a JSON object: {e}") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError(f"--setting must be a JSON object, got {s!r}")
    return v


def _family(step: dict) -> str:
    """The family a step of the plan belongs to (a test step: its card's)."""
    return step.get("family") or json.loads(Path(step["card"]).read_text())["family"]


def _split(step: dict) -> str | None:
    """The split a step of the plan belongs to (a test step: its card's; None: a split-free family)."""
    return step["split_at"] if "split_at" in step else json.loads(Path(step["card"]).read_text())["split_at"]


def protocol_command(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py protocol",
                                 description="train a candidate (val-stop, val-select) or test a chosen run once")
    sub = ap.add_subparsers(dest="action", required=True)
    tr = sub.add_parser("train", help="train one run with the protocol's budget; scores it on val-select")
    tr.add_argument("--family", required=True, choices=TRAINED)
    tr.add_argument("--setting", type=_setting, default={}, help='JSON, e.g. \'{"quality": 5}\'')
    tr.add_argument("--split-at", choices=SPLIT_POINTS, default=None)
    tr.add_argument("--seeds", type=int, nargs="+", default=[0])
    tr.add_argument("--test", action="store_true", help="test each run once after training (a chosen setting)")
    tr.add_argument("--dataset", default="fashion-mnist")
    tr.add_argument("--out", default=str(ANSWER_DIR))
    tr.add_argument("--state-dir", default=str(STATE_DIR))
    te = sub.add_parser("test", help="the one test evaluation of chosen runs (their cards)")
    te.add_argument("cards", nargs="+")
    pl = sub.add_parser("plan", help="print the steps still to make, in order (nothing runs)")
    pl.add_argument("--out", default=str(ANSWER_DIR))
    nx = sub.add_parser("next", help="make the next steps of the plan, one after another (resumable)")
    nx.add_argument("--max-steps", type=int, default=1)
    nx.add_argument("--family", choices=("reference",) + answer.FAMILIES, default=None,
                    help="only this family's steps (their order in the plan kept); default: the plan's order")
    nx.add_argument("--split-at", choices=SPLIT_POINTS, default=None,
                    help="only this split's steps (and split-free families'); default: every split")
    nx.add_argument("--dataset", default="fashion-mnist")
    nx.add_argument("--out", default=str(ANSWER_DIR))
    nx.add_argument("--state-dir", default=str(STATE_DIR))
    rm = sub.add_parser("remeasure", help="measure the shipped models again and compare with their cards' test")
    rm.add_argument("cards", nargs="*", help="default: every shipped model of the answer that was tested")
    rm.add_argument("--n-test", type=int, default=None, help="evenly spaced test images (default all 10,000)")
    rm.add_argument("--out", default=str(ANSWER_DIR))
    an = sub.add_parser("answer", help="write data/results/answer.csv from the cards")
    an.add_argument("--out", default=str(ANSWER_DIR))
    v2 = sub.add_parser("v2-next", help="protocol v2: the next steps of a family's walk at a split (screen, train), "
                                        "then its confirmation's")
    v2.add_argument("--split-at", choices=SPLIT_POINTS, help="every family's but webp-finetuned's (input compression)")
    v2.add_argument("--family", choices=("bottleneck", "block-sparse", "webp-finetuned"), default="bottleneck")
    v2.add_argument("--max-steps", type=int, default=1)
    v2.add_argument("--out", default=str(protocol_v2.V2_DIR))
    v2.add_argument("--state-dir", default=str(STATE_DIR))
    v2.add_argument("--report", action="store_true",
                    help="after each step, protocol compare and v2-report (README, docs/protocol_v2.md, figures/ladders_v2.png)")
    v2s = sub.add_parser("v2-status", help="protocol v2: each split's walk so far (rungs, val-select, picks)")
    v2s.add_argument("--out", default=str(protocol_v2.V2_DIR))
    pw = sub.add_parser("power", help="write data/results/power.csv: each decision rule's power (minutes)")
    pw.add_argument("--sims", type=int, default=POWER_CURVE_SIMS)
    cp = sub.add_parser("compare", help="write data/results/family_comparison.csv: families' rate at equal accuracy")
    cp.add_argument("--n-boot", type=int, default=2000)
    sub.add_parser("v2-report", help="protocol v2's block and the budget's sentence of the README, docs/protocol_v2.md's tables and "
                                    "figures/ladders_v2.png, from the results files")
    se = sub.add_parser("v2-sensitivity", help="train one family's subject after layer3 with 4x the budget (hours); "
                                               "then write data/results/budget_sensitivity.csv")
    se.add_argument("--family", choices=("reference", "block-sparse", "bottleneck"), default=None,
                    help="default: only rewrite the table from the runs made")
    se.add_argument("--state-dir", default=str(STATE_DIR))
    a = ap.parse_args(argv)
    if a.action in ("v2-next", "v2-status", "power", "compare", "v2-report", "v2-sensitivity"):
        return _v2(a)
    if a.action == "plan":
        steps = next_steps(a.out)
        print("\n".join(json.dumps(s) for s in steps) if steps else "nothing left: every answer row is tested")
        return
    if a.action == "next":
        last = None
        for _ in range(a.max_steps):
            steps = [s for s in next_steps(a.out) if a.family in (None, _family(s))
                     and (a.split_at is None or _split(s) in (None, a.split_at))]
            if not steps:
                print("nothing left: every answer row is tested" if (a.family, a.split_at) == (None, None)
                      else f"no {a.family or 'protocol'} step left now{f' at {a.split_at}' if a.split_at else ''}")
                return
            if steps[0] == last:  # a step that leaves no card would be made again forever
                raise SystemExit(f"the step {json.dumps(last)} left the plan where it was: see its output above")
            last = steps[0]
            print(f"step: {json.dumps(steps[0])}", flush=True)
            print(f"wrote {run_step(steps[0], a.dataset, a.out, a.state_dir)}", flush=True)
            for f in prune(a.out):
                print(f"deleted {f} (not shipped; its card keeps its results)", flush=True)
        return
    if a.action in ("test", "remeasure"):
        try:
            return _test_or_remeasure(a)
        except (json.JSONDecodeError, UnicodeDecodeError):  # an unreadable file: cli.main names it
            raise
        except ValueError as e:  # a card the protocol cannot test or re-measure: what is wrong, in one line
            print(f"blocksparse_utils.py protocol {a.action}: error: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    if a.action == "answer":
        test_shipped_model(out_dir=a.out)  # the second reference, tested once
        cards, cost = answer.read_cards(a.out), costs()
        for key, v in latencies(answer.operating_points(cards)).items():
            measured = any(v[k] for k in ("head_ms", "encoder_ms"))
            cost[key] |= v | dict(latency_machine=machine() if measured else None)
        table = answer.answer_table(cards, cost)
        d = results_dir()
        d.mkdir(parents=True, exist_ok=True)
        table.to_csv(d / "answer.csv", index=False)
        text = answer_markdown(table, a.out)
        splice(ROOT / "docs" / "protocol_v1.md", text, "answer")  # v1's full answer, archived beside v2
        splice_glance(ROOT / "README.md", table, cards)  # the README's first paragraph and its table, from the same rows
        print(text)
        return
    if a.action == "train":
        for seed in a.seeds:
            card = train_run(a.family, a.setting, seed, a.split_at, a.dataset, a.out, a.state_dir)
            print(f"{card}: val-select {json.loads(card.read_text())['val_select']['accuracy']:.4f}", flush=True)
            if a.test:
                print(f"{card}: test {test_run(card)['test']['accuracy']:.4f}", flush=True)


def _test_or_remeasure(a: argparse.Namespace) -> None:
    """``protocol test`` (the one test of chosen runs) or ``protocol remeasure`` (shipped models again)."""
    if a.action == "test":
        for c in a.cards:
            v2 = json.loads(Path(c).read_text()).get("protocol") in protocol_v2.VERSIONS if Path(c).is_file() else False
            card = (protocol_v2.test_run(c, protocol_v2.read_cards(), protocol_v2.reference()) if v2
                    else test_run(c))  # each protocol's own rule says which runs it tests
            print(f"{c}: test {card['test']['accuracy']:.4f}", flush=True)
        return
    answer_cards = answer.read_cards(a.out)
    keep = answer.shipped(answer_cards)
    cards = a.cards or [c["path"] for c in answer_cards if c["path"] in keep and "test" in c]
    lost = []  # v2's tested seed-0 runs whose weights are not in the tree: said, not skipped in silence
    if not a.cards and Path(a.out).resolve() == protocol_v2.V1_DIR.resolve():  # v2's shipped seed-0 runs too
        for c in protocol_v2.read_cards(reuse_dir=None):
            if c["seed"] == 0 and "test" in c:
                (cards if protocol_v2_runs.files_there(c) else lost).append(c["path"])
    rows = [protocol_v2_runs.remeasure_run(c, a.n_test) for c in cards]  # a v1 card goes to v1's remeasure
    print(pd.DataFrame(rows).to_markdown(index=False) if rows else "no shipped model tested yet")
    for c in lost:
        print(f"not re-measured: {in_repo(Path(c))} was tested, but its files are not in the tree (not shipped)")
    if any(r["mcnemar_p"] < 0.05 for r in rows):
        print("some models differ from their cards' test beyond sampling error (McNemar p < 0.05): other weights or code")
    elif any(r["differing"] for r in rows):
        print("some images differ from the cards' test, within sampling error: a numerical difference of this machine")


def _v2(a: argparse.Namespace) -> None:
    """Protocol v2's commands: its walk, its status, the power of the rules, the families compared."""
    if a.action == "v2-next":
        if (a.split_at is None) != (a.family == "webp-finetuned"):
            raise SystemExit("protocol v2-next: --split-at names the split of block-sparse's and the bottleneck's "
                             "walks; WebP with a fine-tuned classifier has none (input compression)")
        for _ in range(a.max_steps):
            wrote = protocol_v2.run_next(a.split_at, a.family, out_dir=a.out, state_dir=a.state_dir,
                                         log=lambda s: print(s, flush=True))
            if wrote is None:
                print(f"nothing left in the {a.family}'s walk at {a.split_at}")
                return
            print(f"wrote {wrote}", flush=True)
            if a.report:
                _v2_compare()
                print(_v2_report(), flush=True)
        return
    if a.action == "v2-status":
        print(report_v2.status_table(protocol_v2.read_cards(a.out)).to_markdown(index=False, floatfmt=".3f"))
        return
    if a.action == "v2-report":
        print(_v2_report())
        return
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    v1 = answer.read_cards(ANSWER_DIR)
    if a.action == "v2-sensitivity":
        subjects = protocol_v2.sensitivity_subjects(v1, protocol_v2.read_cards())
        if a.family is not None:
            subject = next((s for s in subjects if s["family"] == a.family), None)
            if subject is None:
                raise SystemExit(f"blocksparse_utils.py protocol v2-sensitivity: error: no {a.family} run after layer3 yet")
            done = [p for p, c in _sensitivity_cards().items()
                    if (c.get("family"), c.get("split_at")) == (subject["family"], subject["split_at"])]
            if done:  # one run a subject: a finished run is kept, not trained again (make protocol-v2 resumes)
                print(f"done already: {done[0]}", flush=True)
            else:
                print(f"wrote {protocol_v2.sensitivity_run(subject, state_dir=a.state_dir)}", flush=True)
        long = list(_sensitivity_cards().values())
        table = report_v2.sensitivity_table(subjects, long)
        table.to_csv(d / "budget_sensitivity.csv", index=False)
        print(table.to_markdown(index=False, floatfmt=".4f"))
        return
    if a.action == "power":
        slopes = power.walk_slopes(protocol_v2.read_cards(), protocol_v2.reference())
        table = power.power_table(v1, true_diffs=(0.0, -0.005, -0.01), sims=a.sims, slopes=slopes,
                                  curve_for=_confirm_curve)
        table.to_csv(d / "power.csv", index=False)
    else:
        table, gap = _v2_compare(a.n_boot)
        print(gap.to_markdown(index=False, floatfmt=".4f"))
    print(table.to_markdown(index=False, floatfmt=".3f"))


def _sensitivity_cards() -> dict[Path, dict]:
    """The budget sensitivity's finished runs: path -> card."""
    return {p: json.loads(p.read_text()) for p in sorted(protocol_v2.SENSITIVITY_DIR.glob("*.json"))}


def _confirm_curve(discordance: float, o: dict):
    """``power.confirm_curve`` at ``POWER_CURVE_SIMS`` with its simulations (``hits=True``), through the
    result cache (about 15 minutes a discordance on one core; the key names everything it reads)."""
    key = dict(checkpoint=None, rule="v2 confirm", confidence=CONFIRM_CONFIDENCE, seeds=len(SEEDS_V2),
               n_images=power.TEST_IMAGES, discordance=discordance, shared=o["shared"], seed_sd=o["seed_sd"],
               sims=POWER_CURVE_SIMS, seed=0)

    def compute():
        curve, hits = power.confirm_curve(discordance, o["shared"], o["seed_sd"], sims=POWER_CURVE_SIMS, hits=True)
        return pd.DataFrame([dict(sim=i, true_diff=d, hit=bool(hits[i, k])) for k, d in enumerate(curve)
                             for i in range(len(hits))])
    frame = cache.cached("power_confirm_curve", key, compute, schema=False)
    wide = frame.pivot(index="sim", columns="true_diff", values="hit").sort_index(axis=1).astype(float)
    return {float(d): float(wide[d].mean()) for d in wide.columns}, wide.to_numpy()


def _v2_compare(n_boot: int = 2000) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``protocol compare``: write ``family_comparison.csv`` and ``classifier_gap.csv`` from the cards."""
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    table = report_v2.family_comparison(answer.read_cards(ANSWER_DIR), protocol_v2.read_cards(), n_boot=n_boot)
    table.to_csv(d / "family_comparison.csv", index=False)
    gap = protocol_v2.classifier_gap(protocol_v2.reference())
    gap.to_csv(d / "classifier_gap.csv", index=False)
    return table, gap


def _v2_report() -> str:
    """``protocol v2-report``: the README's v2 and budget blocks, ``answer_v2.csv``, ``docs/protocol_v2.md``'s
    tables and ``figures/ladders_v2.png`` (``report_v2.blocks``); returns the README's block."""
    from .plots import plot_v2_walks, save_figure  # matplotlib only for this command
    d = results_dir()
    b = report_v2.blocks(d, answer.read_cards(ANSWER_DIR))
    save_figure(plot_v2_walks(b["walks"]), "ladders_v2")
    splice(ROOT / "README.md", b["v2"], "v2")
    splice(ROOT / "README.md", budget_markdown(BUDGET), "budget")
    b["answer_v2"].to_csv(d / "answer_v2.csv", index=False)
    splice(ROOT / "docs" / "protocol_v2.md", b["v2-tables"], "v2-tables")
    return b["v2"]
