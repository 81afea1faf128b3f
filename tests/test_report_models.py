"""The README's paragraphs on trained models: known inputs, the words and numbers they must give."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocksparse import report_answer, report_models
from blocksparse.analysis import wilson_interval
from blocksparse.results import save_results, to_frame


def test_render_models_states_seeds_and_the_paired_test():
    rows = [dict(method="blocksparse", split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2,
                 coder="ans", finetuned=True, train="all", seed=s, accuracy=a, accuracy_lo=a - 0.005,
                 accuracy_hi=a + 0.005, n_images=10000, val_accuracy=0.9, bpp=0.68, bpp_self_contained=0.9,
                 weights=f"data/frontier/m_seed{s}.pt") for s, a in ((0, 0.9200), (1, 0.9150))]
    paired = [dict(weights="data/frontier/m_seed0.pt", reference_accuracy=0.9322, difference=-0.0122, lo=-0.016,
                   hi=-0.008, within=False),
              dict(weights="data/frontier/m_seed1.pt", reference_accuracy=0.9322, difference=-0.0172, lo=-0.021,
                   hi=-0.013, within=False)]
    text = report_models.render_models(to_frame(rows), paired)
    assert "all 10,000 test images" in text
    assert "91.75% over 2 seed(s) (range 91.50% to 92.00%)" in text
    assert "0.68 bpp" in text and "93.22% uncompressed" in text
    assert "after layer1: global, B=4, ratio 0.005, 2 bits, fine-tuned at 0.68 bpp" in text
    assert "| split_at | mode |" in text and "| layer1 | global | 4 |" in text
    assert "within one point by a paired test for 0 of 2 seed(s) (difference -1.47 points, 95% interval [-2.10, -0.80])" in text
    with pytest.raises(ValueError, match="paired"):
        report_models.render_models(to_frame(rows), paired[:1])
    assert report_models.render_models(to_frame([]), []) == ""


def test_render_screening_orders_rounds_and_names_the_command():
    df = pd.DataFrame([dict(mode="global", block_size=4, ratio=0.005, bits=2, round=0, steps=60, val_accuracy=0.824,
                            val_bpp=0.8968), dict(mode="global", block_size=2, ratio=0.002, bits=2, round=0, steps=60,
                                                   val_accuracy=0.849, val_bpp=0.7099),
                       dict(mode="global", block_size=4, ratio=0.005, bits=2, round=1, steps=120, val_accuracy=0.873,
                            val_bpp=0.8968)])
    text = report_models.render_screening(df, dict(target_bpp=1.0, screen_steps=60, rounds=2, val_rate_sample=100))
    assert "--target-bpp 1 --screen-steps 60 --rounds 2`" in text and "for 60 steps, the better half again for 120" in text
    assert "after layer1, at most 1 bpp" in text and "whose self-contained rate on 100" in text  # an older config
    assert text.index("84.9") < text.index("82.4") < text.index("87.3")  # by round, best first
    assert "| lr |" not in text
    with pytest.raises(ValueError, match="val_bpp"):
        report_models.render_screening(df.drop(columns="val_bpp"), {})
    with pytest.raises(ValueError, match="rate"):
        report_models.render_screening(df, dict(target_bpp=1.0, screen_steps=60, rounds=2, val_rate_sample=100,
                                                rate="estimated"))


def test_render_screenings_says_each_selection_s_rate_split_and_learning_rates():
    df = pd.DataFrame([dict(mode="global", block_size=4, ratio=r, bits=2, lr=lr, round=0, steps=60, val_accuracy=a,
                            val_bpp=b) for r, lr, a, b in ((0.01, 3e-3, 0.88, 0.93), (0.01, 1e-3, 0.9, 0.93))])
    amortized = dict(split_at="layer2", target_bpp=0.5, screen_steps=60, rounds=1, val_rate_sample=100,
                     ratios=[0.05, 0.01], bits=[2, 4], rate="amortized", fit_images=2000, lrs=[1e-3, 3e-3], group_lasso_weight=1e-5)
    old = dict(target_bpp=1.0, screen_steps=60, rounds=1, val_rate_sample=100)
    text = report_models.render_screenings([(df, old), (df, amortized)])
    first, second = text.split("**Selection after fine-tuning")[1:]
    assert "after layer1, at most 1 bpp" in first and "| lr |" not in first
    assert "after layer2, at most 0.5 bpp" in second and "whose amortized (ANS codebooks" in second
    assert ("`python blocksparse_utils.py select --split-at layer2 --target-bpp 0.5 --screen-steps 60 --rounds 1 "
            "--ratios 0.05 0.01 --rate amortized --fit-images 2000 --lrs 0.001 0.003 --group-lasso-weight 1e-05`") in second
    assert "at each learning rate of 0.001, 0.003" in second and "group-lasso 1e-05" in second
    assert "| lr |" in second and second.index("90") < second.index("88")
    assert report_models.render_screenings([]) == ""
    webp = dict(target_bpp=2.65192, target_from=dict(method="webp", quality=70, bpp=2.6519, accuracy=0.9241,
                                                    n_images=10000, tolerance=0.01), screen_steps=40, rounds=2,
                val_rate_sample=100, rate="amortized", fit_images=2000, lrs=[3e-4])
    text = report_models.render_screening(df, webp)
    assert ("at most 2.652 bpp, the lowest rate at which webp is within one point of the uncompressed model "
            "(webp q=70, 10,000 test images, point estimate)**") in text
    assert "select --split-at layer1 --target-bpp webp --screen-steps 40 --rounds 2 --rate amortized" in text
    assert "(validation only, but the target rate is the codec's on the test images;" in text
    text = report_models.render_screening(df, webp | dict(target_from=webp["target_from"] | dict(tolerance=0.02)))
    assert "within 2 points of" in text and "--target-bpp webp --screen-steps 40 --rounds 2 --tolerance 0.02 " in text


def _bn_rows():
    return [dict(method="learned-bottleneck", split_at="layer1", coder="ans", finetuned=True, seed=0,
                 rate_weight=w, accuracy=a, accuracy_lo=a - 0.005, accuracy_hi=a + 0.005, n_images=10000,
                 val_accuracy=a + 0.001, bpp=b, stream_bytes=b * 98, weights=f"data/frontier/bn_{w:g}.pt")
            for w, a, b in ((3.2, 0.90, 0.30), (0.8, 0.92, 0.60), (0.2, 0.925, 1.20))]


def _bn_paired(within):
    return [dict(weights=f"data/frontier/bn_{w:g}.pt", reference_accuracy=0.9322, difference=d, lo=d - 0.004,
                 hi=d + 0.004, within=k) for (w, d), k in zip(((3.2, -0.032), (0.8, -0.012), (0.2, -0.007)), within)]


def test_render_bottleneck_names_the_lowest_rate_within_and_the_bd_rate():
    rows = _bn_rows()
    grid = to_frame([dict(method="webp", quality=q, accuracy=r["accuracy"], n_images=10000, bpp=2 * r["bpp"],
                          finetuned=False) for q, r in zip((0, 5, 10), rows)])
    text = report_models.render_bottleneck(to_frame(rows), _bn_paired([False, True, True]), grid)
    assert "all 10,000 test images" in text
    assert ("The lowest rate within one point by a paired test (every seed) is 0.60 bpp (lambda=0.8, 92.00% "
            "against 93.22%") in text
    assert ("BD-rate of the bottleneck's curve (3 models on its Pareto front, mean over seeds) against WebP on the "
            "same images (untuned classifier, qualities 0, 5, 10): -50%") in text
    assert text.index("| lambda=3.2 |") < text.index("| lambda=0.8 |") < text.index("| lambda=0.2 |")  # by rate
    assert "-1.20 [-1.60, -0.80]" in text
    none = report_models.render_bottleneck(to_frame(rows), _bn_paired([False, False, False]))
    assert "None of them is within one point" in none and "92.50% at 1.20 bpp (lambda=0.2)" in none
    assert "BD-rate" not in none.split("\n\n")[0].split("bpp from real")[1]  # no grid, no BD-rate
    with pytest.raises(ValueError, match="paired"):
        report_models.render_bottleneck(to_frame(rows), _bn_paired([True, True, True])[:2])
    assert report_models.render_bottleneck(to_frame([]), []) == ""


def test_bottlenecks_at_two_splits_are_kept_apart_and_each_split_has_its_own_bd_rate():
    rows = _bn_rows()
    # the same rate weights after layer3, at stride 2: half the rate of layer1's at the same accuracy
    later = [r | dict(split_at="layer3", bpp=r["bpp"] / 2, stream_bytes=r["stream_bytes"] / 2,
                      weights=r["weights"].replace("bn_", "bn3_")) for r in rows]
    paired = _bn_paired([False, True, True])
    paired += [p | dict(weights=p["weights"].replace("bn_", "bn3_")) for p in paired]
    cards = {Path(r["weights"]).stem: dict(schedule=dict(steps=1200),
                                           architecture=dict(stride=2 if "bn3_" in r["weights"] else 4))
             for r in rows + later}
    frame = report_models.bottleneck_frame(to_frame(rows + later), cards)
    grid = to_frame([dict(method="webp", quality=q, accuracy=r["accuracy"], n_images=10000, bpp=2 * r["bpp"],
                          finetuned=False) for q, r in zip((0, 5, 10), rows)])
    text = report_models.render_bottleneck(frame, paired, grid)
    assert "after layer1 and layer3 (a model per split and rate weight), an encoder to a few latent channels at " \
           "stride 4 after layer1, 2 after layer3," in text
    assert "| layer1, lambda=0.8, stride 4 | 0 |" in text and "| layer3, lambda=0.8, stride 2 | 0 |" in text
    # layer1 against WebP at twice its rate: -50%; layer3 at a quarter: -75%
    assert "BD-rate of the bottleneck's curve after layer1 (3 models" in text and ": -50%" in text
    assert "BD-rate of the bottleneck's curve after layer3 (3 models" in text and ": -75%" in text
    assert "is 0.30 bpp (layer3, lambda=0.8, stride 2, 92.00%" in text  # the lowest rate within, layer3's
    answer = report_answer.render_full_answer(None, [], frame, paired, None, [], None)
    # the method names the split; the setting does not again
    assert "| learned bottleneck (layer3) | lambda=0.8, stride 2 | 1 | 0.3 | 92 |" in answer
    assert "| learned bottleneck (layer1) | lambda=0.8, stride 4 | 1 | 0.6 | 92 |" in answer
    one = report_models.render_bottleneck(report_models.bottleneck_frame(to_frame(rows), cards), paired[:3], grid)
    assert "after layer1, where block-sparse's features are coded too, an encoder to a few latent channels at stride 4," in one
    assert "| lambda=0.8 |" in one


def test_bottleneck_seeds_are_one_model_and_a_recipe_another():
    rows = _bn_rows()
    # a second seed of lambda=0.8 (the same recipe) and lambda=0.8 with the entropy model at its own learning rate
    rows += [rows[1] | dict(seed=1, accuracy=0.91, accuracy_lo=0.905, accuracy_hi=0.915, bpp=0.62,
                            weights="data/frontier/bn_0.8_s1.pt"),
             rows[1] | dict(accuracy=0.88, accuracy_lo=0.875, accuracy_hi=0.885, bpp=0.40,
                            weights="data/frontier/bn_0.8_plr.pt")]
    paired = _bn_paired([False, True, True]) + [
        dict(weights=w, reference_accuracy=0.9322, difference=d, lo=d - 0.004, hi=d + 0.004, within=k)
        for w, d, k in (("data/frontier/bn_0.8_s1.pt", -0.022, False), ("data/frontier/bn_0.8_plr.pt", -0.05, False))]
    cards = {Path(r["weights"]).stem: dict(schedule=dict(steps=1200, **({"prior_lr": 0.01} if "plr" in r["weights"]
                                                                         else {})), architecture=dict(stride=4))
             for r in rows}
    frame = report_models.bottleneck_frame(to_frame(rows), cards)
    text = report_models.render_bottleneck(frame, paired)
    # lambda=0.8 over two seeds: one not within, so the model is not; lambda=0.2 is the lowest within
    assert "is 1.20 bpp (lambda=0.2, 92.50%" in text
    assert text.count("| lambda=0.8 |") == 2 and "| lambda=0.8, prior lr 0.01 |" in text
    answer = report_answer.render_full_answer(None, [], frame, paired, None, [], None)
    assert "| learned bottleneck (layer1) | lambda=0.8 | 2 | 0.61 | 91.5 |" in answer  # mean of the two seeds
    assert "| learned bottleneck (layer1) | lambda=0.8, prior lr 0.01 | 1 | 0.4 | 88 |" in answer
    with pytest.raises(ValueError, match="cards"):
        report_models.bottleneck_frame(to_frame(rows), {})


def test_render_codec_models_sets_fine_tuned_beside_untuned_on_the_same_images():
    rows = [dict(method="webp", quality=q, finetuned=True, train="all", seed=0, accuracy=a, accuracy_lo=a - 0.01,
                 accuracy_hi=a + 0.01, n_images=10000, val_accuracy=0.9, bpp=b, stream_bytes=b * 98)
            for q, a, b in ((5, 0.90, 1.5), (0, 0.88, 1.0))]
    grid = to_frame([dict(method="webp", quality=q, accuracy=a, n_images=n, bpp=b, finetuned=False)
                     for q, a, n, b in ((0, 0.80, 10000, 1.0), (5, 0.85, 10000, 1.5), (0, 0.70, 1000, 1.0))])
    paired = [dict(method="webp", quality=q, seed=0, weights=f"c{q}.json", reference_accuracy=0.93, difference=d,
                   lo=d - 0.01, hi=d + 0.01, within=False) for q, d in ((0, -0.05), (5, -0.03))]
    text = report_models.render_codec_models(to_frame(rows), paired, grid)
    assert "WebP q=0 (1.00 bpp): 80.00% untuned, 88.00% fine-tuned." in text
    assert "WebP q=5 (1.50 bpp): 85.00% untuned, 90.00% fine-tuned." in text
    assert "-5.00 [-6.00, -4.00]" in text
    with pytest.raises(ValueError, match="paired"):
        report_models.render_codec_models(to_frame(rows), paired[:1], grid)


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


def test_ablation_joins_cards_and_says_what_each_step_gives():
    rows, cards = _ablation_rows()
    frame = report_models.ablation_frame(to_frame(rows), cards)
    assert list(frame["distill_weight"]) == [0.0, 0.0, 0.5, 0.5] and list(frame["steps"]) == [1200] * 4
    text = report_models.render_ablation(frame)
    assert ("Training only the tail reaches 80.00% at 0.60 bpp; the whole network 88.00% at 0.60 bpp; with "
            "distillation 90.00% at 0.60 bpp; adding the group-lasso penalty 89.50% at 0.70 bpp.") in text
    assert "global, B=4, ratio 0.005, 2 bits, seed 0" in text and "1,200 Adam steps" in text
    # steps: +8 (whole network), +2 (distillation), -0.5 (group-lasso)
    assert "The largest step is training the whole network instead of the tail (+8.00 points" in text
    without_tail = report_models.render_ablation(frame[frame["train"] == "all"])
    assert "The largest step is adding distillation (+2.00 points" in without_tail
    with pytest.raises(ValueError, match="cards"):
        report_models.ablation_frame(to_frame(rows), {})


def test_test_stopping_compares_the_first_best_validation_step_with_the_best_test_step():
    h = [dict(step=s, val_accuracy=v, test_accuracy=t) for s, v, t in
         ((0, 0.5, 0.5), (150, 0.86, 0.87), (300, 0.88, 0.875), (450, 0.88, 0.8925), (600, 0.87, 0.88))]
    card = dict(mode="global", block_size=4, ratio=0.005, bits=2, seed=0, history=h, monitor_images=10000)
    text = report_models.render_test_stopping(card)
    assert "Stopping on validation (step 300) gives 87.50%" in text  # the first of the tied best validations
    assert "(step 450), as the original did, would report 89.25%: +1.75 points of optimism" in text
    assert "all 10,000 test images" in text and "5 evaluations" in text
    with pytest.raises(ValueError, match="test_accuracy"):
        report_models.render_test_stopping(dict(card, history=[dict(step=0, val_accuracy=0.5)]))


def test_load_trained_models_reads_what_exists(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    assert all(v in (None, []) for v in report_models.load_trained_models(data=tmp_path).values())
    rows, cards = _ablation_rows()
    save_results(to_frame(rows[:2] + rows[3:]), {}, "ablation")
    save_results(to_frame([rows[2] | dict(weights="data/frontier/m.pt")]), {}, "frontier_models")
    (tmp_path / "ablation").mkdir()
    (tmp_path / "frontier").mkdir()
    for stem, c in cards.items():
        d = tmp_path / ("frontier" if stem.endswith("2b_seed0") else "ablation")
        hist = [dict(step=0, val_accuracy=0.5, test_accuracy=0.5)] if stem.endswith("_all_seed0") else []
        (d / f"{stem}.json").write_text(json.dumps(c | dict(history=hist)))
    got = report_models.load_trained_models(data=tmp_path)
    assert len(got["ablation"]) == 4 and set(got["ablation"]["train"]) == {"tail", "all"}
    assert got["test_stopping"]["schedule"]["train"] == "all" and got["bottleneck"] is None


def test_split_points_table_per_split_on_the_same_images():
    def sweep(split, rows):
        ref = dict(method="uncompressed", split_at=split, accuracy=0.94, n_images=1000, bpp={"layer1": 2048.0,
                   "layer2": 1024.0}[split])
        return to_frame([ref] + [dict(method="blocksparse", split_at=split, mode="global", block_size=2, ratio=r,
                                      bits=2, accuracy=a, n_images=1000, bpp=b) for r, a, b in rows])
    text = report_answer.render_split_points({
        "layer2": sweep("layer2", [(0.5, 0.935, 6.0), (0.05, 0.80, 0.9)]),
        "layer1": sweep("layer1", [(0.5, 0.925, 20.0), (0.05, 0.50, 1.5)])})
    assert "same 1,000 evenly spaced test images" in text
    assert text.index("| layer1 |") < text.index("| layer2 |")
    assert "| layer2 | 94 | 32 | 6 | global, B=2, ratio 0.5, 2 bits | 80 | global, B=2, ratio 0.05, 2 bits |" in text
    assert "| layer1 | 94 | 64 | n/a | none | n/a | none |" in text  # 92.5% is not within one point of 94%
    assert report_answer.render_split_points({"layer1": sweep("layer1", [])}) == ""
    trained = to_frame([dict(method="blocksparse", split_at="layer2", mode="global", block_size=2, ratio=0.01, bits=2,
                             finetuned=True, seed=s, accuracy=a, n_images=10000, bpp=b, weights=f"m{s}.pt")
                        for s, a, b in ((0, 0.90, 0.8), (1, 0.92, 0.9), (2, 0.95, 1.5))])
    text = report_answer.render_split_points({"layer2": sweep("layer2", []), "layer1": sweep("layer1", [])},
                                             models=trained)
    # the three seeds are one model: mean 92.33% at 1.07 bpp, over the rate, so the split has none at <= 1 bpp
    assert "| layer1 | 94 | 64 | n/a | none | n/a | none | not trained |" in text
    assert "| none at <= 1 bpp |" in text
    text = report_answer.render_split_points({"layer2": sweep("layer2", []), "layer1": sweep("layer1", [])},
                                             models=trained.iloc[:2])
    assert "| 91.00% at 0.85 bpp (global, B=2, ratio 0.01, 2 bits; 2 seed(s), 10,000 images) |" in text
    assert "fine-tuned, picked on validation at <= 1 bpp" in text and "Fine-tuned, the model" not in text  # no layer1
    # picked on validation, not on test: at layer1 the 4-bit model is more accurate on test, the 2-bit one on
    # validation; of the later splits layer3 has the best validation accuracy, layer2 the best test accuracy
    at1 = to_frame([dict(method="blocksparse", split_at="layer1", mode="global", block_size=2, ratio=0.01, bits=b,
                         finetuned=True, seed=0, accuracy=a, val_accuracy=v, n_images=10000, bpp=0.7)
                    for b, a, v in ((2, 0.885, 0.90), (4, 0.89, 0.88))])
    later = trained.iloc[:2].assign(val_accuracy=0.91, accuracy=0.95)
    at3 = trained.iloc[:1].assign(split_at="layer3", accuracy=0.93, val_accuracy=0.93, bpp=0.6)
    text = report_answer.render_split_points({"layer2": sweep("layer2", []), "layer1": sweep("layer1", [])},
                                             models=pd.concat([at1, later, at3], ignore_index=True))
    assert "| 88.50% at 0.70 bpp (global, B=2, ratio 0.01, 2 bits; 1 seed(s), 10,000 images) |" in text
    assert ("Fine-tuned, the model picked on validation at or under 1 bpp reaches 88.50% at 0.70 bpp after layer1 (1 "
            "seed(s)) and 93.00% at 0.60 bpp after layer3 (1 seed(s)), the later split with the best validation "
            "accuracy: +4.50 points (means over seeds, on the same 10,000 test images;") in text
    other = sweep("layer2", []).assign(n_images=500)
    with pytest.raises(ValueError, match="same images"):
        report_answer.render_split_points({"layer1": sweep("layer1", []), "layer2": other})


def test_full_answer_names_what_is_within_on_all_images_and_labels_point_estimates():
    models = to_frame([dict(method="blocksparse", split_at="layer1", mode="global", block_size=4, ratio=0.005,
                            bits=2, finetuned=True, seed=s, accuracy=a, accuracy_lo=a - 0.006, accuracy_hi=a + 0.006,
                            n_images=10000, bpp=b, weights=f"m{s}.pt") for s, a, b in ((0, 0.90, 0.62), (1, 0.89, 0.64))])
    paired = [dict(weights=f"m{s}.pt", reference_accuracy=0.9322, difference=d, lo=d - 0.005, hi=d + 0.005,
                   within=False) for s, d in ((0, -0.032), (1, -0.042))]
    bn = to_frame(_bn_rows())
    grid = to_frame([dict(method="uncompressed", accuracy=0.9322, n_images=10000, bpp=2048.0)]
                    + [dict(method="webp", quality=q, accuracy=a, n_images=10000, bpp=b, finetuned=False)
                       for q, a, b in ((0, 0.78, 0.995), (70, 0.9241, 2.652), (90, 0.9312, 3.98))])
    text = report_answer.render_full_answer(models, paired, bn, _bn_paired([False, True, True]), None, [], grid)
    assert "**The answer on all 10,000 test images** (the rows it rests on; uncompressed 93.22%)" in text
    assert ("at or under 1 bpp, learned bottleneck (layer1) lambda=0.8 (0.60 bpp) is within one point of the uncompressed "
            "model by a paired test.") in text
    assert "| block-sparse (layer1) | global, B=4, ratio 0.005, 2 bits | 2 | 0.63 | 89.5 | [88.40, 90.60] | -3.70 [-4.70, -2.70] | False |" in text
    assert "| webp | q=70 | 1 | 2.652 | 92.41 | n/a | -0.81 (point estimate) | False |" in text  # lowest within
    assert "| webp | q=0 | 1 | 0.995 | 78 | n/a | -15.22 (point estimate) | False |" in text  # best at <= 1 bpp
    # lambda=0.2 is within too, at a higher rate; webp q=70 has no paired test
    assert ("The lowest rate within one point by a paired test: learned bottleneck (layer1) lambda=0.8, 92.00% [91.50, 92.50] "
            "at 0.60 bpp (difference -1.20 [-1.60, -0.80] points).") in text
    assert ("At or under 0.5 bpp the most accurate is learned bottleneck (layer1) lambda=3.2, 90.00% [89.50, 90.50] at "
            "0.30 bpp (difference -3.20 [-3.60, -2.80] points); not within one point by a paired test.") in text
    # the bottleneck leads: block-sparse's own answer beside it
    assert ("Block-sparse alone: no block-sparse model is within one point by a paired test at any rate; no "
            "block-sparse model is at or under 0.5 bpp.") in text
    at7 = report_answer.render_full_answer(models, paired, bn, _bn_paired([False, True, True]), None, [], grid,
                                           stretch_bpp=0.7)
    assert ("Block-sparse alone: no block-sparse model is within one point by a paired test at any rate; at or under "
            "0.7 bpp the most accurate block-sparse model is block-sparse (layer1) global, B=4, ratio 0.005, 2 bits, "
            "89.50% [88.40, 90.60] at 0.63 bpp (difference -3.70 [-4.70, -2.70] points), not within one point by a "
            "paired test.") in at7
    ok = [p | dict(within=True) for p in paired]
    assert ("Block-sparse alone: the lowest rate within one point by a paired test is block-sparse (layer1) global, "
            "B=4, ratio 0.005, 2 bits, 89.50%") in report_answer.render_full_answer(
        models, ok, bn, _bn_paired([False, True, True]), None, [], grid)
    none = report_answer.render_full_answer(models, paired, None, [], None, [], None)
    assert "Block-sparse alone" not in none  # nothing else to lead
    assert "nothing measured at or under 1 bpp is within one point" in none
    assert "block-sparse (layer1) global, B=4, ratio 0.005, 2 bits, 89.50% at 0.63 bpp" in none
    assert "No row at any rate is within one point by a paired test. Nothing measured is at or under 0.5 bpp." in none
    assert "within one point for" not in text  # no model has some seeds within and others not
    half = [paired[0] | dict(within=True), paired[1]]
    assert ("block-sparse (layer1) global, B=4, ratio 0.005, 2 bits is within one point for 1 of its 2 seeds by a "
            "paired test (a row counts as within only when every seed is).") in report_answer.render_full_answer(
        models, half, None, [], None, [], None)
    assert "at or under 0.7 bpp the most accurate is block-sparse" in report_answer.render_full_answer(
        models, paired, None, [], None, [], None, stretch_bpp=0.7).replace("At or", "at or")
    assert report_answer.render_full_answer(None, [], None, [], None, [], grid) == ""


def test_models_of_one_configuration_are_kept_apart_by_recipe_and_unshipped_seeds_keep_their_test():
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
    models = report_models.ablation_frame(to_frame(rows), cards)
    text = report_models.render_models(models, paired)
    assert "(distillation 0.5, 1,200 steps) at 0.63 bpp" in text and "89.50% over 2 seed(s)" in text
    assert "(distillation 0.5, group-lasso 1e-05, 1,800 steps) at 0.56 bpp" in text  # mean of 0.55 and 0.56
    assert "90.75% over 2 seed(s)" in text
    assert text.count("not shipped (recorded in its card)") == 2
    answer = report_answer.render_full_answer(models, paired, None, [], None, [], None)
    assert "global, B=4, ratio 0.005, 2 bits; distillation 0.5, group-lasso 1e-05, 1,800 steps" in answer
    assert "| -2.47 [-3.72, -1.22] |" in answer  # mean difference of the two seeds, their widest interval
    assert "steps, lr" not in text and "| lr |" in text  # the default learning rate goes unsaid (its column stays)
    cards["layer1_global_B4_r0.005_2b_gl_seed1"]["schedule"]["lr"] = 3e-4  # another recipe: its own group
    other = report_models.render_models(report_models.ablation_frame(to_frame(rows), cards), paired)
    assert "(distillation 0.5, group-lasso 1e-05, 1,800 steps, lr 0.0003) at 0.56 bpp" in other
    assert "(distillation 0.5, group-lasso 1e-05, 1,800 steps) at 0.55 bpp" in other
    with pytest.raises(ValueError, match="paired"):  # an unshipped seed's test is filed under its card
        report_models.render_models(models, paired[:3])


def test_model_key_is_the_weights_or_else_the_card():
    from blocksparse.results import model_key
    assert model_key("data/frontier/m_seed0.pt", "data/frontier/m_seed0.codebook") == "data/frontier/m_seed0.pt"
    assert model_key(None, "data/frontier/m_seed1.codebook") == "data/frontier/m_seed1.json"
    assert model_key(pd.NA, "data/frontier/m_seed1.codebook") == "data/frontier/m_seed1.json"
    assert model_key(float("nan"), None) == "" and model_key(pd.NA, pd.NA) == ""


def test_model_groups_keep_rows_with_a_missing_recipe_value():
    base = dict(split_at="layer1", mode="global", block_size=4, ratio=0.005, bits=2, distill_weight=0.5,
                group_lasso_weight=0.0, steps=1200)
    models = pd.DataFrame([base | dict(seed=0, lr=1e-3), base | dict(seed=1, lr=1e-3), base | dict(seed=0, lr=None),
                           base | dict(seed=0, lr=3e-4, bits=4)])
    groups = report_models.model_groups(models)
    assert [list(g["seed"]) for g in groups] == [[0, 1], [0], [0]]  # the card without an lr is its own model
    assert sum(len(g) for g in groups) == len(models)


def test_full_answer_pairs_models_with_the_fine_tuned_reference_of_their_seed():
    models = to_frame([dict(method="blocksparse", split_at="layer3", mode="global", block_size=2, ratio=0.01,
                            bits=2, finetuned=True, seed=s, accuracy=a, accuracy_lo=a - 0.005, accuracy_hi=a + 0.005,
                            n_images=10000, bpp=b, weights=w, codebook=f"data/frontier/m{s}.codebook")
                       for s, a, b, w in ((0, 0.932, 0.67, "data/frontier/m0.pt"), (1, 0.935, 0.66, None),
                                          (2, 0.934, 0.66, None))])
    paired = [dict(weights=w, reference_accuracy=0.9322, difference=d, lo=d - 0.003, hi=d + 0.003, within=True)
              for w, d in (("data/frontier/m0.pt", -0.0002), ("data/frontier/m1.json", 0.0028),
                           ("data/frontier/m2.json", 0.0018))]
    budget = dict(train="all", distill_weight=0.5, steps=1800, steps_run=1800, lr=0.001)
    # the model's pairs are keyed by its card whether or not its weights ship; seed 2 has no reference
    vs = [dict(weights=f"data/frontier/m{s}.json", seed=s, reference=f"data/reference/u{s}.json",
               reference_accuracy=r, n_images=10000, reference_budget=budget, difference=d, lo=lo, hi=hi,
               within=lo >= -0.01, budget_differs=[],
               reference_paired=dict(difference=r - 0.9322, lo=r - 0.9352, hi=r - 0.9292))
          for s, r, d, lo, hi in ((0, 0.9362, -0.0042, -0.0080, -0.0004), (1, 0.9382, -0.0032, -0.0110, 0.0010))]
    text = report_answer.render_full_answer(models, paired, None, [], None, [], None, vs_reference=vs)
    assert "| within | vs fine-tuned reference |" in text
    assert "| True | -0.37 [-1.10, +0.10], 1/2 within, 1 seed(s) unpaired |" in text
    # the reference's seeds with their Wilson intervals (independently: 9362 of 10,000 -> [93.12, 93.86])
    lo, hi = wilson_interval(9362, 10000)
    assert (f"A second reference, the uncompressed model fine-tuned with no codec (the whole network, distillation "
            f"weight 0.5, 1,800 of 1,800 steps, lr 0.001; seed 0 93.62% [{100 * lo:.2f}, {100 * hi:.2f}], seed 1 "
            f"93.82%") in text
    assert ("on 10,000 test images), is +0.50 [+0.10, +0.90] points from the shipped model by a paired test (mean "
            "over its seeds, widest interval); against it, each block-sparse model paired with the reference run of "
            "its own seed on the same images (column `vs fine-tuned reference`), no block-sparse model at or under "
            "1 bpp is within one point of it for every seed on the same budget.") in text
    within_all = [q | dict(within=True) for q in vs]
    assert "no block-sparse model at or under 1 bpp is within" in report_answer.render_full_answer(
        models, paired, None, [], None, [], None, vs_reference=within_all)  # seed 2 is unpaired
    third = within_all + [within_all[1] | dict(weights="data/frontier/m2.json", seed=2, reference="data/reference/u2.json")]
    assert ("block-sparse (layer3) global, B=2, ratio 0.01, 2 bits (0.66 bpp) is within one point of it for every "
            "seed on the same budget.") in report_answer.render_full_answer(models, paired, None, [], None, [], None,
                                                                        vs_reference=third)
    other = third[:2] + [third[2] | dict(budget_differs=["lr"])]
    text = report_answer.render_full_answer(models, paired, None, [], None, [], None, vs_reference=other)
    assert "3/3 within (lr differ)" in text and "no block-sparse model at or under 1 bpp is within" in text
    plain = report_answer.render_full_answer(models, paired, None, [], None, [], None)
    assert "fine-tuned reference" not in plain and "second reference" not in plain


def test_trained_models_pair_the_cards_with_the_reference(tmp_path):
    from blocksparse.results import pack_correct
    (tmp_path / "frontier").mkdir(), (tmp_path / "reference").mkdir(), (tmp_path / "results").mkdir()

    def card(path, seed, correct):
        path.write_text(json.dumps(dict(dataset="fashion-mnist", seed=seed, test_images=len(correct),
                                        schedule=dict(steps=10), test_correct=pack_correct(np.array(correct, bool)))))
    card(tmp_path / "frontier" / "layer3_m_seed0.json", 0, [1, 0, 1, 1])
    card(tmp_path / "reference" / "uncompressed_finetuned_seed0.json", 0, [1, 1, 1, 1])
    card(tmp_path / "reference" / "other_seed0.json", 0, [0, 0, 0, 0])  # not a reference card: not read
    got = report_models.load_trained_models(tmp_path / "results", tmp_path)["vs_reference"]
    assert len(got) == 1 and got[0]["difference"] == -0.25
    assert got[0]["weights"].endswith("frontier/layer3_m_seed0.json")
    assert got[0]["reference"].endswith("reference/uncompressed_finetuned_seed0.json")
