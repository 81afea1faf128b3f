"""Golden streams: the exact bytes of every stream format, frozen (CompressAI keeps bitstream checksums).

A format change that still round-trips passes every other test; here it fails until the expected
digests are regenerated on purpose: ``GENERATE_GOLDEN=1 make test`` (then say why in the commit).
"""
import hashlib
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


def _digests(cfg, how, signed):
    x = _features(4, 1, signed)
    if how is None:
        blob = bitstream.encode(x, cfg)
        return dict(stream_sha256=hashlib.sha256(blob).hexdigest(), stream_bytes=len(blob))
    coder, coding, values = how
    cb = cbm.fit_codebook(_features(12, 2, signed), cfg, coder, coding, value_model=values)
    blobs = cbm.encode_batch(x, cb)
    joined = b"".join(len(b).to_bytes(4, "little") + b for b in blobs)
    return dict(codebook_sha256=hashlib.sha256(cb.to_bytes()).hexdigest(), codebook_bytes=cbm.codebook_bytes(cb),
                streams_sha256=hashlib.sha256(joined).hexdigest(), stream_bytes=[len(b) for b in blobs])


def _all():
    return {name: _digests(cfg, how, name.endswith("signed")) for name, cfg, how in CASES}


def test_streams_and_codebooks_are_byte_for_byte_the_golden_ones():
    got = _all()
    if os.environ.get("GENERATE_GOLDEN"):
        GOLDEN.write_text(json.dumps(dict(bitstream_version=bitstream.VERSION, codebook_version=cbm.VERSION,
                                          cases=got), indent=1) + "\n")
        pytest.skip(f"regenerated {GOLDEN}")
    want = json.loads(GOLDEN.read_text())
    assert (want["bitstream_version"], want["codebook_version"]) == (bitstream.VERSION, cbm.VERSION), \
        "the format version changed: regenerate the golden streams (GENERATE_GOLDEN=1 make test)"
    assert set(got) == set(want["cases"])
    for name in got:
        assert got[name] == want["cases"][name], f"{name}: the bytes changed; a format change needs GENERATE_GOLDEN=1"


def test_golden_streams_still_decode_to_the_codec_output():
    """The frozen cases are real streams: each decodes to what the codec keeps."""
    from blocksparse.codec import compress
    for name, cfg, how in CASES:
        x = _features(4, 1, name.endswith("signed"))
        if how is None:
            assert torch.equal(bitstream.decode(bitstream.encode(x, cfg)), compress(x, cfg))
            continue
        cb = cbm.fit_codebook(_features(12, 2, name.endswith("signed")), cfg, how[0], how[1], value_model=how[2])
        assert (cb.position_coding, cb.value_model) == how[1:]
        for i, blob in enumerate(cbm.encode_batch(x, cb)):
            assert torch.equal(cbm.decode(blob, cb), compress(x[i:i + 1], cfg))
