"""Protocol v2's recipes for the learned bottleneck (``protocol.BOTTLENECK_RECIPES``).

- ``joint``: v1's anchor as it was (``bottleneck.Bottleneck`` trained by
  ``bottleneck_training.train_bottleneck`` on the whole network, one stage).
- ``two-stage``: the Entropic Student's (``student.StudentBottleneck``, its density learning at
  ``protocol.STUDENT_DENSITY_LR`` as v1's prior does: v2.1): stage 1 fits the
  uncompressed model's features after the split and after each later stage plus lambda x rate
  (head and bottleneck learn, the tail is frozen); stage 2 trains decoder and tail with
  distillation, encoder and density frozen.
- ``hybrid``: stage 1 as ``two-stage``, then the whole network jointly as ``joint``.

Every recipe spends ``steps`` in all (half per stage where there are two), with the budget's
batch size, learning rate (cosine-annealed within each stage), distillation weight and temperature.
The teacher is the network as it was before training (the shipped model). The density's quantiles
(the coder's symbol range) learn apart, with CompressAI's auxiliary loss.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .bottleneck import Bottleneck
from .bottleneck_training import train_bottleneck
from .model import SplitResNet18
from .protocol import BOTTLENECK_PRIOR_LR, BOTTLENECK_QUANTIZATION, BOTTLENECK_RECIPES, STUDENT_DENSITY_LR, Budget
from .runtime import module_device, set_seed
from .student import StudentBottleneck
from .training import copy_state, distillation_loss, save_run, track_best

HIDDEN = 64  # intermediate channels of every bottleneck (v1's)


def stages(recipe: str, steps: int) -> list[tuple[str, int]]:
    """The stages of ``recipe`` and their steps, ``steps`` in all."""
    if recipe not in BOTTLENECK_RECIPES:
        raise ValueError(f"recipe must be one of {BOTTLENECK_RECIPES}, got {recipe!r}")
    if recipe == "joint":
        return [("joint", steps)]
    first = steps // 2
    return [("features", first), ("decoder" if recipe == "two-stage" else "joint", steps - first)]


def make_bottleneck(recipe: str, model: SplitResNet18, latent_channels: int, stride: int, seed: int) -> nn.Module:
    """A fresh bottleneck for ``recipe`` at ``model``'s split, initialized from ``seed``."""
    stages(recipe, 2)  # validates recipe
    torch.manual_seed(seed)
    cls = Bottleneck if recipe == "joint" else StudentBottleneck
    return cls(model.split_channels, latent_channels, HIDDEN, stride).to(module_device(model))


def tail_stages(model: SplitResNet18, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """(the features after each later stage, logits) from split-point features ``z``."""
    feats, n = [], model.net
    for s in model._tail_stages:
        z = getattr(n, s)(z)
        feats.append(z)
    return feats, n.fc(torch.flatten(n.avgpool(z), 1))


@torch.no_grad()
def validate(model: SplitResNet18, bn: nn.Module, data: TensorDataset, lmbda: float, batch_size: int = 250) -> dict:
    """Accuracy, cross-entropy, model-estimated bpp and their objective (CE + lambda x bpp) on the
    rounded path, the network and the bottleneck in eval mode."""
    model.eval()
    bn.eval()
    x, y = data.tensors
    device = module_device(model)
    correct, ce, bits = 0, 0.0, 0.0
    for s in range(0, len(x), batch_size):
        z = model.head(x[s:s + batch_size].to(device)).float()
        z_hat, lik = bn(z)
        logits = model.tail(z_hat).float()
        yb = y[s:s + batch_size].to(device)
        ce += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(1) == yb).sum())
        bits += float(-torch.log2(lik).sum())
    rate = bpp(bits / 8, tuple(x.shape[-2:]), len(x))  # an estimate: bits under the density, not a stream
    return dict(val_accuracy=correct / len(x), val_cross_entropy=ce / len(x), val_bpp_estimate=rate,
                val_objective=ce / len(x) + lmbda * rate)


def _train_student(model: SplitResNet18, bn: StudentBottleneck, recipe: str, lmbda: float, budget: Budget,
                   train_data: TensorDataset, val_data: TensorDataset, seed: int, state_path: Path | None,
                   progress: bool) -> list[dict]:
    steps, eval_every = budget.steps, budget.eval_every
    set_seed(seed)
    device = module_device(model)
    teacher = copy.deepcopy(model).eval().requires_grad_(False)
    tracked = nn.ModuleDict(dict(bn=bn, net=model))
    x, labels = train_data.tensors
    pixels = x.shape[-2] * x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    quantiles = [p for n, p in bn.named_parameters() if n.endswith("quantiles")]
    plan = stages(recipe, steps)
    head = [p for m in model.head_modules() for p in m.parameters()]
    head_ids = {id(p) for p in head}
    tail = [p for p in model.parameters() if id(p) not in head_ids]
    density = [p for n, p in bn.entropy.named_parameters() if not n.endswith("quantiles")]
    trainable = {"features": head + list(bn.encoder.parameters()) + list(bn.decoder.parameters()) + density,
                 "decoder": list(bn.decoder.parameters()) + tail,
                 "joint": head + tail + list(bn.encoder.parameters()) + list(bn.decoder.parameters()) + density}
    aux = torch.optim.Adam(quantiles, lr=1e-3)
    history, best, bad, done = [validate(model, bn, val_data, lmbda) | dict(step=0, stage=plan[0][0])], None, 0, 0
    best = (-history[0]["val_objective"], copy_state(tracked))
    state = Path(state_path) if state_path is not None else None
    start = 0
    density_ids = {id(p) for p in density}
    for stage, n in plan:
        params = trainable[stage]
        # the density learns at its own rate (protocol v2.1), as v1's prior does; the rest at the budget's
        groups = [dict(params=[p for p in params if id(p) not in density_ids])]
        if any(id(p) in density_ids for p in params):
            groups.append(dict(params=[p for p in params if id(p) in density_ids], lr=STUDENT_DENSITY_LR))
        opt = torch.optim.Adam(groups, budget.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, n)
        if state is not None and state.exists():
            saved = torch.load(state, weights_only=False, map_location=device)
            if saved["step"] >= done + n:  # a finished stage: the next one (or the end) restores the weights
                done += n
                if stage == plan[-1][0] and done == steps:
                    tracked.load_state_dict(saved["module"])
                    history, best = saved["history"], (saved["best_accuracy"], saved["best"])
                continue
            if saved["step"] >= done:  # resume inside this stage (or at its start)
                tracked.load_state_dict(saved["module"])
                history, best, bad = saved["history"], (saved["best_accuracy"], saved["best"]), saved["bad"]
                if saved["step"] > done:
                    opt.load_state_dict(saved["opt"])
                    sched.load_state_dict(saved["sched"])
                g.set_state(saved["generator"])
                aux.load_state_dict(saved["aux"])
                if "rng" in saved:  # CompressAI's training noise draws from torch's global generator
                    torch.set_rng_state(saved["rng"])
                start = saved["step"]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        losses, rates = [], []
        for step in range(max(start, done) + 1, done + n + 1):
            model.eval()
            bn.train()
            if stage in ("decoder", "joint"):
                for m in model.modules():  # batch norm of what learns in train mode
                    if any(p.requires_grad for p in m.parameters(recurse=False)):
                        m.train()
            if stage == "features":
                for m in model.head_modules():
                    m.train()
            idx = torch.randint(len(x), (budget.batch_size,), generator=g)
            xb, yb = x[idx].to(device), labels[idx].to(device)
            z = model.head(xb).float()
            z_tilde, lik = bn(z, generator=g, quantization=BOTTLENECK_QUANTIZATION)
            rate = -torch.log2(lik).sum() / (len(xb) * pixels)
            if stage == "features":
                with torch.no_grad():
                    zt = teacher.head(xb).float()
                    t_feats, _ = tail_stages(teacher, zt)
                s_feats, _ = tail_stages(model, z_tilde)
                loss = F.mse_loss(z_tilde, zt) + sum(F.mse_loss(s, t) for s, t in zip(s_feats, t_feats))
                loss = loss + lmbda * rate
            else:
                with torch.no_grad():
                    t_logits = teacher(xb)
                logits = model.tail(z_tilde)
                loss = (budget.distill_weight * distillation_loss(logits, t_logits, budget.temperature)
                        + (1 - budget.distill_weight) * F.cross_entropy(logits, yb))
                if stage == "joint":
                    loss = loss + lmbda * rate
            opt.zero_grad(set_to_none=True)
            aux.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bn.aux_loss().backward()
            aux.step()
            losses.append(loss.item())
            rates.append(rate.item())
            if step % eval_every == 0 or step == done + n:
                h = validate(model, bn, val_data, lmbda) | dict(step=step, stage=stage, loss=float(np.mean(losses)),
                                                                rate_bpp=float(np.mean(rates)))
                history.append(h)
                losses, rates = [], []
                best, bad = track_best(-h["val_objective"], best, bad, tracked)
                if state is not None:
                    save_run(state, tracked, opt, sched, g, history, best, bad, step, extra=dict(aux=aux.state_dict(), rng=torch.get_rng_state()))
                if progress:
                    print(f"{recipe} {stage} step {step}: acc {h['val_accuracy']:.4f} bpp {h['val_bpp_estimate']:.3f}",
                          flush=True)
        done += n
    for p in model.parameters():
        p.requires_grad_(True)
    tracked.load_state_dict(best[1])
    return history


def train_recipe(model: SplitResNet18, bn: nn.Module, recipe: str, lmbda: float, budget: Budget,
                 train_data: TensorDataset, val_data: TensorDataset, seed: int,
                 state_path: str | Path | None = None, progress: bool = False) -> tuple[nn.Module, list[dict]]:
    """Train ``bn`` and the whole network ``model`` (changed in place) with ``recipe`` at rate weight
    ``lmbda``: ``budget.steps`` in all, validated on ``val_data`` every ``budget.eval_every``; the
    weights of the best validation objective (cross-entropy + lambda x estimated bpp) are kept, as
    v1 did. Returns (bottleneck in eval mode, history)."""
    if not isinstance(lmbda, (int, float)) or isinstance(lmbda, bool) or not lmbda >= 0:
        raise ValueError(f"lmbda must be a number >= 0, got {lmbda!r}")
    if not isinstance(budget, Budget) or budget.train != "all" or budget.optimizer != "adam":
        raise ValueError(f"budget: a recipe trains the whole network with Adam (train='all', optimizer='adam'), "
                         f"got {budget!r}")
    stages(recipe, budget.steps)
    if recipe == "joint":
        if not isinstance(bn, Bottleneck):
            raise ValueError(f"bn: the joint recipe trains a bottleneck.Bottleneck, got {type(bn).__name__}")
        return train_bottleneck(model, bn, float(lmbda), budget, prior_lr=BOTTLENECK_PRIOR_LR,
                                quantization=BOTTLENECK_QUANTIZATION, train_data=train_data, val_data=val_data,
                                seed=seed, state_path=state_path, progress=progress)
    if not isinstance(bn, StudentBottleneck):
        raise ValueError(f"bn: the {recipe} recipe trains a student.StudentBottleneck, got {type(bn).__name__}")
    history = _train_student(model, bn, recipe, float(lmbda), budget, train_data, val_data, seed, state_path, progress)
    return bn.update().eval(), history
