"""The protocol's runs (``protocol``): train a candidate, score it on val-select, test a chosen model once.

A run is one family at one split, one setting (a codec configuration, a rate weight, a quality)
and one seed, trained with ``protocol.BUDGET`` and early stopping on val-stop. Its card
(``<name>.json`` in ``data/answer``) records the budget, the val-stop history and the val-select
result (accuracy, real-stream rate, per-image correctness), never a test number; ``test_run``
adds the one test evaluation of a model the rule has chosen, and refuses a second.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from . import answer
from .baselines import code_images, image_codec_baseline
from .bottleneck import DEFAULT_QUANTIZATION, Bottleneck, load_bottleneck, save_bottleneck
from .bottleneck_training import evaluate_bottleneck, train_bottleneck
from .codebook import codebook_bytes, fit_codebook, load_codebook, save_codebook
from .codec import SELECTION_GRID, CodecConfig
from .costs import BOTTLENECK_STRIDES, LATENT_CHANNELS
from .data import evenly_spaced, load_dataset
from .evaluation import evaluate, head_features
from .model import SplitResNet18, checkpoint_card, load_pretrained, save_weights
from .protocol import (BOTTLENECK_PRIOR_LR, BOTTLENECK_QUANTIZATION, BUDGET, SCREEN, VAL_SELECT, VAL_STOP, Budget,
                       selection_data, stopping_data)
from .results import pack_correct, unpack_correct
from .runtime import DATA_DIR, machine, module_device
from .stats import mcnemar_p
from .study import candidates_under, select_after_finetuning
from .training import finetune

ANSWER_DIR = DATA_DIR / "answer"
TRAINED = ("reference", "block-sparse", "bottleneck", "webp-finetuned")
FIT_IMAGES = 5000  # evenly spaced training images the code tables are fitted on
# the cards of the models tested before the protocol (exploratory), counted in "models tested in all"
EXPLORATORY = [DATA_DIR / d for d in ("frontier", "reference", "baselines", "ablation")]


def run_name(family: str, setting: dict, seed: int, split_at: str | None = None) -> str:
    """A run's file stem, e.g. ``block-sparse_layer3_global_B2_r0.01_2b_gl1e-05_seed0``."""
    if family == "reference":
        return f"reference_seed{seed}"
    if family == "block-sparse":
        s = setting
        return (f"block-sparse_{split_at}_{s['mode']}_B{s['block_size']}_r{s['ratio']:g}_{s['bits']}b"
                f"_gl{s.get('group_lasso_weight', 0):g}_seed{seed}")
    if family == "webp-finetuned":
        return f"webp-finetuned_q{setting['quality']}_seed{seed}"
    if family == "bottleneck":
        plr = f"_plr{setting['prior_lr']:g}" if setting.get("prior_lr") is not None else ""
        quantization = setting.get("quantization", DEFAULT_QUANTIZATION)
        quant = f"_{quantization}" if quantization != DEFAULT_QUANTIZATION else ""
        return (f"bottleneck_{split_at}_M{setting['latent_channels']}_S{setting['stride']}_lmbda{setting['lmbda']:g}"
                f"{plr}{quant}_seed{seed}")
    raise ValueError(f"family must be one of {TRAINED}, got {family!r}")


def _config(setting: dict) -> CodecConfig:
    try:
        return CodecConfig(setting["block_size"], setting["ratio"], setting["mode"], setting["bits"])
    except KeyError as e:
        raise ValueError(f"setting: a block-sparse setting needs {e.args[0]!r}") from None


def scored(model: SplitResNet18, data: TensorDataset, family: str, setting: dict, codebook, dataset: str) -> dict:
    """Accuracy, real-stream rate and per-image correctness of a finished model on ``data``."""
    if family == "reference":
        ev = evaluate(model, None, data)
    elif family == "bottleneck":
        ev = evaluate_bottleneck(model, codebook, data)  # the bottleneck: its entropy model codes the streams
    elif family == "block-sparse":
        ev = evaluate(model, _config(setting), data, codebook=codebook)
    else:  # webp-finetuned: the classifier of decoded images, on images coded at the quality
        ev = image_codec_baseline(model, data, dataset, "webp", setting["quality"])
    out = dict(accuracy=ev["accuracy"], n_images=ev["n_images"], correct=pack_correct(ev["correct"].numpy()))
    for k in ("bpp", "bpp_payload"):
        if k in ev:
            out[k] = float(ev[k])
    return out


def state_name(name: str, budget: Budget) -> str:
    """A run's resumable state file: its name, and its budget where that is not ``BUDGET`` (a run with 4x
    the steps must not resume from the finished state of the same run at the budget)."""
    return f"{name}.state.pt" if budget == BUDGET else f"{name}.{budget.steps}steps.state.pt"


def train_run(family: str, setting: dict, seed: int, split_at: str | None = None, dataset: str = "fashion-mnist",
              out_dir: str | Path = ANSWER_DIR, state_dir: str | Path | None = None, budget: Budget = BUDGET,
              train_subset: int | None = None, fit_images: int = FIT_IMAGES, rung: float | None = None,
              val_subset: int | None = None, name: str | None = None, select: bool = True) -> Path:
    """Train one candidate with ``budget`` (early stopping on val-stop), ship its weights
    (``model.save_weights``), score the shipped weights on val-select, write its card; returns the
    card's path (``select`` False: no val-select score, as for protocol v2.3's finalists). The test set is
    not touched. ``train_subset`` and ``val_subset`` (evenly spaced
    images of the training split and of each validation half) are for tests of this code only: a
    reported run uses every image, and its card says how many it used. ``name``: the files' stem
    (default ``run_name``); the resumable state's name also says a budget other than ``BUDGET``."""
    if family not in TRAINED:
        raise ValueError(f"family must be one of {TRAINED}, got {family!r}")
    if family in ("block-sparse", "bottleneck") and split_at is None:
        raise ValueError(f"split_at: a {family} run needs its split")
    split_at = split_at if family in ("block-sparse", "bottleneck") else None  # the others do not depend on it
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = name or run_name(family, setting, seed, split_at)
    if (out / f"{name}.json").exists():
        raise ValueError(f"out_dir: {out / name}.json exists (a finished run; training it again would replace its "
                         "val-select scores and any test): delete it first to retrain")
    state = None
    if state_dir is not None:
        Path(state_dir).mkdir(parents=True, exist_ok=True)
        state = Path(state_dir) / state_name(name, budget)
    train = load_dataset(dataset, "train", subset=train_subset)
    stop = stopping_data(dataset, val_subset)
    kwargs = dict(train_data=train, val_data=stop, seed=seed, state_path=state)
    model = load_pretrained(dataset, split_at or "layer1")
    cfg = None
    if family == "block-sparse":
        cfg = _config(setting)
        kwargs["group_lasso_weight"] = float(setting.get("group_lasso_weight", 0.0))
    elif family == "webp-finetuned":
        coded, _ = code_images(train, dataset, "webp", setting["quality"])
        coded_stop, _ = code_images(stop, dataset, "webp", setting["quality"])
        kwargs |= dict(train_data=coded, val_data=coded_stop, teacher_inputs=train.tensors[0])
    bn = None
    if family == "bottleneck":
        torch.manual_seed(seed)  # the bottleneck's initial weights
        bn = Bottleneck(in_channels=model.split_channels, latent_channels=setting["latent_channels"],
                        stride=setting["stride"]).to(module_device(model))
        bn, history = train_bottleneck(model, bn, float(setting["lmbda"]), budget, dataset,
                                       prior_lr=setting.get("prior_lr"),
                                       quantization=setting.get("quantization", DEFAULT_QUANTIZATION), **kwargs)
        tuned = model
    else:
        tuned, history = finetune(model, cfg, budget, dataset, **kwargs)
    weights = out / f"{name}.pt"
    sha = save_weights(tuned, weights)
    tuned = load_pretrained(dataset, split_at or "layer1", weights=weights)  # what ships is what is measured
    card = dict(family=family, split_at=split_at, setting=setting, seed=seed, dataset=dataset, rung=rung,
                budget=budget.asdict(), protocol=dict(stop=VAL_STOP, select=VAL_SELECT, stop_images=len(stop.tensors[1]),
                                                      train_images=len(train.tensors[1])),
                base_checkpoint=checkpoint_card(dataset).get("sha256"), history=history,
                weights=weights.name, sha256=sha, torch=torch.__version__, machine=machine())
    codebook = None
    if family == "bottleneck":
        bn_path = out / f"{name}.bottleneck.pt"
        save_bottleneck(bn, bn_path, float(setting["lmbda"]))
        codebook = load_bottleneck(bn_path, module_device(tuned))  # measured as shipped (float16)
        card |= dict(bottleneck=bn_path.name, bottleneck_sha256=hashlib.sha256(bn_path.read_bytes()).hexdigest())
    if family == "block-sparse":
        codebook = fit_codebook(head_features(tuned, load_dataset(dataset, "train", subset=fit_images)), cfg, "ans")
        cb_path = out / f"{name}.codebook"
        save_codebook(codebook, cb_path)
        card |= dict(codebook=cb_path.name, codebook_bytes=codebook_bytes(codebook), fit_images=fit_images)
    if select:
        card["val_select"] = scored(tuned, selection_data(dataset, subset=val_subset), family, setting, codebook, dataset)
    path = out / f"{name}.json"
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def load_run(card_path: str | Path) -> tuple[SplitResNet18, dict, object]:
    """(model, card, codebook, bottleneck or None) of a run's card; the weights' sha256 must be the
    card's (a bottleneck's is checked against its own card by ``load_bottleneck``)."""
    p = Path(card_path)
    card = json.loads(p.read_text())
    if card.get("weights") is None:  # an image codec before the shipped model: nothing trained
        return load_pretrained(card["dataset"]), card, None
    weights = p.with_name(card["weights"])
    if card.get("weights_kept") is False:
        raise ValueError(f"card_path: {p}'s weights were not kept (only the answer's seed-0 models ship); "
                         "its card holds its per-image results")
    if not weights.exists():
        raise ValueError(f"card_path: {p} names weights {weights.name}, which are not there")
    if hashlib.sha256(weights.read_bytes()).hexdigest() != card["sha256"]:
        raise ValueError(f"card_path: {weights} are not the weights of {p} (sha256 differs)")
    model = load_pretrained(card["dataset"], card["split_at"] or "layer1", weights=weights)
    if card.get("bottleneck"):
        return model, card, load_bottleneck(p.with_name(card["bottleneck"]), module_device(model))
    codebook = load_codebook(p.with_name(card["codebook"])) if card.get("codebook") else None
    return model, card, codebook


def test_run(card_path: str | Path, n_test: int | None = None) -> dict:
    """The one test evaluation of a chosen run: all test images (``n_test`` evenly spaced ones for
    tests of this code only), recorded on its card as ``test`` (accuracy, rate, per-image
    correctness). A card that already holds a test result, or that is not a model the protocol
    reports (``answer.reported``: a reference or an operating point's seed, by the cards beside
    it), is a ValueError: test is touched once per reported model."""
    p = Path(card_path)
    model, card, codebook = load_run(p)
    if "test" in card:
        raise ValueError(f"card_path: {p} was tested already (test is touched once per model)")
    if not answer.reported(card, answer.read_cards(p.parent)):
        raise ValueError(f"card_path: {p} is neither a reference nor an operating point's seed by the cards beside "
                         "it (a rung the rule passed over, or one it has not reached): the protocol does not test it")
    test = load_dataset(card["dataset"], "test", subset=n_test)
    card["test"] = scored(model, test, card["family"], card["setting"], codebook, card["dataset"])
    p.write_text(json.dumps(card, indent=1, default=float))
    return card


def remeasure_run(card_path: str | Path, n_test: int | None = None) -> dict:
    """A tested run measured again from its shipped weights, its card untouched: accuracy on
    ``n_test`` evenly spaced test images (default all 10,000) beside the card's own test on the
    same images, how many of those images' correctness differs (0: the card reproduced) and the
    exact McNemar p-value of the differing images (at or above 0.05: a difference within sampling
    error, e.g. another machine's arithmetic, on a user's quick check of 2,000 images)."""
    p = Path(card_path)
    model, card, codebook = load_run(p)
    if "test" not in card:
        raise ValueError(f"card_path: {p} has no test result to re-measure against")
    test = load_dataset(card["dataset"], "test", subset=n_test)
    return against_card(p, card, scored(model, test, card["family"], card["setting"], codebook, card["dataset"]), n_test)


def against_card(card_path: Path, card: dict, now: dict, n_test: int | None) -> dict:
    """``remeasure_run``'s row: a measurement ``now`` (accuracy, packed ``correct``, bpp) on ``n_test``
    evenly spaced test images beside the card's own test on the same images."""
    recorded = unpack_correct(card["test"]["correct"])
    if n_test is not None:
        recorded = recorded[evenly_spaced(len(recorded), n_test).numpy()]
    correct = unpack_correct(now["correct"])
    return dict(card=Path(card_path).name, n_images=len(correct), accuracy=now["accuracy"],
                card_accuracy=float(recorded.mean()), differing=int((correct != recorded).sum()),
                mcnemar_p=mcnemar_p(int((correct & ~recorded).sum()), int((recorded & ~correct).sum())),
                bpp=now.get("bpp"), card_bpp=card["test"].get("bpp"))


def test_shipped_model(dataset: str = "fashion-mnist", out_dir: str | Path = ANSWER_DIR) -> Path:
    """The answer's second reference: the shipped model (trained by no one here) on every test image,
    once; its card (family ``answer.SHIPPED_MODEL``) is kept and never written again."""
    path = Path(out_dir) / "shipped_model.json"
    if path.exists():
        return path
    card = dict(family=answer.SHIPPED_MODEL, split_at=None, setting={}, seed=0, dataset=dataset, rung=None, weights=None,
                base_checkpoint=checkpoint_card(dataset).get("sha256"))
    card["test"] = scored(load_pretrained(dataset), load_dataset(dataset, "test"), "reference", {}, None, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def answer_markdown(table, out_dir: str | Path = ANSWER_DIR) -> str:
    """The answer as the README and notebook 07 show it: ``answer.render_answer`` of ``table`` (the
    frame of ``answer.csv``), with every model tested so far counted and the references' line."""
    return answer.render_answer(table, answer.tested_models(EXPLORATORY + [Path(out_dir)]),
                                answer.references(answer.read_cards(out_dir)))


def score_codec(quality: int, dataset: str = "fashion-mnist", out_dir: str | Path = ANSWER_DIR) -> Path:
    """WebP as is: the shipped model on val-select images coded at ``quality`` (nothing is trained);
    writes its card (family "webp") and returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setting = dict(quality=quality)
    card = dict(family="webp", split_at=None, setting=setting, seed=0, dataset=dataset, rung=quality, weights=None,
                base_checkpoint=checkpoint_card(dataset).get("sha256"))
    card["val_select"] = scored(load_pretrained(dataset), selection_data(dataset), "webp", setting, None, dataset)
    path = out / f"webp_q{quality}.json"
    path.write_text(json.dumps(card, indent=1, default=float))
    return path


def screen_path(out_dir: str | Path, split_at: str, rung: float) -> Path:
    return Path(out_dir) / "screens" / f"block-sparse_{split_at}_{rung:g}bpp.json"


def screen(split_at: str, rung: float, dataset: str = "fashion-mnist", out_dir: str | Path = ANSWER_DIR,
           budget: Budget = BUDGET, settings: dict = SCREEN, grid: dict = SELECTION_GRID) -> Path:
    """Choose the block-sparse configuration and recipe of one rung on val-select: the configurations
    of ``grid`` whose amortized streams of val-select images are at or under ``rung`` bpp (code tables
    fitted on training images), each with every group-lasso weight of the screen, fine-tuned from the
    shipped model by successive halving (``study.select_after_finetuning``, scored on val-select).
    Writes the screen (its rows and its pick, or none when no configuration is at or under the rung)."""
    model = load_pretrained(dataset, split_at)
    configs = [CodecConfig(b, r, m, bits) for m, b, r, bits in
               itertools.product(grid["modes"], grid["block_sizes"], grid["ratios"], grid["bits"])]
    rated = candidates_under(model, configs, selection_data(dataset, subset=settings["rate_images"]), rung,
                             fit_data=load_dataset(dataset, "train", subset=settings["fit_images"]))
    out = dict(split_at=split_at, rung=rung, settings=settings, budget=budget.asdict(),
               candidates=[dict(mode=c.mode, block_size=c.block_size, ratio=c.ratio, bits=c.bits, bpp=b) for c, b in rated])
    arms = frontier_of(rated) if settings.get("frontier_only") else [c for c, _ in rated]
    out["arms"] = [dict(mode=c.mode, block_size=c.block_size, ratio=c.ratio, bits=c.bits) for c in arms]
    if rated:
        rows = select_after_finetuning(lambda: load_pretrained(dataset, split_at), arms,
                                       settings["screen_steps"], budget, rounds=settings["rounds"],
                                       evals=settings.get("evals", 4),
                                       group_lasso_weights=list(settings["group_lasso_weights"]), dataset=dataset,
                                       val_data=selection_data(dataset, subset=settings["val_select_images"]),
                                       train_data=load_dataset(dataset, "train"), progress=False)
        last = rows[rows["round"] == rows["round"].max()]
        best = last.loc[last["val_accuracy"].idxmax()]
        out["rows"] = rows.to_dict("records")
        out["pick"] = dict(mode=best["mode"], block_size=int(best["block_size"]), ratio=float(best["ratio"]),
                           bits=int(best["bits"]), group_lasso_weight=float(best["group_lasso_weight"]))
    else:
        out["pick"] = None
    path = screen_path(out_dir, split_at, rung)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=float))
    return path


def frontier_of(rated: list[tuple[CodecConfig, float]]) -> list[CodecConfig]:
    """Of configurations rated under a rung, for each (mode, block size, bits) the one with the
    largest keep ratio, in the order of ``rated``."""
    best = {}
    for c, _ in rated:
        key = (c.mode, c.block_size, c.bits)
        if key not in best or c.ratio > best[key].ratio:
            best[key] = c
    return [c for c, _ in rated if best[(c.mode, c.block_size, c.bits)] is c]


def screened(out_dir: str | Path = ANSWER_DIR) -> dict[tuple[str, float], dict | None]:
    """(split, rung) -> the screen's pick (None: no configuration at or under the rung)."""
    out = {}
    for p in sorted((Path(out_dir) / "screens").glob("*.json")):
        sc = json.loads(p.read_text())
        out[sc["split_at"], sc["rung"]] = sc["pick"]
    return out


def run_step(step: dict, dataset: str = "fashion-mnist", out_dir: str | Path = ANSWER_DIR,
             state_dir: str | Path | None = None) -> Path:
    """Carry out one step of ``answer.plan``; returns the file it wrote."""
    action, family = step["action"], step.get("family")
    if action == "test":
        test_run(step["card"])
        return Path(step["card"])
    if action == "screen":
        return screen(step["split_at"], step["rung"], dataset, out_dir)
    if action == "score":
        return score_codec(int(step["rung"]), dataset, out_dir)
    setting = step.get("setting")
    if setting is None:
        if family == "block-sparse":
            setting = screened(out_dir)[step["split_at"], step["rung"]]
            if setting is None:  # no configuration at or under the rung: a card that says so
                return _no_configuration(step, dataset, out_dir)
        elif family == "webp-finetuned":
            setting = dict(quality=int(step["rung"]))
        elif family == "bottleneck":
            setting = dict(lmbda=step["rung"], latent_channels=LATENT_CHANNELS, stride=BOTTLENECK_STRIDES[step["split_at"]],
                           prior_lr=BOTTLENECK_PRIOR_LR, quantization=BOTTLENECK_QUANTIZATION)
        else:
            setting = {}
    card = train_run(family, setting, step["seed"], step.get("split_at"), dataset, out_dir, state_dir,
                     rung=step.get("rung"))
    if chosen(step):  # tested in the same step: its weights need not outlive the session
        test_run(card)
    return card


def chosen(step: dict) -> bool:
    """Whether a training step's model is reported whatever it scores: a reference (every rule needs
    it), or an operating point's seed (its setting was chosen on val-select before it was trained).
    A ladder's rung is not: it is tested only if the rule picks it."""
    return step["action"] == "train" and (step["family"] == "reference" or step.get("setting") is not None)


def prune(out_dir: str | Path = ANSWER_DIR) -> list[Path]:
    """Delete the weights of finished runs that do not ship (``answer.shipped``): ladder rungs the rule
    passed over, and seeds 1-2 once tested. Their cards stay, with every per-image result, and say
    ``weights_kept: false``. Returns the files deleted."""
    cards = answer.read_cards(out_dir)
    keep, gone = answer.shipped(cards), []
    for c in cards:
        if c["path"] in keep or not c.get("weights") or c.get("weights_kept") is False:
            continue
        if c["seed"] != 0 and "test" not in c:
            continue  # an operating point's seed not tested yet
        p = Path(c["path"])
        bn = c.get("bottleneck")  # the bottleneck's file and its own card beside it
        for name in (c["weights"], bn, bn and Path(bn).with_suffix(".json").name):
            if name and p.with_name(name).exists():
                p.with_name(name).unlink()
                gone.append(p.with_name(name))
        card = json.loads(p.read_text()) | dict(weights_kept=False)
        p.write_text(json.dumps(card, indent=1, default=float))
    return gone


def _no_configuration(step: dict, dataset: str, out_dir: str | Path) -> Path:
    path = Path(out_dir) / f"block-sparse_{step['split_at']}_rung{step['rung']:g}_none.json"
    path.write_text(json.dumps(dict(family="block-sparse", split_at=step["split_at"], setting={}, seed=0,
                                    dataset=dataset, rung=step["rung"], weights=None, val_select=None), indent=1))
    return path


def next_steps(out_dir: str | Path = ANSWER_DIR) -> list[dict]:
    """``answer.plan`` of the cards and screens in ``out_dir``."""
    return answer.plan(answer.read_cards(out_dir), set(screened(out_dir)))
