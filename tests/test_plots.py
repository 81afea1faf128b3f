"""Plots: the explorer picks the configuration's row and shows what it measured; figures a reader can
read (one colour per family, one marker per split, short legends outside the axes, labelled lines and
colour bars, integer level ticks)."""
import re

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
import torch

import blocksparse_utils as bsu
from blocksparse import plots

matplotlib.use("Agg")


def _rows():
    base = dict(method="blocksparse", mode="global", block_size=4, bits=2, n_images=1000, n_rate=10,
                stream_bytes=60.0, header_bits=16.0, positions_bits=100.0, values_bits=344.0, padding_bits=4.0)
    return bsu.to_frame([
        base | dict(ratio=0.005, finetuned=False, accuracy=0.15, accuracy_lo=0.13, accuracy_hi=0.17, bpp=0.61),
        base | dict(ratio=0.005, finetuned=True, seed=0, accuracy=0.89, accuracy_lo=0.87, accuracy_hi=0.91, bpp=0.62),
        base | dict(ratio=0.005, finetuned=True, seed=1, accuracy=0.90, accuracy_lo=0.88, accuracy_hi=0.92, bpp=0.63),
        base | dict(ratio=0.1, finetuned=False, accuracy=0.60, accuracy_lo=0.57, accuracy_hi=0.63, bpp=3.0),
        dict(method="webp", quality=0, accuracy=0.8, n_images=1000, bpp=1.0),
    ])


def test_pick_row_finds_the_configuration_and_the_best_seed():
    r = _rows()
    assert bsu.pick_row(r, "global", 4, 0.1, 2)["accuracy"] == 0.60
    assert bsu.pick_row(r, "global", 4, 0.005, 2, finetuned=True)["seed"] == 1  # the most accurate seed
    assert bsu.pick_row(r, "global", 4, 0.005, 2)["accuracy"] == 0.15
    assert bsu.pick_row(r, "global", 4, 0.005 + 1e-15, 2)["accuracy"] == 0.15  # a float ratio from a slider
    assert bsu.pick_row(r, "channel-wise", 4, 0.1, 2) is None and bsu.pick_row(r, "global", 4, 0.1, 4) is None


def test_plot_explorer_states_the_row_and_its_bytes():
    r = _rows()
    fig = bsu.plot_explorer(r, 0.93, bsu.pick_row(r, "global", 4, 0.005, 2, True), torch.zeros(1, 28, 28),
                            torch.zeros(64, 28, 28))
    title = fig.axes[0].get_title()
    assert "90.0% [88.0, 92.0] (n=1000) at 0.630 bpp" in title and "fine-tuned" in title
    bars = fig.axes[1]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["header", "positions", "values", "padding"]
    assert [p.get_width() for p in bars.patches] == pytest.approx([2.0, 12.5, 43.0, 0.5])  # bits / 8
    empty = bsu.plot_explorer(r, 0.93, None)
    assert "no result" in empty.axes[0].get_title()


def test_families_read_flags_of_loaded_results():
    from blocksparse.plots import _family
    r = _rows()
    assert [_family(row) for _, row in r.iterrows()] == ["block-sparse", "block-sparse, fine-tuned",
                                                          "block-sparse, fine-tuned", "block-sparse", "WebP"]
    assert _family(pd.Series(dict(method="webp", finetuned=True))) == "WebP, fine-tuned classifier"
    assert _family(pd.Series(dict(method="learned-bottleneck", finetuned=True))) == "learned bottleneck (ResNet frozen)"


def test_plot_split_points_draws_each_front_and_the_mean_of_each_models_seeds():
    def sweep(split, points):
        u = dict(method="uncompressed", accuracy=0.94, n_images=1000, bpp=32.0 * 64, split_at=split)
        return bsu.to_frame([u] + [dict(method="blocksparse", mode="global", block_size=2, ratio=r, bits=2,
                                        accuracy=a, n_images=1000, bpp=b, split_at=split) for r, a, b in points])
    # layer1: (0.5, 0.2) is dominated by (0.4, 0.3); layer2's front keeps all three
    sweeps = {"layer2": sweep("layer2", [(0.01, 0.2, 0.3), (0.02, 0.5, 0.6), (0.05, 0.9, 2.0)]),
              "layer1": sweep("layer1", [(0.01, 0.3, 0.4), (0.02, 0.2, 0.5), (0.05, 0.8, 3.0)])}
    model = dict(method="blocksparse", mode="global", block_size=2, bits=2, finetuned=True, n_images=10000,
                 split_at="layer2")
    models = bsu.to_frame([model | dict(ratio=0.005, seed=0, accuracy=0.92, accuracy_lo=0.91, accuracy_hi=0.93, bpp=0.5),
                           model | dict(ratio=0.005, seed=1, accuracy=0.90, accuracy_lo=0.89, accuracy_hi=0.91, bpp=0.7),
                           model | dict(ratio=0.002, seed=0, accuracy=0.80, accuracy_lo=0.79, accuracy_hi=0.81, bpp=0.3)])
    fig = bsu.plot_split_points(sweeps, models, models_reference=0.93)
    handles = dict(zip(*reversed(fig.axes[0].get_legend_handles_labels())))
    line = handles["after layer1, no fine-tuning (1,000 images)"]
    assert list(line.get_xdata()) == [0.4, 3.0] and list(line.get_ydata()) == pytest.approx([30, 80])
    assert list(handles["after layer2, no fine-tuning (1,000 images)"].get_xdata()) == [0.3, 0.6, 2.0]
    stars = handles["after layer2, fine-tuned (10,000 images)"]
    assert list(stars[0].get_xdata()) == pytest.approx([0.6, 0.3])     # mean rate of each configuration's seeds
    assert list(stars[0].get_ydata()) == pytest.approx([91.0, 80.0])
    bars = stars[2][0].get_segments()                                   # the seeds' intervals, outermost ends
    assert [tuple(s[:, 1]) for s in bars] == [pytest.approx((89.0, 93.0)), pytest.approx((79.0, 81.0))]
    refs = {h: l.get_ydata()[0] for h, l in handles.items() if h.startswith("uncompressed")}
    assert refs == {"uncompressed (1,000 images)": pytest.approx(94.0), "uncompressed (10,000 images)": pytest.approx(93.0)}
    assert "after layer1, fine-tuned" not in " ".join(handles)


def test_accuracy_vs_bpp_colours_families_marks_splits_and_keeps_the_legend_outside():
    r = _rows()
    one = bsu.plot_accuracy_vs_bpp(r, 0.93)
    names = [t.get_text() for t in one.axes[0].get_legend().get_texts()]
    # one split: the markers are the modes (and the input image), no split named
    assert names == ["WebP", "block-sparse", "block-sparse, fine-tuned", "global", "input image",
                     "uncompressed (93.00%)", "within one point"]
    later = r.iloc[[1]].assign(split_at="layer3", bpp=0.3)
    fig = bsu.plot_accuracy_vs_bpp(pd.concat([r.assign(split_at="layer1"), later], ignore_index=True), 0.93)
    ax = fig.axes[0]
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "after layer1" in names and "after layer3" in names and "global" not in names
    lines = [l for l in ax.get_lines() if len(l.get_xdata())]
    tuned = [l for l in lines if 0.3 in list(l.get_xdata()) or 0.62 in list(l.get_xdata())]
    assert len({l.get_color() if isinstance(l.get_color(), str) else tuple(l.get_color()) for l in tuned}) == 1
    assert len({l.get_marker() for l in tuned}) == 2  # one family, two splits
    fig.canvas.draw()
    legend, axes = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes.x1  # outside, right of the axes
    band = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.85, 0.85, 0.85))]
    y0, y1 = band[0].get_y(), band[0].get_y() + band[0].get_height()
    assert (y0, y1) == pytest.approx((92.0, 93.0))  # the one-point band
    labels = [t.get_text() for t in ax.get_xticklabels(minor=True) + ax.get_xticklabels() if t.get_text()]
    assert "0.5" in labels and "2" in labels and "1" in labels  # plain numbers at 1, 2, 5 per decade
    assert not any("times" in t or "^" in t for t in labels)


def test_an_export_is_named_after_its_slider_state_and_never_tracked(tmp_path, monkeypatch):
    import subprocess

    from blocksparse import widgets
    assert widgets.export_name("04_huffman_statistics", dict(ratio=0.01, block_size=2, mode="region-wise")) == \
        "04_huffman_statistics_ratio0.01_block_size2_mode-region-wise"
    monkeypatch.setenv("BSU_FIGURES_DIR", str(tmp_path))
    import matplotlib.pyplot as plt
    fig = plt.figure()
    paths = bsu.save_figure(fig, f"{widgets.EXPORTS}/{widgets.export_name('01_block_partitioning', dict(ratio=0.5))}")
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == ["exports/01_block_partitioning_ratio0.5.png",
                                                                   "exports/01_block_partitioning_ratio0.5.pdf"]
    ignored = subprocess.run(["git", "check-ignore", "-q", "figures/exports/01_block_partitioning_ratio0.5.png"],
                             cwd=bsu.ROOT)
    assert ignored.returncode == 0  # git ignores every export


# --- figures a reader can read: legends, labels, ticks ---------------------------------------------

FILE_NAME = r"_seed\d|\.json|\.pt|layer\d_|bottleneck_layer|lmbda"


def _legend(fig):
    legends = fig.legends + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert len(legends) == 1, "one legend"
    return legends[0]


def _outside_every_axes(fig, legend) -> bool:
    fig.canvas.draw()
    box = legend.get_window_extent()
    return not any(box.overlaps(a.get_window_extent()) for a in fig.axes)


def _runs(families=("distillation", "no distillation", "tail only"), splits=("layer1", "layer2", "layer3"),
          seeds=(0, 1, 2)):
    rows = []
    for f in families:
        for s in splits:
            for seed in seeds:
                run = f"{s}_global_B4_r0.005_2b_{f.replace(' ', '-')}_seed{seed}"  # a card's file stem
                rows += [dict(run=run, family=f, split_at=s, seed=seed, step=k * 150, val_accuracy=0.1 + 0.08 * k,
                              val_bpp_estimate=1.0 - 0.05 * k) for k in range(10)]
    return pd.DataFrame(rows)


def test_training_curves_colour_by_family_marker_by_split_and_one_short_legend_outside():
    runs = _runs()
    fig = plots.plot_training_curves(runs, reference=0.90)
    ax = fig.axes[0]
    lines = [l for l in ax.get_lines() if len(l.get_xdata()) > 2]  # the curves (not the reference line)
    assert len(lines) == runs["run"].nunique() == 27
    by_run = runs.drop_duplicates("run").set_index("run")
    colour, marker = {}, {}
    for line, run in zip(lines, runs["run"].drop_duplicates()):
        colour.setdefault(by_run.loc[run, "family"], set()).add(mcolors.to_hex(line.get_color()))
        marker.setdefault(by_run.loc[run, "split_at"], set()).add(line.get_marker())
    assert all(len(c) == 1 for c in colour.values()) and len(set.union(*colour.values())) == 3  # one colour per family
    assert all(len(m) == 1 for m in marker.values()) and len(set.union(*marker.values())) == 3  # one marker per split
    legend = _legend(fig)
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) <= 8 and len(texts) == len(set(texts))
    assert not any(re.search(FILE_NAME, t) for t in texts), texts
    assert {"distillation", "no distillation", "tail only", "after layer1", "after layer2", "after layer3"} <= set(texts)
    assert _outside_every_axes(fig, legend)
    spans = [(round(p.get_y(), 6), round(p.get_y() + p.get_height(), 6)) for p in ax.patches]
    assert spans == [(89.0, 90.0)]  # the band within one point below the reference, in percent
    assert ax.get_ylim()[0] > 10  # the first evaluation (10%) is below the axis, as its title says
    assert "10-10%" in ax.get_title()


def test_the_shipped_models_curves_have_at_most_eight_legend_entries_and_no_file_names():
    """The figures notebooks 05 and 06 save, drawn from the committed cards."""
    frontier = sorted(bsu.repo_path("data", "frontier").glob("layer*.json"))
    ablation = sorted(bsu.repo_path("data", "ablation").glob("layer*.json"))
    bottleneck = sorted(bsu.repo_path("data", "frontier").glob("bottleneck_*.json"))
    assert len(frontier) + len(ablation) > 8 and len(bottleneck) > 8  # more runs than legend entries
    for fig in (plots.plot_training_curves(plots.card_histories(frontier + ablation, plots.finetuning_family), 0.934),
                plots.plot_training_curves(plots.card_histories(bottleneck, plots.bottleneck_family), 0.934,
                                           {"val_accuracy": "validation accuracy (%)",
                                            "val_bpp_estimate": "estimated bpp (validation)"})):
        legend = _legend(fig)
        texts = [t.get_text() for t in legend.get_texts()]
        assert 3 <= len(texts) <= 8 and len(texts) == len(set(texts)), texts
        assert not any(re.search(FILE_NAME, t) for t in texts), texts
        assert _outside_every_axes(fig, legend)


def test_finetuning_family_names_what_is_trained_and_the_losses():
    finetuning_family, bottleneck_family = plots.finetuning_family, plots.bottleneck_family
    s = dict(train="all", distill_weight=0.5, group_lasso_weight=1e-5, lr=1e-3, steps=1800)
    assert finetuning_family(dict(schedule=s)) == "whole network, distillation + group-lasso"
    assert finetuning_family(dict(schedule=s | dict(group_lasso_weight=0.0))) == "whole network, distillation"
    assert finetuning_family(dict(schedule=s | dict(train="tail", distill_weight=0.0, group_lasso_weight=0.0))) == \
        "tail only, cross-entropy only"
    assert bottleneck_family(dict(lmbda=0.2)) == "rate weight 0.2"


def test_energy_cutoffs_are_labelled_with_their_ratio():
    energy = torch.tensor([0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0])
    cutoffs = {1.0: 0.0, 0.5: 2.0, 0.25: 8.0, 0.125: 32.0}
    fig = plots.plot_energy_cutoffs(energy, cutoffs, 0.25)
    ax = fig.axes[0]
    lines = {float(l.get_xdata()[0]): l for l in ax.get_lines()}
    assert sorted(lines) == [2.0, 8.0, 32.0]  # the zero cut-off is off the log axis
    labels = {t.get_text().strip() for t in ax.texts}
    assert labels == {"r=0.5", "r=0.25", "r=0.125"}
    assert mcolors.to_hex(lines[8.0].get_color()) == "#ff0000" != mcolors.to_hex(lines[2.0].get_color())  # the chosen ratio
    legend = _legend(fig)
    texts = [t.get_text() for t in legend.get_texts()]
    assert "cut-off of ratio 0.25" in texts and any("ratio 1: cut-off 0" in t for t in texts)
    assert _outside_every_axes(fig, legend)


def test_block_partition_colour_bar_is_labelled():
    z = torch.rand(1, 2, 6, 6)
    blocks, energy = bsu.partition(z, 4)[0, 0], bsu.block_energy(z, 4)[0, 0]
    fig = plots.plot_block_partition(torch.zeros(1, 6, 6), blocks, energy, (6, 6))
    bar = fig.axes[-1]
    assert "energy" in bar.get_ylabel()
    assert fig.axes[2].get_title() == "block energy, 2x2 blocks"


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_code_length_axes_tick_at_integer_levels(bits):
    symbols = np.random.default_rng(0).integers(0, 2 ** bits, size=500)
    fig = plots.plot_code_lengths(symbols, bits, "global, B=2, ratio 0.05")
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() and 0 <= t < 2 ** bits for t in ticks), ticks
        if bits <= 4:
            assert ticks == list(range(2 ** bits))  # every level
        labels = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
        assert labels and all(t.lstrip("\u2212-").isdigit() for t in labels), labels


def test_plot_answer_draws_each_tested_row_with_its_interval_and_names_the_others():
    import warnings
    import matplotlib.pyplot as plt
    from matplotlib.container import ErrorbarContainer
    table = pd.DataFrame([
        dict(split_at="layer1", family="block-sparse", status="no rung within one point", bpp=None, accuracy=None,
             accuracy_lo=None, accuracy_hi=None),
        dict(split_at="layer1", family="webp-finetuned", status="tested", bpp=3.7, accuracy=0.936, accuracy_lo=0.931,
             accuracy_hi=0.941),
        dict(split_at="layer3", family="block-sparse", status="tested", bpp=0.75, accuracy=0.934, accuracy_lo=0.93,
             accuracy_hi=0.939),
        dict(split_at="layer3", family="bottleneck", status="pending: rung 0.2", bpp=None, accuracy=None,
             accuracy_lo=None, accuracy_hi=None)])
    reference = dict(estimate=0.9365, lo=0.932, hi=0.941, seeds=[0, 1, 2], n_images=10000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no layout or other warning
        fig = plots.plot_answer(table, reference, splits=("layer1", "layer3"))
        fig.canvas.draw()
    a, b = fig.axes[:2]
    bars = [c for c in b.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 1
    x, y = bars[0].lines[0].get_data()
    assert (float(x[0]), float(y[0])) == (0.75, pytest.approx(93.4))
    seg = bars[0].lines[2][0].get_segments()[0]
    assert (seg[0][1], seg[1][1]) == (pytest.approx(93.0), pytest.approx(93.9))  # the row's interval, in points
    assert "not tested:\nblock-sparse" in a.get_xlabel() and "pending:\nlearned bottleneck" in b.get_xlabel()
    assert any(line.get_ydata()[0] == pytest.approx(92.65) for line in a.lines)  # one point below the reference
    legend = fig.legends[0]
    texts = [t.get_text() for t in legend.get_texts()]
    assert len(texts) <= 8 and "WebP, fine-tuned classifier" in texts and any("3 seeds" in t for t in texts)
    plt.close(fig)
