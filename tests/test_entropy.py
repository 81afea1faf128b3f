"""Entropy coding: Huffman code lengths and bit packing against bitarray."""
import numpy as np
from bitarray import bitarray
from hypothesis import given
from hypothesis import strategies as st

from blocksparse.entropy import huffman_lengths, pack_bits, unpack_bits


def test_huffman_lengths_stay_within_31_bits():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    lengths = huffman_lengths(np.array(fib))
    assert lengths.max() <= 31
    assert sum(2.0 ** -l for l in lengths) <= 1.0


@given(st.lists(st.tuples(st.integers(1, 64), st.integers(0, 2**64 - 1)), max_size=300))
def test_pack_bits_matches_bitarray_concatenation(fields):
    from bitarray.util import int2ba
    codes = [c % (1 << l) for l, c in fields]
    lengths = [l for l, _ in fields]
    expect = bitarray()
    for c, l in zip(codes, lengths):
        expect += int2ba(c, l)
    got = pack_bits(np.array(codes, np.uint64), np.array(lengths))
    assert got == expect
    assert unpack_bits(got, np.array(lengths)).tolist() == codes
