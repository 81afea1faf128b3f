"""Code tables of amortized streams (``codebook``): the models, fitted once on training features, and their file.

Codebook file (version 2): ``b"BSCB"``, version, flags (mode | zero_border << 2 | coder << 3 |
position model << 4 (2 bits) | value model << 6 | zstd << 7), bits, ratio (float64 LE); LEB128
varints (zstd-compressed when flagged): block_size, C, H, W, images fitted, then for the tables
values, positions, kept: alphabet size and one number per symbol (Huffman: code length; ANS:
frequency, summing to about 2**16; prior positions and per-channel values: fitted counts);
CRC-32 (LE) of everything before it. Version 1 files are refused: refit them.
"""
from __future__ import annotations

import binascii
import hashlib
import struct
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import constriction
import numpy as np
import torch
import zstandard
from torch import Tensor

from . import bitstream, priors
from .codec import MODES, CodecConfig, analyze, kept_per_group
from .entropy import POSITION_CODINGS, bit_classes, canonical_code, huffman_lengths

CODERS = ("huffman", "ans")
TABLES = ("values", "positions", "kept")
POSITION_MODELS = (*POSITION_CODINGS, "prior")  # "prior" and "per-channel": ANS only
VALUE_MODELS = ("global", "per-channel")
MAX_VALUE_TABLE = 1 << 16  # per-channel value tables larger than this many counts are not fitted
MAGIC, VERSION = b"BSCB", 2
MAX_TABLES_BYTES = 64 << 20  # a codebook's tables, uncompressed, are far smaller
_ANS_TOTAL = 1 << 16  # stored ANS frequencies sum to about this (each >= 1)


def geometry(cfg: CodecConfig, shape: tuple[int, int, int]) -> tuple[int, int]:
    """(position cells coded per image, most blocks the config keeps per image)."""
    c, h, w = shape
    grid = -(-h // cfg.block_size) * -(-w // cfg.block_size)
    if cfg.mode == "channel-wise":
        return c * grid, c * kept_per_group(cfg.ratio, grid)
    cells = grid if cfg.mode == "region-wise" else c * grid
    return cells, kept_per_group(cfg.ratio, cells)


def _alphabets(cfg: CodecConfig, shape: tuple[int, int, int], coding: str, value_model: str = "global") -> dict:
    cells, kmax = geometry(cfg, shape)
    levels = 2 ** cfg.bits
    return dict(values=levels if value_model == "global" else shape[0] * priors.value_contexts(cfg.bits) * levels,
                positions={"delta": cells.bit_length() + 1, "bitmap": 16, "prior": cells}[coding],
                kept=0 if coding == "bitmap" else kmax.bit_length() + 1)


def _counts(table: str, coding: str, value_model: str) -> bool:
    """Whether a table holds fitted counts (smoothed when used) rather than code lengths or frequencies."""
    return (table, coding) == ("positions", "prior") or (table, value_model) == ("values", "per-channel")


@dataclass(frozen=True, eq=False)
class Codebook:
    """Code tables for one CodecConfig and feature shape, validated when constructed.

    Parameters
    ----------
    cfg : CodecConfig
    shape : (int, int, int)
        Feature shape (C, H, W) of one image.
    coder : {"huffman", "ans"}
    position_coding : {"delta", "bitmap", "prior"}
    tables : dict of str to array of int
        For each of ``TABLES``, one number per symbol: Huffman code lengths (a complete
        prefix code) or ANS frequencies (>= 1); fitted counts for "prior" positions (one per
        cell) and "per-channel" values (per channel, context and level). "kept" is empty with
        bitmap positions.
    n_fit : int
        Images the tables were fitted on (the prior's probabilities are counts over it).
    value_model : {"global", "per-channel"}
    """

    cfg: CodecConfig
    shape: tuple[int, int, int]
    coder: str
    position_coding: str
    tables: dict
    n_fit: int = 0
    value_model: str = "global"

    def __post_init__(self) -> None:
        if not isinstance(self.cfg, CodecConfig):
            raise ValueError(f"cfg must be a CodecConfig, got {type(self.cfg).__name__}")
        shape = tuple(self.shape) if isinstance(self.shape, (tuple, list)) else ()
        if len(shape) != 3 or not all(isinstance(v, (int, np.integer)) and v >= 1 for v in shape):
            raise ValueError(f"shape must be three positive integers (C, H, W), got {self.shape!r}")
        c, h, w = shape = tuple(int(v) for v in shape)
        if self.cfg.block_size > min(h, w) or c * h * w > bitstream.MAX_ELEMENTS \
                or geometry(self.cfg, shape)[0] >= 1 << 23:  # keeps ANS mantissas under 2**24
            raise ValueError(f"shape {shape} is too large or does not fit block_size {self.cfg.block_size}")
        for name, allowed in (("coder", CODERS), ("position_coding", POSITION_MODELS),
                              ("value_model", VALUE_MODELS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.coder == "huffman" and (self.position_coding == "prior" or self.value_model != "global"):
            raise ValueError("prior positions and per-channel values are coded with ANS only (coder='ans')")
        if isinstance(self.n_fit, bool) or not isinstance(self.n_fit, (int, np.integer)) or self.n_fit < 0:
            raise ValueError(f"n_fit must be a non-negative integer, got {self.n_fit!r}")
        if not isinstance(self.tables, dict) or set(self.tables) != set(TABLES):
            raise ValueError(f"tables must be a dict with keys {TABLES}")
        tables = {}
        for name, size in _alphabets(self.cfg, shape, self.position_coding, self.value_model).items():
            t = np.array(self.tables[name], dtype=np.int64)
            if t.shape != (size,):
                raise ValueError(f"tables[{name!r}] must hold {size} numbers, got shape {t.shape}")
            if _counts(name, self.position_coding, self.value_model):
                if size and (t.min() < 0 or (name == "positions" and t.max() > self.n_fit)):
                    raise ValueError(f"tables[{name!r}] must be counts in [0, n_fit]")
            elif size and self.coder == "huffman" and (t.min() < 1 or t.max() > 31 or
                                                    sum(1 << (31 - int(v)) for v in t) != 1 << 31):
                raise ValueError(f"tables[{name!r}] are not the code lengths of a complete prefix code")
            elif size and self.coder == "ans" and (t.min() < 1 or t.max() > 1 << 24 or t.sum() > 1 << 24):
                raise ValueError(f"tables[{name!r}] must be frequencies >= 1 summing to at most 2**24")
            t.setflags(write=False)
            tables[name] = t
        for k, v in dict(shape=shape, tables=tables, n_fit=int(self.n_fit)).items():
            object.__setattr__(self, k, v)

    def _parts(self) -> tuple[bytes, int, bytes]:
        cfg = self.cfg
        flags = (MODES.index(cfg.mode) | cfg.zero_border << 2 | CODERS.index(self.coder) << 3
                 | POSITION_MODELS.index(self.position_coding) << 4 | VALUE_MODELS.index(self.value_model) << 6)
        numbers = [cfg.block_size, *self.shape, self.n_fit]
        for name in TABLES:
            numbers += [len(self.tables[name]), *self.tables[name]]
        return bytes([cfg.bits]) + struct.pack("<d", float(cfg.ratio)), flags, b"".join(map(bitstream.varint, numbers))

    def to_bytes(self) -> bytes:
        """The codebook file (layout in the module docstring); the numbers zstd-compressed where shorter."""
        rest, flags, body = self._parts()
        packed = zstandard.ZstdCompressor(level=19).compress(body)
        if len(packed) < len(body):
            body, flags = packed, flags | 0x80
        out = MAGIC + bytes([VERSION, flags]) + rest + body
        return out + struct.pack("<I", binascii.crc32(out))

    @cached_property
    def seed(self) -> int:
        """CRC-8 seed of this codebook's streams: one byte of a hash of its contents (uncompressed,
        so a zstandard release that compresses otherwise does not change it)."""
        rest, flags, body = self._parts()
        return hashlib.blake2b(MAGIC + bytes([VERSION, flags]) + rest + body, digest_size=1).digest()[0]

    @cached_property
    def _prior(self) -> tuple[np.ndarray, np.ndarray]:
        """(keep probability of every cell, coding order) of prior positions."""
        p = priors.cell_probabilities(self.tables["positions"], self.n_fit)
        return p, priors.cell_order(p)

    @cached_property
    def _value_counts(self) -> np.ndarray:
        """Per-channel value counts as [C * contexts, levels]."""
        return self.tables["values"].reshape(-1, 2 ** self.cfg.bits)

    @cached_property
    def _codes(self) -> dict:
        return {k: canonical_code(t)[0] for k, t in self.tables.items() if len(t) and self.coder == "huffman"}

    @cached_property
    def _models(self) -> dict:
        # Encoder and decoder build the model from the same stored integers, so they quantize alike.
        return {k: constriction.stream.model.Categorical(t / t.sum(), perfect=False)
                for k, t in self.tables.items()
                if len(t) and self.coder == "ans" and not _counts(k, self.position_coding, self.value_model)}


def codebook_bytes(cb: Codebook) -> int:
    """Size in bytes of ``cb``'s file, the cost paid once for all its streams."""
    return len(cb.to_bytes())


def save_codebook(cb: Codebook, path: str | Path) -> int:
    """Write ``cb`` to ``path``; returns its size in bytes."""
    return Path(path).write_bytes(cb.to_bytes())


def codebook_from_bytes(data: bytes) -> Codebook:
    """Parse a codebook file; every failure is a ValueError."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ValueError(f"data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 19 or data[:4] != MAGIC:
        raise ValueError("not a blocksparse codebook: bad magic or too short")
    if struct.unpack("<I", data[-4:])[0] != binascii.crc32(data[:-4]):
        raise ValueError("corrupted codebook: checksum mismatch")
    if data[4] != VERSION:
        raise ValueError(f"unsupported codebook version {data[4]} (this reader reads {VERSION}): "
                         "refit it with fit_codebook")
    flags, bits, ratio = data[5], data[6], struct.unpack("<d", data[7:15])[0]
    if flags & 3 == 3 or (flags >> 4 & 3) == 3:
        raise ValueError(f"corrupted codebook: invalid flags {flags:#x}")
    body = data[15:-4]
    if flags & 0x80:
        try:  # the writer puts the content size in the frame; a forged one must not take the memory
            size = zstandard.frame_content_size(body)
            if not 0 <= size <= MAX_TABLES_BYTES:
                raise ValueError(f"corrupted codebook: its tables claim {size} bytes (at most {MAX_TABLES_BYTES})")
            body = zstandard.ZstdDecompressor().decompress(body)
        except zstandard.ZstdError as e:
            raise ValueError(f"corrupted codebook: its tables do not decompress ({e})") from None
        if len(body) != size:
            raise ValueError("corrupted codebook: its tables are not the size their frame claims")
    numbers, end = bitstream.read_varints(body, "codebook")
    if end != len(body) or len(numbers) < 8:
        raise ValueError("corrupted codebook: truncated numbers")
    cfg = CodecConfig(numbers[0], ratio, MODES[flags & 3], bits, bool(flags >> 2 & 1))
    tables, pos = {}, 5
    for name in TABLES:
        size = numbers[pos] if pos < len(numbers) else -1
        if size < 0 or pos + 1 + size > len(numbers):
            raise ValueError(f"corrupted codebook: table {name} is truncated")
        tables[name], pos = numbers[pos + 1:pos + 1 + size], pos + 1 + size
    if pos != len(numbers):
        raise ValueError("corrupted codebook: unexpected numbers after the tables")
    return Codebook(cfg, tuple(numbers[1:4]), CODERS[flags >> 3 & 1], POSITION_MODELS[flags >> 4 & 3],
                    tables, numbers[4], VALUE_MODELS[flags >> 6 & 1])


def load_codebook(path: str | Path) -> Codebook:
    """Read a codebook written by ``save_codebook``; ValueError if it is not a valid one."""
    return codebook_from_bytes(Path(path).read_bytes())


# ---------------------------------------------------------------------------
# symbols of an analyzed batch, shared by fitting and encoding
# ---------------------------------------------------------------------------
def cell_flags(a: dict, cfg: CodecConfig) -> np.ndarray:
    """[N, cells] keep flags of every image's position cells, in cell order."""
    n = a["shape"][0]
    return (a["mask"][:, :1] if cfg.mode == "region-wise" else a["mask"]).reshape(n, -1).numpy()


def _value_slots(a: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(image [K], channel [K], levels [K, B*B], valid [K, B*B]) of the kept blocks, in stream order."""
    k, slots = len(a["valid"]), a["block_size"] ** 2
    return (a["where"][0].numpy(), a["where"][1].numpy(),
            a["levels"].numpy().reshape(k, slots).astype(np.int64), a["valid"].numpy().reshape(k, slots))


def stream_fields(a: dict, cb: Codebook, coding: str | None = None, value_model: str | None = None) -> list:
    """The fields of every image's stream, in stream order: (table or None for raw bits; image of
    each entry, ascending; symbols or raw values; raw widths or None; per-symbol probabilities or
    None: Bernoulli [n] for prior positions, Categorical rows [n, L] for per-channel values).
    ``coding`` and ``value_model`` (default: the codebook's) choose the models; a model whose
    probabilities come from ``cb``'s tables is only asked for when ``cb`` holds it."""
    cfg, coding, value_model = cb.cfg, coding or cb.position_coding, value_model or cb.value_model
    n = a["shape"][0]
    cells, kmax = geometry(cfg, cb.shape)
    flat = cell_flags(a, cfg)
    img, ch, lv, va = _value_slots(a)
    if value_model == "global":
        values = [("values", np.repeat(img, va.sum(1)), lv[va], None, None)]
    else:
        rows = ch[:, None] * priors.value_contexts(cfg.bits) + priors.context_classes(lv, va)
        values = [("values", img[va[:, j]], lv[va[:, j], j], None,
                   priors.value_probabilities(cb._value_counts, rows[va[:, j], j])) for j in range(lv.shape[1])]
    if coding == "bitmap":
        nib = np.pad(flat, ((0, 0), (0, -cells % 4))).reshape(n, -1, 4) @ np.array([8, 4, 2, 1])
        return [("positions", np.repeat(np.arange(n), nib.shape[1]), nib.ravel(), None, None), *values]
    dcls, dmant, dmbits = bit_classes(kmax - flat.sum(1))
    kept = [("kept", np.arange(n), dcls, None, None), (None, np.arange(n), dmant, dmbits, None)]
    if coding == "prior":
        pimg, pbits, q = priors.prior_field(flat, cb._prior[0])
        return [*kept, ("positions", pimg, pbits, None, q), *values]
    pimg, cell = np.nonzero(flat)
    first = np.ones(len(pimg), bool)
    first[1:] = pimg[1:] != pimg[:-1]
    prev = np.empty_like(cell)
    prev[1:] = cell[:-1]
    cls, mant, mbits = bit_classes(cell - np.where(first, -1, prev) - 1)
    return [*kept, ("positions", pimg, cls, None, None), (None, pimg, mant, mbits, None), *values]


def _section(table: str | None) -> str:
    """The rate section a field counts in: the kept count and the raw mantissas go with the positions."""
    return "values" if table == "values" else "positions"


def fit_codebook(features: Tensor, cfg: CodecConfig, coder: str = "ans",
                 position_coding: str | None = None, batch_size: int = 256,
                 value_model: str | None = None) -> Codebook:
    """Fit the value and position models on training features.

    Parameters
    ----------
    features : Tensor
        Float features [N, C, H, W] of the fitting images; streams are then for (C, H, W).
    cfg : CodecConfig
    coder : {"ans", "huffman"}
        Default "ans", the coder of the study (the protocol's runs and the command line): its
        streams are the ones the answer counts; "huffman" for the bitarray-decodable streams.
    position_coding : {"delta", "bitmap", "prior"}, optional
        Default: whichever costs the fewest bits on held-out fitting images ("prior": ANS only).
    batch_size : int
        Images analyzed at a time (memory only; the result does not depend on it).
    value_model : {"global", "per-channel"}, optional
        Default: whichever costs fewer bits on held-out fitting images ("per-channel": ANS only,
        and only where its table has at most ``MAX_VALUE_TABLE`` counts).

    Notes
    -----
    The choice is made on every fifth fitting image with models fitted on the others (on all of
    them when fewer than ten are given); the chosen models are then fitted on all the images.
    The choice is stored in the codebook (``position_coding``, ``value_model``).
    """
    if not isinstance(cfg, CodecConfig):
        raise ValueError(f"cfg must be a CodecConfig, got {type(cfg).__name__}")
    if coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
    ans_only = ("prior",) if coder == "huffman" else ()
    if position_coding not in (None, *POSITION_MODELS) or position_coding in ans_only:
        raise ValueError(f"position_coding must be None or one of {tuple(c for c in POSITION_MODELS if c not in ans_only)}"
                         f" with coder={coder!r}, got {position_coding!r}")
    values_allowed = VALUE_MODELS if coder == "ans" else ("global",)
    if value_model not in (None, *values_allowed):
        raise ValueError(f"value_model must be None or one of {values_allowed} with coder={coder!r}, got {value_model!r}")
    if not isinstance(features, Tensor) or features.ndim != 4 or len(features) < 1:
        raise ValueError("features must be a 4-D tensor [N, C, H, W] with N >= 1")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    shape = tuple(features.shape[1:])
    codings = [position_coding] if position_coding else [c for c in POSITION_MODELS if c not in ans_only]
    levels = 2 ** cfg.bits
    per_channel_fits = shape[0] * priors.value_contexts(cfg.bits) * levels <= MAX_VALUE_TABLE
    value_models = [value_model] if value_model else [v for v in values_allowed if v == "global" or per_channel_fits]
    # every model counts the same analysis (selection and quantization) of the images: made once
    if len(codings) > 1 or len(value_models) > 1:
        held = torch.arange(len(features)) % 5 == 4
        split = len(features) >= 10
        fit = [analyze(c, cfg) for c in (features[~held] if split else features).split(batch_size)]
        judge = [analyze(c, cfg) for c in features[held].split(batch_size)] if split else fit
        # positions judged with the first value model, values with the first position coding
        # (the two sections are coded independently), so only those trials are fitted
        trials = {(c, value_models[0]) for c in codings} | {(codings[0], v) for v in value_models}
        cost = {key: _held_out_bits(judge, _fit(fit, cfg, shape, coder, *key)) for key in trials}
        position_coding = min(codings, key=lambda c: cost[(c, value_models[0])]["positions"])
        value_model = min(value_models, key=lambda v: cost[(codings[0], v)]["values"])
        every = fit + judge if split else fit
    else:
        position_coding, value_model = codings[0], value_models[0]
        every = [analyze(c, cfg) for c in features.split(batch_size)]
    return _fit(every, cfg, shape, coder, position_coding, value_model)


def _fit(analyses: list[dict], cfg: CodecConfig, shape: tuple, coder: str, coding: str, value_model: str) -> Codebook:
    """The codebook of ``coding`` and ``value_model`` fitted on the images of ``analyses``
    (``codec.analyze`` of each batch; counts are sums, so the batches' order does not matter)."""
    counts = {k: np.zeros(s, np.int64) for k, s in _alphabets(cfg, shape, coding, value_model).items()}
    levels, contexts = 2 ** cfg.bits, priors.value_contexts(cfg.bits)
    # a codebook of the same shape whose models are not the ones being fitted, to reuse stream_fields
    plain = Codebook(cfg, shape, coder, "bitmap" if coding == "prior" else coding,
                     {k: np.ones(s, np.int64) if coder == "ans" else _complete(s)
                      for k, s in _alphabets(cfg, shape, "bitmap" if coding == "prior" else coding).items()})
    for a in analyses:
        if coding == "prior":
            flat = cell_flags(a, cfg)
            counts["positions"] += flat.sum(0)
            dcls = bit_classes(geometry(cfg, shape)[1] - flat.sum(1))[0]
            counts["kept"] += np.bincount(dcls, minlength=len(counts["kept"]))
        if value_model == "per-channel":
            _, ch, lv, va = _value_slots(a)
            rows = ch[:, None] * contexts + priors.context_classes(lv, va)
            np.add.at(counts["values"], rows[va] * levels + lv[va], 1)
        for table, _, sym, widths, _ in stream_fields(a, plain, "bitmap" if coding == "prior" else coding, "global"):
            if table is not None and not _counts(table, coding, value_model):
                counts[table] += np.bincount(sym, minlength=len(counts[table]))
    tables = {k: v if _counts(k, coding, value_model) else _weights(v + 1, coder) for k, v in counts.items()}
    return Codebook(cfg, shape, coder, coding, tables, sum(a["shape"][0] for a in analyses), value_model)


def _weights(counts: np.ndarray, coder: str) -> np.ndarray:
    if coder == "huffman":
        return huffman_lengths(counts)
    total = max(1, int(counts.sum()))
    return np.maximum(1, (counts * _ANS_TOTAL + total // 2) // total)


def _complete(size: int) -> np.ndarray:
    """Code lengths of some complete prefix code over ``size`` symbols (a placeholder table)."""
    return huffman_lengths(np.ones(size, np.int64)) if size else np.zeros(0, np.int64)


def _held_out_bits(analyses: list[dict], cb: Codebook) -> dict:
    """Information content (bits, summed over the images of ``analyses``) of the positions and values
    sections under ``cb``'s models: what an ideal entropy coder with these models would spend."""
    out = dict(positions=0.0, values=0.0)
    for a in analyses:
        for field in stream_fields(a, cb):
            out[_section(field[0])] += float(_field_bits(field, cb).sum())
    return out


def _field_bits(field: tuple, cb: Codebook) -> np.ndarray:
    """Bits of each entry of one field under ``cb``'s model (raw mantissas: their widths)."""
    table, _, sym, widths, probs = field
    if table is None:
        return widths.astype(np.float64)
    if probs is not None:
        q = np.where(sym == 1, probs, 1 - probs) if probs.ndim == 1 else probs[np.arange(len(sym)), sym]
        return -np.log2(q)
    return table_bits(cb, table, sym)


def table_bits(cb: Codebook, table: str, sym: np.ndarray) -> np.ndarray:
    """Bits of ``sym`` under one of ``cb``'s tables (Huffman: code lengths; ANS: -log2 frequency share)."""
    t = cb.tables[table]
    return t[sym].astype(np.float64) if cb.coder == "huffman" else -np.log2(t[sym] / t.sum())
