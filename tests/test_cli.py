"""The command line: the original script's sweep interface."""
import json

import pytest

from blocksparse.cli import main


def test_sweep_command_writes_results_and_figure(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("BSU_FIGURES_DIR", str(tmp_path / "figures"))
    main(["--mode", "global", "--block-size", "4", "--subset", "16", "--ratios", "0.5", "0.05",
              "--bits", "2", "--rate-sample", "2", "--batch-size", "8", "--finetune-steps", "2", "--val-subset", "8"])
    out = capsys.readouterr().out
    assert "uncompressed accuracy" in out
    rows = json.loads((tmp_path / "results" / "sweep_global_B4.json").read_text())
    assert rows["config"]["mode"] == "global" and len(rows["rows"]) == 4  # 2 ratios, without and with fine-tuning
    assert [r["finetuned"] for r in rows["rows"]] == [False, False, True, True]
    assert all(r["n_images"] == 16 and r["n_rate"] == 2 for r in rows["rows"])
    # the original's own layout: one entry per ratio, percent accuracies, its compression_ratio = bpp / input bpp
    orig = json.loads((tmp_path / "results" / "compression_results_original_global_B4.json").read_text())
    assert set(orig) == {"timestamp", "compression_results"}
    first, *entries = orig["compression_results"]
    assert first["ratio"] == 1.0 and first["bpp"] == 8.0 and first["compression_ratio"] == 1.0
    by_ratio = {(r["ratio"], r["finetuned"]): r for r in rows["rows"]}
    assert [e["ratio"] for e in entries] == [0.5, 0.05]
    for e in entries:
        no_ft, ft = by_ratio[(e["ratio"], False)], by_ratio[(e["ratio"], True)]
        assert e["accuracy_no_ft"] == round(100 * no_ft["accuracy"], 2) and e["accuracy_ft"] == round(100 * ft["accuracy"], 2)
        assert e["bpp"] == no_ft["bpp"] and e["compression_ratio"] == pytest.approx(no_ft["bpp"] / 8)
        st = e["detailed_stats"]
        assert st["compressed_bits"] == round(no_ft["bpp"] * 28 * 28 * 2) and st["original_bits"] == 8 * 28 * 28 * 2
        assert st["breakdown"]["values"]["bits"] == pytest.approx(2 * no_ft["values_bits"])
    comp = json.loads((tmp_path / "results" / "compression_results_global_B4.json").read_text())
    assert comp["global"]["block_size=4,bits=2"]["ratios"] == [0.5, 0.05]
    assert (tmp_path / "figures" / "accuracy_vs_compression_global_B4.png").exists()


@pytest.mark.parametrize("argv, name", [(["--block-size", "0"], "--block-size"), (["--ratios", "1.5"], "--ratios"),
                                        (["--bits", "x"], "--bits"), (["pretrain", "--epochs", "0"], "--epochs"),
                                        (["--block-size", "29", "--subset", "2"], "larger than"),
                                        (["--finetune-steps", "-1"], "--finetune-steps")])
def test_bad_arguments_are_usage_errors(argv, name, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert name in err and "Traceback" not in err


def test_the_original_setup_offline_names_what_to_download(capsys, tmp_path, monkeypatch):
    """PRESET=cifar100 runs this command per mode; without a network it stops with a usage error
    that names the hub file to fetch, not a traceback."""
    import huggingface_hub

    def offline(repo_id, filename, **kw):
        raise ConnectionError("no network")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        main(["--dataset", "cifar100", "--mode", "global", "--block-size", "4", "--ratios", "0.5", "--bits", "2"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "https://huggingface.co/cascade-ai/cifar100-resnet18" in err and "Traceback" not in err


def test_a_missing_card_from_the_shell_is_one_line_not_a_traceback(tmp_path):
    """The front door end to end (the issue's own example): exit status 2, one line naming the file."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    missing = tmp_path / "nope.json"
    r = subprocess.run([sys.executable, "blocksparse_utils.py", "protocol", "remeasure", str(missing)], cwd=root,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip() == f"blocksparse_utils.py protocol: error: {missing}: No such file or directory"


def test_only_file_errors_become_one_line_errors(monkeypatch):
    """The one-line answer is for missing or unreadable files; any other failure keeps its traceback."""
    import blocksparse.cli as cli

    def broken():
        raise RuntimeError("a bug, not a file")
    monkeypatch.setattr(cli, "benchmark", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main(["bench"])

    def unreadable():
        open("/")  # IsADirectoryError, raised inside a command
    monkeypatch.setattr(cli, "benchmark", unreadable)
    with pytest.raises(SystemExit) as e:
        main(["bench"])
    assert e.value.code == 2


@pytest.mark.parametrize("make", ["garbage", "folder", "missing"])
def test_an_unreadable_checkpoint_is_a_usage_error_in_one_line(make, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    path = tmp_path / "x.pt"
    if make == "garbage":
        path.write_bytes(b"garbage bytes")
    elif make == "folder":
        path.mkdir()
    with pytest.raises(SystemExit) as e:
        main(["--checkpoint", str(path), "--subset", "2", "--ratios", "0.5", "--bits", "2", "--finetune-steps", "0"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("blocksparse_utils.py: error: ") and str(path) in err.strip().splitlines()[-1]


def test_a_corrupt_card_in_a_folder_a_command_reads_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    (tmp_path / "answer").mkdir()
    (tmp_path / "answer" / "reference_seed0.json").write_text('{"seed": 0,')  # cut short
    with pytest.raises(SystemExit) as e:
        main(["protocol", "plan", "--out", str(tmp_path / "answer")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("blocksparse_utils.py protocol: error: a file it reads is not valid JSON")


def test_pretrain_resume_from_an_unreadable_state_is_a_usage_error(tmp_path, monkeypatch, capsys):
    import blocksparse.cli as cli
    real = cli.pretrain
    monkeypatch.setattr(cli, "pretrain", lambda *a, **k: real(*a, **k, root=tmp_path, threads=1))  # not data/
    (tmp_path / "pretrain_state_fashion-mnist.pt").write_bytes(b"garbage bytes")
    with pytest.raises(SystemExit) as e:
        main(["pretrain", "--resume", "--epochs", "1", "--subset", "16"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("blocksparse_utils.py pretrain: error: resume: ") and "pretrain_state_fashion-mnist.pt" in last
