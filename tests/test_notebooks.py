"""Notebooks: committed clean, open the same way, defaults match the preset, and run."""
import ast
import json
from pathlib import Path
import re

import papermill as pm
import pytest

import blocksparse_utils as bsu
from blocksparse.notebook_runner import run_notebooks

NOTEBOOKS = sorted(bsu.NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_seven_ordered_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["01", "02", "03", "04", "05", "06", "07"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_without_outputs_and_opened_the_same_way(path):
    cells = json.loads(path.read_text())["cells"]
    for c in cells:
        if c["cell_type"] == "code":
            assert not c["outputs"] and c["execution_count"] is None, f"{path.name} carries outputs"
    if path.name.startswith("07"):  # the report: its answer (sentence and figure) right after the imports, on the first screen
        answer = "".join(cells.pop(2)["source"])
        assert "report.answer_sentence(" in answer and "plots.plot_answer(" in answer
    kinds = [c["cell_type"] for c in cells[:4]]
    assert kinds == ["markdown", "code", "code", "code"]
    assert "".join(cells[0]["source"]).startswith("# ")
    assert "import blocksparse_utils as bsu" in "".join(cells[1]["source"])
    assert "".join(cells[2]["source"]).strip() == "bsu.set_seed(0)"
    assert "parameters" in cells[3]["metadata"].get("tags", [])
    src = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    assert "def " + "compress(" not in src and "/work/" not in src  # no redefined logic, no absolute paths
    assert "sys.path" not in src  # the project is installed (pip install -e .)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_defaults_are_the_default_preset(path):
    declared = pm.inspect_notebook(str(path))
    for name, value in bsu.PRESETS["default"].items():
        if name in declared:
            assert ast.literal_eval(declared[name]["default"]) == value, (path.name, name)


def test_notebooks_run_top_to_bottom(tmp_path, monkeypatch):
    """Every notebook, in order, with the 'ci' preset; results and figures go to tmp_path."""
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BSU_FIGURES_DIR", str(tmp_path / "figures"))
    executed = run_notebooks("ci", tmp_path / "executed")
    assert len(executed) == 7
    for p in executed:
        counts = [c["execution_count"] for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"]
        assert counts == list(range(1, len(counts) + 1)), f"{p.name} ran out of order"
    for name in ("sweep.csv", "finetune.csv", "results.csv", "results.json", "compression_results.json",
                 "results_doc.md", "study_timing.csv"):
        assert (tmp_path / "results" / name).exists(), name
    figures = {p.name for p in (tmp_path / "figures").iterdir()}
    for name in ("feature_distribution", "block_energy_dist", "feature_maps_ratio", "accuracy_vs_compression",
                 "bytes_breakdown", "finetuning_curves", "01_block_partitioning", "answer", "ladders"):
        assert {f"{name}.png", f"{name}.pdf"} <= figures, name
    import pandas as pd
    results = pd.read_csv(tmp_path / "results" / "results.csv")
    assert list(results.columns) == list(bsu.SCHEMA)
    assert {"blocksparse", "uncompressed", "png", "jpeg", "webp", "dense", "original-accounting"} <= set(results["method"])
    assert (tmp_path / "results" / "results_doc.md").read_text().count("## ") >= 5
    report = json.loads(executed[-1].read_text())
    assert report_opens_with_the_answer(report) and not broken_images(report, bsu.NOTEBOOK_DIR)


def report_opens_with_the_answer(nb: dict) -> bool:
    """Notebook 07's first outputs are the answer: its sentence (with a rate in bpp), then its figure."""
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    text = "".join(outputs[0].get("data", {}).get("text/markdown", ""))
    return text.startswith("**The answer:**") and "bpp" in text and "image/png" in outputs[1].get("data", {})


def broken_images(nb: dict, folder) -> list[str]:
    """Every image a notebook links (markdown ``![..](path)`` or ``<img src=..>``, in its cells or its
    markdown outputs) that does not resolve from the notebook's folder, as JupyterLab resolves it."""
    texts = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown"]
    texts += ["".join(o.get("data", {}).get("text/markdown", "")) + "".join(o.get("data", {}).get("text/html", ""))
              for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    links = [m for t in texts for m in re.findall(r"!\[[^\]]*\]\(([^)\s]+)", t) + re.findall(r"<img[^>]*src=[\"']([^\"']+)", t)]
    return [p for p in links if not p.startswith(("data:", "http")) and not (Path(folder) / p).exists()]


def test_broken_images_finds_a_link_that_resolves_from_the_repository_root_only(tmp_path):
    (tmp_path / "figures").mkdir(), (tmp_path / "notebooks").mkdir()
    (tmp_path / "figures" / "a.png").write_bytes(b"png")
    nb = dict(cells=[dict(cell_type="markdown", source=["![a](figures/a.png) ![b](../figures/a.png)"]),
                     dict(cell_type="code", source=[], outputs=[dict(data={"text/markdown": '<img src="x.png">'})])])
    assert broken_images(nb, tmp_path / "notebooks") == ["figures/a.png", "x.png"]


def test_sliced_polling_finds_a_reply_whose_wake_up_was_missed():
    """A channel whose first waits miss a ready message (as the asyncio poll of the shell socket
    did in notebook 07) still delivers it; a channel with nothing gives Empty after the timeout."""
    import asyncio
    import queue
    import time

    from blocksparse.notebook_runner import sliced_get_msg

    waits = []

    async def missed_twice(timeout=None):
        waits.append(timeout)
        await asyncio.sleep(timeout)
        if len(waits) < 3:
            raise queue.Empty  # the reply is there, the wake-up was not
        return {"msg_type": "execute_reply"}

    assert asyncio.run(sliced_get_msg(missed_twice, step=0.01)(timeout=None)) == {"msg_type": "execute_reply"}
    assert waits == [0.01, 0.01, 0.01]

    async def nothing(timeout=None):
        await asyncio.sleep(timeout)
        raise queue.Empty

    t0 = time.monotonic()
    with pytest.raises(queue.Empty):
        asyncio.run(sliced_get_msg(nothing, step=0.01)(timeout=0.05))
    assert 0.05 <= time.monotonic() - t0 < 1.0
