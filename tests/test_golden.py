"""Golden streams: the exact bytes of every stream format, frozen (CompressAI keeps bitstream checksums).

``golden/streams.json`` holds the bytes themselves (hex): every self-contained stream, and every
codebook file with its amortized streams. A format change that still round-trips passes every other
test; here it fails until the golden bytes are regenerated on purpose: ``GENERATE_GOLDEN=1 make
test`` (then say why in the commit). The frozen bytes are also decoded as they are, so a decoder
that stops reading an old stream fails too.
"""
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from blocksparse import bitstream
from blocksparse import codebook as cbm
from blocksparse.codec import CodecConfig

GOLDEN = Path(__file__).parent / "golden" / "streams.json"

# (name, cfg, None for self-contained or (coder, position model, value model))
CASES = [
    ("self_channel_B2_r0.1_2b", CodecConfig(2, 0.1, "channel-wise", 2), None),
    ("self_region_B3_r0.2_4b", CodecConfig(3, 0.2, "region-wise", 4), None),
    ("self_global_B4_r0.05_8b", CodecConfig(4, 0.05, "global", 8), None),
    ("self_global_B1_r0.01_1b_border", CodecConfig(1, 0.01, "global", 1, zero_border=False), None),
    ("huffman_delta_global_B2", CodecConfig(2, 0.05, "global", 2), ("huffman", "delta", "global")),
    ("huffman_bitmap_channel_B3", CodecConfig(3, 0.5, "channel-wise", 3), ("huffman", "bitmap", "global")),
    ("ans_delta_global_B2", CodecConfig(2, 0.05, "global", 2), ("ans", "delta", "global")),
    ("ans_bitmap_region_B4", CodecConfig(4, 0.3, "region-wise", 4), ("ans", "bitmap", "global")),
    ("ans_prior_global_B2", CodecConfig(2, 0.05, "global", 2), ("ans", "prior", "global")),
    ("ans_prior_perchannel_global_B2", CodecConfig(2, 0.05, "global", 2), ("ans", "prior", "per-channel")),
    ("ans_delta_perchannel_channel_B3", CodecConfig(3, 0.2, "channel-wise", 2), ("ans", "delta", "per-channel")),
    ("ans_prior_region_B2_signed", CodecConfig(2, 0.1, "region-wise", 4), ("ans", "prior", "per-channel")),
]


def _features(n: int, seed: int, signed: bool) -> torch.Tensor:
    """Seeded with numpy's PCG64, whose stream is fixed across versions and machines; a 14x13 map
    that no block size but 1 divides."""
    x = np.random.Generator(np.random.PCG64(seed)).standard_normal((n, 6, 14, 13)).astype(np.float32)
    x *= np.linspace(0.2, 2.0, 13, dtype=np.float32)  # larger to the right: a position prior has something to learn
    return torch.from_numpy(x if signed else np.maximum(x, 0))


def _streams(cfg, how, signed) -> dict:
    """The case's bytes, hex: ``stream`` (self-contained, 4 images), or ``codebook`` and one
    amortized ``streams`` entry per image."""
    x = _features(4, 1, signed)
    if how is None:
        return dict(stream=bitstream.encode(x, cfg).hex())
    coder, coding, values = how
    cb = cbm.fit_codebook(_features(12, 2, signed), cfg, coder, coding, value_model=values)
    return dict(codebook=cb.to_bytes().hex(), streams=[b.hex() for b in cbm.encode_batch(x, cb)])


def _all():
    return {name: _streams(cfg, how, name.endswith("signed")) for name, cfg, how in CASES}


def _golden() -> dict:
    want = json.loads(GOLDEN.read_text())
    assert (want["bitstream_version"], want["codebook_version"]) == (bitstream.VERSION, cbm.VERSION), \
        "the format version changed: regenerate the golden streams (GENERATE_GOLDEN=1 make test)"
    assert set(want["cases"]) == {name for name, _, _ in CASES}
    return want["cases"]


def _first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    return f"{len(got)} bytes against the golden {len(want)}, first difference at byte {at}"


def test_streams_and_codebooks_are_byte_for_byte_the_golden_ones():
    got = _all()
    if os.environ.get("GENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(dict(bitstream_version=bitstream.VERSION, codebook_version=cbm.VERSION,
                                          cases=got), indent=1) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    want = _golden()
    for name in got:
        for key in got[name]:
            g, w = got[name][key], want[name][key]
            pairs = zip(g, w) if isinstance(g, list) else [(g, w)]
            assert not isinstance(g, list) or len(g) == len(w), f"{name}: {len(g)} streams, golden {len(w)}"
            for i, (gi, wi) in enumerate(pairs):
                assert gi == wi, (f"{name} {key}[{i}]: the bytes changed ({_first_difference(bytes.fromhex(gi), bytes.fromhex(wi))}); "
                                  "a format change needs GENERATE_GOLDEN=1")


def test_the_golden_bytes_decode_to_the_codec_output():
    """The frozen bytes, read from the golden file (not encoded again), decode to what the codec
    keeps: the decoder still reads every stream the formats ever wrote at this version."""
    from blocksparse.codec import compress
    want = _golden()
    for name, cfg, how in CASES:
        x = _features(4, 1, name.endswith("signed"))
        if how is None:
            blob = bytes.fromhex(want[name]["stream"])
            assert torch.equal(bitstream.decode(blob), compress(x, cfg)), name
            assert bitstream.rate(blob, (28, 28))["bytes"] == len(blob)
            continue
        cb = cbm.codebook_from_bytes(bytes.fromhex(want[name]["codebook"]))
        assert (cb.coder, cb.position_coding, cb.value_model) == how, name
        assert len(want[name]["streams"]) == len(x)
        for i, hexed in enumerate(want[name]["streams"]):
            assert torch.equal(cbm.decode(bytes.fromhex(hexed), cb), compress(x[i:i + 1], cfg)), f"{name}[{i}]"
