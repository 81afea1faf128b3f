"""Hypothesis strategies shared by the codec and stream tests."""
import torch
from hypothesis import strategies as st

import blocksparse_utils as bsu


@st.composite
def cases(draw, max_n=3, max_c=5, max_hw=17):
    n, c = draw(st.integers(1, max_n)), draw(st.integers(1, max_c))
    h, w = draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    cfg = bsu.CodecConfig(
        block_size=draw(st.integers(1, min(h, w))),
        ratio=draw(st.sampled_from([1.0, 0.5, 0.3, 0.1, 0.05, 0.01]) | st.floats(0.001, 1.0)),
        mode=draw(st.sampled_from(bsu.MODES)),
        bits=draw(st.integers(1, 8)),
        zero_border=draw(st.booleans()))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31)))
    x = torch.randn(n, c, h, w, generator=g) * draw(st.sampled_from([1e-3, 1.0, 50.0]))
    kind = draw(st.sampled_from(["relu", "signed", "sparse", "ties"]))
    if kind == "relu":
        x = x.relu()
    elif kind == "sparse":
        x = x.relu() * (torch.rand(n, c, h, w, generator=g) < 0.1)
    elif kind == "ties":
        x = torch.ones(n, c, h, w)
    return x, cfg


