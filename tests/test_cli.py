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
                                        (["--finetune-steps", "-1"], "--finetune-steps"),
                                        (["bottleneck", "--rate-weights", "-1"], "--rate-weights"),
                                        (["bottleneck", "--rate-weights", "1", "--stride", "3"], "--stride"),
                                        (["select", "--lrs", "1e-3", "0"], "--lrs"),
                                        (["select", "--target-bpp", "png"], "--target-bpp"),
                                        (["select", "--target-bpp", "0"], "--target-bpp"),
                                        (["select", "--target-bpp", "webp"], "codec-grid")])
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


def test_model_rows_replace_the_same_model_shipped_or_not(tmp_path, monkeypatch):
    from blocksparse.cli_exploratory import add_model_rows as _add_model_rows
    from blocksparse.results import load_results
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))

    def row(seed, accuracy, shipped):
        stem = f"data/frontier/m_seed{seed}"
        return dict(method="blocksparse", seed=seed, accuracy=accuracy, bpp=0.6, codebook=f"{stem}.codebook",
                    weights=f"{stem}.pt" if shipped else None, card=f"{stem}.json", reference_accuracy=0.93,
                    paired=dict(difference=accuracy - 0.93, lo=-0.05, hi=0.0, within=False))
    _add_model_rows([row(0, 0.90, True), row(1, 0.89, False)], "models", {})
    _add_model_rows([row(1, 0.88, False)], "models", {})  # seed 1 again: replaces its row, keeps seed 0
    got = load_results("models", tmp_path).sort_values("seed")
    assert list(got["seed"]) == [0, 1] and list(got["accuracy"]) == [0.90, 0.88]
    paired = json.loads((tmp_path / "models_paired.json").read_text())
    assert sorted(p["weights"] for p in paired) == ["data/frontier/m_seed0.pt", "data/frontier/m_seed1.json"]
    _add_model_rows([row(1, 0.88, True)], "models", {})  # seed 1 shipped after all: one row, naming its weights
    got = load_results("models", tmp_path).sort_values("seed")
    assert list(got["seed"]) == [0, 1] and list(got["weights"]) == ["data/frontier/m_seed0.pt", "data/frontier/m_seed1.pt"]
    paired = json.loads((tmp_path / "models_paired.json").read_text())
    assert sorted(p["weights"] for p in paired) == ["data/frontier/m_seed0.pt", "data/frontier/m_seed1.pt"]
    # a model whose only file is its card (the reference): rerun, its row is replaced, not repeated
    ref = dict(method="uncompressed", dataset="fashion-mnist", seed=0, accuracy=0.935, bpp=2048.0, n_images=10000,
               weights=None, card="data/reference/u_seed0.json", reference_accuracy=0.9322,
               paired=dict(difference=0.0028, lo=0.0, hi=0.005, within=True))
    _add_model_rows([dict(ref)], "refs", {})
    _add_model_rows([dict(ref, accuracy=0.936), dict(ref, seed=1, card="data/reference/u_seed1.json")], "refs", {})
    got = load_results("refs", tmp_path).sort_values("seed")
    assert list(got["seed"]) == [0, 1] and list(got["accuracy"]) == [0.936, 0.935]


def test_select_on_the_amortized_rate_writes_its_own_screening_file(tmp_path, monkeypatch, capsys):
    """`select --rate amortized` gates on codebook streams and files its screening apart from the
    self-contained one; every configuration is an arm with each learning rate (stand-in fine-tuning)."""
    import pandas as pd

    import blocksparse.study
    calls = []

    def fake_finetune(model, cfg, steps, eval_every, patience, lr, **kw):
        calls.append((cfg.ratio, lr, kw["group_lasso_weight"]))
        return model, [dict(step=steps, val_accuracy=0.5 + lr + cfg.ratio)]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    main(["select", "--target-bpp", "50", "--rate", "amortized", "--fit-images", "8", "--val-rate-sample", "2",
          "--val-subset", "4", "--modes", "global", "--block-sizes", "4", "--bits", "2", "--ratios", "0.05", "0.002",
          "--lrs", "1e-3", "3e-4", "--group-lasso-weight", "1e-5", "--screen-steps", "2", "--rounds", "1"])
    assert "2 of 2 configurations (one per distinct codec) reach 50.0 bpp on amortized validation streams" in capsys.readouterr().out
    assert not (tmp_path / "screening_layer1_50bpp.csv").exists()
    rows = pd.read_csv(tmp_path / "screening_layer1_50bpp_amortized.csv")
    config = json.loads((tmp_path / "screening_layer1_50bpp_amortized.json").read_text())["config"]
    assert config["rate"] == "amortized" and config["fit_images"] == 8
    assert sorted(zip(rows["ratio"], rows["lr"])) == [(0.002, 3e-4), (0.002, 1e-3), (0.05, 3e-4), (0.05, 1e-3)]
    assert sorted(calls) == sorted((r, lr, 1e-5) for r in (0.05, 0.002) for lr in (1e-3, 3e-4))


def test_select_under_webp_s_rate_within_one_point_reads_it_from_the_codec_grid(tmp_path, monkeypatch, capsys):
    """`--target-bpp webp`: the target is the lowest rate of codec_grid.csv at which WebP is within
    --tolerance of the grid's uncompressed accuracy; the screening file and config say so."""
    import pandas as pd

    import blocksparse.study
    from blocksparse.results import save_results

    def fake_finetune(model, cfg, steps, eval_every, patience, lr, **kw):
        return model, [dict(step=steps, val_accuracy=0.5)]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path))
    u = dict(method="uncompressed", dataset="fashion-mnist", accuracy=0.93, n_images=10000, bpp=2048.0)
    webp = [dict(method="webp", dataset="fashion-mnist", quality=q, accuracy=a, n_images=10000, bpp=b)
            for q, a, b in ((0, 0.78, 0.99), (50, 0.915, 2.2), (70, 0.9201, 57.23456), (90, 0.929, 70.0))]
    save_results([u, *webp], {}, "codec_grid")
    main(["select", "--target-bpp", "webp", "--val-rate-sample", "2", "--val-subset", "4", "--modes", "global",
          "--block-sizes", "4", "--bits", "2", "--ratios", "0.05", "0.002", "--screen-steps", "2", "--rounds", "1"])
    out = capsys.readouterr().out
    assert "webp q=70 is within one point at 57.235 bpp (10,000 test images)" in out  # 0.9201 >= 0.92; q=50 is not
    config = json.loads((tmp_path / "screening_layer1_57.235bpp.json").read_text())["config"]
    assert config["target_bpp"] == 57.23456 and config["target_from"]["quality"] == 70  # the codec's own rate
    assert len(pd.read_csv(tmp_path / "screening_layer1_57.235bpp.csv")) >= 1
    with pytest.raises(SystemExit):  # nothing within a tolerance of 0: a usage error naming the reason
        main(["select", "--target-bpp", "webp", "--tolerance", "0"])
    assert "no webp row of the grid is within 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the grid of another dataset is not this one's target
        main(["select", "--dataset", "cifar10", "--target-bpp", "webp"])
    assert "no rows of dataset 'cifar10'" in capsys.readouterr().err


def test_reference_pair_only_pairs_the_cards_without_training(tmp_path, monkeypatch, capsys):
    import numpy as np
    from blocksparse.results import pack_correct
    monkeypatch.setenv("BSU_RESULTS_DIR", str(tmp_path / "results"))
    (tmp_path / "frontier").mkdir(), (tmp_path / "reference").mkdir()

    def card(path, correct, **schedule):
        path.write_text(json.dumps(dict(dataset="fashion-mnist", seed=0, test_images=len(correct), schedule=schedule,
                                        test_correct=pack_correct(np.array(correct, bool)))))
    card(tmp_path / "reference" / "uncompressed_finetuned_seed0.json", [1, 1, 1, 0], steps=1800)
    card(tmp_path / "frontier" / "layer3_x_seed0.json", [1, 1, 0, 0], steps=1800)
    card(tmp_path / "frontier" / "bottleneck_layer1_x_seed0.json", [1, 1, 1, 1], steps=1800)  # not block-sparse
    main(["reference", "--pair-only", "--models", str(tmp_path / "frontier"), "--out", str(tmp_path / "reference")])
    pairs = json.loads((tmp_path / "results" / "frontier_vs_reference.json").read_text())
    assert len(pairs) == 1 and pairs[0]["weights"].endswith("layer3_x_seed0.json")
    assert pairs[0]["difference"] == -0.25 and pairs[0]["budget_differs"] == []
    assert "-25.00" in capsys.readouterr().out


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
    (tmp_path / "frontier").mkdir(), (tmp_path / "reference").mkdir()
    (tmp_path / "reference" / "uncompressed_finetuned_seed0.json").write_text('{"seed": 0,')  # cut short
    with pytest.raises(SystemExit) as e:
        main(["reference", "--pair-only", "--models", str(tmp_path / "frontier"), "--out", str(tmp_path / "reference")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("blocksparse_utils.py reference: error: a file it reads is not valid JSON")
