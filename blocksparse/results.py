"""One results schema for every writer, and the results files.

Every row of every results table (sweep, fine-tuning, baselines, the original's accounting,
anything added later) has the columns of ``SCHEMA`` with its dtypes: integers stay integers
through CSV and JSON round trips, a missing value is an explicit ``<NA>`` / ``null``, and units
are in the column names (``*_bits`` per image, ``*_bytes`` per image, ``bpp`` per input pixel).
"""
from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .runtime import results_dir

# column -> (pandas dtype, meaning). The order is the column order of every file.
SCHEMA: dict[str, tuple[str, str]] = {
    "method": ("string", "blocksparse, uncompressed, png, jpeg, webp, webp-lossless, avif, dense, "
                         "original-accounting, learned-bottleneck"),
    "dataset": ("string", "fashion-mnist, cifar10, cifar100"),
    "split_at": ("string", "the stage after which the features are coded (layer1/2/3)"),
    "mode": ("string", "block selection group: channel-wise, region-wise, global"),
    "block_size": ("Int64", "side B of the BxB blocks"),
    "ratio": ("Float64", "fraction of blocks kept per group"),
    "bits": ("Int64", "quantizer depth of the kept values"),
    "quality": ("Int64", "image codec quality setting"),
    "coder": ("string", "entropy coder of the stream: huffman or ans"),
    "finetuned": ("boolean", "the classifier was fine-tuned for this codec"),
    "train": ("string", "what fine-tuning trained: tail or all"),
    "seed": ("Int64", "RNG seed of the fine-tuning run"),
    "rate_weight": ("Float64", "rate weight (lambda) of a learned bottleneck's training loss"),
    "accuracy": ("Float64", "top-1 accuracy on what the decoder returns"),
    "accuracy_lo": ("Float64", "95% interval, lower end (Wilson)"),
    "accuracy_hi": ("Float64", "95% interval, upper end (Wilson)"),
    "n_images": ("Int64", "test images the accuracy is measured on"),
    "val_accuracy": ("Float64", "best validation accuracy during fine-tuning"),
    "bpp": ("Float64", "bits per input pixel of the real per-image streams (the headline rate)"),
    "bpp_self_contained": ("Float64", "bpp of self-contained streams (tables inside every stream)"),
    "bpp_payload": ("Float64", "image codecs: bpp without the container and the header fields a decoder "
                               "knowing the shape does not need (baselines.payload_bytes)"),
    "rate_is_estimate": ("boolean", "bpp is an estimate, not the length of real streams"),
    "n_rate": ("Int64", "images whose streams were measured for the rate"),
    "stream_bytes": ("Float64", "mean bytes per image stream"),
    "header_bits": ("Float64", "mean bits per stream: header"),
    "tables_bits": ("Float64", "mean bits per stream: code tables"),
    "positions_bits": ("Float64", "mean bits per stream: kept-block positions"),
    "values_bits": ("Float64", "mean bits per stream: kept values"),
    "padding_bits": ("Float64", "mean bits per stream: zero padding to a byte"),
    "delta_share": ("Float64", "share of streams whose positions were delta-coded"),
    "weights": ("string", "shipped fine-tuned weights of this row (path under data/)"),
    "codebook": ("string", "fitted code table the rate depends on (path under data/)"),
}
COLUMNS = list(SCHEMA)


def pack_correct(correct) -> str:
    """A per-image correctness vector as text for a card: ``"<n>:<base64 of the packed bits>"``
    (first image in the highest bit), so a model tested once can be paired later with any model
    tested on the same images, without its weights."""
    c = np.asarray(correct)
    if c.ndim != 1 or c.dtype != bool:
        raise ValueError(f"correct must be a 1-D bool array, got dtype {c.dtype} and shape {c.shape}")
    return f"{len(c)}:{base64.b64encode(np.packbits(c)).decode()}"


def unpack_correct(text: str) -> np.ndarray:
    """The bool vector ``pack_correct`` wrote."""
    n, sep, data = str(text).partition(":")
    if not sep or not n.isdigit():
        raise ValueError(f"test_correct must be '<n>:<base64>', got {str(text)[:40]!r}")
    bits = np.unpackbits(np.frombuffer(base64.b64decode(data), np.uint8))
    if len(bits) < int(n) or len(bits) >= int(n) + 8:
        raise ValueError(f"test_correct holds {len(bits)} bits, not the {n} images it names")
    return bits[:int(n)].astype(bool)


def to_frame(rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Rows (dicts or a frame) as a frame with exactly the schema's columns and dtypes.

    Unknown columns are a ValueError (a typo would otherwise vanish); absent columns are
    filled with missing values; a value that does not fit its dtype is a ValueError naming
    the column.
    """
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    unknown = sorted(set(df.columns) - set(SCHEMA))
    if unknown:
        raise ValueError(f"columns {unknown} are not in the results schema (blocksparse.results.SCHEMA)")
    out = pd.DataFrame(index=range(len(df)))
    for col, (dtype, _) in SCHEMA.items():
        v = df[col].reset_index(drop=True) if col in df else pd.Series([pd.NA] * len(df), dtype="object")
        if dtype in ("Int64", "Float64"):
            v = pd.to_numeric(v.astype("object").where(v.notna(), None), errors="coerce") \
                if v.dtype == "object" else v
        try:
            out[col] = v.astype(dtype)
        except (TypeError, ValueError) as e:
            raise ValueError(f"results column {col!r} does not fit dtype {dtype}: {e}") from None
    return out


def save_results(rows: list[dict] | pd.DataFrame, config: dict, name: str = "results") -> Path:
    """Write ``<results_dir>/<name>.csv`` and ``.json`` (rows plus the config that made them)."""
    df = to_frame(rows)
    d = results_dir()
    d.mkdir(parents=True, exist_ok=True)
    df.to_csv(d / f"{name}.csv", index=False)
    records = [{k: _plain(v) for k, v in r.items()} for r in df.to_dict("records")]
    (d / f"{name}.json").write_text(json.dumps(dict(config=config, rows=records), indent=1, default=str))
    return d / f"{name}.csv"


def _plain(v):
    """A JSON-ready scalar: pandas' NA and float NaN become null, numpy scalars plain Python."""
    if v is pd.NA or v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def load_results(name: str = "results", directory: str | Path | None = None) -> pd.DataFrame:
    """Read a results table written by ``save_results`` (in ``directory``, default
    ``runtime.results_dir()``), with the schema's dtypes."""
    p = (Path(directory) if directory is not None else results_dir()) / f"{name}.csv"
    if not p.exists():
        raise ValueError(f"no results at {p}: run notebooks 03-07 or `make study` first")
    return to_frame(pd.read_csv(p, dtype={c: "object" for c, (t, _) in SCHEMA.items() if t in ("string", "boolean")},
                                keep_default_na=True).pipe(_booleans))


def load_config(name: str = "results") -> dict:
    """The configuration stored beside a results table."""
    p = results_dir() / f"{name}.json"
    if not p.exists():
        raise ValueError(f"no results at {p}: run notebooks 03-07 or `make study` first")
    return json.loads(p.read_text())["config"]


def _booleans(df: pd.DataFrame) -> pd.DataFrame:
    for col, (dtype, _) in SCHEMA.items():
        if dtype == "boolean" and col in df:
            df[col] = df[col].map({"True": True, "False": False, True: True, False: False})
    return df


def write_compression_results(df: pd.DataFrame, path: Path | None = None) -> Path:
    """``compression_results.json``: per mode and block size, lists of ratios with their
    accuracy and bpp (block-sparse rows, no fine-tuning)."""
    df = to_frame(df)
    d = df[(df["method"] == "blocksparse") & (~df["finetuned"].fillna(False))]
    out = {}
    for (mode, bs, bits), g in d.groupby(["mode", "block_size", "bits"]):
        g = g.sort_values("ratio", ascending=False)
        out.setdefault(mode, {})[f"block_size={int(bs)},bits={int(bits)}"] = dict(
            ratios=[float(v) for v in g["ratio"]], accuracy=[float(v) for v in g["accuracy"]],
            bpp=[float(v) for v in g["bpp"]])
    path = path or results_dir() / "compression_results.json"
    path.write_text(json.dumps(out, indent=1))
    return path


def original_layout(df: pd.DataFrame, input_bits: int, input_hw: tuple[int, int], timestamp: str) -> dict:
    """The original script's ``compression_results.json`` layout, from our rows of one mode and
    block size: ``{"timestamp", "compression_results": [...]}`` with one entry per ratio (and
    bits), ``accuracy_no_ft`` / ``accuracy_ft`` in percent, ``bpp``, ``compression_ratio``
    (as the original computed it: compressed bpp / input bpp) and ``detailed_stats``. Unlike
    the original, bpp is from real per-image streams (the breakdown sums their sections over
    the ``n_rate`` measured images), ``accuracy_ft`` comes from fine-tuning that early-stops on
    validation, and ratio 1.0 is measured rather than set to the input's bpp.

    ``input_bits``: bits per input pixel of the images (8 per channel: 8 grey, 24 RGB).
    """
    df = to_frame(df)
    bs = df[df["method"] == "blocksparse"]
    ref = df[df["method"] == "uncompressed"]
    h, w = input_hw
    entries = []
    if len(ref):
        entries.append(dict(ratio=1.0, accuracy=round(100 * float(ref["accuracy"].iloc[0]), 2),
                            bpp=float(input_bits), compression_ratio=1.0, note="uncompressed features"))
    tuned = bs[bs["finetuned"].fillna(False)]
    for _, r in bs[~bs["finetuned"].fillna(False)].sort_values(["ratio", "bits"], ascending=[False, True]).iterrows():
        ft = tuned[(tuned["ratio"] == r["ratio"]) & (tuned["bits"] == r["bits"])]
        n, bpp = int(r["n_rate"]), float(r["bpp"])
        sections = {k: float(r[f"{k}_bits"]) * n for k in ("header", "tables", "positions", "values", "padding")
                    if not pd.isna(r.get(f"{k}_bits"))}
        entries.append(dict(
            ratio=float(r["ratio"]), bits=int(r["bits"]), accuracy_no_ft=round(100 * float(r["accuracy"]), 2),
            accuracy_ft=round(100 * float(ft["accuracy"].iloc[0]), 2) if len(ft) else None,
            bpp=bpp, compression_ratio=bpp / input_bits,
            detailed_stats=dict(bpp_original=float(input_bits), bpp_compressed=bpp, compression_ratio=bpp / input_bits,
                                original_bits=input_bits * h * w * n, compressed_bits=round(bpp * h * w * n),
                                n_images=n, breakdown=dict(
                                    values=dict(bits=sections.get("values")),
                                    indices=dict(total_bits=sections.get("positions"), mode=str(r["mode"])),
                                    header_bits=sections.get("header"), tables_bits=sections.get("tables"),
                                    padding_bits=sections.get("padding")))))
    return dict(timestamp=timestamp, compression_results=entries)
