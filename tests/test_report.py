"""Tests of the record's tables and their rendering (``report``): a hand-made results table and a
hand-made answer.csv with known answers."""
import pandas as pd
import pytest

from blocksparse.analysis import bd_rate_table, positions_share
from blocksparse.original import original_choices_table, original_vs_real
from blocksparse import report
from blocksparse.report import BEGIN, END, markdown, render, render_doc, sections, splice, write
from blocksparse.results import to_frame

REFERENCE = 0.949
COMMON = dict(dataset="fashion-mnist", n_images=1000)


def _bs(mode, block_size, ratio, bits, accuracy, bpp, finetuned=False, **extra):
    return dict(method="blocksparse", split_at="layer1", mode=mode, block_size=block_size, ratio=ratio, bits=bits,
                accuracy=accuracy, bpp=bpp, finetuned=finetuned, n_rate=100, **COMMON, **extra)


def _rows(finetuned_accuracy=0.818):
    """A small study. Known answers (reference 94.9%, one point: accuracy >= 0.939):

    * at <= 1 bpp the best block-sparse row is the fine-tuned global B=4 r=0.005 (0.888 bpp);
    * without fine-tuning the cheapest row within a point is global B=2 r=0.5 4 bits (89.766 bpp);
    * channel-wise goes no lower than 1.37 bpp;
    * within a point: WebP at 2.41 bpp (q=50, not q=90 at 4.04), PNG at 5.19; JPEG never;
    * original vs real (channel-wise B=4, 2 bits): r=1 24.00 vs 61.99 bpp, 94.6% vs 92.0%;
      r=0.1 8.03 vs 8.97 bpp, 56.8% vs 56.5%; r=0.3 has no real stream.
    """
    return [
        dict(method="uncompressed", split_at="layer1", accuracy=REFERENCE, accuracy_lo=0.934, accuracy_hi=0.961,
             bpp=512.0, finetuned=False, **COMMON),
        _bs("global", 4, 0.005, 2, 0.156, 0.888, positions_bits=40.0, stream_bytes=100.0, delta_share=1.0),
        _bs("global", 4, 0.005, 2, finetuned_accuracy, 0.888, finetuned=True, accuracy_lo=0.793, accuracy_hi=0.841,
            seed=0, train="tail", val_accuracy=0.83),
        _bs("global", 2, 0.5, 4, 0.943, 89.766),
        _bs("global", 4, 0.01, 2, 0.187, 1.9),
        _bs("channel-wise", 4, 1.0, 2, 0.920, 61.99),
        _bs("channel-wise", 4, 0.1, 2, 0.565, 8.97),
        _bs("channel-wise", 2, 0.05, 2, 0.200, 1.37),
        dict(method="webp", quality=50, accuracy=0.941, accuracy_lo=0.925, accuracy_hi=0.954, bpp=2.41,
             finetuned=False, **COMMON),
        dict(method="webp", quality=5, accuracy=0.866, bpp=1.51, finetuned=False, **COMMON),
        dict(method="webp", quality=90, accuracy=0.949, bpp=4.04, finetuned=False, **COMMON),
        dict(method="png", accuracy=0.949, bpp=5.19, finetuned=False, **COMMON),
        dict(method="jpeg", quality=10, accuracy=0.860, bpp=4.17, finetuned=False, **COMMON),
        dict(method="dense", split_at="layer1", mode="channel-wise", block_size=28, ratio=1.0, bits=4,
             accuracy=0.946, bpp=119.16, finetuned=False, **COMMON),
        *[dict(method="original-accounting", split_at="layer1", mode="channel-wise", block_size=4, ratio=r, bits=2,
               accuracy=a, bpp=b, rate_is_estimate=True, finetuned=False, **COMMON)
          for r, a, b in ((1.0, 0.946, 24.0), (0.3, 0.870, 23.29), (0.1, 0.568, 8.03))],
    ]


def _titles(parts):
    return [title for title, _, _ in parts]


def test_sections_of_a_sweep_and_their_known_values():
    parts = sections(to_frame(_rows()))
    by = {title: table for title, _, table in parts}
    assert _titles(parts)[0] == "This run's sweep: the frontier"
    frontier = by["This run's sweep: the frontier"].set_index("method")
    assert frontier.loc["blocksparse global", "lowest_bpp_within"] == 89.766  # 94.3% >= 94.9% - 1
    assert frontier.loc["blocksparse global", "config"] == "global, B=2, ratio 0.5, 4 bits"
    assert frontier.loc["webp", "lowest_bpp_within"] == 2.41 and frontier.loc["webp", "config"] == "q=50"
    assert pd.isna(frontier.loc["jpeg", "lowest_bpp_within"])  # never within
    assert "original-accounting" not in frontier.index  # an estimate is no rate: it has its own table
    ft = by["Fine-tuning, before and after"].iloc[0]
    assert (ft["before"], ft["after"], ft["interval"]) == (15.6, 81.8, "[79.30, 84.10]")
    orig = by["The original's accounting"].set_index("ratio")
    assert orig.loc[1.0, "original_accuracy"] == 94.6 and orig.loc[1.0, "real_accuracy"] == 92.0
    base = by["Baselines on the same images"]
    assert list(base["setting"][base["method"] == "png"]) == ["lossless"]
    assert "Trained models on all test images" not in by  # no trained models given
    levers = by["Levers"].set_index(["lever", "value"])
    assert levers.loc[("bits", 2), "<= 1.0 bpp"] == 81.8 and pd.isna(levers.loc[("bits", 4), "<= 1.0 bpp"])


def test_sections_leave_out_what_is_absent_and_name_the_shipped_model_as_the_reference():
    assert sections() == []
    parts = sections(to_frame(_rows()))
    captions = {title: caption for title, caption, _ in parts}
    assert "against the shipped model, not fine-tuned (94.90%)" in captions["This run's sweep: the frontier"]
    assert "Trained models on all test images" not in captions  # the exploratory models are frozen in docs/exploratory.md
    doc = render_doc(parts)
    assert doc.startswith("# Results: this run's sweep") and doc.count("\n## ") == len(parts)
    assert "docs/exploratory.md" in doc


def test_markdown_is_to_markdown_with_missing_values_as_n_a():
    t = pd.DataFrame(dict(a=[1.5, None], b=["x", pd.NA]))
    assert markdown(t) == pd.DataFrame(dict(a=[1.5, "n/a"], b=["x", "n/a"])).to_markdown(index=False)
    assert markdown(pd.DataFrame()) == "(none)"
    assert render([("T", "cap.", t)]) == "## T\n\ncap.\n\n" + markdown(t) + "\n"


def test_write_puts_both_files_in_the_results_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    parts = sections(to_frame(_rows()))
    out = write(parts)
    assert out == dict(doc=tmp_path / "results" / "results_doc.md")
    assert out["doc"].read_text() == render_doc(parts)


def test_positions_share_by_hand():
    # front: (1 bpp, 50%) and (2 bpp, 60%); (3 bpp, 40%) is dominated
    df = to_frame([_bs("global", 4, 0.1, 2, 0.5, 1.0, positions_bits=80.0, stream_bytes=50.0, delta_share=1.0),
                   _bs("global", 4, 0.2, 2, 0.6, 2.0, positions_bits=40.0, stream_bytes=100.0, delta_share=0.5),
                   _bs("global", 4, 0.3, 2, 0.4, 3.0, positions_bits=800.0, stream_bytes=100.0, delta_share=0.0)])
    s = positions_share(df)
    assert s["n"] == 2
    assert s["positions_share"] == pytest.approx((80 / 400 + 40 / 800) / 2)  # 0.2 and 0.05
    assert s["delta_share"] == pytest.approx(0.75)
    caption = dict((t, c) for t, c, _ in sections(df))["Levers"]
    assert "positions take 12% of the front's streams" in caption  # 12.5% rounded to even


def test_bd_rate_of_a_curve_at_twice_the_rate_is_100_percent():
    acc = [0.80, 0.85, 0.90, 0.94]
    webp = [dict(method="webp", quality=q, accuracy=a, bpp=b, finetuned=False)
            for q, a, b in zip((5, 10, 30, 90), acc, (1.0, 1.5, 2.5, 4.0))]
    mode = [_bs("global", 4, r, 2, a, 2 * b) for r, a, b in zip((0.01, 0.02, 0.05, 0.1), acc, (1.0, 1.5, 2.5, 4.0))]
    mode.append(_bs("global", 2, 0.5, 4, 0.85, 100.0))  # dominated: off the front, must not bend the fit
    far = [_bs("region-wise", 4, r, 2, a, 1.0 + r) for r, a in ((0.01, 0.1), (0.02, 0.2))]  # accuracies 10%, 20%
    t = bd_rate_table(to_frame(webp + mode + far)).set_index("mode")
    assert t.loc["global", "bd_rate"] == pytest.approx(100.0, abs=1e-6)  # log-rate shifted by log 2
    assert t.loc["global", "points"] == 4 and t.loc["global", "overlap"] == "80.0%-94.0%"
    assert pd.isna(t.loc["region-wise", "bd_rate"]) and "do not overlap" in t.loc["region-wise", "note"]


def test_bd_rate_against_the_learned_bottleneck_when_its_rows_are_there():
    acc = [0.80, 0.85, 0.90, 0.94]
    bn = [dict(method="learned-bottleneck", rate_weight=w, accuracy=a, bpp=b, finetuned=True, **COMMON)
          for w, a, b in zip((3.2, 0.8, 0.2, 0.05), acc, (0.5, 0.75, 1.25, 2.0))]
    mode = [_bs("global", 4, r, 2, a, 4 * b) for r, a, b in zip((0.01, 0.02, 0.05, 0.1), acc, (0.5, 0.75, 1.25, 2.0))]
    by = {t: table for t, _, table in sections(to_frame(bn + mode + [_rows()[0]]))}
    assert by["BD-rate against the learned bottleneck"].set_index("mode").loc["global", "bd_rate"] == pytest.approx(
        300.0, abs=1e-6)  # four times the bits
    assert "BD-rate against the learned bottleneck" not in {t for t, _, _ in sections(to_frame(_rows()))}


def test_original_vs_real_matches_configurations():
    t = original_vs_real(to_frame(_rows())).set_index("ratio")
    assert t.loc[1.0, "real_bpp"] == pytest.approx(61.99) and t.loc[0.1, "real_accuracy"] == pytest.approx(0.565)
    assert pd.isna(t.loc[0.3, "real_bpp"])


README = "# Title\n\nintro\n\n## Results\n" + BEGIN + "\nold text\nmore old\n" + END + "\n\nafter the results\n"


def test_splice_readme_replaces_only_the_marked_section(tmp_path):
    p = tmp_path / "README.md"
    p.write_text(README)
    splice(p, "new summary\n| a |\n")
    assert p.read_text() == ("# Title\n\nintro\n\n## Results\n" + BEGIN + "\nnew summary\n| a |\n" + END
                             + "\n\nafter the results\n")
    splice(p, "\n\nagain")  # idempotent layout: one newline each side
    assert p.read_text().count(BEGIN) == 1 and f"{BEGIN}\nagain\n{END}" in p.read_text()


@pytest.mark.parametrize("text", [README.replace(BEGIN, ""), README.replace(END, ""), "no markers at all\n",
                                  README + BEGIN, README.replace(BEGIN, "@@").replace(END, BEGIN).replace("@@", END)])
def test_splice_readme_raises_without_markers(tmp_path, text):
    p = tmp_path / "README.md"
    p.write_text(text)
    with pytest.raises(ValueError, match="must contain|comes before"):
        splice(p, "x")
    assert p.read_text() == text  # untouched


def _choice_rows(mode, ratio, bpps):
    names = ["as computed", "border and padding not counted", "positions in raster order", "all batches, not the first"]
    return [dict(mode=mode, block_size=4, ratio=ratio, bits=2, choice=c, bpp=b,
                 n_rate=1000 if c.startswith("all") else 128) for c, b in zip(names, bpps)]


def test_original_choices_table():
    df = pd.DataFrame(_choice_rows("channel-wise", 0.5, [10.0, 8.0, 10.0, 12.5])
                      + _choice_rows("global", 0.1, [3.0, 2.5, 4.0, 3.0]))
    t = original_choices_table(df).set_index("mode")
    # the original's choice vs turned the other way: 10/8 -> +25%, 3/2.5 -> +20%; 3/4 -> -25%; 10/12.5 -> -20%
    assert t.loc["channel-wise", "border and padding not counted (+%)"] == 25.0
    assert t.loc["global", "border and padding not counted (+%)"] == 20.0
    assert t.loc["global", "positions in raster order (+%)"] == -25.0
    assert t.loc["channel-wise", "all batches, not the first (+%)"] == -20.0
    assert t.loc["channel-wise", "as computed"] == 10.0
    assert original_choices_table(None).empty and original_choices_table(df.iloc[:0]).empty
    with pytest.raises(ValueError, match="choices lacks"):
        original_choices_table(df.drop(columns="bpp"))
    with pytest.raises(ValueError, match="as computed"):
        original_choices_table(df[df["choice"] != "as computed"])


def test_the_study_time_is_the_sum_of_the_notebooks_in_minutes():
    timing = pd.DataFrame(dict(notebook=["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"], seconds=[60.0, 120.0, 12.0],
                               preset="default", recompute=False, date="2026-12-05", machine="box"))
    text = report.render_timing(timing)
    assert "**3.2 min** (01 1.0, 02 2.0, 03 0.2 min)" in text and "reading the committed cache" in text
    assert text.endswith("on 2026-12-05, box.")
    assert "recomputing every step" in report.render_timing(timing.assign(recompute=True))


def _answer_rows():
    """An answer.csv by hand: after layer1 only WebP (fine-tuned) within at 3.705 bpp; after layer2 a
    block-sparse row tested but not within and WebP within; after layer3 block-sparse within at 0.752 bpp.
    The bottleneck's ladder missed at layer1; the shipped-classifier WebP missed (split-free)."""
    def row(split_at, family, **kw):
        return dict(split_at=split_at, family=family, setting=None, status="tested", seeds=None, bpp=None,
                    accuracy=None, accuracy_lo=None, accuracy_hi=None, diff=None, diff_lo=None, diff_hi=None,
                    within=None, n_images=None) | kw
    webp = dict(setting='{"quality": 90}', seeds=3.0, bpp=3.7045, accuracy=0.9363, accuracy_lo=0.9316,
                accuracy_hi=0.9408, diff=-0.0002, diff_lo=-0.0021, diff_hi=0.0016, within=True, n_images=10000.0)
    missed = "no rung within one point (closest on val-select: rung {}, {} [-1.00, +0.08])"
    return pd.DataFrame([
        row("layer1", "block-sparse", status="pending: rung 2"),
        row("layer1", "bottleneck", status=missed.format(0.0125, "-1.48")),
        row("layer1", "webp-finetuned", **webp), row("layer1", "webp", status=missed.format(100, "-0.76")),
        row("layer2", "block-sparse", setting='{"bits": 2, "block_size": 2, "mode": "global", "ratio": 0.01}',
            seeds=3.0, bpp=0.5, accuracy=0.92, accuracy_lo=0.91, accuracy_hi=0.93, diff=-0.012, diff_lo=-0.02,
            diff_hi=-0.004, within=False, n_images=10000.0),
        row("layer2", "webp-finetuned", **webp), row("layer2", "webp", status=missed.format(100, "-0.76")),
        row("layer3", "block-sparse", setting='{"bits": 2, "block_size": 4, "mode": "global", "ratio": 0.05}',
            seeds=3.0, bpp=0.75174, accuracy=0.9342, accuracy_lo=0.9295, accuracy_hi=0.9389, diff=-0.00227,
            diff_lo=-0.0048, diff_hi=0.0003, within=True, n_images=10000.0),
        row("layer3", "webp-finetuned", **webp), row("layer3", "webp", status=missed.format(100, "-0.76"))])


def test_the_answer_sentence_names_the_lowest_rate_within_and_each_other_split():
    reference = dict(estimate=0.93647, lo=0.932, hi=0.941, seeds=[0, 1, 2], n_images=10000)
    s = report.answer_sentence(_answer_rows(), reference)
    assert s.startswith("So far (1 of 10 rows still pending), the fewest bits")
    assert "**0.75 bits per input pixel** (bpp), by block-sparse coding of the feature map after layer3 " \
           "(93.4% against 93.6%, 3 seeds, 10,000 test images)" in s
    # layer2's block-sparse row is tested but not within: WebP is the only one within there, as at layer1
    assert s.endswith("; after layer1 and layer2 only WebP on the input image with a fine-tuned classifier stays "
                      "within, at 3.7 bpp.")
    settled = _answer_rows().assign(status=lambda t: t["status"].str.replace("pending: rung 2", "no rung within"))
    assert report.answer_sentence(settled, None).startswith("the fewest bits")
    assert "against" not in report.answer_sentence(settled, None)  # no reference given: none claimed
    none = _answer_rows().assign(within=False)
    assert "no method tested keeps accuracy within one point" in report.answer_sentence(none, reference)
    head = " ".join(report.headline(settled, reference).split())  # wrapped at 110 characters
    assert max(map(len, report.headline(settled, reference).split("\n"))) <= 110
    assert "ResNet-18" in head and "Fashion-MNIST (28x28 grayscale" in head and "0.75 bits per input pixel" in head


def test_the_glance_table_shows_tested_rows_once_and_only_columns_with_values():
    t = report.glance_table(_answer_rows())
    assert list(t["bpp"]) == ["0.5", "0.752", "3.7"]  # by rate; WebP, which codes the image, once
    assert list(t["after"]) == ["layer2", "layer3", report.ANY_SPLIT]
    assert list(t["within one point"]) == ["no", "yes", "yes"]
    assert t.loc[1, "test accuracy (%)"] == "93.4 [93.0, 93.9]" and t.loc[1, "minus reference (points)"] == "-0.2 [-0.5, +0.0]"
    assert t.loc[2, "setting"] == "q=90" and t.loc[0, "setting"] == "global, B=2, ratio 0.01, 2 bits"
    no_seeds = report.glance_table(_answer_rows().assign(seeds=None))
    assert "seeds" not in no_seeds.columns and "seeds" in t.columns  # an empty column is left out


def test_each_untested_method_is_one_short_line():
    lines = report.untested_lines(_answer_rows())
    assert lines == [
        "- block-sparse after layer1: pending: rung 2.",
        "- learned bottleneck after layer1: no rate setting came within one point on the validation images, so "
        "none was tested (closest: -1.48 points).",
        "- WebP, shipped classifier: no rate setting came within one point on the validation images, so none was "
        "tested (closest: -0.76 points)."]  # split-free: once, without a split
    block = report.render_glance(_answer_rows())
    assert block.count("\n- ") == 3 and block.startswith("| after")


def test_the_answer_reference_is_the_bootstrap_of_the_reference_cards():
    from blocksparse.results import pack_correct
    import numpy as np
    correct = [np.array([1, 1, 1, 0] * 25, bool), np.array([1, 1, 0, 0] * 25, bool)]
    cards = [dict(family="reference", seed=s, test=dict(correct=pack_correct(c))) for s, c in enumerate(correct)]
    cards += [dict(family="reference", seed=2), dict(family="webp", seed=0, test=dict(correct=pack_correct(correct[0])))]
    ref = report.answer_reference(cards)
    assert ref["estimate"] == pytest.approx((0.75 + 0.5) / 2) and ref["seeds"] == [0, 1] and ref["n_images"] == 100
    assert ref["lo"] < ref["estimate"] < ref["hi"]
    assert report.answer_reference(cards[2:]) is None  # no seed tested


def test_main_puts_the_answer_at_a_glance_into_the_readme_and_writes_the_doc(tmp_path, monkeypatch):
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("BSU_RESULTS_DIR", str(results))
    _answer_rows().to_csv(results / "answer.csv", index=False)
    (results / "results_doc.md").write_text("# the sweep\n")
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n<!-- headline:begin -->\nold\n<!-- headline:end -->\n\n<!-- glance:begin -->\nold\n"
                      "<!-- glance:end -->\nkept\n")
    report.main([str(readme), str(tmp_path / "docs" / "results.md")])
    text = readme.read_text()
    assert "old" not in text and text.endswith("<!-- glance:end -->\nkept\n")
    assert report.render_glance(_answer_rows()) in text and "0.75 bits per input pixel" in " ".join(text.split())
    assert (tmp_path / "docs" / "results.md").read_text() == "# the sweep\n"
    (results / "answer.csv").unlink()
    with pytest.raises(SystemExit):  # a usage error that names the missing file
        report.main([str(readme), str(tmp_path / "docs" / "results.md")])


def test_the_takeaway_says_how_many_times_fewer_bits_and_what_was_not_tested():
    text = report.takeaway(_answer_rows(), dict(estimate=0.93647, lo=0.932, hi=0.941, seeds=[0, 1, 2], n_images=10000))
    lines = text.split("\n")
    assert lines[0].startswith("- **The answer:** So far (1 of 10 rows still pending)")
    # after layer3: 3.7045 / 0.75174 = 4.93 times fewer bits; layer2's block-sparse row is not within: no comparison
    assert lines[1] == ("- After layer3, block-sparse coding of the feature map needs 4.9 times fewer bits than WebP on "
                        "the input image with a fine-tuned classifier (0.75 against 3.7 bpp), both within one point.")
    assert len(lines) == 2 + 3 and lines[2] == "- Not tested: block-sparse after layer1: pending: rung 2."
