"""protocol_v2: the pre-registered walk by hand, the pick's threshold, the rules as committed, the
operating point's seeds and their confirmation, and the budget sensitivity (screens:
test_protocol_v2_screens; runs: test_protocol_v2_runs)."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from blocksparse import protocol_v2 as P
from blocksparse import protocol_v2_runs as RN
from blocksparse import walk as W
from blocksparse import report_v2 as R
from blocksparse.model import build_model
from blocksparse.protocol import PICK_THRESHOLD
from blocksparse.results import pack_correct


@pytest.mark.parametrize("walked, order, nxt", [
    ({}, [3.2], 3.2),
    ({3.2: False}, [3.2, 0.8], 0.8),
    # a coarse pick at 0.8 after a miss at 3.2: the sqrt(2) rungs between, lowest rate (highest weight) first
    ({3.2: False, 0.8: True}, [3.2, 0.8, 2.26274], 2.26274),
    ({3.2: False, 0.8: True, 2.26274: False}, [3.2, 0.8, 2.26274, 1.6], 1.6),
    ({3.2: False, 0.8: True, 2.26274: False, 1.6: True}, [3.2, 0.8, 2.26274, 1.6], None),
    ({3.2: False, 0.8: True, 2.26274: False, 1.6: False, 1.13137: False}, [3.2, 0.8, 2.26274, 1.6, 1.13137], None),
    # the first rung picked: rungs below it until one misses, then the refinement above that miss
    ({3.2: True}, [3.2, 12.8], 12.8),
    ({3.2: True, 12.8: False}, [3.2, 12.8, 9.05097], 9.05097),
    ({3.2: False, 0.8: False, 0.2: False, 0.05: False, 0.0125: False}, [3.2, 0.8, 0.2, 0.05, 0.0125], None),
    # each refined rung from the previous one as written (6 significant digits), not from the miss
    ({3.2: False, 0.8: False, 0.2: False, 0.05: True, 0.141421: False}, [3.2, 0.8, 0.2, 0.05, 0.141421, 0.0999997],
     0.0999997),
    # picked twice below the first rung, then a miss: the refinement starts above the miss
    ({3.2: True, 12.8: True, 51.2: False}, [3.2, 12.8, 51.2, 36.2039], 36.2039),
    ({3.2: True, 12.8: True, 51.2: False, 36.2039: False, 25.6: True}, [3.2, 12.8, 51.2, 36.2039, 25.6], None),
])
def test_the_bottleneck_walk_by_hand(walked, order, nxt):
    assert W.ladder("bottleneck", walked) == (order, nxt)


def test_block_sparse_rungs_grow_with_rate():
    assert W.ladder("block-sparse", {0.25: False, 0.5: True}) == ([0.25, 0.5, 0.353553], 0.353553)
    assert W.ladder("block-sparse", {0.25: True}) == ([0.25, 0.125], 0.125)
    assert W.ladder("block-sparse", {0.25: True, 0.125: False}) == ([0.25, 0.125, 0.176777], 0.176777)
    assert W.ladder("block-sparse", {0.25: True, 0.125: False, 0.176777: True}) == ([0.25, 0.125, 0.176777], None)


def _card(correct):
    return dict(val_select=dict(correct=pack_correct(np.asarray(correct, bool))))


def test_pick_is_the_point_estimate_against_the_threshold():
    n = 1000
    ref = np.ones(n, bool)
    at = ref.copy()
    at[:int(PICK_THRESHOLD * n)] = False  # exactly one point below: picked
    below = at.copy()
    below[100] = False  # 1.1 points below: not picked
    assert W.pick(_card(at), _card(ref))["picked"]
    assert not W.pick(_card(below), _card(ref))["picked"]
    assert W.pick(_card(below), _card(ref))["difference"] == pytest.approx(-0.011)


@pytest.mark.parametrize("split_at, family, picked_at", [
    ("layer2", "block-sparse", -0.003), ("layer1", "bottleneck", -0.003),  # v2.5: picked at -0.3 point
    ("layer3", "block-sparse", -0.01), ("layer3", "bottleneck", -0.01),  # v2.2's walks keep v2's pick at -1
    (None, "webp-finetuned", -0.01)])
def test_v2_5_picks_at_minus_0_3_only_where_its_walks_had_not_begun(split_at, family, picked_at):
    n = 1000
    ref = np.ones(n, bool)

    def card(diff):  # a seed-0 rung at ``diff`` (exact on 1,000 images)
        x = ref.copy()
        x[:round(-diff * n)] = False
        return _card(x) | dict(split_at=split_at, family=family)
    assert W.pick(card(picked_at), _card(ref))["picked"]
    assert not W.pick(card(picked_at - 0.001), _card(ref))["picked"]
    assert W.pick(card(-0.004), _card(ref))["picked"] == (picked_at == -0.01)  # -0.4: v2.2 picks, v2.5 does not


def _flip(ref, k):
    x = ref.copy()
    x[np.nonzero(ref)[0][:k]] = False
    return x


def _protocol_py(commit: str | None = None) -> str:
    """blocksparse/protocol.py as ``commit`` registered it (None: as it is now); skips without git history."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    if commit is None:
        return (root / "blocksparse" / "protocol.py").read_text()
    try:
        return subprocess.run(["git", "show", f"{commit}:blocksparse/protocol.py"], cwd=root, capture_output=True,
                              text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("no git history here (a shallow clone or an export)")


def test_v2_rules_are_the_ones_pre_registered():
    """protocol.py's v2 section is byte for byte the one committed in RULES_COMMIT (a change is a v3)."""
    then, now = _protocol_py(P.RULES_COMMIT), _protocol_py()
    marker, amendment = "# Protocol v2 (issue 42), pre-registered", "# Protocol v2.1: one amendment to v2"
    section = now[now.index(marker):now.index(amendment)]
    assert marker in then and section[:section.rindex("\n\n\n")] + "\n" == then[then.index(marker):]


def _v2card(tmp_path, rung, k, ref, seed=0, test=None):
    c = dict(protocol=P.PROTOCOL, family="bottleneck", split_at="layer3", seed=seed, rung=rung, dataset="fashion-mnist",
             setting=dict(recipe="hybrid", latent_channels=24, lmbda=rung, stride=2),
             val_select=dict(correct=pack_correct(_flip(ref, k)), bpp=0.1, accuracy=0.9))
    if test is not None:
        c["test"] = dict(correct=pack_correct(test), bpp=0.1, accuracy=float(test.mean()))
    p = tmp_path / f"b_{rung:g}_{seed}.json"
    c["weights"] = p.with_suffix(".pt").name
    p.with_suffix(".pt").write_bytes(b"w")  # the shipped weights are there (a confirmation tests them)
    p.write_text(json.dumps(c))
    return c | dict(path=str(p))


def test_the_operating_point_its_seeds_and_the_confirmation(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.random(1000) < 0.9
    refcard = dict(family="reference", seed=0, val_select=dict(correct=pack_correct(ref)))
    # 3.2 missed, 0.8 picked, 2.26 missed, 1.6 picked: the walk has ended at 1.6
    cards = [_v2card(tmp_path, 3.2, 20, ref), _v2card(tmp_path, 0.8, 0, ref), _v2card(tmp_path, 2.26274, 20, ref),
             _v2card(tmp_path, 1.6, 5, ref)]
    assert P.operating_point(cards[:2], "bottleneck", "layer3", refcard) is None  # still refining
    assert P.operating_point(cards, "bottleneck", "layer3", refcard)["rung"] == 1.6
    refs = {s: dict(seed=s, path=f"r{s}", test=dict(correct=pack_correct(ref))) for s in (0, 1, 2)}
    steps = P.confirmation_steps(cards, refs, refcard)
    assert [(s["action"], s.get("seed")) for s in steps] == [("test", None), ("train", 1), ("train", 2), ("train", 3),
                                                             ("train", 4), ("train", 3), ("train", 4)]
    assert all(s["confirmation"] for s in steps if s["action"] == "train")  # each tested in the step that trains it
    assert steps[0]["card"] == cards[3]["path"] and steps[-1]["family"] == "reference"
    # a rung the walk passed over is never tested
    with pytest.raises(ValueError, match="not a seed of an operating point"):
        P.test_run(cards[1]["path"], cards, refcard)
    # every seed tested: the confirmation pairs seed with seed; identical to the reference -> within
    test_ref = rng.random(4000) < 0.93
    seeds = [_v2card(tmp_path, 1.6, 5, ref, seed=s, test=test_ref) for s in range(5)]
    refs = {s: dict(seed=s, test=dict(correct=pack_correct(test_ref))) for s in range(5)}
    c = P.confirm(cards[:3] + seeds, refs, "bottleneck", "layer3", refcard)
    assert c["within"] and c["estimate"] == 0 and c["confidence"] == pytest.approx(1 - 0.05 / 7)
    worse = [_v2card(tmp_path, 1.6, 5, ref, seed=s, test=_flip(test_ref, 80)) for s in range(5)]  # -2 points
    assert not P.confirm(cards[:3] + worse, refs, "bottleneck", "layer3", refcard)["within"]
    assert P.confirm(cards, refs, "bottleneck", "layer3", refcard) is None  # seeds not yet tested


def test_budget_sensitivity_is_four_times_the_steps_and_pairs_with_the_reference_at_the_same_budget():
    from blocksparse.protocol import BUDGET
    long = P.sensitivity_budget()
    assert (long.steps, long.eval_every) == (4 * BUDGET.steps, 4 * BUDGET.eval_every)
    assert {k: v for k, v in long.asdict().items() if k not in ("steps", "eval_every")} == \
        {k: v for k, v in BUDGET.asdict().items() if k not in ("steps", "eval_every")}
    rng = np.random.default_rng(0)
    ref = rng.random(1000) < 0.9

    def card(fam, k, setting, steps):
        return dict(family=fam, setting=setting, budget=dict(steps=steps),
                    val_select=dict(correct=pack_correct(_flip(ref, k)), accuracy=float(_flip(ref, k).mean()),
                                    n_images=1000))
    base_ref, base_bn = card("reference", 0, {}, 1800), card("bottleneck", 5, dict(recipe="joint", latent_channels=8), 1800)
    subjects = [dict(family="reference", split_at=None, setting={}, base=base_ref),
                dict(family="bottleneck", split_at="layer3", setting=base_bn["setting"], base=base_bn)]
    # at 4x the reference loses 0.2 points against itself at 1x, the bottleneck closes its gap to 0.1
    long = [card("reference", 2, {}, 7200), card("bottleneck", 3, base_bn["setting"], 7200)]
    t = R.sensitivity_table(subjects, long)
    bn = t[t["family"] == "bottleneck"].iloc[0]
    assert bn["steps"] == 7200 and bn["diff"] == pytest.approx(-0.001) and bn["diff_at_budget"] == pytest.approx(-0.005)
    assert list(t.columns) == list(R.SENSITIVITY_COLUMNS) and len(t) == 2


def test_classifier_gap_pairs_the_shipped_model_on_uncompressed_val_select_with_the_reference(monkeypatch):
    torch.manual_seed(0)
    model = build_model("fashion-mnist", "layer1").eval()
    g = torch.Generator().manual_seed(1)
    data = TensorDataset(torch.randn(20, 1, 28, 28, generator=g), torch.randint(0, 10, (20,), generator=g))
    monkeypatch.setattr(P, "selection_data", lambda dataset: data)
    with torch.no_grad():
        mine = (model(data.tensors[0]).argmax(1) == data.tensors[1]).numpy()
    ref = np.ones(20, bool)  # a reference right on every image
    gap = P.classifier_gap(dict(val_select=dict(correct=pack_correct(ref))), model=model).iloc[0]
    assert gap["images"] == "val-select" and gap["n_images"] == 20
    assert gap["accuracy"] == pytest.approx(mine.mean()) and gap["diff"] == pytest.approx(mine.mean() - 1)


def test_a_v2_run_ships_tests_once_and_remeasures_image_for_image(monkeypatch, tmp_path):
    """train_run -> test_run -> remeasure_run on a tiny hybrid run: what ships is what was measured
    (0 images differ), a second test is refused, and a changed file is caught by its sha256."""
    from blocksparse.protocol import Budget
    setting = dict(recipe="hybrid", latent_channels=4, lmbda=1.0, stride=2)
    card = P.train_run("layer3", setting, 0, out_dir=tmp_path, budget=Budget(steps=2, batch_size=4, eval_every=1),
                       rung=1.0, train_subset=16, val_subset=8)
    monkeypatch.setattr(P, "operating_point", lambda cards, family, split_at, ref: json.loads(card.read_text()))
    tested = P.test_run(card, [], None, n_test=20)["test"]
    assert tested["n_images"] == 20 and tested["bpp"] > 0
    with pytest.raises(ValueError, match="tested already"):
        P.test_run(card, [], None, n_test=20)
    r = RN.remeasure_run(card, n_test=20)
    assert r["differing"] == 0 and r["accuracy"] == tested["accuracy"] and r["bpp"] == tested["bpp"]
    bn = tmp_path / json.loads(card.read_text())["bottleneck"]
    bn.write_bytes(bn.read_bytes() + b"\0")
    with pytest.raises(ValueError, match="sha256 differs"):
        RN.remeasure_run(card, n_test=20)


def test_a_confirmation_seed_is_tested_as_soon_as_it_is_trained(monkeypatch, tmp_path):
    """run_next trains a confirmation's seed and tests it in the same step (its weights need not outlive
    the session); a walk's seed 0 is not tested by its training step."""
    done = []
    monkeypatch.setattr(P, "reference", lambda *a, **k: {})
    monkeypatch.setattr(P, "train_run", lambda split_at, setting, seed, **k: done.append(("train", seed)) or tmp_path / f"s{seed}.json")
    monkeypatch.setattr(P, "test_run", lambda card, cards, ref: done.append(("test", Path(card).name)))
    step = dict(action="train", family="bottleneck", split_at="layer3", rung=0.8, setting={}, seed=2, confirmation=True)
    monkeypatch.setattr(P, "next_step", lambda *a, **k: step)
    P.run_next("layer3", out_dir=tmp_path, log=lambda m: None)
    step.update(seed=0, confirmation=False)  # a walk's run
    P.run_next("layer3", out_dir=tmp_path, log=lambda m: None)
    assert done == [("train", 2), ("test", "s2.json"), ("train", 0)]


@pytest.mark.parametrize("walked, order, nxt", [
    ({}, [50], 50),
    ({50: False, 55: True}, [50, 55], None),  # picked above the first rung: the coarse steps are already 5 apart
    ({50: True}, [50, 30], 30),  # the first rung picked: down v1's qualities (v2.2)
    ({50: True, 30: True, 20: False}, [50, 30, 20, 25], 25),  # then 5 apart above the miss
    ({50: True, 30: True, 20: False, 25: False}, [50, 30, 20, 25], None),  # operating point 30
    ({50: True, 30: True, 20: False, 25: True}, [50, 30, 20, 25], None),  # operating point 25
    ({q: True for q in (50, 30, 20, 10, 5, 0)}, [50, 30, 20, 10, 5, 0], None),
    ({q: False for q in (50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100)}, [50, 55, 60, 65, 70, 75, 80, 85, 90, 95, 100], None),
])
def test_the_webp_walk_by_hand(walked, order, nxt):
    assert W.ladder("webp-finetuned", {float(k): v for k, v in walked.items()}) == (order, nxt)


def _webp(folder, q, k, ref, seed=0, weights=False, **extra):
    c = dict(family="webp-finetuned", split_at=None, seed=seed, rung=q, setting=dict(quality=q), dataset="fashion-mnist",
             weights=f"webp-finetuned_q{q}_seed{seed}.pt", val_select=dict(correct=pack_correct(_flip(ref, k)), bpp=1.0),
             **extra)
    p = folder / f"webp-finetuned_q{q}_seed{seed}.json"
    p.write_text(json.dumps(c))
    if weights:
        p.with_suffix(".pt").write_bytes(b"w")
    return c | dict(path=str(p))


def test_webp_reuses_v1s_runs_and_trains_seed_0_again_when_its_weights_were_not_kept(tmp_path):
    """v1's WebP runs (cards only, as v1 kept them) walk v2.2's ladder; the operating point's seed 0,
    whose weights v1 did not keep, is trained again into retrained/ for its test, and the walk keeps
    the pick its first card made (the retrained card misses here: the operating point stays)."""
    rng = np.random.default_rng(2)
    ref = rng.random(1000) < 0.9
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    v1.mkdir(), v2.mkdir()
    refcard = dict(family="reference", seed=0, val_select=dict(correct=pack_correct(ref)))
    (v1 / "reference_seed0.json").write_text(json.dumps(refcard))
    for q, k in ((50, 5), (30, 8), (20, 12)):  # -0.5, -0.8, -1.2 points: 50 and 30 picked, 20 missed
        _webp(v1, q, k, ref)
    _webp(v1, 90, 3, ref, weights=True)
    cards = P.read_cards(v2, v1)
    assert {c["family"] for c in cards} == {"webp-finetuned"} and len(cards) == 4
    step = P.next_step(None, "webp-finetuned", v2, v1)
    assert step == dict(action="train", family="webp-finetuned", split_at=None, rung=25, seed=0, setting=dict(quality=25))
    _webp(v2, 25, 15, ref, protocol=P.PROTOCOL, weights=True)  # -1.5: missed, so the operating point is 30
    refs = {s: dict(seed=s, path=f"r{s}", test={}) for s in range(5)}
    steps = P.confirmation_steps(P.read_cards(v2, v1), refs, refcard)
    assert [(s["action"], s.get("seed"), s.get("retrain", False)) for s in steps] == [
        ("train", 0, True), ("train", 1, False), ("train", 2, False), ("train", 3, False), ("train", 4, False)]
    assert all(s["rung"] == 30 and s["confirmation"] for s in steps)
    (v2 / "retrained").mkdir()
    again = _webp(v2 / "retrained", 30, 40, ref, protocol=P.PROTOCOL, weights=True)  # retrained: -4 points
    cards = P.read_cards(v2, v1)
    assert P.operating_point(cards, "webp-finetuned", None, refcard)["path"].startswith(str(v1))  # the walk's card
    assert P.seed_runs(cards, P.operating_point(cards, "webp-finetuned", None, refcard))[0]["path"] == again["path"]
    assert [s["action"] for s in P.confirmation_steps(cards, refs, refcard)][:1] == ["test"]
    with pytest.raises(ValueError, match="family, split_at"):
        P.next_step(None, "bottleneck", v2, v1)


def test_budget_sensitivity_takes_the_closest_rung_v2s_before_v1s_when_no_operating_point_is_found():
    rng = np.random.default_rng(3)
    ref = rng.random(1000) < 0.9
    refcard = dict(family="reference", seed=0, split_at=None, val_select=dict(correct=pack_correct(ref)))

    def card(protocol, k, name):
        return dict(family="bottleneck", split_at="layer3", seed=0, rung=3.2, setting=dict(name=name),
                    val_select=dict(correct=pack_correct(_flip(ref, k))), **({"protocol": protocol} if protocol else {}))
    v1 = [refcard, card(None, 5, "v1 at -0.5"), card(None, 30, "v1 at -3")]
    v2 = [card("v2.1", 5, "v2.1 at -0.5")]  # as close as v1's best: v2's run is taken (a v2.1 card, read by v2.2)
    subjects = P.sensitivity_subjects(v1, v2)
    assert [s["family"] for s in subjects] == ["reference", "bottleneck"]
    assert subjects[1]["setting"] == dict(name="v2.1 at -0.5")


@pytest.mark.parametrize("commit, begin, end", [
    (P.AMENDMENT_COMMIT, "# Protocol v2.1: one amendment to v2", "# Protocol v2.2: a second amendment"),
    (P.AMENDMENT_V2_2_COMMIT, "# Protocol v2.2: a second amendment", "# Protocol v2.3: a third amendment"),
    (P.AMENDMENT_V2_3_COMMIT, "# Protocol v2.3: a third amendment", "# Protocol v2.4: a fourth amendment"),
    (P.AMENDMENT_V2_4_COMMIT, "# Protocol v2.4: a fourth amendment", "# Protocol v2.5: a fifth amendment"),
    (P.AMENDMENT_V2_5_COMMIT, "# Protocol v2.5: a fifth amendment", None)])
def test_each_amendment_is_the_one_registered(commit, begin, end):
    """protocol.py's v2.1 to v2.5 sections, byte for byte as their commits registered them."""
    then, now = _protocol_py(commit), _protocol_py()

    def section(text):
        body = text[text.index(begin):text.index(end) if end and end in text else len(text)]
        return body.rstrip("\n=# ")
    assert section(now) == section(then)


def _run(tmp_path, name, seed, files=("weights",), **extra):
    card = dict(protocol=P.PROTOCOL, family="bottleneck", seed=seed, weights=f"{name}.pt", bottleneck=f"{name}.bn.pt",
                **extra)
    for f in files:
        (tmp_path / card[f]).write_bytes(b"w")
        if f == "bottleneck":  # and the bottleneck's own card beside it
            (tmp_path / card[f]).with_suffix(".json").write_text("{}")
    return card | dict(path=str(tmp_path / f"{name}.json"))


def test_a_confirmations_seed_is_tested_when_its_files_are_there_else_trained_again(tmp_path):
    both = ("weights", "bottleneck")
    assert P._seed_step(None, 3) == dict(action="train", seed=3, confirmation=True)
    assert P._seed_step(_run(tmp_path, "a", 1, both, test={}), 1) is None
    assert P._seed_step(_run(tmp_path, "b", 1, both), 1) == dict(action="test", card=str(tmp_path / "b.json"))
    # its bottleneck's file gone: a seed 1-4 run is trained again in its place, the walk's seed 0 beside it
    assert P._seed_step(_run(tmp_path, "c", 2), 2) == dict(action="train", seed=2, confirmation=True,
                                                            replace=str(tmp_path / "c.json"))
    assert P._seed_step(_run(tmp_path, "d", 0), 0) == dict(action="train", seed=0, confirmation=True, retrain=True)
    (tmp_path / "retrained").mkdir()
    again = _run(tmp_path / "retrained", "e", 0)
    assert P._seed_step(again, 0)["replace"] == again["path"]
    # a v1 card (its protocol a dict) is never written into, even with its files there
    v1 = _run(tmp_path, "f", 0, both) | dict(protocol=dict(stop="val-stop"))
    assert P._seed_step(v1, 0)["retrain"]
    with pytest.raises(ValueError, match="v1's archive"):
        Path(v1["path"]).write_text(json.dumps(v1))
        P.test_run(v1["path"], [], None)
    ref1 = dict(protocol=P.PROTOCOL, family="reference", seed=1)
    (tmp_path / "r1.json").write_text(json.dumps(ref1))
    with pytest.raises(ValueError, match="seeds 3 and 4"):
        P.test_run(tmp_path / "r1.json", [], None)


def test_block_sparse_runs_of_two_rungs_do_not_collide_and_other_budgets_keep_their_own_state():
    from blocksparse.protocol import BUDGET
    from blocksparse.protocol_runs import state_name
    setting = dict(mode="global", block_size=4, ratio=0.05, bits=2, group_lasso_weight=1e-5)
    a, b = P.block_sparse_name("layer3", 0.5, setting, 0), P.block_sparse_name("layer3", 0.707107, setting, 0)
    assert a == "block-sparse_layer3_rung0.5_global_B4_r0.05_2b_gl1e-05_seed0" and a != b
    assert state_name(a, BUDGET) == f"{a}.state.pt" != state_name(a, P.sensitivity_budget())


def test_run_next_trains_each_family_with_its_recipe_and_name(monkeypatch, tmp_path):
    """v1's recipe in v2's folder: block-sparse under a name with its rung, WebP without a split; each
    card becomes a v2 card (its version, v1's image record kept under images)."""
    calls = []

    def train_v1(family, setting, seed, split_at, **k):
        calls.append((family, split_at, k.get("name"), k["rung"]))
        p = tmp_path / f"{family}.json"
        p.write_text(json.dumps(dict(family=family, protocol=dict(stop="val-stop", stop_images=2500))))
        return p
    monkeypatch.setattr(P, "train_run_v1", train_v1)
    bs = dict(mode="global", block_size=4, ratio=0.05, bits=2, group_lasso_weight=0.0)
    for step in (dict(action="train", family="block-sparse", split_at="layer3", rung=0.707107, seed=0, setting=bs),
                 dict(action="train", family="webp-finetuned", split_at=None, rung=25, seed=0, setting=dict(quality=25))):
        monkeypatch.setattr(P, "next_step", lambda *a, step=step, **k: step)
        card = json.loads(P.run_next(step["split_at"], step["family"], out_dir=tmp_path, log=lambda m: None).read_text())
        assert card["protocol"] == P.PROTOCOL and card["images"]["stop_images"] == 2500
    assert calls == [("block-sparse", "layer3", "block-sparse_layer3_rung0.707107_global_B4_r0.05_2b_gl0_seed0", 0.707107),
                     ("webp-finetuned", None, None, 25)]


