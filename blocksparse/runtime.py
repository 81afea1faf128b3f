"""Where things live, seeding, and the device: the bottom layer every other module may import.

Paths are read when asked for (``results_dir()``, ``figures_dir()``), so tests and notebooks
can redirect outputs with ``BSU_RESULTS_DIR`` / ``BSU_FIGURES_DIR`` at any time.
"""
from __future__ import annotations

import functools
import os
import pickle
import platform
import random
import time
import zipfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / "data"
NOTEBOOK_DIR = ROOT / "notebooks"


def results_dir() -> Path:
    """``data/results`` unless ``BSU_RESULTS_DIR`` points elsewhere (tests never overwrite real results)."""
    return Path(os.environ.get("BSU_RESULTS_DIR", DATA_DIR / "results"))


def figures_dir() -> Path:
    """``figures`` unless ``BSU_FIGURES_DIR`` points elsewhere."""
    return Path(os.environ.get("BSU_FIGURES_DIR", ROOT / "figures"))


def set_seed(seed: int = 0) -> None:
    """Seed ``random``, numpy and torch (CPU and CUDA).

    What stays nondeterministic: multi-threaded CPU reductions and CUDA kernels may sum
    in a different order from run to run, so trained weights can differ in the last bits;
    the codec itself is deterministic.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def default_device() -> str:
    """"cuda" when a GPU is visible, else "cpu"."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def module_device(model: torch.nn.Module) -> torch.device:
    """The device a model's parameters live on."""
    return next(model.parameters()).device


@functools.lru_cache(maxsize=None)
def bf16_is_faster(device: str = "cpu") -> bool:
    """Whether bf16 autocast beats fp32 for a ResNet-style convolution on ``device``, measured once.

    On CUDA bf16 is always used; on CPUs it is a 2x speed-up with AMX/avx512_bf16 and a 3x
    slow-down without, so it is timed: a small conv stack, forward and backward, best of 3.
    """
    if device == "cuda":
        return True
    if device != "cpu":
        return False
    with torch.random.fork_rng(devices=[]):  # measuring must not move the global RNG (seeded runs, resume)
        conv = torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(),
                                   torch.nn.Conv2d(64, 64, 3, padding=1))
        x = torch.randn(32, 64, 28, 28).contiguous(memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                conv(x).float().sum().backward()
            times.append(time.perf_counter() - t)
        return min(times)

    with torch.enable_grad():  # callers may sit in no_grad (prediction)
        best(False), best(True)  # warm-up
        return best(True) < 0.8 * best(False)


def autocast(device: str | torch.device, bf16: bool | None = None):
    """The autocast context for ``device``: bf16 where it is faster (``bf16=None``), or as forced.

    Returns a no-op context when bf16 is off, so callers always write ``with autocast(dev):``.
    """
    device = torch.device(device).type
    use = bf16_is_faster(device) if bf16 is None else bf16
    if not use or device not in ("cpu", "cuda"):
        return nullcontext()
    return torch.autocast(device_type=device, dtype=torch.bfloat16)


def read_torch_file(path: Path):
    """``torch.load`` of a weights file (tensors only: ``weights_only``), on the CPU; a file torch
    cannot read is a ValueError naming it. The one loader of every checkpoint and weights file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        # one line: torch's unpickling errors run to paragraphs of advice (load unsafely) that do not apply
        first = str(e).strip().split("\n")[0]
        why = f"{type(e).__name__}: {first}" if first and len(first) <= 120 else type(e).__name__
        raise ValueError(f"{path} is not a readable torch file ({why})") from None


def in_repo(p: Path) -> str:
    """``p`` relative to the repository when it lies inside it (results and cards name files portably)."""
    p = Path(p).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)


def machine() -> str:
    """What a time was measured or a model trained on, e.g. ``x86_64 (AVX2), 2 of 2 CPU threads, torch
    2.14.1`` (with the GPU's name where torch sees one). The CPU's vector capability (torch's kernels:
    AVX2, AVX512, ...) is named because a run trained on one does not repeat bit for bit on another."""
    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{platform.machine()} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} of "
            f"{os.cpu_count()} CPU threads{gpu}, torch {torch.__version__}")
