"""recipes: each stage trains what the Entropic Student's recipe says and freezes the rest; the
stages share the budget's steps; the later stages' features are the tail's own."""
import pytest
import torch
from torch.utils.data import TensorDataset

from blocksparse import recipes
from blocksparse.bottleneck import Bottleneck
from blocksparse.model import build_model
from blocksparse.protocol import Budget
from blocksparse.student import StudentBottleneck


def _setup(seed=0):
    torch.manual_seed(seed)
    model = build_model("fashion-mnist", "layer3").eval()
    g = torch.Generator().manual_seed(seed)
    data = TensorDataset(torch.randn(24, 1, 28, 28, generator=g), torch.randint(0, 10, (24,), generator=g))
    bn = recipes.make_bottleneck("two-stage", model, 4, 2, seed)
    return model, bn, data


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items() if v.is_floating_point()}


def _changed(before, module, prefix=""):
    now = module.state_dict()
    return {k for k, v in before.items() if k.startswith(prefix) and not torch.equal(v, now[k])}


def test_stages_share_the_steps():
    assert recipes.stages("joint", 7) == [("joint", 7)]
    assert recipes.stages("two-stage", 7) == [("features", 3), ("decoder", 4)]
    assert recipes.stages("hybrid", 1800) == [("features", 900), ("joint", 900)]
    with pytest.raises(ValueError, match="recipe"):
        recipes.stages("three-stage", 10)


@pytest.mark.parametrize("stage", ["features", "decoder"])
def test_each_stage_trains_only_its_part(monkeypatch, stage):
    model, bn, data = _setup()
    monkeypatch.setattr(recipes, "stages", lambda recipe, steps: [(stage, steps)])
    # keep the last weights (early stopping would restore step 0's when two random steps made them worse)
    monkeypatch.setattr(recipes, "track_best", lambda acc, best, bad, m: ((acc, recipes.copy_state(m)), 0))
    net0, bn0 = _snapshot(model), _snapshot(bn)
    recipes._train_student(model, bn, "two-stage", 1.0, Budget(steps=2, batch_size=8, lr=1e-2, eval_every=100),
                           data, TensorDataset(*[t[:8] for t in data.tensors]), 0, None, False)
    head_keys = {k for k in net0 if k.startswith(("net.conv1", "net.bn1", "net.layer1", "net.layer2", "net.layer3"))}
    tail_keys = {k for k in net0 if k.startswith(("net.layer4", "net.fc"))}
    net_changed, bn_changed = _changed(net0, model), _changed(bn0, bn)
    if stage == "features":  # head and the whole bottleneck learn, the tail is frozen
        assert net_changed & head_keys and not net_changed & tail_keys
        assert any(k.startswith("encoder") for k in bn_changed) and any(k.startswith("decoder") for k in bn_changed)
    else:  # decoder and tail learn; head, encoder and density are frozen
        assert net_changed & tail_keys and not {k for k in net_changed & head_keys if not k.endswith(("running_mean", "running_var"))}
        assert not any(k.startswith("encoder") for k in bn_changed)
        assert not any(k.startswith("entropy") and not k.endswith("quantiles") for k in bn_changed)
        assert any(k.startswith("decoder") for k in bn_changed)


def test_tail_stages_end_in_the_tails_logits():
    model, _, _ = _setup()
    z = torch.relu(torch.randn(2, model.split_channels, 7, 7))
    feats, logits = recipes.tail_stages(model, z)
    assert len(feats) == 1 and feats[0].shape == (2, 512, 4, 4)  # after layer3, only layer4 follows
    assert torch.allclose(logits, model.tail(z))


def test_the_recipe_must_fit_its_bottleneck():
    model, bn, data = _setup()
    with pytest.raises(ValueError, match="joint recipe trains a bottleneck.Bottleneck"):
        recipes.train_recipe(model, bn, "joint", 1.0, Budget(), data, data, 0)
    v1 = Bottleneck(model.split_channels, 4, 8, 2)
    with pytest.raises(ValueError, match="StudentBottleneck"):
        recipes.train_recipe(model, v1, "hybrid", 1.0, Budget(), data, data, 0)
    with pytest.raises(ValueError, match="lmbda"):
        recipes.train_recipe(model, bn, "hybrid", -1.0, Budget(), data, data, 0)
    assert isinstance(recipes.make_bottleneck("joint", model, 4, 2, 0), Bottleneck)
    assert isinstance(recipes.make_bottleneck("hybrid", model, 4, 2, 0), StudentBottleneck)


def test_the_students_density_learns_at_the_priors_rate_the_rest_at_the_budgets(monkeypatch):
    """protocol v2.1: the same help v1's prior gets (its rate weight's prior learns at 1e-2)."""
    from blocksparse.protocol import BOTTLENECK_PRIOR_LR, STUDENT_DENSITY_LR
    assert STUDENT_DENSITY_LR == BOTTLENECK_PRIOR_LR
    model, bn, data = _setup()
    seen = []
    real = torch.optim.Adam

    def adam(groups, lr, **kw):
        seen.append([(len(g["params"]), g.get("lr", lr), {id(p) for p in g["params"]}) for g in groups]
                    if isinstance(groups, list) and isinstance(groups[0], dict) else None)
        return real(groups, lr, **kw)
    monkeypatch.setattr(recipes.torch.optim, "Adam", adam)
    recipes._train_student(model, bn, "hybrid", 1.0, Budget(steps=2, batch_size=8, lr=1e-3, eval_every=100), data,
                           TensorDataset(*[t[:8] for t in data.tensors]), 0, None, False)
    density = {id(p) for n, p in bn.entropy.named_parameters() if not n.endswith("quantiles")}
    for groups in [g for g in seen if g is not None]:  # each stage's optimizer (the aux one takes a plain list)
        rates = {lr for _, lr, ids in groups if ids & density}
        assert rates == {STUDENT_DENSITY_LR}
        assert all(lr == 1e-3 for _, lr, ids in groups if not ids & density)
    assert len([g for g in seen if g is not None]) == 2  # stage 1 and the joint stage


@pytest.mark.parametrize("killed_at", [3, 4])  # validations: 1 is step 0; 3 is inside stage 1, 4 after it
def test_a_student_run_resumes_from_its_state_as_if_never_stopped(monkeypatch, tmp_path, killed_at):
    """Two stages of 2 steps, validated every step: a run killed at a validation and resumed from its
    state ends with the weights and history of an unbroken run (the aux optimizer's state included)."""
    budget = Budget(steps=4, batch_size=8, lr=1e-2, eval_every=1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order, so the comparison can be exact
    try:
        model, bn, data = _setup()
        history = recipes._train_student(model, bn, "hybrid", 1.0, budget, data, data, 0, None, False)
        whole = _snapshot(model) | {f"bn.{k}": v for k, v in _snapshot(bn).items()}
        state, real, calls = tmp_path / "s.pt", recipes.validate, []

        def killed(*a, **k):
            calls.append(1)
            if len(calls) == killed_at:
                raise KeyboardInterrupt
            return real(*a, **k)
        model, bn, data = _setup()
        monkeypatch.setattr(recipes, "validate", killed)
        with pytest.raises(KeyboardInterrupt):
            recipes._train_student(model, bn, "hybrid", 1.0, budget, data, data, 0, state, False)
        monkeypatch.setattr(recipes, "validate", real)
        assert "aux" in torch.load(state, weights_only=False)
        model, bn, data = _setup()
        again = recipes._train_student(model, bn, "hybrid", 1.0, budget, data, data, 0, state, False)
    finally:
        torch.set_num_threads(threads)
    resumed = _snapshot(model) | {f"bn.{k}": v for k, v in _snapshot(bn).items()}
    assert [h["step"] for h in again] == [h["step"] for h in history] == [0, 1, 2, 3, 4]
    assert [h["val_objective"] for h in again] == [h["val_objective"] for h in history]
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
