"""Command line: ``python blocksparse_utils.py [pretrain|bench|codec-limits|notebooks|protocol|<sweep options>]``.

The commands live by family: ``cli_protocol`` (the protocol's runs), ``cli_sweep`` (the original script's
sweep), ``bench``, ``notebook_runner``. The commands that trained the models before the protocol left
with them (``docs/exploratory.md``; git history keeps ``cli_exploratory``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .codec import MODES, RATIOS
from .model import SPLIT_POINTS
from .runtime import ROOT, figures_dir, results_dir
from .study import PRESETS
from .training import pretrain
from .cli_protocol import protocol_command
from .bench import benchmark
from .limits import codec_limits
from .cli_sweep import positive, ratio_arg, sweep_command
from .notebook_runner import run_notebooks


# A file named on the command line (or by a card it names) that is missing or cannot be read ends the
# command with one line, as a usage error (exit status 2), not a traceback. Other errors keep theirs.
FILE_ERRORS = (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, UnicodeDecodeError,
               json.JSONDecodeError)


def file_error(e: Exception, argv: list[str]) -> str:
    """One line naming the file and what is wrong with it (a decoding error does not know its file:
    then the files the command line names)."""
    if isinstance(e, OSError):
        return f"{e.filename}: {e.strerror or type(e).__name__}" if e.filename else str(e)
    what = (f"not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})" if isinstance(e, json.JSONDecodeError)
            else f"not text ({e.reason} at byte {e.start})")
    named = [a for a in argv if Path(a).is_file()]
    return f"a file it reads is {what}" + (f"; the files it was given: {', '.join(named)}" if named else "")


def main(argv: list[str] | None = None) -> None:
    """``python blocksparse_utils.py ...``; a missing or unreadable file is a one-line error, exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _main(argv)
    except FILE_ERRORS as e:
        command = argv[0] if argv[:1] and not argv[0].startswith("-") else None
        print(f"blocksparse_utils.py{' ' + command if command else ''}: error: {file_error(e, argv)}", file=sys.stderr)
        raise SystemExit(2) from None


def _main(argv: list[str]) -> None:
    if argv[:1] == ["pretrain"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py pretrain")
        ap.add_argument("--dataset", default="fashion-mnist")
        ap.add_argument("--epochs", type=positive, default=5)
        ap.add_argument("--batch-size", type=positive, default=128)
        ap.add_argument("--lr", type=float, default=0.1)
        ap.add_argument("--seed", type=int, default=0)
        ap.add_argument("--subset", type=int, default=None)
        ap.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                        help="bf16 autocast: auto = where it measures faster (CUDA, CPUs with AMX)")
        ap.add_argument("--resume", action="store_true")
        ap.add_argument("--anneal-at", type=int, default=None,
                        help="follow the one-cycle schedule for K-1 epochs, then anneal to zero in epoch K and stop")
        a = ap.parse_args(argv[1:])
        try:
            card = pretrain(a.dataset, a.epochs, a.batch_size, a.lr, a.seed, a.resume, a.subset,
                            bf16={"auto": None, "on": True, "off": False}[a.bf16], anneal_at=a.anneal_at)
        except ValueError as e:  # values argparse cannot see, or a --resume state that cannot be read
            ap.error(str(e))
        print(json.dumps(card, indent=2))
        return
    commands = {"protocol": protocol_command}
    if argv[:1] and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if argv[:1] == ["bench"]:
        return benchmark()
    if argv[:1] == ["codec-limits"]:  # the README's codec block, from the shipped layer2 model
        from .limits import render_limits
        from .report import splice
        table = codec_limits()
        results_dir().mkdir(parents=True, exist_ok=True)
        table.to_csv(results_dir() / "codec_limits.csv", index=False)
        splice(ROOT / "README.md", render_limits(table), "codec-limits")
        return
    if argv[:1] == ["notebooks"]:
        ap = argparse.ArgumentParser(prog="blocksparse_utils.py notebooks")
        ap.add_argument("--preset", default="default", choices=tuple(PRESETS))
        ap.add_argument("--out", default=str(ROOT / "build" / "notebooks"))
        ap.add_argument("--only", nargs="*", default=None, help="notebook prefixes, e.g. 01 03")
        a = ap.parse_args(argv[1:])
        paths = run_notebooks(a.preset, a.out, a.only)
        print("executed notebooks:", *paths, f"figures: {figures_dir()}", f"results: {results_dir()}", sep="\n  ")
        return
    ap = argparse.ArgumentParser(prog="blocksparse_utils.py", description="Sweep the ratios of one mode and block size "
                                 "(the original script's interface) and write results and a figure.")
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--split-at", default="layer1", choices=SPLIT_POINTS)
    ap.add_argument("--mode", default="channel-wise", choices=MODES)
    ap.add_argument("--block-size", type=positive, default=4)
    ap.add_argument("--bits", type=positive, nargs="+", default=[2, 4, 8])
    ap.add_argument("--ratios", type=ratio_arg, nargs="+", default=RATIOS)
    ap.add_argument("--batch-size", type=positive, default=128)
    ap.add_argument("--subset", nargs="?", const=1000, type=positive, default=None,
                    help="evaluate N evenly spaced test images (default N=1000)")
    ap.add_argument("--rate-sample", type=positive, default=200)
    ap.add_argument("--checkpoint", default=None, help="a ResNet-18 state_dict (default: the shipped one)")
    ap.add_argument("--finetune-steps", type=int, default=200,
                    help="fine-tune the whole network per ratio for this many steps, early stopping on "
                         "validation (0: no fine-tuning)")
    ap.add_argument("--val-subset", type=positive, default=1000)
    a = ap.parse_args(argv)
    if a.finetune_steps < 0:
        ap.error(f"--finetune-steps must be >= 0, got {a.finetune_steps}")
    try:
        sweep_command(a)
    except ValueError as e:  # bad values that argparse cannot see (e.g. a block larger than the map)
        ap.error(str(e))


if __name__ == "__main__":
    main()
