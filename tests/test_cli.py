"""The command line: the original script's sweep interface."""
import json

import pytest

from blocksparse.cli import main


def test_sweep_command_writes_results_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BSU_FIGURES_DIR", str(tmp_path / "figures"))
    main(["--mode", "global", "--block-size", "4", "--subset", "16", "--ratios", "0.5", "0.05",
              "--bits", "2", "--rate-sample", "2", "--batch-size", "8"])
    out = capsys.readouterr().out
    assert "uncompressed accuracy" in out
    rows = json.loads((tmp_path / "results" / "sweep_global_B4.json").read_text())
    assert rows["config"]["mode"] == "global" and len(rows["rows"]) == 2
    assert all(r["n_images"] == 16 and r["n_rate"] == 2 for r in rows["rows"])
    comp = json.loads((tmp_path / "results" / "compression_results_global_B4.json").read_text())
    assert comp["global"]["block_size=4,bits=2"]["ratios"] == [0.5, 0.05]
    assert (tmp_path / "figures" / "accuracy_vs_compression_global_B4.png").exists()


@pytest.mark.parametrize("argv, name", [(["--block-size", "0"], "--block-size"), (["--ratios", "1.5"], "--ratios"),
                                        (["--bits", "x"], "--bits"), (["pretrain", "--epochs", "0"], "--epochs"),
                                        (["--block-size", "29", "--subset", "2"], "larger than")])
def test_bad_arguments_are_usage_errors(argv, name, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err
