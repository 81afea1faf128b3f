"""How far each section is from its limit (blocksparse.limits): the references by hand, the table's rows
against streams encoded and counted here, and the README block's caption."""
import math

import numpy as np
import pandas as pd
import pytest
import torch

from blocksparse import codebook as cbm
from blocksparse.codec import CodecConfig
from blocksparse.limits import render_limits, section_limits


def _blocks(values) -> torch.Tensor:
    """One 1x4x4 image of four constant 2x2 blocks (cells row-major): the largest value is kept."""
    x = torch.zeros(1, 1, 4, 4)
    for cell, v in enumerate(values):
        r, c = divmod(cell, 2)
        x[0, 0, 2 * r:2 * r + 2, 2 * c:2 * c + 2] = v
    return x


FIT = torch.cat([_blocks([4, 1, 2, 3]), _blocks([5, 2, 1, 1]), _blocks([1, 2, 3, 6])])  # cells 0, 0, 3 kept
CFG = CodecConfig(2, 0.25, "global", 2, zero_border=False)


def test_section_limits_by_hand():
    x = torch.cat([_blocks([9, 1, 1, 1]), _blocks([1, 1, 9, 1])])  # cells 0 and 2 kept
    t = section_limits(FIT, x, CFG, (28, 28))
    # every position model with every value model (a per-channel table of 1 x 4 x 4 counts fits)
    assert sorted(zip(t["position_coding"], t["value_model"])) == sorted(
        (p, v) for p in ("delta", "bitmap", "prior") for v in ("global", "per-channel"))
    assert t["chosen"].sum() == 1 and (t["n_images"] == 2).all() and (t["n_fit"] == 3).all()
    # one kept cell of 4 under a uniform model: log2 C(4, 1) = 2 bits
    assert t["uniform_set_bits"].tolist() == pytest.approx([2.0] * 6)
    # the per-cell prior from cells kept 2, 0, 0, 1 times of 3: (count + 1/2) / 4 = .625, .125, .125, .375;
    # image 1 keeps cell 0, image 2 cell 2: the mean of the bits of all four flags of each
    one = -math.log2(0.625) - 2 * math.log2(0.875) - math.log2(1 - 0.375)
    two = -math.log2(1 - 0.625) - math.log2(0.875) - math.log2(0.125) - math.log2(1 - 0.375)
    assert t["all_cells_prior_bits"].iloc[0] == pytest.approx((one + two) / 2)
    for _, r in t.iterrows():
        cb = cbm.fit_codebook(FIT, CFG, "ans", r["position_coding"], value_model=r["value_model"])
        sizes = [len(b) for b in cbm.encode_batch(x, cb)]  # the streams, counted here
        assert r["bpp"] == pytest.approx(8 * np.mean(sizes) / (28 * 28))
        assert r[["header_bits", "positions_bits", "values_bits", "padding_bits"]].sum() == pytest.approx(8 * np.mean(sizes))
        assert r["codebook_bytes"] == len(cb.to_bytes())
    with pytest.raises(ValueError, match="features"):
        section_limits(FIT, x[:0], CFG, (28, 28))


def test_render_limits_caption_and_columns():
    row = dict(position_coding="prior", value_model="per-channel", chosen=True, bpp=0.12345, positions_bits=10.0,
               positions_model_bits=9.5, values_bits=20.0, values_model_bits=19.25, header_bits=8.0,
               padding_bits=3.0, codebook_bytes=100, uniform_set_bits=2.0, all_cells_prior_bits=1.66,
               n_images=500, n_fit=2000, images="val-select")
    text = render_limits(pd.DataFrame([row]))
    caption, blank, header, rule, line = text.splitlines()
    assert caption == ("Bits per image of each section (500 val-select images, tables fitted on 2000 training "
                       "images); the positions' references: 2.0 bits for an unordered set under a uniform model, "
                       "1.7 bits for the per-cell prior applied to every cell.")
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "position_coding", "value_model", "chosen", "bpp", "positions_bits", "positions_model_bits", "values_bits",
        "values_model_bits", "header_bits", "padding_bits", "codebook_bytes"]
    assert [c.strip() for c in line.strip("|").split("|")][:4] == ["prior", "per-channel", "True", "0.123"]
