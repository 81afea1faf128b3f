"""The study's grid and the selection of what to fine-tune (on validation, after fine-tuning)."""
import pytest
import torch

import blocksparse.study
import blocksparse_utils as bsu


def test_candidates_under_measure_real_streams():
    model = bsu.load_pretrained()
    data = bsu.load_dataset(split="val", subset=3)
    cfgs = [bsu.CodecConfig(4, r, "global", 2) for r in (1.0, 0.05)]
    got = blocksparse.study.candidates_under(model, cfgs, data, target_bpp=20.0)
    z = bsu.head_features(model, data)
    sizes = [len(bsu.encode(z[i:i + 1], cfgs[1])) for i in range(3)]
    assert [c for c, _ in got] == [cfgs[1]]  # ratio 1 costs far more than 20 bpp
    assert got[0][1] == pytest.approx(8 * sum(sizes) / 3 / 784)


def test_successive_halving_picks_on_post_finetuning_validation(monkeypatch):
    """With a stand-in fine-tuning whose validation accuracy is known per configuration, the
    halving keeps the best half each round and doubles the budget."""
    score = {0.5: 0.2, 0.3: 0.9, 0.1: 0.5, 0.05: 0.7}
    calls = []

    def fake_finetune(model, cfg, steps, eval_every, patience, **kw):
        calls.append((cfg.ratio, steps))
        return model, [dict(step=0, val_accuracy=0.1), dict(step=steps, val_accuracy=score[cfg.ratio])]
    monkeypatch.setattr(blocksparse.study, "finetune", fake_finetune)
    cands = [bsu.CodecConfig(4, r, "global", 2) for r in score]
    rows = blocksparse.study.select_after_finetuning(lambda: None, cands, screen_steps=10, rounds=3)
    assert calls == [(0.5, 10), (0.3, 10), (0.1, 10), (0.05, 10), (0.3, 20), (0.05, 20)]  # one left: stop
    last = rows[rows["round"] == rows["round"].max()]
    assert last.loc[last["val_accuracy"].idxmax(), "ratio"] == 0.3
    with pytest.raises(ValueError, match="candidates"):
        blocksparse.study.select_after_finetuning(lambda: None, [], screen_steps=10)
