"""Widgets: sliders over precomputed data, and a figure-export button."""
from __future__ import annotations

import os

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython.display import display

from .codec import RATIOS
from .plots import save_figure


def _slider(name: str, values, value=None) -> w.SelectionSlider:
    """A slider over ``values`` running upward (low to high, whatever order they are given in),
    at ``value`` or the middle option."""
    options = sorted(values)
    return w.SelectionSlider(options=options, value=options[len(options) // 2] if value is None else value,
                             description=name, continuous_update=False)


def controls(ratios=tuple(RATIOS), block_sizes=(1, 2, 4, 8), modes=None, bits=None) -> dict:
    """The study's sliders (and a mode selector): ``ratio``, ``block_size``[, ``mode``][, ``bits``].

    Every slider runs upward, low to high, in every notebook; ``bits`` starts at the deepest
    quantizer. ``continuous_update=False``: a callback runs when a slider is released, not per pixel.
    """
    c = dict(ratio=_slider("ratio", ratios), block_size=_slider("block_size", block_sizes))
    if modes:
        c["mode"] = w.ToggleButtons(options=list(modes), description="mode")
    if bits:
        c["bits"] = _slider("bits", bits, max(bits))
    return c


EXPORTS = "exports"  # figures/exports/: ignored by git, so an export never changes a tracked file


def export_name(name: str, values: dict) -> str:
    """The file stem of an export: the figure's name and the slider state it shows, e.g.
    ``04_huffman_statistics_mode-region-wise_block_size2_ratio0.01``."""
    parts = [f"{k}-{v}" if isinstance(v, str) else f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}"
             for k, v in values.items()]
    return "_".join([name, *parts]).replace(" ", "-").replace("/", "-")


HEADLESS = "BSU_HEADLESS"  # set by notebook_runner: no frontend holds the widgets' state


def interactive_figure(draw, name: str, **widgets):
    """Lay out ``widgets``, redraw ``draw(**values) -> figure`` when they change, and add an
    "export" button that saves the current figure to ``figures/exports/<name>_<slider state>.png/.pdf``
    (``export_name``): the record figures that ``make study`` writes are never overwritten.

    Returns the container widget (display it as the cell's last expression). Run headless (``HEADLESS`` set,
    as ``notebook_runner`` does), it draws the widgets' first values once and returns None: output widgets
    without a frontend left notebook 07's explorer cell waiting forever under papermill, now and then.
    """
    if os.environ.get(HEADLESS):  # papermill: the figure of the widgets' first values, drawn once, no widgets
        fig = draw(**{k: v.value for k, v in widgets.items()})
        display(fig)
        plt.close(fig)
        return None
    out, status, state = w.Output(), w.Label(), {}

    def redraw(**values):
        state["values"] = values
        with out:
            out.clear_output(wait=True)
            state["fig"] = draw(**values)
            display(state["fig"])
            plt.close(state["fig"])  # shown once, in the output widget; still exportable

    w.interactive_output(redraw, widgets)
    button = w.Button(description="export figure", icon="download")

    def export(_):
        paths = save_figure(state["fig"], f"{EXPORTS}/{export_name(name, state['values'])}")
        status.value = f"saved {', '.join(p.name for p in paths)} in {paths[0].parent}"

    button.on_click(export)
    # sliders on one row, buttons on the next: side by side, toggle buttons squeeze a slider's track to nothing
    sliders = [v for v in widgets.values() if isinstance(v, (w.SelectionSlider, w.IntSlider, w.FloatSlider))]
    others = [v for v in widgets.values() if v not in sliders]
    rows = [w.HBox(sliders)] + ([w.HBox(others)] if others else [])
    return w.VBox([*rows, out, w.HBox([button, status])])

