"""The exploratory models (before the protocol): fine-tune one setting, ship it, test it once, write its card;
rebuild or re-fit what an older card lacks. The protocol's own runs are ``protocol_runs``."""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from .bitstream import bpp
from .bottleneck import Bottleneck, load_bottleneck, save_bottleneck
from .bottleneck_training import (best_evaluation, bottleneck_row, evaluate_bottleneck, train_bottleneck)
from .stats import within
from .baselines import code_images, codec_row, image_codec_baseline
from .codebook import codebook_bytes, fit_codebook, save_codebook
from .codec import CodecConfig
from .evaluation import evaluate, head_features, result_row
from .data import load_dataset
from .model import checkpoint_card, load_pretrained
from .results import REFERENCE_NAME, pack_correct
from .runtime import in_repo, module_device
from .training import finetune


def config_name(cfg: CodecConfig, split_at: str = "layer1") -> str:
    """A file-name-safe label of a configuration, e.g. ``layer1_global_B4_r0.005_2b``."""
    return f"{split_at}_{cfg.mode}_B{cfg.block_size}_r{cfg.ratio:g}_{cfg.bits}b"


def _state_path(state_dir: str | Path | None, name: str) -> Path | None:
    """Where a training run named ``name`` keeps its resumable state (None: not resumable)."""
    if state_dir is None:
        return None
    state = Path(state_dir) / f"{name}.state.pt"
    state.parent.mkdir(parents=True, exist_ok=True)
    return state


def _save_fp16(model: torch.nn.Module, path: Path) -> str:
    """Save ``model``'s weights as shipped (float16) to ``path``; returns the file's sha256."""
    torch.save({k: (v.half() if v.is_floating_point() else v).cpu() for k, v in model.state_dict().items()}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _as_shipped(tuned: torch.nn.Module, weights: Path, dataset: str, keep: bool) -> tuple[torch.nn.Module, str]:
    """The whole network as it would ship: saved in float16, loaded back (what is measured), the
    file kept or deleted; returns the loaded model and the file's sha256."""
    sha = _save_fp16(tuned, weights)
    tuned = load_pretrained(dataset, weights=weights)
    if not keep:
        weights.unlink()
    return tuned, sha


def _schedule(kwargs: dict) -> dict:
    """The plain settings among a run's keyword arguments, for its card."""
    return {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, type(None)))}


def _against_uncompressed(dataset: str, split_at: str, test: TensorDataset, ev: dict) -> dict:
    """The uncompressed model on the same test images, and the paired test of ``ev`` against it."""
    ref = evaluate(load_pretrained(dataset, split_at), None, test)
    return dict(paired=within(ref["correct"].numpy(), ev["correct"].numpy()), reference_accuracy=ref["accuracy"])


def train_frontier_model(cfg: CodecConfig, seed: int, out_dir: str | Path, dataset: str = "fashion-mnist",
                         split_at: str = "layer1", coder: str = "ans", fit_images: int = 5000,
                         n_test: int | None = None, rate_sample: int | None = 1000, state_dir: str | Path | None = None,
                         tag: str = "", monitor_test: int | None = None, ship_weights: bool = True,
                         **finetune_kwargs) -> dict:
    """Fine-tune one chosen configuration with one seed, ship it, and test it once.

    Writes to ``out_dir``: the fine-tuned weights (fp16) ``<name>_seed<k>.pt`` with a card
    (``.json``: configuration, seed, schedule, validation history, test accuracy, sha256), the
    code tables fitted on the fine-tuned head's training features ``<name>_seed<k>.codebook``.
    The test set (``n_test`` evenly spaced images, default all) is evaluated once, with the
    uncompressed model on the same images for a paired comparison. Training resumes from
    ``state_dir`` after an interruption. Returns the results row (``results.SCHEMA``) plus
    ``paired`` (``analysis.within`` against the uncompressed model).

    ``tag`` goes into the file names (e.g. ``_tail`` for an ablation run). ``monitor_test``
    (a demonstration of the original script's optimism, not a result) records the accuracy on
    that many evenly spaced *test* images at every evaluation in the history as
    ``test_accuracy``; it never influences training or the choice of weights.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{config_name(cfg, split_at)}{tag}_seed{seed}"
    state = _state_path(state_dir, name)
    model = load_pretrained(dataset, split_at)
    if monitor_test is not None:
        finetune_kwargs["monitor"] = dict(test=load_dataset(dataset, "test", subset=monitor_test))
    tuned, history = finetune(model, cfg, dataset, seed=seed, state_path=state, **finetune_kwargs)
    weights = out / f"{name}.pt"
    sha = _save_fp16(tuned, weights)
    tuned = load_pretrained(dataset, split_at, weights=weights)  # measure the weights as shipped (fp16)
    cb = fit_codebook(head_features(tuned, load_dataset(dataset, "train", subset=fit_images)), cfg, coder)
    cb_path = out / f"{name}.codebook"
    save_codebook(cb, cb_path)
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate(tuned, cfg, test, rate_sample, codebook=cb)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, split_at, test, ev)
    card = dict(dataset=dataset, split_at=split_at, mode=cfg.mode, block_size=cfg.block_size, ratio=cfg.ratio,
                bits=cfg.bits, seed=seed, schedule=_schedule(finetune_kwargs),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=max(h["val_accuracy"] for h in history), test_accuracy=ev["accuracy"],
                test_images=ev["n_images"], monitor_images=monitor_test, codebook=cb_path.name,
                codebook_bytes=codebook_bytes(cb),
                dtype="float16", sha256=sha)
    card_path = weights.with_suffix(".json")
    row = result_row(ev, cfg, dataset=dataset, split_at=split_at, finetuned=True,
                     train=finetune_kwargs.get("train", "all"), seed=seed, val_accuracy=card["val_accuracy"],
                     weights=in_repo(weights) if ship_weights else None, codebook=in_repo(cb_path))
    # the one test evaluation, recorded: what notebook 05 reports for weights that are not shipped
    card |= dict(weights_shipped=ship_weights, test_row=row, test_paired=against["paired"],
                 reference_accuracy=against["reference_accuracy"], test_correct=pack_correct(ev["correct"].numpy()))
    card_path.write_text(json.dumps(card, indent=1, default=float))
    if not ship_weights:
        weights.unlink()
    return row | against | dict(card=in_repo(card_path))


def refit_codebook(card_path: str | Path, fit_images: int = 5000) -> Path:
    """Fit a shipped block-sparse model's code tables again with this codec version (``fit_codebook``
    on its fine-tuned head's features of ``fit_images`` evenly spaced training images, the coder of
    its old tables where readable, else ANS), write them over its ``.codebook`` and record the new
    size on its card. The model's weights (the ``.pt`` beside the card) must be shipped."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    weights = card_path.with_suffix(".pt")
    if not weights.exists():
        raise ValueError(f"card_path: {card_path} has no shipped weights to fit code tables on")
    cfg = CodecConfig(card["block_size"], card["ratio"], card["mode"], card["bits"])
    model = load_pretrained(card["dataset"], card["split_at"], weights=weights)
    cb = fit_codebook(head_features(model, load_dataset(card["dataset"], "train", subset=fit_images)), cfg, "ans")
    path = card_path.with_name(card["codebook"])
    save_codebook(cb, path)
    card |= dict(codebook_bytes=codebook_bytes(cb), fit_images=fit_images)
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return path


def train_reference_model(seed: int, out_dir: str | Path, dataset: str = "fashion-mnist", n_test: int | None = None,
                          state_dir: str | Path | None = None, ship_weights: bool = False, tag: str = "",
                          **finetune_kwargs) -> dict:
    """The second reference: the uncompressed model fine-tuned with the budget the frontier models
    get (``finetune_kwargs``: steps, learning rate, distillation from the shipped model...), with no
    codec, so that "within one point" can be asked of extra training as well as of the shipped model.

    The whole network sees the original images (the split does not matter without a codec; no
    group-lasso: there are no blocks to select). Tested once on ``n_test`` evenly spaced test
    images (default all), with a paired test against the shipped model on the same images. Writes
    the card ``uncompressed_finetuned<tag>_seed<k>.json`` to ``out_dir`` (schedule, validation
    history, test accuracy, sha256 of the fp16 weights, the per-image correctness ``test_correct``
    that later pairings read) and the weights beside it when ``ship_weights``. Returns the results
    row (method ``uncompressed``, ``finetuned`` true) plus ``paired``, ``reference_accuracy`` and ``card``.
    """
    if finetune_kwargs.get("group_lasso_weight"):
        raise ValueError("group_lasso_weight: the reference has no codec, hence no blocks to penalize")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{REFERENCE_NAME}{tag}_seed{seed}"
    tuned, history = finetune(load_pretrained(dataset), None, dataset, seed=seed,
                              state_path=_state_path(state_dir, name), **finetune_kwargs)
    weights = out / f"{name}.pt"
    tuned, sha = _as_shipped(tuned, weights, dataset, ship_weights)
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate(tuned, None, test)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, "layer1", test, ev)
    row = result_row(ev, None, dataset=dataset, finetuned=True, train=finetune_kwargs.get("train", "all"), seed=seed,
                     val_accuracy=max(h["val_accuracy"] for h in history),
                     weights=in_repo(weights) if ship_weights else None)
    card = dict(dataset=dataset, method="uncompressed", seed=seed, schedule=_schedule(finetune_kwargs),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=row["val_accuracy"], test_accuracy=ev["accuracy"], test_images=ev["n_images"],
                dtype="float16", sha256=sha, weights_shipped=ship_weights, test_row=row,
                test_paired=against["paired"], reference_accuracy=against["reference_accuracy"],
                test_correct=pack_correct(ev["correct"].numpy()))
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return row | against | dict(card=in_repo(card_path))


def weights_from_state(state_path: str | Path, card_path: str | Path, out_dir: str | Path) -> Path:
    """Write the fp16 weights a finished run's resumable state holds (its best, as ``finetune``
    restores them) to ``out_dir/<card's name>.pt`` (torch's archive names its records after the
    file, so the name is part of the bytes), and check they are the weights the card describes
    (its sha256): how a model whose weights were not shipped is measured again on the machine
    that trained it. ValueError (and no file) when they are not."""
    st = torch.load(state_path, weights_only=False, map_location="cpu")
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    model = load_pretrained(card["dataset"], card.get("split_at", "layer1"))
    model.load_state_dict(st["best"])
    out = Path(out_dir) / f"{card_path.stem}.pt"
    if out.resolve() == card_path.with_suffix(".pt").resolve():
        raise ValueError(f"out_dir: {out_dir} holds the card; write the rebuilt weights elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    if _save_fp16(model, out) != card["sha256"]:
        out.unlink()
        raise ValueError(f"state_path: {state_path} does not hold the weights of {card_path} (sha256 differs)")
    return out


def record_test_correct(card_path: str | Path, weights: str | Path | None = None,
                        shipped_correct: np.ndarray | None = None) -> np.ndarray:
    """Add ``test_correct`` (the per-image correctness of the card's one test) to a block-sparse
    model's card that predates it: the model (``weights``, default the shipped ``.pt`` beside the
    card, whose sha256 must be the card's) is evaluated again on the same test images. Its
    accuracy must equal the card's ``test_accuracy`` and, where the card recorded its paired test
    against the shipped model (``test_paired``), the images only one of the two got right must be
    the same counts (``shipped_correct``: the shipped model on those images, computed if not
    given); else ValueError and the card is left unchanged. Returns the vector."""
    card_path = Path(card_path)
    card = json.loads(card_path.read_text())
    weights = Path(weights) if weights is not None else card_path.with_suffix(".pt")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != card["sha256"]:
        raise ValueError(f"weights: {weights} are not the weights of {card_path} (sha256 differs)")
    cfg = CodecConfig(card["block_size"], card["ratio"], card["mode"], card["bits"])
    test = load_dataset(card["dataset"], "test", subset=card["test_images"])  # all of them: the whole split
    ev = evaluate(load_pretrained(card["dataset"], card["split_at"], weights=weights), cfg, test, rate_sample=1)
    if ev["accuracy"] != card["test_accuracy"]:
        raise ValueError(f"card_path: {card_path} records test accuracy {card['test_accuracy']}, these weights give "
                         f"{ev['accuracy']} on the same images")
    correct = ev["correct"].numpy()
    if "test_paired" in card:
        if shipped_correct is None:
            shipped_correct = evaluate(load_pretrained(card["dataset"], card["split_at"]), None, test)["correct"].numpy()
        again = within(shipped_correct, correct)
        was = card["test_paired"]
        if (again["a_only"], again["b_only"]) != (was["a_only"], was["b_only"]):
            raise ValueError(f"card_path: {card_path} records {was['a_only']}/{was['b_only']} images right only by "
                             f"the shipped model/only by this one, these weights give {again['a_only']}/{again['b_only']}")
    card["test_correct"] = pack_correct(correct)
    card_path.write_text(json.dumps(card, indent=1, default=float))
    return correct


BOTTLENECK_STRIDE = inspect.signature(Bottleneck).parameters["stride"].default


def bottleneck_name(lmbda: float, latent_channels: int, seed: int, split_at: str = "layer1", tag: str = "",
                    stride: int = BOTTLENECK_STRIDE) -> str:
    """A file-name-safe label of a learned bottleneck, e.g. ``bottleneck_layer1_M8_lmbda0.5_seed0``
    (``_S2`` after the channels for a stride other than the default)."""
    s = "" if stride == BOTTLENECK_STRIDE else f"_S{stride}"
    return f"bottleneck_{split_at}_M{latent_channels}{s}_lmbda{lmbda:g}{tag}_seed{seed}"


def train_bottleneck_model(lmbda: float, seed: int, out_dir: str | Path, dataset: str = "fashion-mnist",
                           split_at: str = "layer1", latent_channels: int = 8, n_test: int | None = None,
                           rate_sample: int | None = 1000, state_dir: str | Path | None = None,
                           tag: str = "", stride: int = BOTTLENECK_STRIDE, **train_kwargs) -> dict:
    """Train one learned bottleneck (``bottleneck_training.train_bottleneck``, ResNet frozen) at rate weight
    ``lmbda``, ship it and test it once.

    Writes ``<name>.pt`` (the bottleneck's weights only, float16: the ResNet is the shipped
    checkpoint) and its card ``<name>.json`` (architecture, schedule, validation history, test
    accuracy, sha256) to ``out_dir``. The test set (``n_test`` evenly spaced images, default all)
    is evaluated once, the rate from real per-image ANS streams of ``rate_sample`` of them, with
    the uncompressed model on the same images for a paired comparison. Returns the results row
    plus ``paired`` and ``reference_accuracy``. ``stride``: the encoder's downsampling (a smaller
    one for the smaller maps of later splits: 7x7 after layer3 gives 2x2 latents at stride 4).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = bottleneck_name(lmbda, latent_channels, seed, split_at, tag, stride)
    state = _state_path(state_dir, name)
    model = load_pretrained(dataset, split_at)
    torch.manual_seed(seed)  # the bottleneck's initial weights
    bn = Bottleneck(in_channels=model.split_channels, latent_channels=latent_channels,
                    stride=stride).to(module_device(model))
    bn, history = train_bottleneck(model, bn, lmbda, dataset, seed=seed, state_path=state, **train_kwargs)
    best = best_evaluation(history, train_kwargs.get("select_on", "objective"))
    weights = out / f"{name}.pt"
    save_bottleneck(bn, weights, lmbda)  # written first so the shipped (float16) weights are what is tested
    bn = load_bottleneck(weights, module_device(model))
    test = load_dataset(dataset, "test", subset=n_test)
    ev = evaluate_bottleneck(model, bn, test, rate_sample)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, split_at, test, ev)
    save_bottleneck(bn, weights, lmbda, dataset=dataset, split_at=split_at, seed=seed,
                    base_checkpoint=checkpoint_card(dataset).get("sha256"), schedule=_schedule(train_kwargs),
                    history=history, val_accuracy=best["val_accuracy"], test_accuracy=ev["accuracy"],
                    test_images=ev["n_images"], test_bpp=ev["bpp"])
    row = bottleneck_row(ev, lmbda, dataset=dataset, split_at=split_at, finetuned=True, seed=seed,
                         val_accuracy=best["val_accuracy"], weights=in_repo(weights))
    return row | against


def train_codec_baseline_model(fmt: str, quality: int | None, seed: int, out_dir: str | Path,
                               dataset: str = "fashion-mnist", n_test: int | None = None,
                               train_subset: int | None = None, val_subset: int | None = 2000,
                               state_dir: str | Path | None = None, ship_weights: bool = True,
                               **finetune_kwargs) -> dict:
    """The same help for an input-image codec: fine-tune the classifier on its decoded images.

    The training and validation images are coded with ``fmt`` at ``quality`` and decoded; the
    whole classifier is fine-tuned on them with ``training.finetune`` and the budget given in
    ``finetune_kwargs`` (as block-sparse's frontier models), distilling from the uncompressed
    model on the *original* images, as block-sparse's teacher sees uncompressed features.
    Early stopping on the decoded validation images; the test set (``n_test`` evenly spaced
    images, default all) is coded and evaluated once, with the uncompressed model on the same
    original images for a paired comparison. Writes the card ``<fmt>_q<quality>_finetuned_seed<k>.json``
    (and the fp16 weights beside it when ``ship_weights``). Returns the results row plus
    ``paired`` and ``reference_accuracy``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = f"{fmt}_q{quality}_finetuned_seed{seed}"
    state = _state_path(state_dir, name)
    train = load_dataset(dataset, "train", subset=train_subset)
    coded_train, train_bytes = code_images(train, dataset, fmt, quality)
    coded_val, _ = code_images(load_dataset(dataset, "val", subset=val_subset), dataset, fmt, quality)
    tuned, history = finetune(load_pretrained(dataset), None, dataset, seed=seed, state_path=state,
                              train_data=coded_train, val_data=coded_val, teacher_inputs=train.tensors[0],
                              **finetune_kwargs)
    weights = out / f"{name}.pt"
    tuned, sha = _as_shipped(tuned, weights, dataset, ship_weights)
    test = load_dataset(dataset, "test", subset=n_test)
    ev = image_codec_baseline(tuned, test, dataset, fmt, quality)  # the one test evaluation of this model
    against = _against_uncompressed(dataset, "layer1", test, ev)  # the split does not change the whole network
    card = dict(dataset=dataset, format=fmt, quality=quality, seed=seed, schedule=_schedule(finetune_kwargs),
                train_images=len(train),
                train_bpp=bpp(train_bytes.mean(), tuple(train.tensors[0].shape[-2:])),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                val_accuracy=max(h["val_accuracy"] for h in history), test_accuracy=ev["accuracy"],
                test_images=ev["n_images"], test_bpp=ev["bpp"], dtype="float16", sha256=sha,
                weights_shipped=ship_weights)
    card_path = weights.with_suffix(".json")
    card_path.write_text(json.dumps(card, indent=1))
    row = codec_row(ev, fmt, quality, dataset=dataset, finetuned=True, train="all", seed=seed,
                    val_accuracy=card["val_accuracy"], weights=in_repo(weights) if ship_weights else None)
    return row | against | dict(card=in_repo(card_path))
