"""The answer from cards (blocksparse.answer): the ladder walk, the plan, the rows; test results never choose."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocksparse import answer, protocol
from blocksparse.results import pack_correct

N_VAL, N_TEST = 2500, 1000


def _correct(acc, n, seed):
    rng = np.random.default_rng(seed)
    c = np.zeros(n, bool)
    c[rng.permutation(n)[:round(acc * n)]] = True
    return c


def _card(family, seed, val, test=None, split_at=None, rung=None, setting=None, path="x.json"):
    card = dict(family=family, seed=seed, split_at=split_at, rung=rung, setting=setting or {}, weights="w.pt",
                path=path, val_select=dict(accuracy=float(val.mean()), correct=pack_correct(val), bpp=rung))
    if test is not None:
        card["test"] = dict(accuracy=float(test.mean()), correct=pack_correct(test), bpp=rung)
    return card


def _reference(seeds=(0,), tested=True):
    ref_val = _correct(0.93, N_VAL, 1)
    return [_card("reference", s, ref_val, _correct(0.93, N_TEST, 10 + s) if tested else None, path=f"ref{s}.json")
            for s in seeds], ref_val


def test_the_reference_comes_first():
    assert answer.plan([]) == [dict(action="train", family="reference", split_at=None, seed=0)]


def test_the_ladder_is_walked_up_to_the_first_rung_within_one_point_on_val_select():
    refs, ref_val = _reference()
    far = ref_val.copy()
    far[np.flatnonzero(ref_val)[:100]] = False  # 4 points below on val-select
    near = ref_val.copy()
    near[np.flatnonzero(ref_val)[:5]] = False  # 0.2 points below
    ladder = protocol.LADDERS["block-sparse"]
    great_test = _correct(0.99, N_TEST, 3)  # a test result must not rescue a rung that fails on val-select
    cards = refs + [_card("block-sparse", 0, far, great_test, "layer1", ladder[0], dict(ratio=0.001)),
                    _card("block-sparse", 0, near, None, "layer1", ladder[1], dict(ratio=0.002), "bs.json")]
    op, rung = answer.walk(cards, "block-sparse", "layer1")
    assert op["rung"] == ladder[1] and rung is None
    steps = answer.plan(cards, screened={("layer2", ladder[0])})
    assert dict(action="train", family="block-sparse", split_at="layer1", setting=dict(ratio=0.002), rung=ladder[1],
                seed=1) in steps
    assert dict(action="test", card="bs.json") in steps
    assert dict(action="train", family="block-sparse", split_at="layer2", rung=ladder[0], seed=0) in steps
    assert dict(action="screen", family="block-sparse", split_at="layer3", rung=ladder[0]) in steps
    assert dict(action="train", family="reference", split_at=None, seed=2) in steps


def test_a_tested_row_pairs_each_seed_with_the_reference_run_of_its_seed():
    refs, ref_val = _reference(protocol.SEEDS)
    rung = protocol.LADDERS["webp-finetuned"][0]
    runs = [_card("webp-finetuned", s, ref_val, _correct(0.92, N_TEST, 20 + s), None, None, dict(quality=rung),
                  f"w{s}.json") for s in protocol.SEEDS]
    table = answer.answer_table(refs + runs)
    assert list(table.columns) == list(answer.ANSWER_COLUMNS) and len(table) == 12
    rows = table[table["family"] == "webp-finetuned"]
    assert (rows["status"] == "tested").all() and (rows["seeds"] == 3).all()
    want = np.mean([_correct(0.92, N_TEST, 20 + s).mean() - refs[s]["test"]["accuracy"] for s in protocol.SEEDS])
    assert rows["diff"].iloc[0] == pytest.approx(want)
    assert rows["diff_lo"].iloc[0] < want < rows["diff_hi"].iloc[0]
    assert bool(rows["within"].iloc[0]) == (rows["diff_lo"].iloc[0] >= -0.01)
    assert table[table["family"] == "block-sparse"]["status"].str.startswith("pending").all()
    table.loc[table["family"] == "webp-finetuned", "bpp"] = 2.5
    head = answer.render_answer(table, 6).split("\n\n")[0].splitlines()  # the tested rows lead, one line per split
    assert head[0].startswith("**So far** (9 of 12 rows pending)") and len(head) == 4
    for line, split_at in zip(head[1:], protocol.SPLIT_POINTS):
        assert line.startswith(f"- after {split_at}: webp-finetuned at 2.500 bpp: ") and line.endswith("3 seeds); 3 families pending")
        assert ("not within one point" in line) == (not bool(rows["within"].iloc[0]))
    settled = table.assign(status=table["status"].where(table["family"] == "webp-finetuned", "no rung within one point"))
    settled.loc[(settled["split_at"] == "layer2") & (settled["family"] == "webp-finetuned"), "status"] = "no rung within"
    three = (settled["split_at"] == "layer3")
    bs = three & (settled["family"] == "block-sparse")
    webp = settled[three & (settled["family"] == "webp-finetuned")].iloc[0]
    for col in ("status", "seeds", "accuracy", "accuracy_lo", "accuracy_hi", "diff", "diff_lo", "diff_hi"):
        settled.loc[bs, col] = webp[col]
    settled.loc[bs, ["bpp", "within"]] = [0.4, True]  # a cheaper row leads its split
    head = answer.headline(settled).splitlines()
    assert head[3].startswith("- after layer3: block-sparse at 0.400 bpp: within one point (")
    assert head[3].count("; webp-finetuned at ") == 1
    assert head[0].startswith("**The answer** (every row settled)") and "pending" not in "".join(head)
    assert head[2] == "- after layer2: no family within one point on val-select"


def test_tested_models_counts_each_card_with_a_test_once(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(dict(test_accuracy=0.9)))
    (tmp_path / "b.json").write_text(json.dumps(dict(family="x", test=dict(accuracy=0.9))))
    (tmp_path / "c.json").write_text(json.dumps(dict(family="x", val_select={})))
    assert answer.tested_models([tmp_path]) == 2


def test_the_rendered_answer_heads_each_split_with_its_cost_and_shows_the_encoders_latency():
    refs, ref_val = _reference(protocol.SEEDS)
    op = _card("webp-finetuned", 0, ref_val, None, None, None, dict(quality=0), "w0.json")
    assert answer.operating_points(refs + [op]) == {(s, "webp-finetuned"): op for s in protocol.SPLIT_POINTS}
    assert answer.shipped(refs + [op]) == {"ref0.json", "w0.json"}
    cost = {("layer2", "block-sparse"): dict(head_macs=2.5e8, head_params=6.7e5, head_ms=1.234, encoder_ms=0.5,
                                            encoder_macs=1e5, latency_machine="box"),
            ("layer2", "webp-finetuned"): dict(head_macs=0, head_params=0, head_ms=0.0, encoder_ms=0.25)}
    text = answer.render_answer(answer.answer_table(refs + [op], cost), 7)
    assert "7 models evaluated on the test set" in text and "median ms on box" in text
    assert "**After layer2** (the head before it: 250.00 million MACs, 0.67 million parameters, 1.234 ms)" in text
    layer2 = text.split("**After layer2**")[1].split("**After layer3**")[0]
    row = [line for line in layer2.splitlines() if line.startswith("| webp-finetuned")][0]
    assert row.rstrip("| ").endswith("0.250") and "**After layer1**\n" in text  # no cost given: a bare heading


def test_a_ladder_that_misses_everywhere_says_which_rung_came_closest_on_val_select():
    refs, ref_val = _reference()
    cards = list(refs)
    ladder = protocol.LADDERS["webp"]
    for i, q in enumerate(ladder):
        val = ref_val.copy()
        val[np.flatnonzero(ref_val)[:30 + 7 * (len(ladder) - 1 - i)]] = False  # ... 1.48, then 1.2 points below at the top
        cards.append(_card("webp", 0, val, None, None, None, dict(quality=q), f"webp{q}.json"))
    assert answer.walk(cards, "webp", None) == (None, None)
    status = answer.answer_table(cards).query("family == 'webp'")["status"]
    top = protocol.LADDERS["webp"][-1]
    # by hand: the top rung loses 30 of 2,500 images and gains none: -1.20 points
    assert (status.str.startswith(f"no rung within one point (closest on val-select: rung {top}, -1.20 [")).all()


def test_the_shipped_model_is_the_second_reference_paired_with_every_seed():
    refs, ref_val = _reference(protocol.SEEDS)
    runs = [_card("webp-finetuned", s, ref_val, _correct(0.92, N_TEST, 20 + s), None, None, dict(quality=0),
                  f"w{s}.json") for s in protocol.SEEDS]
    shipped_test = _correct(0.925, N_TEST, 99)
    shipped = dict(family=answer.SHIPPED_MODEL, seed=0, split_at=None, setting={}, path="s.json",
                   test=dict(accuracy=float(shipped_test.mean()), correct=pack_correct(shipped_test)))
    assert answer.answer_table(refs + runs)["diff_shipped"].isna().all()  # not tested yet: empty, not made up
    row = answer.answer_table(refs + runs + [shipped]).query("family == 'webp-finetuned'").iloc[0]
    want = np.mean([_correct(0.92, N_TEST, 20 + s).mean() for s in protocol.SEEDS]) - shipped_test.mean()
    assert row["diff_shipped"] == pytest.approx(want) and row["diff_shipped_lo"] < want < row["diff_shipped_hi"]
    assert row["diff"] != pytest.approx(row["diff_shipped"])  # the first reference is still the fine-tuned one
    text = answer.references(refs + runs + [shipped])
    ref_mean = np.mean([r["test"]["accuracy"] for r in refs])
    assert text.startswith(f"References on 1,000 test images: the fine-tuned reference {100 * ref_mean:.2f} [")
    assert f"the shipped model {100 * shipped_test.mean():.2f} [" in text
    assert f"fine-tuned minus shipped {100 * (ref_mean - shipped_test.mean()):+.2f} [" in text
    assert answer.references([]) == "No reference tested yet."
    assert "shipped-model" not in answer.answer_table(refs + [shipped])["family"].values  # a reference, not a row


def test_settings_are_shown_in_words_and_the_csv_keeps_the_json():
    bs = '{"bits": 2, "block_size": 4, "group_lasso_weight": 1e-05, "mode": "global", "ratio": 0.05}'
    assert answer.setting_words(bs) == "global, B=4, ratio 0.05, 2 bits, group-lasso 1e-05"
    assert answer.setting_words(dict(mode="channel", block_size=2, ratio=0.5, bits=4, group_lasso_weight=0.0)) \
        == "channel, B=2, ratio 0.5, 4 bits, no group-lasso"
    assert answer.setting_words('{"stride": 4, "latent_channels": 8, "lmbda": 0.05}') == "lambda=0.05, 8 channels, stride 4"
    assert answer.setting_words({"quality": 90, "method": 6}) == "q=90, method=6"
    assert answer.setting_words(None) == answer.setting_words(float("nan")) == ""


def test_answer_csv_names_its_weights_relative_to_the_repository_and_they_load_from_any_folder(tmp_path, monkeypatch):
    import torch
    from blocksparse.model import load_pretrained
    from blocksparse.runtime import ROOT
    table = pd.read_csv(ROOT / "data" / "results" / "answer.csv")
    named = table.dropna(subset=["weights"])
    for w in named["weights"]:
        assert not Path(w).is_absolute() and (ROOT / w).is_file(), w
    if len(named):
        r = named.iloc[0]
        want = load_pretrained("fashion-mnist", r["split_at"], weights=ROOT / r["weights"]).state_dict()
        monkeypatch.chdir(tmp_path)  # e.g. a notebook's folder
        got = load_pretrained("fashion-mnist", r["split_at"], weights=r["weights"]).state_dict()
        assert all(torch.equal(got[k], want[k]) for k in want)
        with pytest.raises(ValueError, match="weights: no file"):
            load_pretrained("fashion-mnist", r["split_at"], weights="data/answer/none.pt")


def test_only_references_and_operating_points_seeds_are_reported():
    refs, ref_val = _reference(protocol.SEEDS)
    s = dict(mode="global", block_size=2, ratio=0.01, bits=2)
    miss = _card("block-sparse", 0, np.zeros(N_VAL, bool), None, "layer2", 0.25, s, "miss.json")
    hit = _card("block-sparse", 0, ref_val, None, "layer2", 0.5, s, "hit.json")
    cards = refs + [miss, hit]
    assert answer.reported(refs[1], cards) and answer.reported(hit, cards)
    assert answer.reported(hit | dict(seed=2), cards)  # another seed of the operating point
    assert not answer.reported(miss, cards)  # a rung the rule passed over
    assert not answer.reported(hit | dict(split_at="layer3"), cards)  # the same setting at another split
    assert not answer.reported(hit | dict(setting=s | dict(bits=4)), cards)


def test_a_run_trained_with_another_budget_than_its_reference_is_not_compared():
    refs, ref_val = _reference()
    refs[0]["budget"] = protocol.BUDGET.asdict()
    card = _card("bottleneck", 0, ref_val, None, "layer2", 3.2, dict(lmbda=3.2), "b.json")
    card["budget"] = protocol.BUDGET.asdict() | dict(steps=1200)
    with pytest.raises(ValueError, match="one budget"):
        answer.walk(refs + [card], "bottleneck", "layer2")
    card["budget"] = protocol.BUDGET.asdict()
    assert answer.walk(refs + [card], "bottleneck", "layer2") == (card, None)


def test_the_ladder_table_holds_every_rung_on_val_select_and_marks_the_operating_point():
    refs, ref_val = _reference()
    s = dict(mode="global", block_size=2, ratio=0.01, bits=2)
    low = ref_val.copy()
    low[np.flatnonzero(ref_val)[:50]] = False  # 50 of 2,500 images lost: -2.00 points
    miss = _card("block-sparse", 0, low, None, "layer2", 0.25, s, "miss.json")
    hit = _card("block-sparse", 0, ref_val, None, "layer2", 0.5, s | dict(ratio=0.02), "hit.json")
    webp = _card("webp", 0, low, None, None, None, dict(quality=0), "w0.json")
    webp["val_select"] |= dict(bpp=1.5, bpp_payload=1.25)
    t = answer.ladder_table(refs + [hit, miss, webp])
    bs = t[(t["split_at"] == "layer2") & (t["family"] == "block-sparse")]
    assert list(bs["rung"]) == [0.25, 0.5] and list(bs["operating_point"]) == [False, True]
    assert bs["diff"].iloc[0] == pytest.approx(-0.02) and bs["diff"].iloc[1] == 0 and list(bs["within"]) == [False, True]
    w = t[t["family"] == "webp"]
    assert list(w["split_at"]) == list(protocol.SPLIT_POINTS) and (w["bpp"] == 1.25).all()  # the payload, under every split
    assert answer.ladder_table(refs[:0] + [hit]).empty


def test_the_ladder_table_bootstraps_each_rung_once(monkeypatch):
    refs, ref_val = _reference()
    s = dict(mode="global", block_size=2, ratio=0.01, bits=2)
    cards = refs + [_card("block-sparse", 0, ref_val, None, "layer2", 0.25, s, "a.json"),
                    _card("webp", 0, ref_val, None, None, None, dict(quality=0), "w.json")]
    calls = []
    real = answer.val_select_pair
    monkeypatch.setattr(answer, "val_select_pair", lambda c, r: calls.append(c["path"]) or real(c, r))
    t = answer.ladder_table(cards)
    assert len(t) == 1 + len(protocol.SPLIT_POINTS)  # webp's one rung shown under every split
    assert sorted(calls) == ["a.json", "w.json"]  # yet paired once each, for the rows and the walks


def test_the_ladder_figure_draws_one_panel_per_split_and_rings_each_operating_point():
    import matplotlib
    matplotlib.use("Agg")
    from blocksparse import plots
    refs, ref_val = _reference()
    hit = _card("block-sparse", 0, ref_val, None, "layer2", 0.25, dict(mode="global", block_size=2, ratio=0.01, bits=2), "h.json")
    fig = plots.plot_ladders(answer.ladder_table(refs + [hit]))
    assert [a.get_title() for a in fig.axes] == [f"after {s}" for s in protocol.SPLIT_POINTS]
    rings = [line for line in fig.axes[1].lines if line.get_markersize() == 11 and len(line.get_xdata())]
    assert len(rings) == 1 and list(rings[0].get_xdata()) == [0.25]  # the card's rate (its rung, in these cards)


def test_differences_are_shown_signed_and_accuracies_plain():
    r = pd.Series(dict(diff=-0.0023, diff_lo=-0.0048, diff_hi=0.0003, accuracy=0.9342, accuracy_lo=0.9295, accuracy_hi=0.9389))
    assert answer._with_interval(r, "diff") == "-0.23 [-0.48, +0.03]"
    assert answer._with_interval(r, "accuracy") == "93.42 [92.95, 93.89]"
    assert answer._with_interval(pd.Series(dict(diff=None, diff_lo=None, diff_hi=None)), "diff") == ""
