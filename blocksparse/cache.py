"""A result cache: an expensive step runs once per configuration, and is reused only while
nothing it depends on has changed.

An entry is two files under ``results_dir()/cache``: ``<name>-<hash12>.csv`` (the rows) and
``<name>-<hash12>.json`` (the full key, the column dtypes and the frame's ``attrs``). The hash
covers the canonical JSON of the whole key (every parameter of the step, the checkpoint's
sha256) and ``CODEC_VERSION``, so changing any of them, or the stream formats, or the analysis
behind the numbers (``ANALYSIS_VERSION``, bumped by hand), makes a new entry instead of
reusing a stale one. ``recompute=True`` or ``BSU_RECOMPUTE=1`` in the environment recomputes
and overwrites.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import bitstream, codebook
from .results import to_frame
from .runtime import results_dir

# Bump when what a cached step computes changes without a stream-format change (evaluation,
# fine-tuning, selection, the rate accounting): every cached result then recomputes.
ANALYSIS_VERSION = 1
CODEC_VERSION = f"bitstream{bitstream.VERSION}-codebook{codebook.VERSION}-analysis{ANALYSIS_VERSION}"
# The stream formats a step's numbers do not depend on: a change of that format keeps its entries.
# Image codecs and the original's estimates code no stream of ours; the dense rows are self-contained
# streams (no code tables); the learned bottleneck codes its own ANS streams.
INDEPENDENT = {"image_codecs": ("bitstream", "codebook"), "original": ("bitstream", "codebook"),
               "original_choices": ("bitstream", "codebook"), "dense": ("codebook",),
               "bottleneck_model": ("bitstream", "codebook"), "bottleneck_models": ("bitstream", "codebook")}
ENV = "BSU_RECOMPUTE"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


def _canonical(v, where: str = "key"):
    """``v`` as plain JSON data (dicts, lists, str, int, float, bool, None), or a ValueError
    naming the part that has no canonical form (a repr could hold a memory address)."""
    if v is None or isinstance(v, (bool, str, int)):
        return v
    if isinstance(v, float):
        if not math.isfinite(v):
            raise ValueError(f"{where} is {v}: key values must be finite")
        return v
    if isinstance(v, np.generic):
        return _canonical(v.item(), where)
    if isinstance(v, Path):
        return str(v)
    if dataclasses.is_dataclass(v) and not isinstance(v, type):  # e.g. CodecConfig: its type and fields
        return {"__type__": type(v).__name__,
                **{f.name: _canonical(getattr(v, f.name), f"{where}.{f.name}") for f in dataclasses.fields(v)}}
    if isinstance(v, dict):
        if not all(isinstance(k, str) for k in v):
            raise ValueError(f"{where} has non-string keys: key dicts must be keyed by strings")
        return {k: _canonical(x, f"{where}.{k}") for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_canonical(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, (set, frozenset)):
        return sorted((_canonical(x, f"{where}[]") for x in v), key=lambda x: json.dumps(x, sort_keys=True))
    raise ValueError(f"{where} is a {type(v).__name__}, which has no canonical JSON form; "
                     "pass plain values (numbers, strings, lists, dicts, dataclasses)")


def codec_version(name: str | None = None) -> str:
    """``CODEC_VERSION`` without the formats step ``name`` does not depend on (``INDEPENDENT``)."""
    skip = INDEPENDENT.get(name, ())
    return "-".join(p for p in CODEC_VERSION.split("-") if not p.startswith(skip)) if skip else CODEC_VERSION


def _full_key(parts: dict, name: str | None = None) -> dict:
    return dict(_canonical(parts), codec_version=codec_version(name))


def cache_key(**parts) -> str:
    """The sha256 (hex) of the canonical JSON of ``parts`` plus ``CODEC_VERSION``.

    ``parts`` is the full configuration of a step, including the checkpoint's sha256: any
    difference in any part (or in the codec version) gives another key. Lists, tuples and
    dataclasses such as ``CodecConfig`` are allowed; dict order does not matter.
    """
    return _hash(parts)


def _hash(parts: dict, name: str | None = None) -> str:
    text = json.dumps(_full_key(parts, name), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def recompute_requested(recompute: bool = False) -> bool:
    """``recompute``, or ``BSU_RECOMPUTE`` set to 1/true/yes/on in the environment."""
    env = os.environ.get(ENV, "").strip().lower()
    if env not in _TRUE | _FALSE:
        raise ValueError(f"{ENV} must be 1 or 0 (or true/false), got {os.environ[ENV]!r}")
    return bool(recompute) or env in _TRUE


def cache_paths(name: str, key: dict) -> tuple[Path, Path]:
    """The ``.csv`` and ``.json`` paths of the entry for ``name`` and ``key``."""
    if not isinstance(name, str) or not name or not all(c.isalnum() or c in "_-." for c in name):
        raise ValueError(f"name must be a non-empty file-name-safe string (letters, digits, _-.), got {name!r}")
    stem = results_dir() / "cache" / f"{name}-{_hash(key, name)[:12]}"
    return stem.with_suffix(".csv"), stem.with_suffix(".json")


def _entry(name: str, key: dict, recompute: bool, schema: bool) -> dict | None:
    """The stored description of the entry ``cached`` would read back for ``key`` (exactly this key
    and ``schema``; the file name holds only 12 hex digits of the hash), or None where it would
    compute: no such entry, or a recompute asked for."""
    csv, meta = cache_paths(name, key)
    if recompute_requested(recompute) or not (csv.exists() and meta.exists()):
        return None
    stored = json.loads(meta.read_text())
    return stored if stored.get("key") == _full_key(key, name) and stored.get("schema") == schema else None


def is_cached(name: str, key: dict, recompute: bool = False, schema: bool = True) -> bool:
    """Whether ``cached(name, key, ..., recompute, schema)`` would read its result back instead of
    computing it (an entry with exactly this key, and no recompute asked for)."""
    return _entry(name, key, recompute, schema) is not None


def cached(name: str, key: dict, compute: Callable[[], list[dict] | pd.DataFrame], recompute: bool = False,
           schema: bool = True) -> pd.DataFrame:
    """The result of ``compute()`` for ``key``: read from the cache when an entry with exactly
    this key (and ``CODEC_VERSION``) exists, else computed, stored and returned.

    Parameters
    ----------
    name : str
        Step name, the entry's file-name prefix (``results_dir()/cache/<name>-<hash12>.csv``).
    key : dict
        The step's full configuration; must name the weights as ``checkpoint`` (their sha256),
        since results of other weights must never be reused.
    compute : callable
        Runs the step; returns rows (dicts) or a frame. Its ``attrs`` (JSON-able; e.g.
        fine-tuning histories) are stored and restored with the rows.
    recompute : bool
        Compute even if an entry exists (also forced by ``BSU_RECOMPUTE=1``); overwrites it.
    schema : bool
        The rows are results rows (``results.SCHEMA``): stored and returned through
        ``results.to_frame`` (all schema columns, schema dtypes). With False, any frame is
        stored as is and returned with its own column dtypes.

    Returns
    -------
    DataFrame
        The same frame, with the same dtypes, whether computed now or read back.
    """
    if not isinstance(key, dict):
        raise ValueError(f"key must be a dict of the step's configuration, got {type(key).__name__}")
    if "checkpoint" not in key:
        raise ValueError("key must hold 'checkpoint' (the weights' sha256, or None for untrained weights)")
    if not callable(compute):
        raise ValueError(f"compute must be callable, got {type(compute).__name__}")
    csv, meta = cache_paths(name, key)
    stored = _entry(name, key, recompute, schema)
    if stored is not None:
        return _read(csv, stored)
    out = compute()
    attrs = dict(out.attrs) if isinstance(out, pd.DataFrame) else {}
    frame = to_frame(out) if schema else pd.DataFrame(out).reset_index(drop=True)
    if not schema and (frame.columns.duplicated().any() or not all(isinstance(c, str) for c in frame.columns)):
        raise ValueError("the computed frame needs unique string column names to be cached")
    frame.attrs = attrs
    _write(frame, csv, meta, dict(name=name, key=_full_key(key, name), hash=_hash(key, name), schema=schema,
                                  columns=list(frame.columns), dtypes={c: str(t) for c, t in frame.dtypes.items()},
                                  attrs=attrs))
    return frame


def _write(frame: pd.DataFrame, csv: Path, meta: Path, info: dict) -> None:
    """Write the rows, then the key: an entry is complete only once its ``.json`` exists, and
    each file appears whole (written beside, then renamed) even if the run is killed."""
    csv.parent.mkdir(parents=True, exist_ok=True)
    meta.unlink(missing_ok=True)
    tmp = csv.with_suffix(".csv.tmp")
    frame.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    tmp = meta.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(info, indent=1, default=_json_default))
    os.replace(tmp, meta)


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"frame.attrs holds a {type(v).__name__}, which cannot be stored as JSON")


def _read(csv: Path, info: dict) -> pd.DataFrame:
    cols, dtypes = info["columns"], info["dtypes"]
    if not cols:
        frame = pd.DataFrame()
    else:
        numeric = {c: t for c, t in dtypes.items() if _is_numeric(t)}
        frame = pd.read_csv(csv, dtype={c: numeric.get(c, "object") for c in cols}, keep_default_na=True)
        for c in cols:
            t = dtypes[c]
            if t in ("bool", "boolean"):
                frame[c] = frame[c].map({"True": True, "False": False}).astype("boolean" if t == "boolean" else bool)
            elif c not in numeric:
                frame[c] = frame[c].astype(t)
        if info["schema"]:
            frame = to_frame(frame)
    frame.attrs = info.get("attrs", {})
    return frame


def _is_numeric(dtype: str) -> bool:
    try:
        return pd.api.types.is_numeric_dtype(pd.api.types.pandas_dtype(dtype)) and dtype not in ("bool", "boolean")
    except TypeError:
        return False
