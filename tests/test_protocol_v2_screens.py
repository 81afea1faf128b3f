"""Protocol v2's screens: successive halving on val-stop, never val-select or test; v2.3's final round."""
import json
from pathlib import Path

import pytest
import torch
from torch.utils.data import TensorDataset

from blocksparse import data
from blocksparse import protocol_v2 as P
from blocksparse import protocol_v2_screens as S
from blocksparse import walk as W


@pytest.fixture(autouse=True)
def no_val_select_or_test(monkeypatch):
    """Every screen here, whatever module it reaches, reads neither val-select nor test: the guard sits
    where every split is cut (``data.split_indices``, ``data._arrays``), not on one module's import."""
    split_indices, arrays = data.split_indices, data._arrays

    def cut(n_train, split, seed=0):
        if split == "val-select":
            pytest.fail("the screen read val-select")
        return split_indices(n_train, split, seed)

    def read(name, train, root):
        if not train:
            pytest.fail("the screen read the test set")
        return arrays(name, train, root)
    monkeypatch.setattr(data, "split_indices", cut)
    monkeypatch.setattr(data, "_arrays", read)


def test_the_screen_scores_its_arms_on_val_stop_and_never_reads_val_select_or_test(monkeypatch, tmp_path):
    read = []
    real = S.load_dataset

    def spy(name="fashion-mnist", split="test", *a, subset=None, **k):
        read.append(split)
        return real(name, split, subset=subset)
    monkeypatch.setattr(S, "load_dataset", spy)
    monkeypatch.setattr(S, "stopping_data", lambda dataset, subset=None: (read.append("val-stop"), real(dataset, "val-stop", subset=8))[1])
    scores = {("joint", 8): 3.0, ("joint", 24): 1.0, ("two-stage", 8): 2.0, ("two-stage", 24): 5.0,
              ("hybrid", 8): 4.0, ("hybrid", 24): 0.5}
    trained = []

    def arm(split_at, recipe, width, lmbda, steps, seed, dataset, train, stop, budget):
        trained.append((recipe, width, steps))
        return None, (recipe, width)
    monkeypatch.setattr(S, "_arm", arm)
    monkeypatch.setattr(S, "measure", lambda model, bn, data: dict(accuracy=0.9, cross_entropy=scores[bn], bpp=0.0,
                                                                   n_images=len(data), correct=None))
    path = S.screen_bottleneck("layer3", 0.8, out_dir=tmp_path, train_subset=16)
    sc = json.loads(path.read_text())
    assert set(read) == {"train", "val-stop"}
    # round 1: six arms of 150 steps; round 2: the best three (lowest objective) of 300 steps
    assert [t[2] for t in trained] == [150] * 6 + [300] * 3
    assert [t[:2] for t in trained[6:]] == [("hybrid", 24), ("joint", 24), ("two-stage", 8)]
    assert sc["pick"] == dict(recipe="hybrid", latent_channels=24, lmbda=0.8, stride=2)
    with pytest.raises(ValueError, match="exists"):
        S.screen_bottleneck("layer3", 0.8, out_dir=tmp_path)


def test_block_sparse_screen_reads_val_stop_keeps_the_three_best_untrained_configs_and_halves(monkeypatch, tmp_path):
    from blocksparse.codec import CodecConfig
    read = []
    real = S.load_dataset
    monkeypatch.setattr(S, "load_dataset", lambda name, split, subset=None: (read.append(split), real(name, split, subset=16))[1])
    monkeypatch.setattr(S, "stopping_data", lambda dataset, subset=None: (read.append("val-stop"), real(dataset, "val-stop", subset=20))[1])
    monkeypatch.setattr(S, "load_pretrained", lambda dataset, split_at: "shipped")
    cfgs = [CodecConfig(2, r, "global", 2) for r in (0.01, 0.02, 0.05, 0.1)]
    monkeypatch.setattr(S, "candidates_under", lambda model, configs, data, rung, fit_data: [(c, 0.1) for c in cfgs])
    untrained = {0.01: 0.5, 0.02: 0.7, 0.05: 0.6, 0.1: 0.8}  # accuracy before any training
    monkeypatch.setattr(S, "frontier_of", lambda rated: [c for c, _ in rated])
    trained = []

    def finetune(model, cfg, budget, dataset, group_lasso_weight, **kw):
        assert budget == S.BUDGET.replace(steps=budget.steps, eval_every=budget.steps)  # the budget's but for its length
        trained.append((cfg.ratio, group_lasso_weight, budget.steps))
        return ("tuned", cfg.ratio, group_lasso_weight), []
    monkeypatch.setattr(S, "finetune", finetune)

    def evaluate(model, cfg, data, rate_sample=None):
        assert len(data) == 20  # every val-stop image of this test's subset
        if model == "shipped":
            return dict(accuracy=untrained[cfg.ratio])
        _, ratio, g = model
        return dict(accuracy=untrained[ratio] + (0.05 if g else 0.0) + (0.01 if ratio == 0.02 else 0.0))
    monkeypatch.setattr(S, "evaluate", evaluate)
    sc = json.loads(S.screen_block_sparse("layer3", 0.5, out_dir=tmp_path, log=lambda s: None).read_text())
    assert set(read) <= {"train", "val-stop"}
    # the three best before training: ratios 0.1, 0.02, 0.05, each with group-lasso 0 and 1e-5
    assert [(r, g) for r, g, s in trained[:6]] == [(0.1, 0.0), (0.1, 1e-5), (0.02, 0.0), (0.02, 1e-5),
                                                   (0.05, 0.0), (0.05, 1e-5)]
    assert [s for *_, s in trained] == [150] * 6 + [300] * 3
    assert sc["pick"] == dict(mode="global", block_size=2, ratio=0.1, bits=2, group_lasso_weight=1e-5)


def test_halving_keeps_the_best_each_round_and_resumes_arm_by_arm(tmp_path):
    """Six arms, rounds of 2 and 4 steps, keep 3 (lowest score first): by hand, round 0 keeps c, e, a;
    a run killed at its fourth arm resumes there, trains nothing twice and ends as an unbroken one."""
    score = {"a": 3.0, "b": 5.0, "c": 1.0, "d": 4.0, "e": 2.0, "f": 6.0}
    trained = []

    def run(arm, steps):
        trained.append((arm, steps))
        if len(trained) == kill_at:
            raise KeyboardInterrupt
        return dict(objective=score[arm] / steps)
    args = (list("abcdef"), (2, 4), 3, lambda arm: dict(name=arm), run, lambda row: row["objective"])
    kill_at = 0
    rows, ranked = S.halving(*args, tmp_path / "whole.partial.json", log=lambda m: None)
    assert trained == [(a, 2) for a in "abcdef"] + [("c", 4), ("e", 4), ("a", 4)] and ranked == ["c", "e", "a"]
    assert [(r["round"], r["steps"], r["name"]) for r in rows[6:]] == [(1, 4, "c"), (1, 4, "e"), (1, 4, "a")]
    trained.clear()
    kill_at, part = 4, tmp_path / "cut.partial.json"
    with pytest.raises(KeyboardInterrupt):
        S.halving(*args, part, log=lambda m: None)
    assert [r["name"] for r in json.loads(part.read_text())] == ["a", "b", "c"]
    trained.clear()
    kill_at = 0
    again, ranked2 = S.halving(*args, part, log=lambda m: None)
    assert [a for a, _ in trained] == ["d", "e", "f", "c", "e", "a"] and again == rows and ranked2 == ranked
    assert S.halving([], (2, 4), 3, *args[3:], tmp_path / "none.json", log=lambda m: None) == ([], [])


@pytest.mark.parametrize("ranked, finals", [
    # the bottleneck's round 2 at lambda 3.2 after layer3 (docs/protocol_v2.md): the two hybrids led, joint third
    ([("hybrid", 8), ("hybrid", 24), ("joint", 8)], [("hybrid", 8), ("joint", 8)]),
    ([("joint", 8), ("hybrid", 8), ("joint", 24)], [("joint", 8), ("hybrid", 8)]),
    ([("joint", 8), ("joint", 24), ("joint", 16)], [("joint", 8), ("joint", 24)]),  # one kind: the second best
    ([("joint", 8)], [("joint", 8)]),
    ([], []),
])
def test_the_finalists_are_the_best_arm_and_the_best_of_another_kind(ranked, finals):
    assert S.finalists(ranked, lambda arm: arm[0]) == finals


def _final_screen(monkeypatch, tmp_path, split_at):
    """screen_bottleneck with its arms, its finalists' runs and their scores faked: round 2 ranks
    hybrid 8 < hybrid 24 < joint 8 (objective), and the full budget ranks joint 8 first."""
    monkeypatch.setattr(S, "load_dataset", lambda name, split, subset=None: None)
    stop = TensorDataset(torch.zeros(20, 1, 28, 28), torch.zeros(20, dtype=torch.long))
    monkeypatch.setattr(S, "stopping_data", lambda dataset, subset=None: stop)
    short = {("joint", 8): 0.9, ("joint", 24): 3.0, ("two-stage", 8): 2.0, ("two-stage", 24): 5.0,
             ("hybrid", 8): 0.5, ("hybrid", 24): 0.7}
    full = {("joint", 8): 0.2, ("hybrid", 8): 0.3}
    trained = []
    monkeypatch.setattr(S, "_arm", lambda split_at, recipe, width, *a: (trained.append((recipe, width, a[1])), (None, (recipe, width)))[1])

    def train_run(split_at, setting, seed, dataset, out_dir, state_dir, budget, rung, select, **k):
        assert select is False and budget == S.BUDGET.replace(steps=S.FINAL_ROUND["steps"]) and seed == 0 and rung == 0.8
        trained.append((setting["recipe"], setting["latent_channels"], budget.steps))
        path = Path(out_dir) / f"{S.run_name(split_at, setting, seed)}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dict(setting=setting, weights=path.stem + ".pt", bottleneck=path.stem + ".bottleneck.pt")))
        for f in (path.stem + ".pt", path.stem + ".bottleneck.pt", path.stem + ".bottleneck.json"):
            path.with_name(f).write_bytes(b"w")  # what a finished run leaves beside its card
        return path
    monkeypatch.setattr(S, "train_run", train_run)
    monkeypatch.setattr(S, "load_run", lambda path: (None, ("full", *[json.loads(Path(path).read_text())["setting"][k]
                                                                        for k in ("recipe", "latent_channels")]), None))

    def measure(model, bn, data):
        assert data is stop  # every val-stop image
        ce = full[bn[1:]] if bn[0] == "full" else short[bn]
        return dict(accuracy=0.9, cross_entropy=ce, bpp=0.0, n_images=2500, correct=None)
    monkeypatch.setattr(S, "measure", measure)
    return json.loads(S.screen_bottleneck(split_at, 0.8, out_dir=tmp_path, log=lambda m: None).read_text()), trained


def test_from_v2_3_a_screen_ends_with_two_finalists_at_the_full_budget(monkeypatch, tmp_path):
    """At layer2 (v2.3): the best after 300 steps (hybrid 8) and the best of another recipe (joint 8, third)
    trained as rungs' runs; the full budget ranks joint first, so joint is the pick and its run the rung's."""
    sc, trained = _final_screen(monkeypatch, tmp_path, "layer2")
    assert [s for *_, s in trained] == [150] * 6 + [300] * 3 + [S.BUDGET.steps] * 2
    assert [t[:2] for t in trained[-2:]] == [("hybrid", 8), ("joint", 8)]
    assert sc["pick"] == dict(recipe="joint", latent_channels=8, lmbda=0.8, stride=2)
    assert sc["final_run"] == "screens/final/bottleneck_layer2_joint_M8_lmbda0.8_seed0.json"
    assert [(r["round"], r["steps"], r["recipe"]) for r in sc["rows"][-2:]] == [(2, 1800, "hybrid"), (2, 1800, "joint")]
    # the walk's next step promotes that run instead of training the pick again
    monkeypatch.setattr(P, "ladder", lambda family, walked: ([0.8], 0.8))
    monkeypatch.setattr(P, "reference", lambda *a, **k: {})
    step = P.next_step("layer2", "bottleneck", out_dir=tmp_path, v1_dir=tmp_path)
    assert step["final_run"] == str(tmp_path / sc["final_run"]) and step["setting"] == sc["pick"]
    monkeypatch.setattr(P, "next_step", lambda *a, **k: step)
    monkeypatch.setattr(P, "promote", lambda final, out_dir: ("promoted", Path(final).name))
    monkeypatch.setattr(P, "train_run", lambda *a, **k: pytest.fail("the pick was trained again"))
    assert P.run_next("layer2", out_dir=tmp_path, log=lambda m: None) == ("promoted", Path(sc["final_run"]).name)


def test_a_finalist_whose_weights_did_not_outlive_its_session_is_trained_again(monkeypatch, tmp_path):
    """Weights are committed only where they ship: a screen resumed on a fresh machine keeps a finalist
    whose files are there, trains again one that has only its card, and a pick whose final run lost its
    files is trained again as the rung's run (not promoted from a card alone)."""
    final = tmp_path / "screens" / "final"
    final.mkdir(parents=True)
    kept, lost = (final / f"bottleneck_layer2_{r}_M8_lmbda0.8_seed0.json" for r in ("hybrid", "joint"))
    for card in (kept, lost):
        card.write_text(json.dumps(dict(setting=dict(recipe=card.name.split("_")[2], latent_channels=8),
                                        weights=card.stem + ".pt", bottleneck=card.stem + ".bottleneck.pt")))
    for f in (".pt", ".bottleneck.pt", ".bottleneck.json"):
        kept.with_name(kept.stem + f).write_bytes(b"w")  # the hybrid finalist's files; the joint one kept only its card
    sc, trained = _final_screen(monkeypatch, tmp_path, "layer2")
    assert [t[:2] for t in trained[9:]] == [("joint", 8)]  # hybrid 8's run was kept, joint 8's trained again
    assert sc["final_run"] == "screens/final/" + lost.name and (final / (lost.stem + ".pt")).exists()
    monkeypatch.setattr(P, "ladder", lambda family, walked: ([0.8], 0.8))
    monkeypatch.setattr(P, "reference", lambda *a, **k: {})
    assert "final_run" in P.next_step("layer2", "bottleneck", out_dir=tmp_path, v1_dir=tmp_path)
    (final / (lost.stem + ".pt")).unlink()  # the session ends before its promotion
    step = P.next_step("layer2", "bottleneck", out_dir=tmp_path, v1_dir=tmp_path)
    assert "final_run" not in step and step["action"] == "train" and step["setting"] == sc["pick"]


def test_the_final_round_trains_for_the_registered_steps(monkeypatch, tmp_path):
    """The finalists' length is ``protocol.FINAL_ROUND["steps"]`` (registered as the budget's 1,800), read
    from there: registered as 7, they train and are recorded for 7 steps with the rest of the budget."""
    assert S.final_budget() == S.BUDGET and S.FINAL_ROUND["steps"] == 1800
    monkeypatch.setattr(S, "FINAL_ROUND", dict(S.FINAL_ROUND, steps=7))
    sc, trained = _final_screen(monkeypatch, tmp_path, "layer2")
    assert [s for *_, s in trained[-2:]] == [7, 7] and [r["steps"] for r in sc["rows"][-2:]] == [7, 7]
    assert S.final_budget().lr == S.BUDGET.lr and S.final_budget().batch_size == S.BUDGET.batch_size


def test_layer3s_screens_ran_under_v2_2_and_have_no_final_round(monkeypatch, tmp_path):
    sc, trained = _final_screen(monkeypatch, tmp_path, "layer3")
    assert [s for *_, s in trained] == [150] * 6 + [300] * 3
    assert sc["pick"]["recipe"] == "hybrid" and sc["final_run"] is None
    assert W.walk_version("layer3", "bottleneck") == "v2.2" and W.walk_version(None, "webp-finetuned") == "v2.2"
    assert W.walk_version("layer2", "block-sparse") == W.walk_version("layer1", "bottleneck") == "v2.5"


def test_from_v2_3_block_sparses_finalists_are_of_two_configurations(monkeypatch, tmp_path):
    """At layer2: round 2 ranks ratio 0.1 with group-lasso, 0.1 without, 0.02 with; the finalists are the
    first and 0.02 (another configuration, not the same one without group-lasso), each trained as a
    rung's run without val-select; the full budget ranks 0.02 first, so it is the pick."""
    from blocksparse.codec import CodecConfig
    real = S.load_dataset
    monkeypatch.setattr(S, "load_dataset", lambda name, split, subset=None: real(name, split, subset=16))
    stop = real("fashion-mnist", "val-stop", subset=20)
    monkeypatch.setattr(S, "stopping_data", lambda dataset, subset=None: stop)
    monkeypatch.setattr(S, "load_pretrained", lambda dataset, split_at: "shipped")
    cfgs = [CodecConfig(2, r, "global", 2) for r in (0.02, 0.05, 0.1)]
    monkeypatch.setattr(S, "candidates_under", lambda model, configs, data, rung, fit_data: [(c, 0.1) for c in cfgs])
    monkeypatch.setattr(S, "frontier_of", lambda rated: [c for c, _ in rated])
    untrained = {0.02: 0.7, 0.05: 0.6, 0.1: 0.8}
    monkeypatch.setattr(S, "finetune", lambda model, cfg, budget, dataset, group_lasso_weight, **kw: (
        ("tuned", cfg.ratio, group_lasso_weight), []))
    monkeypatch.setattr(S, "evaluate", lambda model, cfg, data, rate_sample=None: dict(
        accuracy=untrained[cfg.ratio] if model == "shipped" else untrained[model[1]] + (0.05 if model[2] else 0)))
    finals = []

    def train_v1(family, setting, seed, split_at, dataset, out_dir, state_dir, budget, rung, name, select, **k):
        assert (family, seed, split_at, rung, select, budget) == ("block-sparse", 0, "layer2", 0.5, False,
                                                                  S.BUDGET.replace(steps=S.FINAL_ROUND["steps"]))
        finals.append((setting["ratio"], setting["group_lasso_weight"]))
        p = Path(out_dir) / f"{name}.json"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(dict(setting=setting, protocol=dict(stop="val-stop"))))
        return p
    monkeypatch.setattr(S, "train_run_v1", train_v1)
    monkeypatch.setattr(S, "load_run_v1", lambda p: (("full", json.loads(Path(p).read_text())["setting"]["ratio"]),
                                                     json.loads(Path(p).read_text()), None))
    monkeypatch.setattr(S, "scored", lambda model, data, family, setting, codebook, dataset: dict(
        accuracy={0.1: 0.90, 0.02: 0.92}[model[1]]) if data is stop else pytest.fail("not val-stop"))
    sc = json.loads(S.screen_block_sparse("layer2", 0.5, out_dir=tmp_path, log=lambda s: None).read_text())
    assert finals == [(0.1, 1e-5), (0.02, 1e-5)]
    assert sc["pick"] == dict(mode="global", block_size=2, ratio=0.02, bits=2, group_lasso_weight=1e-5)
    assert sc["final_run"] == "screens/final/block-sparse_layer2_rung0.5_global_B2_r0.02_2b_gl1e-05_seed0.json"
    assert [(r["round"], r["steps"], r["accuracy"]) for r in sc["rows"][-2:]] == [(2, 1800, 0.90), (2, 1800, 0.92)]
