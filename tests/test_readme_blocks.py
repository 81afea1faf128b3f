"""The README's answer and codec blocks are the renders of the committed results files (nothing typed)."""
import io
import re

import pandas as pd

from blocksparse import answer
from blocksparse.limits import render_limits
from blocksparse.protocol_runs import answer_markdown
from blocksparse.runtime import ROOT

RESULTS = ROOT / "data" / "results"


def block(name: str, path=ROOT / "README.md") -> str:
    text = path.read_text()
    m = re.search(rf"<!-- {name}:begin -->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert m, f"README has no {name} block"
    return m.group(1)


def test_the_answer_block_is_the_render_of_answer_csv():
    table = pd.read_csv(RESULTS / "answer.csv")
    assert list(table.columns) == list(answer.ANSWER_COLUMNS)
    assert block("answer", ROOT / "docs" / "protocol_v1.md") == answer_markdown(table)


def test_the_v2_blocks_are_the_render_of_power_csv_family_comparison_csv_and_v2s_cards():
    from blocksparse import report_v2
    b = report_v2.blocks(RESULTS, answer.read_cards(ROOT / "data" / "answer"))
    assert block("v2") == b["v2"]
    assert block("v2-tables", ROOT / "docs" / "protocol_v2.md") == b["v2-tables"]
    assert pd.read_csv(RESULTS / "answer_v2.csv").equals(pd.read_csv(io.StringIO(b["answer_v2"].to_csv(index=False))))


def test_the_codec_block_is_the_render_of_codec_limits_csv():
    table = pd.read_csv(RESULTS / "codec_limits.csv")
    assert block("codec-limits") == render_limits(table)
    assert (table["images"] == "val-select").all()  # the block marks a choice: measured on no test image
    chosen = table[table["chosen"]].iloc[0]
    layer3 = pd.read_csv(RESULTS / "answer.csv").query("split_at == 'layer3' and family == 'block-sparse'").iloc[0]
    assert abs(chosen["bpp"] - layer3["bpp"]) <= 0.05  # the answer's layer3 model: val-select here, test there
    assert abs(chosen["positions_bits"] - chosen["all_cells_prior_bits"]) <= 0.1 * chosen["all_cells_prior_bits"]


def test_the_headline_and_glance_blocks_are_the_render_of_answer_csv_and_the_cards():
    from blocksparse import report
    table = pd.read_csv(RESULTS / "answer.csv")
    cards = answer.read_cards(ROOT / "data" / "answer")
    assert block("headline") == report.headline(table, report.answer_reference(cards))
    assert block("glance") == report.render_glance(table)


def test_docs_results_is_the_render_of_the_results_files():
    from blocksparse import report
    assert (ROOT / report.DOC).read_text() == report.render_doc(report.record(RESULTS))


def test_the_study_time_block_is_the_render_of_the_committed_timing():
    from blocksparse import report
    timing = pd.read_csv(RESULTS / "study_timing.csv")
    assert list(timing["notebook"].str[:2]) == ["01", "02", "03", "04", "05", "06", "07"]
    assert block("study-time") == report.render_timing(timing)


def test_the_readme_reads_at_a_glance():
    lines = (ROOT / "README.md").read_text().split("\n")
    assert len(lines) <= 200 and max(map(len, lines)) <= 400
    first = " ".join(" ".join(lines[:10]).split())
    assert "Fashion-MNIST (28x28 grayscale" in first and "ResNet-18" in first and "**The answer:**" in first
    assert any("](figures/answer.png)" in line for line in lines[:40])  # the answer figure
    setup = lines.index("```bash")
    assert setup < 60 and lines[setup + 1].startswith("make study")  # the set-up commands
    assert lines.index("<!-- v2:begin -->") < 150  # protocol v2's block (v1's full answer: docs/protocol_v1.md)
    assert "exploratory" not in "\n".join(lines[:60]).lower()  # the first screens show the protocol's answer only


def test_the_budget_block_is_the_render_of_the_protocols_budget():
    from blocksparse.protocol import BUDGET
    from blocksparse.report import budget_markdown
    assert block("budget") == budget_markdown(BUDGET)
    text = budget_markdown(BUDGET.replace(steps=7200, distill_weight=0.25))
    assert "7,200 steps" in text and "0.75 x cross-entropy + 0.25 x distillation" in text
