"""Training and evaluating a learned bottleneck (``bottleneck.Bottleneck``) at a split point.

``train_bottleneck`` trades rate (bits under the bottleneck's entropy model) against the frozen
tail's agreement with the uncompressed network (distillation), validating on the real rounded
path; ``evaluate_bottleneck`` measures accuracy on what the decoder returns and the rate from
real per-image streams; ``bottleneck_row`` makes its results row.
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import TensorDataset
from tqdm.auto import tqdm

from . import bitstream
from .stats import wilson_interval
from .bottleneck import (DEFAULT_QUANTIZATION, QUANTIZATIONS, Bottleneck, coded_latents, latent_streams,
                         decode)
from .data import evenly_spaced, load_dataset
from .model import SplitResNet18
from .runtime import DATA_DIR, autocast, module_device, set_seed
from .training import Budget, copy_state, distillation_loss, load_run, save_run, track_best


# ---------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------
@torch.no_grad()
def _val_accuracy(model: SplitResNet18, bn: Bottleneck, data: TensorDataset,
                  batch_size: int = 256) -> tuple[float, float, float]:
    """(accuracy, model-estimated bpp, mean cross-entropy) on ``data`` through the real coded
    path (``coded_latents``), float32, the network in eval mode."""
    bn.eval()
    model.eval()
    device = module_device(model)
    x, y = data.tensors
    correct, bits, ce = 0, 0.0, 0.0
    for s in range(0, len(x), batch_size):
        y_hat, z_hat, _ = coded_latents(bn, model.head(x[s:s + batch_size].to(device)).float())
        bits += float(-torch.log2(bn.likelihoods(y_hat)).sum())
        logits = model.tail(z_hat).float()
        ce += float(F.cross_entropy(logits, y[s:s + batch_size].to(device), reduction="sum"))
        correct += int((logits.argmax(1).cpu() == y[s:s + batch_size]).sum())
    return correct / len(x), bitstream.bpp(bits / 8, tuple(x.shape[-2:]), len(x)), ce / len(x)


SELECT_ON = ("objective", "accuracy")


def _score(h: dict, select_on: str) -> float:
    """How good one validation is (higher is better): accuracy, or minus the rate-accuracy objective."""
    return h["val_accuracy"] if select_on == "accuracy" else -h["val_objective"]


def best_evaluation(history: list[dict], select_on: str = "objective") -> dict:
    """The validation whose weights ``train_bottleneck`` kept (the first best by ``select_on``)."""
    return max(history, key=lambda h: _score(h, select_on))


def train_bottleneck(model: SplitResNet18, bn: Bottleneck, lmbda: float, budget: Budget = Budget(train="frozen"),
                     dataset: str = "fashion-mnist", *, feature_weight: float = 0.0, seed: int = 0,
                     train_subset: int | None = None, val_subset: int | None = 1000,
                     train_data: TensorDataset | None = None, val_data: TensorDataset | None = None,
                     state_path: str | Path | None = None, progress: bool = True, root: str | Path = DATA_DIR,
                     bf16: bool | None = None, select_on: str = "objective", prior_lr: float | None = None,
                     quantization: str = DEFAULT_QUANTIZATION) -> tuple[Bottleneck, list[dict]]:
    """Train the bottleneck at the split of a ResNet (frozen by default) for ``budget.steps``; the
    weights of the best validation are kept.

    ``budget.train="all"`` trains the whole network with the bottleneck (the protocol's budget, as every
    trained family gets): the distillation teacher is then a frozen copy of the network as it was
    before training, and the network is changed in place (its best validation weights, as the
    bottleneck's).

    The ResNet (head and tail, batch-norm statistics included) is not changed: only ``bn``
    learns. The reference Entropic Student trains its encoder as the student's head; here the
    shipped head is kept so that the split, and the features coded, are those block-sparse
    coding sees. The loss per batch is::

        distill_weight * KD(tail(dec(y + u)), tail(z)) + (1 - distill_weight) * CE
        + feature_weight * MSE(dec(y + u), z) + lmbda * rate

    with ``z = head(x)``, ``y`` the encoder's latents, ``u ~ U(-0.5, 0.5)``, KD Hinton's
    distillation loss at ``temperature`` from the uncompressed network's logits, and ``rate``
    the latents' bits under the entropy model per input pixel (sum of -log2 likelihoods over
    N * H_in * W_in).

    Parameters
    ----------
    model : SplitResNet18
        The frozen network; ``bn`` must sit on its device.
    bn : Bottleneck
    lmbda : float
        Weight of the rate (bits per input pixel) against the task loss.
    train_subset, val_subset : int, optional
        Evenly spaced images of the "train" and "val" splits (never the test split);
        ``train_data`` / ``val_data`` replace the splits altogether.
    budget : training.Budget
        Steps, batch, learning rate (Adam only), what of the ResNet learns (``train``: "frozen"
        or "all"), distillation, and how often to validate (``eval_every``).
    feature_weight : float
        Weight (>= 0) of the mean squared error between the decoded and the original features.
    prior_lr : float, optional
        Learning rate of the entropy model's parameters (``loc``, ``raw_scale``; default
        ``lr``): with Adam each moves about ``prior_lr`` per step, so a prior that must narrow
        a lot within a short schedule needs a larger one.
    quantization : {"noise", "mixed"}
        What the tail sees in training (``Bottleneck.forward``): the noisy latents the rate is
        measured on, or the rounded latents with a straight-through gradient.
    select_on : {"objective", "accuracy"}
        What "best" means on validation: ``"objective"`` (default) the rate-accuracy trade-off
        the weights were trained for, validation cross-entropy + ``lmbda`` * estimated bpp
        (lower is better), so a large ``lmbda`` keeps a low-rate model; ``"accuracy"`` the
        most accurate weights whatever their rate.
    state_path : path, optional
        Resumable state (bottleneck, optimizer, schedule, RNG, history, best), written at every
        evaluation; if it exists, training continues from it.
    bf16 : bool, optional
        bf16 autocast of the ResNet's head and tail (None: where it is faster); the bottleneck
        and its rate always run in float32.

    Returns
    -------
    (bn, history)
        The bottleneck (best validation weights, eval mode) and one dict per evaluation:
        ``step``, ``loss`` and ``rate_bpp`` (means over training batches since the last
        evaluation; the rate with noise), ``val_accuracy``, ``val_bpp_estimate`` (bits under
        the model of the rounded latents, not a stream length), ``val_cross_entropy``,
        ``val_objective`` (cross-entropy + ``lmbda`` * estimated bpp).
    """
    if select_on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {SELECT_ON}, got {select_on!r}")
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be a training.Budget, got {type(budget).__name__}")
    if budget.train not in ("frozen", "all"):
        raise ValueError(f"budget.train must be 'frozen' or 'all' for a bottleneck, got {budget.train!r}")
    if budget.optimizer != "adam":
        raise ValueError(f"budget.optimizer must be 'adam' for a bottleneck, got {budget.optimizer!r}")
    if not isinstance(bn, Bottleneck):
        raise ValueError(f"bn must be a Bottleneck, got {type(bn).__name__}")
    if not isinstance(lmbda, (int, float)) or isinstance(lmbda, bool) or not lmbda >= 0:
        raise ValueError(f"lmbda must be a number >= 0, got {lmbda!r}")
    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization must be one of {QUANTIZATIONS}, got {quantization!r}")
    if prior_lr is not None and not (isinstance(prior_lr, (int, float)) and prior_lr > 0):
        raise ValueError(f"prior_lr must be > 0 (or None for lr), got {prior_lr!r}")
    if isinstance(feature_weight, bool) or not isinstance(feature_weight, (int, float)) or not feature_weight >= 0:
        raise ValueError(f"feature_weight must be a number >= 0, got {feature_weight!r}")
    steps, batch_size, lr, distill_weight = budget.steps, budget.batch_size, budget.lr, budget.distill_weight
    device = module_device(model)
    if module_device(bn) != device:
        raise ValueError(f"bn is on {module_device(bn)}, the model on {device}: move bn with bn.to(...)")
    set_seed(seed)
    tr = train_data if train_data is not None else load_dataset(dataset, "train", root, train_subset)
    va = val_data if val_data is not None else load_dataset(dataset, "val", root, val_subset)
    for name, d in (("train_data", tr), ("val_data", va)):
        if len(d) == 0:
            raise ValueError(f"{name} is empty: there is nothing to train on or to validate with")
    was_training, flags = model.training, [p.requires_grad for p in model.parameters()]
    whole = budget.train == "all"
    teacher_net = None
    if whole and distill_weight > 0:
        teacher_net = copy.deepcopy(model).eval().requires_grad_(False)
    model.eval().requires_grad_(whole)
    prior = [bn.loc, bn.raw_scale]
    rest = [p for n, p in bn.named_parameters() if n not in ("loc", "raw_scale")]
    groups = [dict(params=rest), dict(params=prior, lr=prior_lr or lr)]
    opt = torch.optim.Adam(groups + ([dict(params=list(model.parameters()))] if whole else []), lr)
    tracked = nn.ModuleDict(dict(bn=bn, net=model)) if whole else bn  # what early stopping keeps
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, labels = tr.tensors
    pixels = x.shape[-2] * x.shape[-1]
    g = torch.Generator().manual_seed(seed)
    state = Path(state_path) if state_path is not None else None

    def validation(step: int, loss: float, rate: float) -> dict:
        acc, bpp, ce = _val_accuracy(model, bn, va)
        return dict(step=step, loss=loss, rate_bpp=rate, val_accuracy=acc, val_bpp_estimate=bpp,
                    val_cross_entropy=ce, val_objective=ce + lmbda * bpp)

    if state is not None and state.exists():
        history, best, bad, start = load_run(state, tracked, opt, sched, g, device)
    else:
        history, bad, start = [validation(0, float("nan"), float("nan"))], 0, 0
        best = (_score(history[0], select_on), copy_state(tracked))
    losses, rates = [], []
    bar = tqdm(range(start + 1, steps + 1), initial=start, total=steps, disable=not progress,
               desc=f"bottleneck M={bn.args['latent_channels']} lmbda={lmbda}")
    try:
        for step in bar:
            bn.train()
            model.train(whole)
            idx = torch.randint(len(x), (batch_size,), generator=g)
            xb, yb = x[idx].to(device), labels[idx].to(device)
            if whole:
                with torch.no_grad(), autocast(device, bf16):
                    teacher = teacher_net(xb) if teacher_net is not None else None
                with autocast(device, bf16):
                    z = model.head(xb)
            else:
                with torch.no_grad(), autocast(device, bf16):
                    z = model.head(xb)
                    teacher = model.tail(z) if distill_weight > 0 else None
            z = z.float()
            z_tilde, lik = bn(z, generator=g, quantization=quantization)
            with autocast(device, bf16):
                logits = model.tail(z_tilde).float()
            rate = -torch.log2(lik).sum() / (len(xb) * pixels)
            loss = lmbda * rate
            if distill_weight > 0:
                loss = loss + distill_weight * distillation_loss(logits, teacher, budget.temperature)
            if distill_weight < 1:
                loss = loss + (1 - distill_weight) * F.cross_entropy(logits, yb)
            if feature_weight:
                loss = loss + feature_weight * F.mse_loss(z_tilde, z)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            rates.append(rate.item())
            if step % budget.eval_every == 0 or step == steps:
                history.append(validation(step, float(np.mean(losses)), float(np.mean(rates))))
                h = history[-1]
                bar.set_postfix(val=f"{h['val_accuracy']:.4f}", bpp=f"{h['val_bpp_estimate']:.3f}",
                                obj=f"{h['val_objective']:.3f}")
                losses, rates = [], []
                best, bad = track_best(_score(h, select_on), best, bad, tracked)
                if state is not None:
                    save_run(state, tracked, opt, sched, g, history, best, bad, step)
    finally:
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
        model.train(was_training)
    tracked.load_state_dict(best[1])
    return bn.eval(), history


# ---------------------------------------------------------------------------
# evaluation and results
# ---------------------------------------------------------------------------
@torch.no_grad()
def evaluate_bottleneck(model: SplitResNet18, bn: Bottleneck, data: TensorDataset,
                        rate_sample: int | None = None, batch_size: int = 256, exact: bool = False) -> dict:
    """Accuracy on what the decoder returns and rate from real per-image streams.

    Parameters
    ----------
    data : TensorDataset
        Images and labels.
    rate_sample : int, optional
        Encode ``rate_sample`` evenly spaced images one by one for the rate (default: all).
    exact : bool
        Also decode each sampled stream and check that ``decode`` returns exactly the
        features the tail consumed for that image.

    Returns
    -------
    dict
        ``accuracy`` (the tail consumed ``bn.reconstruct(head(x))``, float32: what decoding
        each image's stream returns), ``accuracy_lo``
        / ``accuracy_hi`` (95% Wilson interval), ``n_images``, ``correct`` (bool per image);
        ``bpp`` and ``bytes`` (means over the ``n_rate`` real streams), ``bpp_estimate``
        (bits under the entropy model of all images' latents, an estimate, not a stream),
        ``clamped_share`` (share of rounded latents clamped to the symbol range), ``raw_bytes``
        (float32 features per image), ``latent_shape`` (M, h, w).
    """
    return evaluate_bottlenecks(model, [bn], data, rate_sample, batch_size, exact)[0]


@torch.no_grad()
def evaluate_bottlenecks(model: SplitResNet18, bns: list[Bottleneck], data: TensorDataset,
                         rate_sample: int | None = None, batch_size: int = 256, exact: bool = False) -> list[dict]:
    """``evaluate_bottleneck`` of each of ``bns`` (bottlenecks at ``model``'s split), the frozen
    head run once per batch for all of them: re-measuring several bottlenecks of one split costs
    one head pass, not one each. Returns one result per bottleneck, in order; each is what
    ``evaluate_bottleneck`` alone returns (the same batches and operations)."""
    if not isinstance(bns, (list, tuple)) or not bns:
        raise ValueError(f"bns must be a non-empty list of Bottleneck, got {bns!r}")
    for bn in bns:
        if not isinstance(bn, Bottleneck):
            raise ValueError(f"bn must be a Bottleneck, got {type(bn).__name__}")
    if rate_sample is not None and (isinstance(rate_sample, bool) or not isinstance(rate_sample, int)
                                    or rate_sample < 1):
        raise ValueError(f"rate_sample must be an integer >= 1 (or None for all images), got {rate_sample!r}")
    model.eval()
    device = module_device(model)
    for bn in bns:
        bn.eval()
        if module_device(bn) != device:
            raise ValueError(f"bn is on {module_device(bn)}, the model on {device}: move bn with bn.to(...)")
    x, y = data.tensors
    if len(x) == 0:
        raise ValueError("data holds no images")
    hw = tuple(x.shape[-2:])
    in_rate = torch.zeros(len(x), dtype=torch.bool)
    in_rate[evenly_spaced(len(x), len(x) if rate_sample is None else rate_sample)] = True
    acc = [dict(correct=[], sizes=[], bits=0.0, clamped=0, latents=0) for _ in bns]
    feature_shape = None
    for s in range(0, len(x), batch_size):
        z = model.head(x[s:s + batch_size].to(device)).float()
        feature_shape = tuple(z.shape[1:])
        sel = in_rate[s:s + len(z)].nonzero().view(-1).tolist()
        for bn, a in zip(bns, acc):
            y_hat, z_hat, n_clamped = coded_latents(bn, z)  # the tail consumes exactly what decoding each stream returns
            a["clamped"] += n_clamped
            a["latents"] += y_hat.numel()
            a["bits"] += float(-torch.log2(bn.likelihoods(y_hat)).sum())
            a["correct"].append(model.tail(z_hat).argmax(1).cpu() == y[s:s + batch_size])
            blobs = latent_streams(bn, y_hat[sel]) if sel else []
            a["sizes"] += [len(b) for b in blobs]
            for b, i in zip(blobs, sel) if exact else ():
                if not torch.equal(decode(bn, b, z.shape[1:]), z_hat[i:i + 1]):
                    raise AssertionError("decoded features differ from the ones the tail consumed")
    out = []
    for bn, a in zip(bns, acc):
        correct = torch.cat(a["correct"])
        k = int(correct.sum())
        lo, hi = wilson_interval(k, len(x))
        sizes = a["sizes"]
        out.append(dict(accuracy=k / len(x), accuracy_lo=lo, accuracy_hi=hi, n_images=len(x), n_rate=len(sizes),
                        bpp=bitstream.bpp(np.mean(sizes), hw), bytes=float(np.mean(sizes)),
                        bpp_estimate=bitstream.bpp(a["bits"] / 8, hw, len(x)), clamped_share=a["clamped"] / a["latents"],
                        raw_bytes=4 * feature_shape[0] * feature_shape[1] * feature_shape[2],  # float32 features
                        latent_shape=(bn.args["latent_channels"], *bn.latent_hw(*feature_shape[1:])), correct=correct))
    return out


def bottleneck_row(ev: dict, lmbda: float, **extra) -> dict:
    """One results row from an ``evaluate_bottleneck`` result, method "learned-bottleneck".

    ``lmbda`` goes under ``rate_weight`` (a column ``results.SCHEMA`` does not have yet);
    ``extra`` adds or overrides columns (``dataset``, ``split_at``, ``seed``, ``val_accuracy``, ...).
    """
    row = dict(method="learned-bottleneck", coder="ans", accuracy=ev["accuracy"], accuracy_lo=ev["accuracy_lo"],
               accuracy_hi=ev["accuracy_hi"], n_images=ev["n_images"], bpp=ev["bpp"], n_rate=ev["n_rate"],
               stream_bytes=ev["bytes"], rate_is_estimate=False, rate_weight=float(lmbda))
    return row | extra
