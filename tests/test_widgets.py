"""Widgets: sliders run upward in every notebook; an export is named after the slider state and
never changes a tracked file (no browser: the export button is clicked from Python)."""
import subprocess

import matplotlib
import numpy as np
import pytest
import torch

import blocksparse_utils as bsu
from blocksparse import plots, widgets

matplotlib.use("Agg")


@pytest.mark.parametrize("ratios", [[1.0, 0.5, 0.3, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002], [0.5, 0.05], [0.01, 0.5, 0.1]])
def test_every_slider_runs_upward_whatever_order_the_notebook_lists(ratios):
    c = bsu.controls(ratios, [4, 2, 8], ["global", "channel-wise"], bits=[4, 2])
    assert list(c["ratio"].options) == sorted(ratios)  # low to high, as notebook 07's
    assert list(c["block_size"].options) == [2, 4, 8] and c["block_size"].value == 4
    assert list(c["bits"].options) == [2, 4] and c["bits"].value == 4  # the deepest quantizer first
    assert c["ratio"].value == sorted(ratios)[len(ratios) // 2]
    assert list(c["mode"].options) == ["global", "channel-wise"]  # modes are names, not a scale: kept as given
    assert all(not s.continuous_update for k, s in c.items() if k != "mode")
    assert "bits" not in bsu.controls(ratios)


def _git_status() -> str:
    """What git sees under figures/: tracked files changed and files it does not ignore."""
    return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all", "--", "figures"], cwd=bsu.ROOT,
                          capture_output=True, text=True, check=True).stdout


def _export(box) -> str:
    """Click a figure's "export figure" button; returns the status line it shows."""
    button, status = box.children[-1].children
    assert button.description == "export figure"
    button.click()
    return status.value


def test_exports_from_notebooks_01_and_04_off_their_defaults_leave_git_status_clean(monkeypatch):
    """The sliders of 01 and 04 moved off their defaults, then exported into the real figures/
    folder: git's view of figures/ is unchanged, and 04's file names mode, ratio, block size, bits."""
    monkeypatch.delenv("BSU_FIGURES_DIR", raising=False)
    exports = bsu.ROOT / "figures" / widgets.EXPORTS
    existed = exports.exists()
    before_files = set(exports.glob("*"))
    before = _git_status()
    z = torch.rand(1, 4, 8, 8)
    blocks = {b: bsu.partition(z, b) for b in (2, 3, 4)}
    energy = {b: bsu.block_energy(z, b) for b in (2, 3, 4)}
    symbols = {(m, b, r, q): np.random.default_rng(0).integers(0, 2 ** q, 200)
               for m in ("channel-wise", "global") for b in (2, 4) for r in (0.5, 0.05, 0.01) for q in (2, 4)}
    c01 = bsu.controls(block_sizes=[2, 3, 4])
    box01 = bsu.interactive_figure(lambda block_size: plots.plot_block_partition(
        torch.zeros(1, 8, 8), blocks[block_size][0, 0], energy[block_size][0, 0], (8, 8)), "01_block_partitioning",
        block_size=c01["block_size"])
    c04 = bsu.controls([0.5, 0.05, 0.01], [2, 4], ["channel-wise", "global"], [2, 4])
    box04 = bsu.interactive_figure(lambda ratio, block_size, mode, bits: plots.plot_code_lengths(
        symbols[mode, block_size, ratio, bits], bits), "04_huffman_statistics", **c04)
    try:
        c01["block_size"].value = 2  # off the default (3)
        c04["ratio"].value, c04["block_size"].value, c04["mode"].value, c04["bits"].value = 0.01, 2, "global", 2
        assert "saved 01_block_partitioning_block_size2.png" in _export(box01)
        status = _export(box04)
        name = "04_huffman_statistics_ratio0.01_block_size2_mode-global_bits2"
        assert f"saved {name}.png, {name}.pdf" in status
        written = sorted(set(exports.glob("*")) - before_files)
        assert {p.name for p in written} >= {f"{name}.png", f"{name}.pdf", "01_block_partitioning_block_size2.png"}
        assert _git_status() == before  # nothing tracked changed, nothing git would add
        tracked = subprocess.run(["git", "ls-files", "--", "figures/exports"], cwd=bsu.ROOT, capture_output=True,
                                 text=True, check=True).stdout
        assert tracked == ""
    finally:
        for p in set(exports.glob("*")) - before_files:  # only what this test wrote
            p.unlink()
        if not existed and exports.exists() and not any(exports.iterdir()):
            exports.rmdir()


def test_notebook_07s_explorer_redraws_and_exports_without_warnings_or_overlaps(tmp_path, monkeypatch):
    """The explorer as notebook 07 builds it (sliders for ratio and block size, buttons for mode and
    bits), every control moved with warnings as errors (tight_layout's "not applied" warned at every
    redraw), then exported: the file is named after the state, its legend short and outside, no label
    over another axes."""
    import warnings

    import ipywidgets
    from test_plots import _collisions, _legends, _study

    monkeypatch.setenv("BSU_FIGURES_DIR", str(tmp_path))
    study = _study()
    rows = study[~study["finetuned"].fillna(False).astype(bool)]
    bs = rows[rows["method"] == "blocksparse"]
    z, image = torch.rand(1, 64, 28, 28), torch.rand(1, 28, 28)
    c = bsu.controls(sorted(bs["ratio"].unique()), sorted(bs["block_size"].unique()), sorted(bs["mode"].unique()))
    c["bits"] = ipywidgets.ToggleButtons(options=sorted(bs["bits"].unique()), description="bits")
    drawn = []

    def draw(ratio, block_size, mode, bits):
        fig = bsu.plot_explorer(rows, 0.94, bsu.pick_row(rows, mode, block_size, ratio, bits), image,
                                bsu.compress(z, bsu.CodecConfig(block_size, ratio, mode, bits))[0])
        drawn.append(fig)
        return fig

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        box = bsu.interactive_figure(draw, "explorer", **c)
        c["ratio"].value, c["block_size"].value, c["mode"].value, c["bits"].value = 0.05, 2, "region-wise", 4
        status = _export(box)
    assert len(drawn) == 5  # the first draw and one per control moved
    name = "explorer_ratio0.05_block_size2_mode-region-wise_bits4"
    assert f"saved {name}.png, {name}.pdf" in status and (tmp_path / "exports" / f"{name}.png").exists()
    fig = drawn[-1]
    assert fig.get_suptitle().startswith("region-wise, B=2, ratio 0.05, 4 bits, after layer1: ")
    assert all(len(legend.get_texts()) <= 8 for legend in _legends(fig))
    assert not _collisions(fig), _collisions(fig)


def test_headless_runs_draw_the_first_values_once_without_widgets(monkeypatch):
    """notebook_runner sets HEADLESS for its kernels: output widgets without a frontend hung papermill."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from blocksparse import widgets as W
    calls = []

    def draw(ratio, mode):
        calls.append((ratio, mode))
        return plt.figure()
    sliders = dict(ratio=w.SelectionSlider(options=[0.1, 0.5], value=0.5), mode=w.ToggleButtons(options=["a", "b"]))
    monkeypatch.setenv(W.HEADLESS, "1")
    assert W.interactive_figure(draw, "x", **sliders) is None and calls == [(0.5, "a")]
    monkeypatch.delenv(W.HEADLESS)
    assert isinstance(W.interactive_figure(draw, "x", **sliders), w.VBox)
