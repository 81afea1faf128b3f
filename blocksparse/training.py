"""Training: pretraining the uncompressed baseline, fine-tuning with the codec in the loop."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pickle
import time
import zipfile
from pathlib import Path

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from .codec import CodecConfig, compress_ste
from .data import VAL_SIZE, load_dataset
from .model import SplitResNet18, build_model, checkpoint_path
from .runtime import DATA_DIR, autocast, default_device, module_device, set_seed


def _augment(x: Tensor, pad: int) -> Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip, per image."""
    n, _, h, w = x.shape
    xp = F.pad(x, (pad,) * 4)
    i, j = torch.randint(0, 2 * pad + 1, (2, n)).tolist()
    out = torch.stack([xp[k, :, i[k]:i[k] + h, j[k]:j[k] + w] for k in range(n)])
    flip = torch.rand(n) < 0.5
    out[flip] = out[flip].flip(-1)
    return out


@torch.no_grad()
def predict(model: nn.Module, x: Tensor, cfg: CodecConfig | None = None, batch_size: int = 256,
            fast: bool = False, exact: bool = False, bf16: bool | None = None) -> Tensor:
    """Predicted labels for ``x`` on the model's device; ``fast`` uses channels_last;
    ``bf16``: bf16 autocast (None: where it is faster, see ``runtime.autocast``)."""
    model.eval()
    device = module_device(model)
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        if fast:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast(device, bf16):
            out.append(model(xb, cfg, exact).argmax(1).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long)


def accuracy(model: nn.Module, data: TensorDataset, cfg: CodecConfig | None = None,
             fast: bool = True, batch_size: int = 256) -> float:
    """Top-1 accuracy on ``data`` through the codec ``cfg`` (None: uncompressed)."""
    x, y = data.tensors
    return int((predict(model, x, cfg, batch_size, fast) == y).sum()) / len(y)  # exact: no float32 mean


def pretrain(dataset: str = "fashion-mnist", epochs: int = 5, batch_size: int = 128,
             lr: float = 0.1, seed: int = 0, resume: bool = False, subset: int | None = None,
             root: str | Path = DATA_DIR, bf16: bool | None = None, anneal_at: int | None = None,
             device: str | None = None, threads: int | None = None) -> dict:
    """Train the uncompressed baseline and write the shipped checkpoint and model card.

    One-cycle SGD over ``epochs`` (Nesterov, weight decay 5e-4), label smoothing 0.1,
    crop+flip, channels_last, on ``device`` (default: ``default_device()``), bf16 autocast
    where it is faster there (``bf16=None``) or as forced. With ``anneal_at=K`` the
    one-cycle schedule is followed for K-1 epochs and epoch K decays the learning rate
    linearly to zero, ending training there (a shorter run on slow machines). A resumable
    state is saved after every epoch to ``data/pretrain_state_<dataset>.pt``;
    ``resume=True`` continues from it. Validation accuracy is logged per epoch; the test
    set is evaluated once, at the end. ``threads``: CPU threads (default: all cores).
    """
    if anneal_at is not None and not 1 <= anneal_at <= epochs:
        raise ValueError(f"anneal_at must be in 1..epochs, got {anneal_at}")
    set_seed(seed)
    torch.set_num_threads(threads or max(1, os.cpu_count() or 1))
    train, val = (load_dataset(dataset, s, root, subset) for s in ("train", "val"))
    device = device or default_device()
    model = build_model(dataset).to(device, memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    steps = epochs * math.ceil(len(train) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    state_path = Path(root) / f"pretrain_state_{dataset}.pt"
    history, start = [], 0
    if resume and state_path.exists():
        try:  # our own state file (optimizer and RNG states too): not a weights-only load
            st = torch.load(state_path, weights_only=False, map_location=device)
        except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
            raise ValueError(f"resume: {state_path} is not a readable pretraining state ({type(e).__name__}); "
                             "delete it to start over") from None
        model.load_state_dict(st["model"]), opt.load_state_dict(st["opt"])
        sched.load_state_dict(st["sched"]), torch.set_rng_state(st["rng"].cpu())
        history, start = st["history"], st["epoch"]
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    x, y = train.tensors
    pad = 2 if x.shape[-1] <= 28 else 4
    t0 = time.time()
    last = anneal_at or epochs
    for epoch in range(start, last):
        model.train()
        perm = torch.randperm(len(x))
        bar = tqdm(range(0, len(x), batch_size), desc=f"epoch {epoch + 1}/{last}")
        annealing, lr_cut = epoch + 1 == anneal_at, sched.get_last_lr()[0]
        for k, s in enumerate(bar):
            if annealing:
                for g in opt.param_groups:
                    g["lr"] = lr_cut * (1 - k / len(bar))
            idx = perm[s:s + batch_size]
            xb = _augment(x[idx], pad).to(device).contiguous(memory_format=torch.channels_last)
            with autocast(device, bf16):
                loss = loss_fn(model(xb), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not annealing:
                sched.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        history.append(dict(epoch=epoch + 1, val_accuracy=accuracy(model, val),
                            minutes=(time.time() - t0) / 60))
        print(history[-1], flush=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                        rng=torch.get_rng_state(), history=history, epoch=epoch + 1), state_path)
    out = checkpoint_path(dataset) if Path(root) == DATA_DIR else Path(root) / f"resnet18_{dataset}.pt"
    half = {k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.net.state_dict().items()}
    torch.save(half, out)
    model.net.load_state_dict(half)  # the card reports the weights as shipped (fp16)
    test_acc = accuracy(model, load_dataset(dataset, "test", root))
    card = dict(dataset=dataset, epochs=epochs, anneal_at=anneal_at, batch_size=batch_size, lr=lr, seed=seed,
                subset=subset, val_size=VAL_SIZE, history=history, test_accuracy=test_acc,
                dtype="float16", torch=torch.__version__, torchvision=torchvision.__version__,
                sha256=hashlib.sha256(out.read_bytes()).hexdigest())
    out.with_suffix(".json").write_text(json.dumps(card, indent=2))
    return card


TRAIN_MODES = ("all", "tail", "frozen")


@dataclasses.dataclass(frozen=True)
class Budget:
    """One training budget: ``finetune`` and ``bottleneck_training.train_bottleneck`` read it, the
    protocol's cards record it (``asdict``), and "the same budget" is ``==``.

    Every run takes all ``steps``: validation every ``eval_every`` steps only chooses the weights
    kept (the best evaluation's), so budgets are equal in steps actually run, not only in what
    was allowed. The protocol's budget is ``protocol.BUDGET`` (the defaults); a notebook's demo
    or a test makes a smaller one, e.g. ``Budget(steps=30, eval_every=10)``.

    Parameters
    ----------
    steps, batch_size, lr : int, int, float
        Optimizer steps, images per step, learning rate (cosine-annealed over ``steps``).
    optimizer : {"adam", "sgd"}
        SGD with Nesterov momentum 0.9 and weight decay 5e-4 (``finetune`` only).
    train : {"all", "tail", "frozen"}
        What of the ResNet learns: the whole network, the layers after the split
        (``finetune``), or none, only the bottleneck (``train_bottleneck``).
    distill_weight, temperature : float
        Weight in [0, 1] of the distillation loss from the network as it was before training,
        against cross-entropy on the labels; Hinton's temperature.
    eval_every : int
        Validation every ``eval_every`` steps (and at the last).
    """
    steps: int = 1800
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adam"
    train: str = "all"
    distill_weight: float = 0.5
    temperature: float = 2.0
    eval_every: int = 150

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("lr", "temperature"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"{name} must be a number > 0, got {v!r}")
        if isinstance(self.distill_weight, bool) or not isinstance(self.distill_weight, (int, float)) \
                or not 0 <= self.distill_weight <= 1:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.train not in TRAIN_MODES:
            raise ValueError(f"train must be one of {TRAIN_MODES}, got {self.train!r}")

    def asdict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Budget":
        """This budget with some fields changed (a screen's shorter arms, a notebook's demo)."""
        return dataclasses.replace(self, **changes)


def group_lasso(z: Tensor, block_size: int, zero_border: bool = True) -> Tensor:
    """Block group-lasso penalty: the sum over BxB blocks of each block's L2 norm, mean per image.

    Computed on the coded pixels only (border zeroed, padding zero), so it pushes exactly the
    energy that top-K selection ranks into fewer blocks.
    """
    n, c, h, w = z.shape
    if zero_border:
        m = torch.ones(h, w, device=z.device, dtype=z.dtype)
        m[0], m[-1], m[:, 0], m[:, -1] = 0, 0, 0, 0
        z = z * m
    z = F.pad(z, (0, -w % block_size, 0, -h % block_size))
    energy = F.avg_pool2d(z.float() ** 2, block_size, divisor_override=1)
    return energy.clamp_min(1e-12).sqrt().sum() / n


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    """Hinton's soft-target loss: T^2 * KL(softmax(teacher/T) || softmax(student/T)), mean per image."""
    t = F.log_softmax(teacher.float() / temperature, 1)
    s = F.log_softmax(student.float() / temperature, 1)
    return temperature ** 2 * F.kl_div(s, t, reduction="batchmean", log_target=True)


def finetune(model: SplitResNet18, cfg: CodecConfig | None, budget: Budget = Budget(),
             dataset: str = "fashion-mnist", *, group_lasso_weight: float = 0.0, seed: int = 0,
             train_subset: int | None = None, val_subset: int | None = 1000, root: str | Path = DATA_DIR,
             train_data: TensorDataset | None = None, val_data: TensorDataset | None = None,
             state_path: str | Path | None = None, progress: bool = True, teacher_inputs: Tensor | None = None,
             monitor: dict[str, TensorDataset] | None = None) -> tuple[SplitResNet18, list[dict]]:
    """Fine-tune ``model`` with the codec in the loop for ``budget.steps``; the weights of the best
    validation are kept.

    The loss is ``(1 - distill_weight) * CE + distill_weight * KD + group_lasso_weight * GL``:
    cross-entropy on the labels, distillation from the uncompressed model as it was before
    fine-tuning (its logits, ``temperature``), and the block group-lasso of the head's output.

    Parameters
    ----------
    cfg : CodecConfig or None
        The codec in the loop (straight-through: the forward pass is exactly the decoder's
        output, the gradient passes kept values unchanged and is zero on dropped blocks).
        None fine-tunes without a codec (e.g. on images decoded by an image codec).
    budget : Budget
        Steps, batch, learning rate, optimizer, what learns (``train``: "all" or "tail"),
        distillation, and how often to validate (accuracy on ``val_data``).
    group_lasso_weight : float
        Weight of the block group-lasso (>= 0).
    train_subset, val_subset : int, optional
        Evenly spaced images of the "train" and "val" splits (the test split is never
        touched here). ``train_data`` / ``val_data`` replace the splits altogether.
    state_path : path, optional
        Resumable state, written at every evaluation; if it exists, training continues from it.
    teacher_inputs : Tensor, optional
        What the distillation teacher sees, aligned with the training images (default: the
        training images). With ``train_data`` holding images decoded by an image codec, pass
        the original images so the teacher is the uncompressed model, as for the codec in the loop.
    monitor : dict of name -> TensorDataset, optional
        Extra sets whose accuracy is recorded at every evaluation as ``<name>_accuracy``; they
        never influence training or the choice of weights (e.g. to show what early stopping on
        the test set would have reported).

    Returns
    -------
    (model, history)
        The model (best validation weights, eval mode) and one dict per evaluation:
        ``step``, ``loss`` (mean training loss since the last evaluation), ``val_accuracy``.
    """
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be a training.Budget, got {type(budget).__name__}")
    if budget.train not in ("tail", "all"):
        raise ValueError(f"budget.train must be 'tail' or 'all' for finetune, got {budget.train!r}")
    if isinstance(group_lasso_weight, bool) or not isinstance(group_lasso_weight, (int, float)) \
            or not group_lasso_weight >= 0:
        raise ValueError(f"group_lasso_weight must be a number >= 0, got {group_lasso_weight!r}")
    steps, batch_size, train, distill_weight = budget.steps, budget.batch_size, budget.train, budget.distill_weight
    set_seed(seed)
    device = module_device(model)
    tr = train_data if train_data is not None else load_dataset(dataset, "train", root, train_subset)
    va = val_data if val_data is not None else load_dataset(dataset, "val", root, val_subset)
    for name, d in (("train_data", tr), ("val_data", va)):
        if len(d) == 0:
            raise ValueError(f"{name} is empty: there is nothing to train on or to validate with")
    if teacher_inputs is not None and tuple(teacher_inputs.shape) != tuple(tr.tensors[0].shape):
        raise ValueError(f"teacher_inputs has shape {tuple(teacher_inputs.shape)}, the training images "
                         f"{tuple(tr.tensors[0].shape)}: they must be aligned image for image")
    monitor = dict(monitor or {})

    def evaluation(step: int, loss: float) -> dict:
        return dict(step=step, loss=loss, val_accuracy=accuracy(model, va, cfg),
                    **{f"{k}_accuracy": accuracy(model, d, cfg) for k, d in monitor.items()})
    teacher = None
    if distill_weight > 0:
        teacher = build_model(dataset, model.split_at).to(device)
        teacher.load_state_dict(model.state_dict())
        teacher.eval().requires_grad_(False)
    head_ids = {id(p) for m in model.head_modules() for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad_(train == "all" or id(p) not in head_ids)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = (torch.optim.Adam(params, budget.lr) if budget.optimizer == "adam"
           else torch.optim.SGD(params, budget.lr, momentum=0.9, nesterov=True, weight_decay=5e-4))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, y = tr.tensors
    g = torch.Generator().manual_seed(seed)
    state = Path(state_path) if state_path is not None else None
    if state is not None and state.exists():
        history, best, bad, start = load_run(state, model, opt, sched, g, device)
    else:
        history, bad, start = [evaluation(0, float("nan"))], 0, 0
        best = (history[0]["val_accuracy"], copy_state(model))
    losses = []
    bar = tqdm(range(start + 1, steps + 1), initial=start, total=steps, disable=not progress,
               desc=f"fine-tune {'no codec' if cfg is None else f'{cfg.mode} B={cfg.block_size} r={cfg.ratio} {cfg.bits}b'}")
    for step in bar:
        model.train()
        if train == "tail":  # frozen head: keep its batch-norm statistics too
            for m in model.head_modules():
                m.eval()
        idx = torch.randint(len(x), (batch_size,), generator=g)
        xb, yb = x[idx].to(device), y[idx].to(device)
        with autocast(device):
            z = model.head(xb)
            logits = model.tail(z if cfg is None else compress_ste(z.float(), cfg))
            loss = (1 - distill_weight) * F.cross_entropy(logits.float(), yb)
            if teacher is not None:
                with torch.no_grad():
                    soft = teacher(xb if teacher_inputs is None else teacher_inputs[idx].to(device))
                loss = loss + distill_weight * distillation_loss(logits, soft, budget.temperature)
            if group_lasso_weight:
                loss = loss + group_lasso_weight * group_lasso(z, cfg.block_size if cfg else 1,
                                                               cfg.zero_border if cfg else True)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % budget.eval_every == 0 or step == steps:
            history.append(evaluation(step, float(np.mean(losses))))
            acc = history[-1]["val_accuracy"]
            bar.set_postfix(val=f"{acc:.4f}", best=f"{max(best[0], acc):.4f}")
            losses = []
            best, bad = track_best(acc, best, bad, model)
            if state is not None:
                save_run(state, model, opt, sched, g, history, best, bad, step)
    model.load_state_dict(best[1])
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval(), history


def copy_state(model: nn.Module) -> dict:
    """A detached copy of ``model``'s state_dict (the best weights early stopping restores)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def track_best(acc: float, best: tuple[float, dict], bad: int, module: nn.Module) -> tuple[tuple[float, dict], int]:
    """Early stopping's bookkeeping after a validation: keep a copy of ``module`` when ``acc`` beats
    the best so far (and reset the count of evaluations without improvement), else count one more."""
    return ((acc, copy_state(module)), 0) if acc > best[0] else (best, bad + 1)


def save_run(path: Path, module: nn.Module, opt, sched, generator: torch.Generator, history: list[dict],
             best: tuple[float, dict], bad: int, step: int, extra: dict | None = None) -> None:
    """Write a resumable training state (weights, optimizer, schedule, sampler, the best weights so far),
    with ``extra`` entries beside them (e.g. a second optimizer's state)."""
    torch.save(dict(module=module.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                    generator=generator.get_state(), history=history, best_accuracy=best[0], best=best[1],
                    bad=bad, step=step) | (extra or {}), path)


def load_run(path: Path, module: nn.Module, opt, sched, generator: torch.Generator,
             device: torch.device) -> tuple[list[dict], tuple[float, dict], int, int]:
    """Restore a state written by ``save_run`` into ``module``, ``opt``, ``sched`` and ``generator``;
    returns ``(history, best, bad, step)``."""
    st = torch.load(path, weights_only=False, map_location=device)
    module.load_state_dict(st["module"]), opt.load_state_dict(st["opt"]), sched.load_state_dict(st["sched"])
    generator.set_state(st["generator"])
    return st["history"], (st["best_accuracy"], st["best"]), st["bad"], st["step"]
