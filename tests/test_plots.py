"""Plots: the explorer picks the configuration's row and shows what it measured; figures a reader can
read (one colour per family, one marker per split, short legends outside the axes, labelled lines and
colour bars, integer level ticks)."""
import inspect
import re
import warnings

import matplotlib
import matplotlib.colors as mcolors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

import blocksparse_utils as bsu
from blocksparse import plots

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def _study(split_at="layer1", n_images=1000):
    """Rows of every method a study writes (results schema): block-sparse over 3 modes, 2 block sizes,
    4 ratios and 2 bit depths, 2 fine-tuned seeds, a learned bottleneck, the dense map, 5 image codecs
    on the input image, the original's estimate and the uncompressed model."""
    rng = np.random.default_rng(0)
    rows = [dict(method="uncompressed", split_at=split_at, accuracy=0.94, accuracy_lo=0.925, accuracy_hi=0.953,
                 n_images=n_images, bpp=64 * 32.0)]
    for i, mode in enumerate(["channel-wise", "region-wise", "global"]):
        for b in (2, 4):
            for k, ratio in enumerate([0.01, 0.05, 0.3, 1.0]):
                for q in (2, 4):
                    acc = min(0.94, 0.15 + 0.2 * k + 0.03 * i + 0.01 * q + 0.01 * rng.random())
                    rows.append(dict(method="blocksparse", split_at=split_at, mode=mode, block_size=b, ratio=ratio, bits=q,
                                     finetuned=False, accuracy=acc, accuracy_lo=acc - 0.02, accuracy_hi=acc + 0.02,
                                     n_images=n_images, n_rate=100, bpp=0.4 * 4 ** k * q / (b / 2), stream_bytes=40.0 * 4 ** k,
                                     header_bits=16.0, tables_bits=0.0, positions_bits=100.0 * k + 20, values_bits=200.0 * k + 40,
                                     padding_bits=4.0))
    for seed in (0, 1):
        rows.append(dict(method="blocksparse", split_at=split_at, mode="global", block_size=4, ratio=0.01, bits=2,
                         finetuned=True, seed=seed, accuracy=0.9 + 0.004 * seed, accuracy_lo=0.88, accuracy_hi=0.92,
                         n_images=n_images, bpp=0.5 + 0.02 * seed))
    for k, lmbda in enumerate([0.05, 0.2, 0.8]):
        rows.append(dict(method="learned-bottleneck", split_at=split_at, finetuned=True, rate_weight=lmbda,
                         accuracy=0.93 - 0.05 * k, accuracy_lo=0.91 - 0.05 * k, accuracy_hi=0.95 - 0.05 * k,
                         n_images=n_images, bpp=1.0 / (k + 1)))
    for q in (2, 4, 8):
        rows.append(dict(method="dense", split_at=split_at, bits=q, accuracy=0.9 + 0.005 * q, n_images=n_images,
                         accuracy_lo=0.88, accuracy_hi=0.95, bpp=64 * q * 0.8))
    for method, qualities in dict(jpeg=[10, 50, 90], webp=[0, 50, 90], avif=[0, 60]).items():
        for k, quality in enumerate(qualities):
            acc = 0.8 + 0.06 * k
            rows.append(dict(method=method, quality=quality, accuracy=acc, accuracy_lo=acc - 0.02, accuracy_hi=acc + 0.02,
                             n_images=n_images, bpp=1.0 + 1.5 * k + len(method) / 10))
    for method in ("png", "webp-lossless"):
        rows.append(dict(method=method, accuracy=0.94, accuracy_lo=0.925, accuracy_hi=0.953, n_images=n_images,
                         bpp=4.5 + len(method) / 10))
    rows.append(dict(method="original-accounting", split_at=split_at, mode="global", block_size=4, ratio=0.05, bits=2,
                     accuracy=0.5, n_images=n_images, bpp=0.2))
    return bsu.to_frame([dict(dataset="fashion-mnist") | r for r in rows])


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
    title = fig.get_suptitle()
    assert "global, B=4, ratio 0.005, 2 bits, fine-tuned: 90.0% [88.0, 92.0] (n=1,000) at 0.63 bpp" == title
    bars = next(a for a in fig.axes if a.patches and a.get_yticklabels()[0].get_text() == "header")
    assert [t.get_text() for t in bars.get_yticklabels()] == ["header", "positions", "values", "padding"]
    assert [p.get_width() for p in bars.patches] == pytest.approx([2.0, 12.5, 43.0, 0.5])  # bits / 8
    assert [t.get_text() for t in bars.texts] == ["2.0", "12.5", "43.0", "0.5"]  # each bar's bytes, rounded
    empty = bsu.plot_explorer(r, 0.93, None)
    assert "no result" in empty.get_suptitle()


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
    sweeps["layer1"].loc[1:, "accuracy_lo"] = sweeps["layer1"].loc[1:, "accuracy"] - 0.02  # a sweep's 95% intervals
    sweeps["layer1"].loc[1:, "accuracy_hi"] = sweeps["layer1"].loc[1:, "accuracy"] + 0.02
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
    refs = {h: l.get_ydata()[0] for h, l in handles.items() if h.startswith("shipped model, uncompressed")}
    assert refs == {"shipped model, uncompressed (1,000 images)": pytest.approx(94.0),
                    "shipped model, uncompressed (10,000 images)": pytest.approx(93.0)}
    assert "after layer1, fine-tuned" not in " ".join(handles)
    band = [c for c in fig.axes[0].collections if isinstance(c, PolyCollection)]  # fill_between: layer1's intervals
    assert len(band) == 1 and band[0].get_paths()[0].vertices[:, 1].min() == pytest.approx(28.0)
    colours = {mcolors.to_hex(line.get_color()) for k, line in handles.items() if "no fine-tuning" in k}
    assert len(colours) == 1  # one colour per family, the splits told apart by marker
    assert handles["after layer1, no fine-tuning (1,000 images)"].get_marker() != \
        handles["after layer2, no fine-tuning (1,000 images)"].get_marker()
    zoom = fig.axes[1]  # the fine-tuned models, zoomed: both configurations and the band in view
    assert zoom.get_xlim()[0] < 0.3 and zoom.get_xlim()[1] > 0.6 and zoom.get_ylim()[0] < 79 and zoom.get_ylim()[1] > 94
    legend = _legend(fig)
    assert len(legend.get_texts()) <= 8 and _outside_every_axes(fig, legend)


def test_accuracy_vs_bpp_colours_families_marks_splits_and_keeps_the_legend_outside():
    r = _rows()
    one = bsu.plot_accuracy_vs_bpp(r, 0.93)
    names = [t.get_text() for t in one.axes[0].get_legend().get_texts()]
    # one split: no marker entries (a circle is a feature map, a diamond the input image)
    assert names == ["WebP", "block-sparse", "block-sparse, fine-tuned", "shipped model, uncompressed (93.00%),\nshaded: one point below"]
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


def test_accuracy_vs_bpp_gives_each_mode_a_colour_and_splits_a_crowded_legend_into_two_panels():
    study = _study()
    fig = bsu.plot_accuracy_vs_bpp(study[~study["method"].isin(["uncompressed", "original-accounting"])], 0.94)
    feature, image = fig.axes[:2]
    assert feature.get_title() == "feature-map codecs" and image.get_title().startswith("image codecs")
    assert fig.get_suptitle() == "feature maps after layer1; 1,000 test images"  # the configuration
    by_label = {l.get_label(): l for l in feature.get_lines()}
    modes = {m: mcolors.to_hex(by_label[f"block-sparse, {m}|after layer1|{m}"].get_color())
             for m in ("global", "channel-wise", "region-wise")}
    assert len(set(modes.values())) == 3  # three modes, three colours
    names = [[t.get_text() for t in a.get_legend().get_texts()] for a in (feature, image)]
    assert "best image codec (right)" in names[0] and "best feature-map codec (left)" in names[1]
    assert {"JPEG", "WebP", "AVIF", "PNG", "WebP lossless"} <= set(names[1]) and "JPEG" not in names[0]
    assert all(len(n) <= 8 for n in names), names
    # on a given axes (the explorer's), the image codecs are folded into their best front
    single = bsu.plot_accuracy_vs_bpp(study[~study["method"].isin(["uncompressed", "learned-bottleneck"])], 0.94,
                                      ax=plt.subplots()[1])
    names = [t.get_text() for t in single.axes[0].get_legend().get_texts()]
    assert "best image codec (input image)" in names and "JPEG" not in names and len(names) <= 8


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
    band = [t for t in texts if "within one point" in t]  # names the one reference: fine-tuned, not the shipped model
    assert len(band) == 1 and "reference" in band[0] and "fine-tuned" in band[0] and "uncompressed" not in band[0]
    assert _outside_every_axes(fig, legend)
    spans = [(round(p.get_y(), 6), round(p.get_y() + p.get_height(), 6)) for p in ax.patches]
    assert spans == [(89.0, 90.0)]  # the band within one point below the reference, in percent
    assert ax.get_ylim()[0] > 10  # the first evaluation (10%) is below the axis, as its title says
    assert "before training (step 0): 10.0%," in ax.get_title()  # one number, not "10-10%"
    floor = ax.get_ylim()[0]
    curves = [l for l in ax.get_lines() if l.get_linestyle() != "None" and len(l.get_xdata()) > 2]
    assert curves and all(min(l.get_ydata()) >= floor for l in curves)  # no line runs off the axis
    on_floor = [l for l in ax.get_lines() if l.get_marker() == "v"]
    assert sum(len(l.get_xdata()) for l in on_floor) == 27 and all(set(l.get_ydata()) == {floor} for l in on_floor)
    started = runs.copy()  # runs that start near the end (a reference) and runs that start low: only the low ones named
    started.loc[(started["step"] == 0) & (started["family"] == "tail only"), "val_accuracy"] = 0.8
    started.loc[(started["step"] == 0) & (started["family"] == "distillation"), "val_accuracy"] = 0.123
    title = plots.plot_training_curves(started, reference=0.90).axes[0].get_title()
    assert title == "before training (step 0): 10.0-12.3% (18 of 27 runs), drawn on the axis as \u25bc"


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


def test_accuracy_vs_ratio_draws_the_fine_tuned_rows_so_a_results_table_differs_from_its_sweep():
    """Notebook 03 draws the sweep, 07 the results (the sweep and the fine-tuned rows): they were
    byte-identical, for the function dropped every fine-tuned row."""
    study = _study()
    sweep = study[~study["finetuned"].fillna(False).astype(bool)]
    both = plots.plot_accuracy_vs_ratio(study).axes[0]
    alone = plots.plot_accuracy_vs_ratio(sweep).axes[0]
    tuned = [c for c in both.containers if c.get_label().endswith("fine-tuned")]
    assert len(tuned) == 1 and not [c for c in alone.containers if c.get_label().endswith("fine-tuned")]
    assert list(tuned[0][0].get_ydata()) == pytest.approx([90.2])  # the mean of the two seeds
    assert list(tuned[0][0].get_xdata()) == [0.01]
    lines = {l.get_label(): l for l in alone.get_lines() if not l.get_label().startswith("_")}
    assert len({mcolors.to_hex(lines[f"{m}, B=2"].get_color()) for m in ("global", "channel-wise", "region-wise")}) == 3
    assert lines["global, B=2"].get_marker() != lines["global, B=4"].get_marker()
    best = sweep[(sweep["mode"] == "global") & (sweep["block_size"] == 2) & (sweep["method"] == "blocksparse")]
    assert list(lines["global, B=2"].get_ydata()) == pytest.approx(100 * best.groupby("ratio")["accuracy"].max().to_numpy())
    texts = [t.get_text() for t in both.get_legend().get_texts()]
    assert texts[-1].startswith("shipped model, uncompressed (94.00%)")  # the uncompressed row of the table, its band shaded
    assert "layer1" in both.get_title() and "1,000 test images" in both.get_title()


def test_feature_maps_show_the_input_once_and_each_channel_on_one_colour_scale():
    maps = {"original": torch.rand(4, 6, 6) * 3, **{f"r={r}": torch.rand(4, 6, 6) * r for r in (1.0, 0.5, 0.1)}}
    fig = plots.plot_feature_maps(torch.rand(1, 6, 6), maps, channels=[0, 2], title="channel-wise, B=2")
    grays = [im for a in fig.axes for im in a.get_images() if im.get_cmap().name == "gray"]
    assert len(grays) == 1  # the input, once
    column = [im for a in fig.axes for im in a.get_images() if im.get_cmap().name == "viridis"]
    assert len(column) == 2 * len(maps)
    lo = min(float(m[0].min()) for m in maps.values())
    hi = max(float(m[0].max()) for m in maps.values())
    ch0 = [im for im in column if im.axes.get_subplotspec().colspan.start == 1]
    assert len(ch0) == len(maps) and all(im.get_clim() == pytest.approx((lo, hi)) for im in ch0)  # one scale, every row
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert [b.get_xlabel() for b in bars] == ["channel 0 activation", "channel 2 activation"]
    assert fig.get_suptitle() == "channel-wise, B=2"


# --- every figure function, on small data of the real schema ----------------------------------------

NOT_FIGURES = {"save_figure", "card_histories", "finetuning_family", "bottleneck_family", "pick_row"}
MAX_LEGEND = 8  # STYLE.md: "at most ~8 legend entries"; the test's own number, not the module's


def _ladders():
    rows = []
    for split in ("layer1", "layer2", "layer3"):
        for family, rungs in {"block-sparse": [0.5, 1, 2], "bottleneck": [3.2, 0.8], "webp-finetuned": [10, 30]}.items():
            for k, rung in enumerate(rungs):
                diff = -0.08 + 0.035 * k
                rows.append(dict(split_at=split, family=family, rung=float(rung), setting="", bpp=0.3 * (k + 1),
                                 accuracy=0.93 + diff, diff=diff, diff_lo=diff - 0.006, diff_hi=diff + 0.006,
                                 within=diff - 0.006 > -0.01, operating_point=k == len(rungs) - 1))
    return pd.DataFrame(rows)


def _answer():
    rows = []
    for split in ("layer1", "layer2", "layer3"):
        for family, status in [("block-sparse", "tested"), ("bottleneck", "none within"), ("webp-finetuned", "tested")]:
            rows.append(dict(split_at=split, family=family, status=status, accuracy=0.93, accuracy_lo=0.925,
                             accuracy_hi=0.935, bpp=0.75 if family == "block-sparse" else 3.7))
    return pd.DataFrame(rows)


def _figures():
    """Each public figure function of ``plots``, on small data of the real schema: name -> [thunk]."""
    study = _study()
    real = study[study["method"] != "original-accounting"]  # as notebook 07 and the explorer draw it
    protocol = pd.concat([_study(s)[lambda d: d["method"].isin(["learned-bottleneck", "blocksparse"]) & d["finetuned"].fillna(False)]
                          for s in ("layer1", "layer2", "layer3")]
                         + [study[study["method"] == "webp"], study[study["method"] == "webp"].assign(finetuned=True)],
                         ignore_index=True)
    three = pd.concat([_study(s) for s in ("layer1", "layer2", "layer3")], ignore_index=True)
    sweeps = {s: _study(s)[lambda d: d["method"].isin(["uncompressed", "blocksparse"]) & ~d["finetuned"].fillna(False).astype(bool)]
              for s in ("layer1", "layer2", "layer3")}
    models = pd.concat([_study(s, 10000)[lambda d: d["finetuned"].fillna(False).astype(bool) & (d["method"] == "blocksparse")]
                        for s in ("layer1", "layer2", "layer3")], ignore_index=True)
    z = torch.rand(1, 64, 28, 28)
    row = bsu.pick_row(study, "global", 4, 0.05, 2)
    symbols = np.random.default_rng(0).integers(0, 4, 500)
    return {
        "plot_accuracy_vs_bpp": [lambda: plots.plot_accuracy_vs_bpp(real, 0.94),
                                 lambda: plots.plot_accuracy_vs_bpp(protocol, 0.94),  # notebook 06's: several splits
                                 lambda: plots.plot_accuracy_vs_bpp(real[real["method"] == "blocksparse"], 0.94, logx=False)],
        "plot_split_points": [lambda: plots.plot_split_points(sweeps, models, 0.935),
                              lambda: plots.plot_split_points(sweeps)],
        "plot_accuracy_vs_ratio": [lambda: plots.plot_accuracy_vs_ratio(study)],
        "plot_block_partition": [lambda: plots.plot_block_partition(torch.rand(1, 28, 28), bsu.partition(z, 4)[0, 0],
                                                                    bsu.block_energy(z, 4)[0, 0], (28, 28))],
        "plot_energy_cutoffs": [lambda: plots.plot_energy_cutoffs(bsu.block_energy(z, 2), {1.0: 0.0, 0.1: 0.5, 0.01: 2.0},
                                                                  0.1, "B=2")],
        "plot_code_lengths": [lambda: plots.plot_code_lengths(symbols, 2, "global, B=2, ratio 0.05")],
        "plot_training_curves": [lambda: plots.plot_training_curves(_runs(), 0.9, {"val_accuracy": "validation accuracy (%)",
                                                                                   "val_bpp_estimate": "estimated bpp"},
                                                                    title="3 families")],
        "plot_feature_maps": [lambda: plots.plot_feature_maps(torch.rand(1, 28, 28), {
            "original": z[0], **{f"r={r}": z[0] * (z[0] > 1 - r) for r in (1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002)}},
            title="channel-wise, B=4")],
        "plot_explorer": [lambda: plots.plot_explorer(study, 0.94, row, torch.rand(1, 28, 28), z[0]),
                          lambda: plots.plot_explorer(study, 0.94, None)],
        "plot_ladders": [lambda: plots.plot_ladders(_ladders())],
        "plot_v2_walks": [lambda: plots.plot_v2_walks(_ladders())],
        "plot_answer": [lambda: plots.plot_answer(_answer(), dict(estimate=0.935, lo=0.93, hi=0.94, seeds=[0, 1, 2],
                                                                  n_images=10000))],
    }


def _legends(fig):
    out = list(fig.legends) + [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    subs = list(fig.subfigs)
    while subs:
        s = subs.pop()
        out += s.legends
        subs += s.subfigs
    return out


def _drawn_ticks(axis):
    """The ticks of ``axis`` that are drawn: visible, labelled, inside the view limits."""
    lo, hi = sorted(axis.get_view_interval())
    eps = 1e-9 * max(abs(lo), abs(hi), 1)
    return [t for t in axis.get_major_ticks() + axis.get_minor_ticks()
            if t.get_visible() and t.label1.get_visible() and t.label1.get_text() and lo - eps <= t.get_loc() <= hi + eps]


def _texts(ax):
    """An axes' drawn texts: titles, axis labels and tick labels."""
    texts = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label]
    texts += [t.label1 for axis in (ax.xaxis, ax.yaxis) for t in _drawn_ticks(axis)]
    return [t for t in texts if t.get_visible() and t.get_text()]


def _collisions(fig) -> list[str]:
    """Texts or legends drawn over another axes or its texts, and tick labels over each other."""
    if not hasattr(fig.canvas, "get_renderer"):  # a figure closed after display (the widgets') keeps a bare canvas
        FigureCanvasAgg(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    axes = [a for a in fig.axes if a.axison]
    boxes = {a: [(f"{t.get_text()!r} of {a.get_label() or a}", t.get_window_extent(renderer)) for t in _texts(a)]
             for a in axes}
    found = []
    for a in axes:
        for other in axes:
            if other is a:
                continue
            frame = other.get_window_extent(renderer)
            for name, box in boxes[a]:
                if box.overlaps(frame) or any(box.overlaps(b) for _, b in boxes[other]):
                    found.append(f"{name} over {other} or its labels")
        for axis in (a.xaxis, a.yaxis):  # tick labels of one axis over each other (minor beside major)
            labels = [t.label1.get_window_extent(renderer) for t in _drawn_ticks(axis)]
            found += [f"tick labels over each other on {a}" for i, b in enumerate(labels) for c in labels[i + 1:]
                      if b.overlaps(c)]
    for legend in _legends(fig):
        box = legend.get_window_extent(renderer)
        for a in axes:
            if box.overlaps(a.get_window_extent(renderer)) or any(box.overlaps(b) for _, b in boxes[a]):
                found.append(f"legend {[t.get_text() for t in legend.get_texts()][:3]} over {a}")
    return found


def test_every_public_figure_function_has_a_case_here():
    public = {n for n, f in inspect.getmembers(plots, inspect.isfunction)
              if f.__module__ == plots.__name__ and not n.startswith("_")}
    assert sorted(_figures()) == sorted(FIGURES)
    missing = public - NOT_FIGURES - set(FIGURES)
    assert not missing, f"figure functions without a rendering case in test_plots._figures: {sorted(missing)}"


FIGURES = ["plot_accuracy_vs_bpp", "plot_split_points", "plot_accuracy_vs_ratio", "plot_block_partition", "plot_energy_cutoffs",
           "plot_code_lengths", "plot_training_curves", "plot_feature_maps", "plot_explorer", "plot_ladders", "plot_v2_walks",
           "plot_answer"]


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_renders_without_warnings_with_short_legends_outside_and_nothing_drawn_over(name):
    """Any warning fails (tight_layout's "not applied" included), as do more than 8 entries
    in a legend, a legend over an axes, and a label over another axes, its labels, or its neighbour."""
    if not hasattr(plots, name):
        pytest.skip(f"plots has no {name}")
    for k, draw in enumerate(_figures()[name]):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fig = draw()
            fig.canvas.draw()
        for legend in _legends(fig):
            texts = [t.get_text() for t in legend.get_texts()]
            assert len(texts) <= MAX_LEGEND, f"{name} case {k}: {len(texts)} legend entries: {texts}"
        assert not _collisions(fig), f"{name} case {k}: {_collisions(fig)[:5]}"
        plt.close(fig)



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


def test_ladders_keep_every_interval_in_view_and_name_only_the_families_drawn():
    """An upper interval end above the reference (+0.8 points) is inside the axes, not cut at the top; the
    legend names the families in the table (v2's walks have no WebP with the shipped classifier)."""
    lad = _ladders()
    lad = lad[lad["family"] != "block-sparse"].copy()
    lad.loc[lad.index[-1], ["diff", "diff_hi"]] = [0.002, 0.008]  # in the last panel drawn (the axes share y)
    fig = plots.plot_ladders(lad)
    for ax in fig.axes:
        assert ax.get_ylim()[1] >= 0.8
    names = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert names[:2] == ["learned bottleneck", "WebP, fine-tuned classifier"]
    assert "block-sparse" not in names and "WebP, shipped classifier" not in names
    plt.close(fig)


def test_v2_walks_draw_v2_5s_pick_only_after_the_splits_it_governs():
    """Dotted at -0.3 point after layer1 and layer2 (v2.5's walks), not after layer3 (v2.2's pick at -1)."""
    fig = plots.plot_v2_walks(_ladders())
    panels = {ax.get_title(): ax for ax in fig.axes}

    def dotted(ax):
        return sorted(round(float(l.get_ydata()[0]), 6) for l in ax.get_lines() if l.get_linestyle() == ":")
    assert dotted(panels["after layer1"]) == dotted(panels["after layer2"]) == [-0.3]
    assert dotted(panels["after layer3"]) == []
    assert "pick at -0.3 (v2.5: block-sparse, bottleneck)" in [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    plt.close(fig)
