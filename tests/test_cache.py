"""The result cache: reuse only for exactly the same key, stored rows come back with their dtypes."""
import hashlib
import json

import pandas as pd
import pytest

import blocksparse.cache as cache
import blocksparse_utils as bsu


@pytest.fixture(autouse=True)
def _results(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("BSU_RECOMPUTE", raising=False)


ROWS = [dict(method="blocksparse", mode="global", block_size=4, ratio=0.005, bits=2, n_images=8, n_rate=3,
             accuracy=0.625, bpp=0.4183673469387755, finetuned=False, coder="ans"),
        dict(method="uncompressed", n_images=8, accuracy=0.75, bpp=2048.0)]
KEY = dict(dataset="fashion-mnist", ratios=[0.5, 0.005], bits=[2], checkpoint="ab" * 32)


def counting(rows=ROWS):
    calls = []

    def compute():
        calls.append(1)
        return rows
    return compute, calls


def test_same_key_computes_once_and_reads_back_the_same_frame():
    compute, calls = counting()
    first = cache.cached("sweep", KEY, compute)
    again = cache.cached("sweep", dict(reversed(list(KEY.items()))), compute)  # dict order does not matter
    assert len(calls) == 1
    pd.testing.assert_frame_equal(first, again)
    assert bsu.cached is cache.cached


def test_rows_round_trip_with_integer_dtypes_and_missing_values():
    cache.cached("sweep", KEY, counting()[0])
    df = cache.cached("sweep", KEY, lambda: pytest.fail("recomputed"))
    assert list(df.columns) == list(bsu.SCHEMA)
    assert str(df["block_size"].dtype) == "Int64" and str(df["n_images"].dtype) == "Int64"
    assert df["block_size"].tolist()[0] == 4 and df["block_size"].isna().tolist() == [False, True]
    assert df["n_images"].tolist() == [8, 8] and df["bits"].iloc[0] == 2
    assert df["bpp"].tolist() == [0.4183673469387755, 2048.0]  # floats exactly, not rounded by the CSV
    assert df["finetuned"].iloc[0] == False and df["finetuned"].isna().tolist() == [False, True]  # noqa: E712
    assert df["method"].tolist() == ["blocksparse", "uncompressed"] and df["mode"].isna().iloc[1]


def test_the_json_holds_the_full_key_beside_the_rows(tmp_path):
    cache.cached("sweep", KEY, counting()[0])
    csv = list((tmp_path / "cache").glob("sweep-*.csv"))
    meta = list((tmp_path / "cache").glob("sweep-*.json"))
    assert len(csv) == len(meta) == 1 and csv[0].stem == meta[0].stem
    stored = json.loads(meta[0].read_text())
    assert stored["key"] == KEY | dict(codec_version=cache.CODEC_VERSION)
    assert csv[0].name == f"sweep-{stored['hash'][:12]}.csv" and stored["hash"] == cache.cache_key(**KEY)


def test_another_codec_version_is_never_reused(monkeypatch):
    compute, calls = counting()
    cache.cached("sweep", KEY, compute)
    monkeypatch.setattr(cache, "CODEC_VERSION", "bitstream2-codebook1-analysis1")
    cache.cached("sweep", KEY, compute)
    assert len(calls) == 2
    cache.cached("sweep", KEY, compute)  # the new entry is reused from now on
    assert len(calls) == 2


@pytest.mark.parametrize("change", [dict(checkpoint="cd" * 32), dict(ratios=[0.5]), dict(bits=[2, 4]),
                                    dict(extra=0)])
def test_any_other_key_part_recomputes(change):
    compute, calls = counting()
    cache.cached("sweep", KEY, compute)
    cache.cached("sweep", KEY | change, compute)
    assert len(calls) == 2


def test_recompute_flag_and_environment_force_recomputation(monkeypatch):
    compute, calls = counting()
    cache.cached("sweep", KEY, compute)
    cache.cached("sweep", KEY, compute, recompute=True)
    assert len(calls) == 2
    monkeypatch.setenv("BSU_RECOMPUTE", "1")
    cache.cached("sweep", KEY, compute)
    assert len(calls) == 3
    monkeypatch.setenv("BSU_RECOMPUTE", "0")
    cache.cached("sweep", KEY, compute)
    assert len(calls) == 3
    monkeypatch.setenv("BSU_RECOMPUTE", "maybe")
    with pytest.raises(ValueError, match="BSU_RECOMPUTE"):
        cache.cached("sweep", KEY, compute)


def test_recomputed_rows_replace_the_entry():
    cache.cached("sweep", KEY, counting()[0])
    new = [dict(ROWS[0], accuracy=0.5)]
    assert cache.cached("sweep", KEY, lambda: new, recompute=True)["accuracy"].tolist() == [0.5]
    assert cache.cached("sweep", KEY, lambda: pytest.fail("recomputed"))["accuracy"].tolist() == [0.5]


def test_cache_key_is_the_sha256_of_the_canonical_json(monkeypatch):
    monkeypatch.setattr(cache, "CODEC_VERSION", "v9")
    text = '{"checkpoint":null,"codec_version":"v9","ratios":[0.5,0.05]}'  # written by hand
    assert cache.cache_key(ratios=(0.5, 0.05), checkpoint=None) == hashlib.sha256(text.encode()).hexdigest()
    cfg = bsu.CodecConfig(4, 0.05, "global", 2)
    by_hand = ('{"checkpoint":null,"codec_version":"v9","configs":[{"__type__":"CodecConfig","bits":2,'
               '"block_size":4,"mode":"global","ratio":0.05,"zero_border":true}]}')
    assert cache.cache_key(configs=[cfg], checkpoint=None) == hashlib.sha256(by_hand.encode()).hexdigest()
    assert cache.cache_key(a=1, checkpoint=None) != cache.cache_key(a=1.5, checkpoint=None)


def test_codec_version_names_both_stream_formats_and_the_analysis():
    from blocksparse import bitstream, codebook
    assert cache.CODEC_VERSION == (f"bitstream{bitstream.VERSION}-codebook{codebook.VERSION}"
                                   f"-analysis{cache.ANALYSIS_VERSION}")


def test_frames_outside_the_schema_keep_their_dtypes_and_attrs():
    df = pd.DataFrame(dict(mode=["global", "region-wise"], block_size=[4, 2], ratio=[0.05, 1 / 3],
                           round=[0, 1], val_accuracy=[0.5, 0.875], kept=[True, False]))
    df.attrs["histories"] = {"a": [dict(step=0, val_accuracy=0.5), dict(step=10, val_accuracy=0.75)]}
    first = cache.cached("screening", KEY, lambda: df, schema=False)
    again = cache.cached("screening", KEY, lambda: pytest.fail("recomputed"), schema=False)
    pd.testing.assert_frame_equal(again, df)
    assert again["round"].dtype == "int64" and again["kept"].dtype == bool
    assert again.attrs == first.attrs == df.attrs
    empty = cache.cached("empty", KEY, pd.DataFrame, schema=False)
    assert cache.cached("empty", KEY, lambda: pytest.fail("recomputed"), schema=False).shape == empty.shape == (0, 0)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="checkpoint"):
        cache.cached("sweep", dict(dataset="fashion-mnist"), counting()[0])
    with pytest.raises(ValueError, match="name"):
        cache.cached("../sweep", KEY, counting()[0])
    with pytest.raises(ValueError, match="key.model"):
        cache.cached("sweep", KEY | dict(model=object()), counting()[0])
    with pytest.raises(ValueError, match="compute"):
        cache.cached("sweep", KEY, None)
    with pytest.raises(ValueError, match="results schema"):
        cache.cached("sweep", KEY, lambda: [dict(nonsense=1)])


def test_a_format_change_keeps_the_entries_of_steps_that_do_not_use_it(tmp_path, monkeypatch):
    """Image codecs code no stream of ours: a new codebook version keeps their entry; a sweep of
    amortized streams is computed again."""
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    calls = []

    def compute():
        calls.append(1)
        return pd.DataFrame(dict(x=[1]))
    monkeypatch.setattr(cache, "CODEC_VERSION", "bitstream1-codebook1-analysis1")
    for name in ("image_codecs", "sweep"):
        cache.cached(name, dict(checkpoint=None), compute, schema=False)
    monkeypatch.setattr(cache, "CODEC_VERSION", "bitstream1-codebook2-analysis1")
    for name in ("image_codecs", "sweep"):
        cache.cached(name, dict(checkpoint=None), compute, schema=False)
    assert len(calls) == 3  # the image codecs once, the sweep twice
    assert cache.codec_version("dense") == "bitstream1-analysis1" and cache.codec_version("image_codecs") == "analysis1"
