"""The exploratory record as tables: known inputs, the rows and values they must give."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocksparse import exploratory as ex
from blocksparse.results import model_key, save_results, to_frame


def _row(table, **match):
    """The one row of ``table`` matching every column value in ``match``."""
    m = np.ones(len(table), bool)
    for k, v in match.items():
        m &= (table[k] == v).to_numpy(bool)
    assert m.sum() == 1, f"{m.sum()} rows match {match}"
    return table[m].iloc[0]


def _models():
    rows = [dict(method="blocksparse", split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2,
                 coder="ans", finetuned=True, train="all", seed=s, accuracy=a, accuracy_lo=a - 0.005,
                 accuracy_hi=a + 0.005, n_images=10000, val_accuracy=0.9, bpp=b, bpp_self_contained=0.9,
                 weights=f"data/frontier/m_seed{s}.pt") for s, a, b in ((0, 0.9200, 0.62), (1, 0.9150, 0.64))]
    paired = [dict(weights=f"data/frontier/m_seed{s}.pt", reference_accuracy=0.9322, difference=d, lo=lo, hi=hi,
                   within=False) for s, d, lo, hi in ((0, -0.0122, -0.016, -0.008), (1, -0.0172, -0.021, -0.013))]
    return to_frame(rows), paired


def test_models_table_one_row_per_seed_with_its_paired_test():
    models, paired = _models()
    t = ex.models_table(models, paired)
    assert list(t["seed"]) == [0, 1] and list(t["accuracy"]) == [92.0, 91.5]
    assert list(t["vs_uncompressed"]) == ["-1.22 [-1.60, -0.80]", "-1.72 [-2.10, -1.30]"]
    assert t["interval"].iloc[0] == "[91.50, 92.50]"
    with pytest.raises(ValueError, match="paired"):
        ex.models_table(models, paired[:1])
    assert ex.models_table(to_frame([]), []).empty


def test_trained_table_means_seeds_and_within_needs_every_seed():
    models, paired = _models()
    t = ex.trained_table(models, paired)
    r = t.iloc[0]
    assert (r["seeds"], r["bpp"], r["accuracy"]) == (2, 0.63, 91.75)
    assert r["interval"] == "[91.00, 92.50]"  # the seeds' widest span
    assert r["vs_uncompressed"] == "-1.47 [-2.10, -0.80]" and not r["within"]
    half = [paired[0] | dict(within=True), paired[1]]
    assert not ex.trained_table(models, half)["within"].iloc[0]
    both = [p | dict(within=True) for p in paired]
    assert ex.trained_table(models, both)["within"].iloc[0]
    assert ex.trained_table(None).empty


def _bn_rows():
    return [dict(method="learned-bottleneck", split_at="layer1", coder="ans", finetuned=True, seed=0,
                 rate_weight=w, accuracy=a, accuracy_lo=a - 0.005, accuracy_hi=a + 0.005, n_images=10000,
                 val_accuracy=a + 0.001, bpp=b, stream_bytes=b * 98, weights=f"data/frontier/bn_{w:g}.pt")
            for w, a, b in ((0.2, 0.925, 1.20), (3.2, 0.90, 0.30), (0.8, 0.92, 0.60))]


def _bn_paired(within):
    return [dict(weights=f"data/frontier/bn_{w:g}.pt", reference_accuracy=0.9322, difference=d, lo=d - 0.004,
                 hi=d + 0.004, within=k) for (w, d), k in zip(((3.2, -0.032), (0.8, -0.012), (0.2, -0.007)), within)]


def test_bottleneck_table_in_order_of_rate_with_paired_tests():
    t = ex.bottleneck_table(to_frame(_bn_rows()), _bn_paired([False, True, True]))
    assert list(t["model"]) == ["lambda=3.2", "lambda=0.8", "lambda=0.2"]  # by rate, not by file order
    assert _row(t, model="lambda=0.8")["vs_uncompressed"] == "-1.20 [-1.60, -0.80]"
    assert list(t["within"]) == [False, True, True]
    with pytest.raises(ValueError, match="paired"):
        ex.bottleneck_table(to_frame(_bn_rows()), _bn_paired([True, True, True])[:2])


def test_bottlenecks_at_two_splits_are_kept_apart():
    rows = _bn_rows()
    later = [r | dict(split_at="layer3", bpp=r["bpp"] / 2, stream_bytes=r["stream_bytes"] / 2,
                      weights=r["weights"].replace("bn_", "bn3_")) for r in rows]
    paired = _bn_paired([False, True, True])
    paired += [p | dict(weights=p["weights"].replace("bn_", "bn3_")) for p in paired]
    cards = {Path(r["weights"]).stem: dict(schedule=dict(steps=1200),
                                           architecture=dict(stride=2 if "bn3_" in r["weights"] else 4))
             for r in rows + later}
    frame = ex.bottleneck_frame(to_frame(rows + later), cards)
    t = ex.bottleneck_table(frame, paired)
    assert "layer1, lambda=0.8, stride 4" in set(t["model"]) and "layer3, lambda=0.8, stride 2" in set(t["model"])
    answer = ex.trained_table(None, [], frame, paired)
    # the method names the split; the setting does not again
    a3 = _row(answer, method="learned bottleneck, ResNet frozen (layer3)", setting="lambda=0.8, stride 2")
    a1 = _row(answer, method="learned bottleneck, ResNet frozen (layer1)", setting="lambda=0.8, stride 4")
    assert (a3["bpp"], a3["accuracy"], a1["bpp"]) == (0.3, 92.0, 0.6)


def test_bottleneck_seeds_are_one_model_and_a_recipe_another():
    rows = _bn_rows()
    rows += [rows[2] | dict(seed=1, accuracy=0.91, accuracy_lo=0.905, accuracy_hi=0.915, bpp=0.62,
                            weights="data/frontier/bn_0.8_s1.pt"),
             rows[2] | dict(accuracy=0.88, accuracy_lo=0.875, accuracy_hi=0.885, bpp=0.40,
                            weights="data/frontier/bn_0.8_plr.pt")]
    paired = _bn_paired([False, True, True]) + [
        dict(weights=w, reference_accuracy=0.9322, difference=d, lo=d - 0.004, hi=d + 0.004, within=k)
        for w, d, k in (("data/frontier/bn_0.8_s1.pt", -0.022, False), ("data/frontier/bn_0.8_plr.pt", -0.05, False))]
    cards = {Path(r["weights"]).stem: dict(schedule=dict(steps=1200, **({"prior_lr": 0.01} if "plr" in r["weights"]
                                                                         else {})), architecture=dict(stride=4))
             for r in rows}
    frame = ex.bottleneck_frame(to_frame(rows), cards)
    answer = ex.trained_table(None, [], frame, paired)
    two = _row(answer, setting="lambda=0.8")
    assert (two["seeds"], two["bpp"], two["accuracy"], two["within"]) == (2, 0.61, 91.5, False)  # one seed is not
    assert _row(answer, setting="lambda=0.8, prior lr 0.01")["accuracy"] == 88.0
    with pytest.raises(ValueError, match="cards"):
        ex.bottleneck_frame(to_frame(rows), {})


def test_codec_models_table_sets_fine_tuned_beside_untuned_on_the_same_images():
    rows = [dict(method="webp", quality=q, finetuned=True, train="all", seed=0, accuracy=a, accuracy_lo=a - 0.01,
                 accuracy_hi=a + 0.01, n_images=10000, val_accuracy=0.9, bpp=b, stream_bytes=b * 98)
            for q, a, b in ((5, 0.90, 1.5), (0, 0.88, 1.0))]
    grid = to_frame([dict(method="webp", quality=q, accuracy=a, n_images=n, bpp=b, finetuned=False)
                     for q, a, n, b in ((0, 0.80, 10000, 1.0), (5, 0.85, 10000, 1.5), (0, 0.70, 1000, 1.0))])
    paired = [dict(method="webp", quality=q, seed=0, weights=f"c{q}.json", reference_accuracy=0.93, difference=d,
                   lo=d - 0.01, hi=d + 0.01, within=False) for q, d in ((0, -0.05), (5, -0.03))]
    t = ex.codec_models_table(to_frame(rows), paired, grid)
    q0 = _row(t, quality=0)
    assert (q0["untuned"], q0["accuracy"], q0["vs_uncompressed"]) == (80.0, 88.0, "-5.00 [-6.00, -4.00]")  # not 70
    assert _row(t, quality=5)["untuned"] == 85.0
    with pytest.raises(ValueError, match="paired"):
        ex.codec_models_table(to_frame(rows), paired[:1], grid)


def _ablation_rows():
    base = dict(method="blocksparse", split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2,
                finetuned=True, seed=0, n_images=10000, coder="ans")
    runs = (("_tail", "tail", 0.0, 0.0, 0.80), ("_all", "all", 0.0, 0.0, 0.88), ("", "all", 0.5, 0.0, 0.90),
            ("_all_kd_gl", "all", 0.5, 1e-5, 0.895))
    rows = [base | dict(train=t, accuracy=a, accuracy_lo=a - 0.006, accuracy_hi=a + 0.006, val_accuracy=a,
                        bpp=0.6 + gl * 1e4, codebook=f"data/x/layer1_global_B4_r0.005_2b{tag}_seed0.codebook")
            for tag, t, kd, gl, a in runs]
    cards = {f"layer1_global_B4_r0.005_2b{tag}_seed0": dict(schedule=dict(train=t, distill_weight=kd,
                                                                          group_lasso_weight=gl, steps=1200))
             for tag, t, kd, gl, a in runs}
    return rows, cards


def test_ablation_joins_cards_tail_first():
    rows, cards = _ablation_rows()
    frame = ex.ablation_frame(to_frame(rows[::-1]), cards)
    assert sorted(frame["distill_weight"]) == [0.0, 0.0, 0.5, 0.5] and list(frame["steps"]) == [1200] * 4
    t = ex.ablation_table(frame)
    assert list(t["train"]) == ["tail", "all", "all", "all"]
    assert list(t["accuracy"]) == [80.0, 88.0, 90.0, 89.5] and list(t["bpp"]) == [0.6, 0.6, 0.6, 0.7]
    assert t["config"].iloc[0] == "global, B=4, ratio 0.005, 2 bits"
    with pytest.raises(ValueError, match="cards"):
        ex.ablation_frame(to_frame(rows), {})


def test_test_stopping_compares_the_first_best_validation_step_with_the_best_test_step():
    h = [dict(step=s, val_accuracy=v, test_accuracy=t) for s, v, t in
         ((0, 0.5, 0.5), (150, 0.86, 0.87), (300, 0.88, 0.875), (450, 0.88, 0.8925), (600, 0.87, 0.88))]
    t = ex.test_stopping_table(dict(seed=0, history=h, monitor_images=10000))
    assert list(t["step"]) == [300, 450]  # the first of the tied best validations; the best test
    assert list(t["test_accuracy"]) == [87.5, 89.25] and t["optimism"].iloc[1] == 1.75
    with pytest.raises(ValueError, match="test_accuracy"):
        ex.test_stopping_table(dict(history=[dict(step=0, val_accuracy=0.5)]))


def test_load_trained_models_reads_what_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    assert all(v in (None, []) for v in ex.load_trained_models(data=tmp_path).values())
    rows, cards = _ablation_rows()
    save_results(to_frame(rows[:2] + rows[3:]), {}, "ablation")
    save_results(to_frame([rows[2] | dict(weights="data/frontier/m.pt")]), {}, "frontier_models")
    (tmp_path / "ablation").mkdir()
    (tmp_path / "frontier").mkdir()
    for stem, c in cards.items():
        d = tmp_path / ("frontier" if stem.endswith("2b_seed0") else "ablation")
        hist = [dict(step=0, val_accuracy=0.5, test_accuracy=0.5)] if stem.endswith("_all_seed0") else []
        (d / f"{stem}.json").write_text(json.dumps(c | dict(history=hist)))
    got = ex.load_trained_models(data=tmp_path)
    assert len(got["ablation"]) == 4 and set(got["ablation"]["train"]) == {"tail", "all"}  # the shipped run joins
    assert got["test_stopping"]["schedule"]["train"] == "all" and got["bottleneck"] is None
    assert got["weights_removed"] == []
    stem = next(s for s in cards if s.endswith("_all_seed0"))  # its weights leave the tree: its card says so
    (tmp_path / "ablation" / f"{stem}.json").write_text(json.dumps(cards[stem] | dict(history=[], weights_removed="why")))
    assert ex.load_trained_models(data=tmp_path)["weights_removed"] == [f"data/ablation/{stem}.pt"]


def _sweep(split, rows):
    ref = dict(method="uncompressed", split_at=split, accuracy=0.94, n_images=1000,
               bpp={"layer1": 2048.0, "layer2": 1024.0}[split])
    return to_frame([ref] + [dict(method="blocksparse", split_at=split, mode="global", block_size=2, ratio=r,
                                  bits=2, accuracy=a, n_images=1000, bpp=b) for r, a, b in rows])


def test_split_table_per_split_on_the_same_images():
    t = ex.split_table({"layer2": _sweep("layer2", [(0.5, 0.935, 6.0), (0.05, 0.80, 0.9)]),
                        "layer1": _sweep("layer1", [(0.5, 0.925, 20.0), (0.05, 0.50, 1.5)])})
    assert list(t["split_at"]) == ["layer1", "layer2"]
    two = _row(t, split_at="layer2")
    assert (two["values_per_pixel"], two["lowest_bpp_within"], two["best_at_max_bpp"]) == (32.0, 6.0, 80.0)
    assert two["config_within"] == "global, B=2, ratio 0.5, 2 bits"
    one = _row(t, split_at="layer1")
    assert pd.isna(one["lowest_bpp_within"]) and one["config_within"] == "none"  # 92.5% is not within 1 of 94%
    assert ex.split_table({"layer1": _sweep("layer1", [])}).empty
    # picked on validation, not on test: the 4-bit model is more accurate on test, the 2-bit one on validation
    at1 = to_frame([dict(method="blocksparse", split_at="layer1", mode="global", block_size=2, ratio=0.01, bits=b,
                         finetuned=True, seed=0, accuracy=a, val_accuracy=v, n_images=10000, bpp=0.7)
                    for b, a, v in ((2, 0.885, 0.90), (4, 0.89, 0.88))])
    over = to_frame([dict(method="blocksparse", split_at="layer2", mode="global", block_size=2, ratio=0.01, bits=2,
                          finetuned=True, seed=s, accuracy=0.9, val_accuracy=0.9, n_images=10000, bpp=b)
                     for s, b in ((0, 0.8), (1, 1.5))])  # one model: mean 1.15 bpp, over the rate
    t = ex.split_table({"layer2": _sweep("layer2", []), "layer1": _sweep("layer1", [])},
                       models=pd.concat([at1, over], ignore_index=True))
    assert _row(t, split_at="layer1")["finetuned_accuracy"] == 88.5
    assert _row(t, split_at="layer2")["finetuned_seeds"] == 0
    with pytest.raises(ValueError, match="same images"):
        ex.split_table({"layer1": _sweep("layer1", []), "layer2": _sweep("layer2", []).assign(n_images=500)})


def test_trained_table_adds_webp_as_is_by_point_estimate():
    models, paired = _models()
    bn = to_frame(_bn_rows())
    grid = to_frame([dict(method="uncompressed", accuracy=0.9322, n_images=10000, bpp=2048.0)]
                    + [dict(method="webp", quality=q, accuracy=a, n_images=10000, bpp=b, finetuned=False)
                       for q, a, b in ((0, 0.78, 0.995), (70, 0.9241, 2.652), (90, 0.9312, 3.98))])
    t = ex.trained_table(models, paired, bn, _bn_paired([False, True, True]), codec_grid=grid)
    assert list(t["bpp"]) == sorted(t["bpp"])
    q70 = _row(t, method="webp", setting="q=70")  # the lowest rate within one point
    assert q70["vs_uncompressed"] == "-0.81 (point estimate)" and not q70["within"]
    assert _row(t, method="webp", setting="q=0")["vs_uncompressed"] == "-15.22 (point estimate)"  # best at <= 1
    assert "q=90" not in set(t["setting"])


def test_models_of_one_configuration_are_kept_apart_by_recipe():
    base = dict(method="blocksparse", split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2,
                coder="ans", finetuned=True, train="all", n_images=10000, val_accuracy=0.9, bpp_self_contained=0.9)
    runs = [("", 0, 0.0, 1200, 0.90, 0.63), ("", 1, 0.0, 1200, 0.89, 0.63),
            ("_gl", 0, 1e-5, 1800, 0.91, 0.55), ("_gl", 1, 1e-5, 1800, 0.905, 0.56)]
    rows, cards, paired = [], {}, []
    for tag, s, gl, steps, a, b in runs:
        stem = f"layer1_global_B4_r0.005_2b{tag}_seed{s}"
        shipped = s == 0
        rows.append(base | dict(seed=s, accuracy=a, accuracy_lo=a - 0.006, accuracy_hi=a + 0.006, bpp=b,
                                weights=f"data/frontier/{stem}.pt" if shipped else None,
                                codebook=f"data/frontier/{stem}.codebook"))
        cards[stem] = dict(schedule=dict(train="all", distill_weight=0.5, group_lasso_weight=gl, steps=steps))
        paired.append(dict(weights=f"data/frontier/{stem}.{'pt' if shipped else 'json'}", reference_accuracy=0.9322,
                           difference=a - 0.9322, lo=a - 0.9422, hi=a - 0.9222, within=False))
    models = ex.ablation_frame(to_frame(rows), cards)
    t = ex.trained_table(models, paired)
    gl = _row(t, setting="global, B=4, ratio 0.005, 2 bits; distillation 0.5, group-lasso 1e-05, 1,800 steps")
    assert (gl["seeds"], gl["bpp"], gl["accuracy"]) == (2, 0.555, 90.75)
    assert gl["vs_uncompressed"] == "-2.47 [-3.72, -1.22]"  # mean difference, the widest interval
    assert list(ex.models_table(models, paired)["weights"]).count("card only") == 2
    cards["layer1_global_B4_r0.005_2b_gl_seed1"]["schedule"]["lr"] = 3e-4  # another recipe: its own group
    other = ex.trained_table(ex.ablation_frame(to_frame(rows), cards), paired)
    assert _row(other, setting="global, B=4, ratio 0.005, 2 bits; distillation 0.5, group-lasso 1e-05, 1,800 steps, "
                "lr 0.0003")["bpp"] == 0.56
    with pytest.raises(ValueError, match="paired"):  # an unshipped seed's test is filed under its card
        ex.models_table(models, paired[:3])


def test_model_key_is_the_weights_or_else_the_card():
    assert model_key("data/frontier/m_seed0.pt", "data/frontier/m_seed0.codebook") == "data/frontier/m_seed0.pt"
    assert model_key(None, "data/frontier/m_seed1.codebook") == "data/frontier/m_seed1.json"
    assert model_key(pd.NA, "data/frontier/m_seed1.codebook") == "data/frontier/m_seed1.json"
    assert model_key(float("nan"), None) == "" and model_key(pd.NA, pd.NA) == ""


def test_model_groups_keep_rows_with_a_missing_recipe_value():
    base = dict(split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2, distill_weight=0.5,
                group_lasso_weight=0.0, steps=1200)
    models = pd.DataFrame([base | dict(seed=0, lr=1e-3), base | dict(seed=1, lr=1e-3), base | dict(seed=0, lr=None),
                           base | dict(seed=0, lr=3e-4, bits=4)])
    groups = ex.model_groups(models)
    assert [list(g["seed"]) for g in groups] == [[0, 1], [0], [0]]  # the card without an lr is its own model
    assert sum(len(g) for g in groups) == len(models)


def test_trained_table_pairs_models_with_the_fine_tuned_reference_of_their_seed():
    models = to_frame([dict(method="blocksparse", split_at="layer3", mode="global", block_size=2, ratio=0.01,
                            bits=2, finetuned=True, seed=s, accuracy=a, accuracy_lo=a - 0.005, accuracy_hi=a + 0.005,
                            n_images=10000, bpp=b, weights=w, codebook=f"data/frontier/m{s}.codebook")
                       for s, a, b, w in ((0, 0.932, 0.67, "data/frontier/m0.pt"), (1, 0.935, 0.66, None),
                                          (2, 0.934, 0.66, None))])
    paired = [dict(weights=w, reference_accuracy=0.9322, difference=d, lo=d - 0.003, hi=d + 0.003, within=True)
              for w, d in (("data/frontier/m0.pt", -0.0002), ("data/frontier/m1.json", 0.0028),
                           ("data/frontier/m2.json", 0.0018))]
    # the model's pairs are keyed by its card whether or not its weights ship; seed 2 has no reference
    vs = [dict(weights=f"data/frontier/m{s}.json", seed=s, reference=f"data/reference/u{s}.json", difference=d, lo=lo,
               hi=hi, within=lo >= -0.01, budget_differs=[])
          for s, d, lo, hi in ((0, -0.0042, -0.0080, -0.0004), (1, -0.0032, -0.0110, 0.0010))]
    t = ex.trained_table(models, paired, vs_reference=vs)
    assert t["vs_finetuned_reference"].iloc[0] == "-0.37 [-1.10, +0.10], 1/2 within, 1 unpaired"
    third = vs + [vs[1] | dict(weights="data/frontier/m2.json", seed=2, budget_differs=["lr"])]
    assert ex.trained_table(models, paired, vs_reference=third)["vs_finetuned_reference"].iloc[0].endswith(
        "1/3 within (lr differ)")
    assert "vs_finetuned_reference" not in ex.trained_table(models, paired).columns


def test_trained_models_pair_the_cards_with_the_reference(tmp_path):
    from blocksparse.results import pack_correct
    (tmp_path / "frontier").mkdir(), (tmp_path / "reference").mkdir(), (tmp_path / "results").mkdir()

    def card(path, seed, correct):
        path.write_text(json.dumps(dict(dataset="fashion-mnist", seed=seed, test_images=len(correct),
                                        schedule=dict(steps=10), test_correct=pack_correct(np.array(correct, bool)))))
    card(tmp_path / "frontier" / "layer3_m_seed0.json", 0, [1, 0, 1, 1])
    card(tmp_path / "reference" / "uncompressed_finetuned_seed0.json", 0, [1, 1, 1, 1])
    card(tmp_path / "reference" / "other_seed0.json", 0, [0, 0, 0, 0])  # not a reference card: not read
    got = ex.load_trained_models(tmp_path / "results", tmp_path)["vs_reference"]
    assert len(got) == 1 and got[0]["difference"] == -0.25
    assert got[0]["weights"].endswith("frontier/layer3_m_seed0.json")
    assert got[0]["reference"].endswith("reference/uncompressed_finetuned_seed0.json")
