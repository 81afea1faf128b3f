"""One results schema and its files (blocksparse.results): dtypes through CSV and JSON read back with
the standard library, hand-made rows and the layouts they must give."""
import csv
import json

import numpy as np
import pandas as pd
import pytest

from blocksparse import results


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    return tmp_path


def test_to_frame_has_the_schema_s_columns_dtypes_and_missing_values():
    df = results.to_frame([dict(method="blocksparse", block_size=4, ratio=0.5, finetuned=True),
                           dict(method="uncompressed", accuracy=0.9)])
    assert list(df.columns) == list(results.SCHEMA)
    assert {c: str(df[c].dtype) for c in df} == {c: t for c, (t, _) in results.SCHEMA.items()}
    assert df["block_size"].iloc[0] == 4 and df["block_size"].iloc[1] is pd.NA and df["accuracy"].iloc[0] is pd.NA
    with pytest.raises(ValueError, match="blocksize"):
        results.to_frame([dict(method="blocksparse", blocksize=4)])  # a typo does not vanish
    with pytest.raises(ValueError, match="'block_size'"):
        results.to_frame([dict(block_size=4.5)])


def test_integers_stay_integers_and_missing_is_explicit_in_both_files(results_dir):
    rows = [dict(method="blocksparse", mode="global", block_size=4, ratio=0.05, bits=2, finetuned=False, seed=3,
                 accuracy=0.875, n_images=40, bpp=0.25),
            dict(method="uncompressed", accuracy=0.9, n_images=40, finetuned=True)]
    path = results.save_results(rows, dict(note="hand-made"), "hand")
    with open(path, newline="") as f:
        read = list(csv.DictReader(f))
    assert read[0]["block_size"] == "4" and read[0]["seed"] == "3" and read[0]["n_images"] == "40"
    assert read[1]["block_size"] == "" and read[0]["finetuned"] == "False" and read[1]["finetuned"] == "True"
    stored = json.loads((results_dir / "hand.json").read_text())
    assert stored["config"] == dict(note="hand-made")
    assert stored["rows"][0]["block_size"] == 4 and isinstance(stored["rows"][0]["block_size"], int)
    assert stored["rows"][1]["block_size"] is None and stored["rows"][1]["finetuned"] is True
    back = results.load_results("hand")
    assert back["block_size"].iloc[0] == 4 and str(back["block_size"].dtype) == "Int64"
    assert back["finetuned"].tolist() == [False, True] and back["mode"].iloc[1] is pd.NA
    assert results.load_config("hand") == dict(note="hand-made")
    with pytest.raises(ValueError, match="no results at"):
        results.load_results("absent")
    with pytest.raises(ValueError, match="no results at"):
        results.load_config("absent")


def test_pack_correct_by_hand():
    # eight correct then one wrong: bytes 0xFF 0x00, base64 "/wA="
    assert results.pack_correct(np.array([True] * 8 + [False])) == "9:/wA="
    assert results.unpack_correct("9:/wA=").tolist() == [True] * 8 + [False]


def _rows():
    bs = dict(method="blocksparse", mode="global", block_size=4, bits=2, n_rate=2, header_bits=16.0, tables_bits=8.0,
              positions_bits=6.0, values_bits=10.0, padding_bits=0.0)
    return [dict(method="uncompressed", accuracy=0.9),
            bs | dict(ratio=0.1, finetuned=False, accuracy=0.8, bpp=0.4),
            bs | dict(ratio=0.5, finetuned=False, accuracy=0.85, bpp=0.6),
            bs | dict(ratio=0.1, finetuned=True, accuracy=0.88, bpp=0.4)]


def test_compression_results_hold_the_unfinetuned_block_sparse_rows_by_ratio(tmp_path):
    path = results.write_compression_results(pd.DataFrame(_rows()), tmp_path / "c.json")
    assert json.loads(path.read_text()) == {"global": {"block_size=4,bits=2": dict(
        ratios=[0.5, 0.1], accuracy=[0.85, 0.8], bpp=[0.6, 0.4])}}


def test_the_original_layout_by_hand():
    out = results.original_layout(pd.DataFrame(_rows()), 8, (28, 28), "T")
    first, high, low = out["compression_results"]
    assert out["timestamp"] == "T"
    assert first == dict(ratio=1.0, accuracy=90.0, bpp=8.0, compression_ratio=1.0, note="uncompressed features")
    assert (high["ratio"], high["accuracy_no_ft"], high["accuracy_ft"]) == (0.5, 85.0, None)  # no fine-tuned row
    assert (low["ratio"], low["accuracy_no_ft"], low["accuracy_ft"]) == (0.1, 80.0, 88.0)
    st = low["detailed_stats"]
    # 2 measured images of 28 x 28 pixels: 8 x 784 x 2 = 12544 input bits; 0.4 bpp x 1568 = 627.2 -> 627
    assert st["original_bits"] == 12544 and st["compressed_bits"] == 627
    assert low["compression_ratio"] == pytest.approx(0.4 / 8)
    # sections are means per image: x 2 images
    assert st["breakdown"]["values"]["bits"] == 20.0 and st["breakdown"]["indices"]["total_bits"] == 12.0
    assert st["breakdown"]["header_bits"] == 32.0 and st["breakdown"]["tables_bits"] == 16.0
