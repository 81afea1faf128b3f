"""Notebook 03's sliders and notebook 07's explorer in JupyterLab, driven in headless Chromium
(make test-browser)."""
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import papermill as pm
import pytest

import blocksparse_utils as bsu

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def lab(tmp_path):
    """JupyterLab on a free localhost port with a fresh token; shut down even on failure.
    Notebook 03 gets the small 'ci' parameters (papermill, not executed); notebook 07 its
    defaults, reading a copy of the committed results (and their cache) in a temporary folder."""
    work = tmp_path / "work"
    work.mkdir()
    nb03 = bsu.NOTEBOOK_DIR / "03_mode_comparison.ipynb"
    params = {k: v for k, v in bsu.PRESETS["ci"].items() if k in pm.inspect_notebook(str(nb03))}
    pm.execute_notebook(str(nb03), str(work / "03.ipynb"), parameters=params, prepare_only=True)
    shutil.copy(bsu.NOTEBOOK_DIR / "07_accuracy_vs_bpp.ipynb", work / "07.ipynb")
    shutil.copytree(bsu.ROOT / "data" / "results", tmp_path / "results")
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ, BSU_RESULTS_DIR=str(tmp_path / "results"), BSU_FIGURES_DIR=str(tmp_path / "figures"),
               PYTHONPATH=str(bsu.ROOT), JUPYTER_CONFIG_DIR=str(tmp_path / "jcfg"), HOME=str(tmp_path))
    log = open(tmp_path / "lab.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
                             f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
                             "--ServerApp.open_browser=False", "--LabApp.news_url=", "--LabApp.extension_manager=readonly",
                             "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                            + (["--allow-root"] if os.geteuid() == 0 else []),
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("JupyterLab exited: " + (tmp_path / "lab.log").read_text()[-2000:])
                time.sleep(0.5)
        yield dict(url=url, token=token, figures=tmp_path / "figures", work=work)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _drag(page, slider, steps: int, n: int) -> float:
    """Drag a SelectionSlider's handle by ``steps`` of its ``n`` options, as a mouse would;
    returns the time of the release (time.perf_counter)."""
    handle = slider.locator(".noUi-handle")
    slider.scroll_into_view_if_needed()
    track = slider.locator(".noUi-target").bounding_box()
    box = handle.bounding_box()
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x0, y0)
    page.mouse.down()
    page.mouse.move(x0 + steps * track["width"] / max(n - 1, 1), y0, steps=8)
    page.mouse.up()
    return time.perf_counter()


def _figure(page) -> str:
    img = page.locator(".widget-output img").first
    img.wait_for(timeout=60_000)
    return img.get_attribute("src")


@contextlib.contextmanager
def _page(shot_name: str):
    """A headless Chromium page; a screenshot of it goes to build/ when the test fails."""
    from playwright.sync_api import sync_playwright
    shot = bsu.ROOT / "build" / shot_name
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            yield page
        except BaseException:
            shot.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            raise
        finally:
            browser.close()


def _run_all(page, lab, name):
    page.goto(f"{lab['url']}/lab/tree/{name}?token={lab['token']}")
    page.locator(".jp-Notebook").wait_for(timeout=60_000)
    page.locator("#jp-main-statusbar").get_by_text("Idle").wait_for(timeout=60_000)
    page.get_by_role("menuitem", name="Run", exact=True).click()
    page.get_by_text("Run All Cells", exact=True).click()


def test_sliders_redraw_and_export(lab, tmp_path):
    from playwright.sync_api import expect
    with _page("browser-failure.png") as page:
        _run_all(page, lab, "03.ipynb")
        sliders = page.locator(".widget-hslider")
        expect(sliders).to_have_count(2, timeout=120_000)
        before = _figure(page)
        ratio, block = sliders.nth(0), sliders.nth(1)
        # the sliders run upward, low to high, whatever order the preset lists
        options = {"ratio": [str(r) for r in sorted(bsu.PRESETS["ci"]["ratios"])],
                   "block": [str(b) for b in sorted(bsu.PRESETS["ci"]["block_sizes"])]}
        start = ratio.locator(".widget-readout").inner_text()
        # move the ratio slider one option towards the other end
        _drag(page, ratio, 1 if start == options["ratio"][0] else -1, len(options["ratio"]))
        want = options["ratio"][1] if start == options["ratio"][0] else options["ratio"][0]
        expect(ratio.locator(".widget-readout")).to_have_text(want, timeout=30_000)
        page.wait_for_function("b => document.querySelector('.widget-output img') && "
                               "document.querySelector('.widget-output img').src !== b", arg=before, timeout=60_000)
        after_ratio = _figure(page)
        assert after_ratio != before
        start = block.locator(".widget-readout").inner_text()
        _drag(page, block, 1 if start == options["block"][0] else -1, len(options["block"]))
        want_b = options["block"][1] if start == options["block"][0] else options["block"][0]
        expect(block.locator(".widget-readout")).to_have_text(want_b, timeout=30_000)
        page.wait_for_function("b => document.querySelector('.widget-output img').src !== b",
                               arg=after_ratio, timeout=60_000)
        assert _figure(page) not in (before, after_ratio)
        page.get_by_role("button", name="export figure").click()
        expect(page.get_by_text("saved ")).to_be_visible(timeout=30_000)
        for ext in ("png", "pdf"):  # named after the slider state, in the ignored exports folder
            got = list((lab["figures"] / "exports").glob(f"03_mode_comparison_*.{ext}"))
            assert len(got) == 1 and f"ratio{float(want):g}" in got[0].name and got[0].stat().st_size > 1000


def test_explorer_highlights_the_picked_configuration_and_redraws_fast(lab, capsys):
    """Notebook 07's explorer: a slider release redraws from the results table (no recomputation).
    How long the redraw takes is printed (a benchmark figure, not an assertion)."""
    from playwright.sync_api import expect
    with _page("browser-failure-07.png") as page:
        _run_all(page, lab, "07.ipynb")
        sliders = page.locator(".widget-hslider")
        expect(sliders).to_have_count(2, timeout=300_000)
        before = _figure(page)
        ratio = sliders.nth(0)
        start = ratio.locator(".widget-readout").inner_text()
        n_ratios = pd.read_csv(bsu.ROOT / "data" / "results" / "sweep.csv")["ratio"].nunique()
        released = _drag(page, ratio, -1, n_ratios)
        page.wait_for_function("b => document.querySelector('.widget-output img') && "
                               "document.querySelector('.widget-output img').src !== b", arg=before, timeout=60_000)
        seconds = time.perf_counter() - released
        assert ratio.locator(".widget-readout").inner_text() != start
        page.get_by_role("button", name="export figure").click()
        expect(page.get_by_text("saved explorer_")).to_be_visible(timeout=30_000)
        got = list((lab["figures"] / "exports").glob("explorer_*.png"))
        assert len(got) == 1 and got[0].stat().st_size > 1000
        with capsys.disabled():
            print(f"\n[benchmark] notebook 07 explorer: slider release to redrawn figure {seconds:.2f} s "
                  f"(target <= 2 s)")
