"""Static position and value models (blocksparse.priors), on values worked out by hand."""
import math

import numpy as np
import pytest

from blocksparse import priors


def test_cell_probabilities_are_add_half_smoothed_counts():
    # (count + 1/2) / (n_fit + 1): 0 of 3 -> 0.5/4, 3 of 3 -> 3.5/4, 1 of 3 -> 1.5/4
    assert priors.cell_probabilities(np.array([0, 3, 1]), 3).tolist() == [0.125, 0.875, 0.375]


def test_cells_are_coded_by_decreasing_probability_ties_in_cell_order():
    assert priors.cell_order(np.array([0.2, 0.5, 0.5, 0.1, 0.5])).tolist() == [1, 2, 4, 0, 3]


def test_coded_cells_end_with_the_chunk_of_the_last_kept_cell():
    assert priors.CHUNK == 64
    flags = np.zeros((5, 150), bool)
    flags[0, 10] = True                 # last kept cell 10: the first chunk, 64 cells
    flags[1, [3, 64]] = True            # cell 64 opens the second chunk: 128
    flags[2, 149] = True                # the third chunk is cut at the map's 150 cells
    flags[3, 63] = True                 # the first chunk's last cell: 64
    assert priors.coded_cells(flags).tolist() == [64, 128, 150, 64, 0]  # image 4 keeps none: nothing coded


def test_prior_field_and_its_bits_by_hand():
    p = np.array([0.9, 0.2, 0.6])  # coding order: cells 0, 2, 1
    flat = np.array([[True, False, False], [False, False, False], [False, True, True]])
    img, bits, q = priors.prior_field(flat, p)
    # image 0: its one kept cell is first, but a chunk (64) covers the whole 3-cell map: 3 bits;
    # image 1 keeps nothing: no bit; image 2: cells in order 0, 2, 1 are 0, 1, 1
    assert img.tolist() == [0, 0, 0, 2, 2, 2]
    assert bits.tolist() == [1, 0, 0, 0, 1, 1]
    assert q.tolist() == [0.9, 0.6, 0.2, 0.9, 0.6, 0.2]
    want = [-math.log2(0.9) - math.log2(0.4) - math.log2(0.8), 0.0,
            -math.log2(0.1) - math.log2(0.6) - math.log2(0.2)]
    assert priors.prior_bits(flat, p) == pytest.approx(want)


def test_value_contexts_by_hand():
    # slot levels 0, 3, 1, 2: no earlier slot -> 0; then 1 + bit length of the largest earlier level:
    # of 0 -> 1, of 3 -> 3, of max(0, 3, 1) = 3 -> 3
    levels = np.array([[0, 3, 1, 2], [5, 1, 0, 2]])
    valid = np.array([[True, True, True, True], [False, True, True, True]])
    # second block: slot 0 is not coded (border), so slot 1 has no earlier slot either -> 0; then of 1 -> 2
    assert priors.context_classes(levels, valid).tolist() == [[0, 1, 3, 3], [0, 0, 2, 2]]
    # at b bits the contexts are "none" and 1 + a bit length in 0..b: b + 2 of them
    assert [priors.value_contexts(b) for b in (1, 2, 8)] == [3, 4, 10]


def test_value_probabilities_are_smoothed_rows():
    counts = np.array([[0, 1], [2, 2], [1, 0]])
    # rows 1 and 0 of the counts plus 1/2, normalized: [2.5, 2.5] / 5 and [0.5, 1.5] / 2
    assert priors.value_probabilities(counts, np.array([1, 0])).tolist() == [[0.5, 0.5], [0.25, 0.75]]
