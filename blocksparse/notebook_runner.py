"""Running the notebooks headless with papermill (the only module that imports it)."""
from __future__ import annotations

import datetime
import os
import queue
import time
from pathlib import Path

import papermill as pm
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines as pm_engines
from papermill.log import logger as pm_log

import pandas as pd

from .cache import recompute_requested
from .runtime import NOTEBOOK_DIR, ROOT, machine, results_dir
from .study import PRESETS
from .widgets import HEADLESS


# The kernel's own log lines are not the run's: papermill interrupts a kernel on shutdown, which
# ipykernel logs as "ERROR | KeyboardInterrupt caught in kernel" in a successful run, beside a
# warning per kernel about TCP. Errors in cells still fail the run (they come as messages).
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]


CELL_TIMEOUT = 3 * 3600  # seconds; the longest cell of PRESET=full fine-tunes for hours on 2 cores


POLL_SLICE = 2.0  # seconds: the longest wait for one message before the socket is polled again


def sliced_get_msg(get_msg, step: float = POLL_SLICE):
    """``get_msg(timeout)`` of a kernel channel, waiting in slices of ``step`` seconds.

    The asyncio poll of a kernel's shell socket can miss the wake-up of a reply that has
    arrived (nbclient issue 312, seen here in notebook 07's widget cell: kernel idle, the
    reply never read until the cell timeout, hours later); polling again finds it. Raises
    ``Empty`` only once the whole ``timeout`` has passed (never for ``None``).
    """
    async def sliced(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = step if deadline is None else min(step, max(0.0, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=left)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return sliced


class _SlicedPollClient(PapermillNotebookClient):
    async def async_start_new_kernel_client(self):
        kc = await super().async_start_new_kernel_client()
        kc.shell_channel.get_msg = sliced_get_msg(kc.shell_channel.get_msg)
        # the cell's outputs and its closing "idle" status come on iopub: the same missed wake-up
        # left notebook 07's widget cell waiting there with the kernel idle (seen 2026-12-05)
        kc.iopub_channel.get_msg = sliced_get_msg(kc.iopub_channel.get_msg)
        return kc


class SlicedPollEngine(NBClientEngine):
    """papermill's nbclient engine with ``sliced_get_msg`` on the shell channel."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, log_output=False, stdout_file=None, stderr_file=None,
                                 start_timeout=60, execution_timeout=None, **kwargs):
        kwargs = {k: v for k, v in kwargs.items() if k not in ("input_path", "timeout", "startup_timeout")}
        return _SlicedPollClient(nb_man, timeout=execution_timeout, startup_timeout=start_timeout,
                                 kernel_name=kernel_name, log=pm_log, log_output=log_output,
                                 stdout_file=stdout_file, stderr_file=stderr_file, **kwargs).execute()


pm_engines.register("bsu-sliced", SlicedPollEngine)


def run_notebooks(preset: str = "default", out_dir: str | Path = ROOT / "build" / "notebooks",
                  only: list[str] | None = None) -> list[Path]:
    """Execute notebooks 01-07 in order with papermill, injecting the preset's parameters
    (each notebook gets the ones its ``parameters`` cell declares). Returns the executed copies.
    A run of all seven writes its timing (``study_timing.csv``: seconds per notebook, the preset,
    whether the cache was read, the date and the machine), which the README states."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {tuple(PRESETS)}, got {preset!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    before = os.environ.get(HEADLESS)
    os.environ[HEADLESS] = "1"  # the kernels inherit it: interactive figures draw once, without widgets
    try:
        done, seconds = [], {}
        for nb in sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")):
            if only and not any(nb.name.startswith(o) for o in only):
                continue
            declared = pm.inspect_notebook(str(nb))
            params = {k: v for k, v in PRESETS[preset].items() if k in declared}
            print(f"[{preset}] {nb.name} {params}", flush=True)
            t0 = time.time()
            # a cell that waits longer than CELL_TIMEOUT fails the run instead of hanging it; the engine
            # polls the shell socket again every POLL_SLICE (a missed reply hung notebook 07 before)
            pm.execute_notebook(str(nb), str(out_dir / nb.name), parameters=params, cwd=str(NOTEBOOK_DIR),
                                kernel_name="python3", progress_bar=False, execution_timeout=CELL_TIMEOUT,
                                extra_arguments=KERNEL_ARGS, engine_name="bsu-sliced")
            seconds[nb.name] = time.time() - t0
            print(f"[{preset}] {nb.name} done in {seconds[nb.name]:.0f} s", flush=True)
            done.append(out_dir / nb.name)
    finally:
        if before is None:
            os.environ.pop(HEADLESS, None)
        else:
            os.environ[HEADLESS] = before
    if not only:
        d = results_dir()
        d.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(dict(notebook=list(seconds), seconds=[round(v, 1) for v in seconds.values()], preset=preset,
                          recompute=recompute_requested(),
                          date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
                          machine=machine())).to_csv(d / "study_timing.csv", index=False)
    return done
