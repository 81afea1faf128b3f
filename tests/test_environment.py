"""requirements.txt, environment.yml and what is installed agree."""
import os
import re
from importlib.metadata import version
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins():
    lines = [l.split("#")[0].strip() for l in (ROOT / "requirements.txt").read_text().splitlines()]
    return [l for l in lines if l]


def test_requirements_are_pinned_and_installed():
    for line in _pins():
        m = re.fullmatch(r"([A-Za-z0-9_.-]+)==([0-9][^\s]*)", line)
        assert m, f"not pinned with ==: {line}"
        assert version(m[1]) == m[2], f"{m[1]} installed {version(m[1])}, pinned {m[2]}"


def test_environment_yml_pulls_requirements():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps and "pip" in deps
    pip = [d for d in deps if isinstance(d, dict)][0]["pip"]
    assert pip == ["-r requirements.txt", "-e ."]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in readme and "\nmake test\n" in ci


def _make_data(tmp_path, apt_exit: dict[str, int]):
    """``make data`` where no folder holds Fashion-MNIST, with a stand-in apt-get (exit status per
    action) and a stand-in python: what each was called with, and make's result."""
    import shutil
    import subprocess
    if not shutil.which("make"):
        import pytest
        pytest.skip("no make")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    apt = bin_dir / "apt-get"
    apt.write_text("#!/bin/sh\necho \"$@\" >> %s/apt.log\n" % tmp_path
                   + "".join(f'case " $* " in *" {a} "*) exit {c};; esac\n' for a, c in apt_exit.items()) + "exit 0\n")
    py = bin_dir / "python"
    py.write_text(f"#!/bin/sh\necho ran >> {tmp_path}/python.log\n")
    for f in (apt, py):
        f.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")
    r = subprocess.run(["make", "-s", "-o", ".venv/.installed", "data", f"FASHION_DIRS={tmp_path / 'none'}", "SUDO=",
                        f"PY={py}"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    log = (tmp_path / "apt.log").read_text().splitlines() if (tmp_path / "apt.log").exists() else []
    return r, log, (tmp_path / "python.log").exists()


def test_make_data_waits_for_apt_s_lock_and_stops_with_a_message_instead_of_downloading(tmp_path):
    r, apt_calls, python_ran = _make_data(tmp_path, {"install": 100})
    assert r.returncode != 0 and not python_ran  # no fallback: the loading step (and its downloader) never runs
    assert [next(a for a in ("update", "install") if a in c.split()) for c in apt_calls] == ["update", "install"]
    assert all("-o DPkg::Lock::Timeout=600" in c for c in apt_calls)  # both wait for the lock
    assert "could not install dataset-fashion-mnist" in r.stderr and "data/fashion-mnist/" in r.stderr
    assert "Traceback" not in r.stderr and "falling back" not in r.stdout + r.stderr


def test_make_data_loads_the_data_once_apt_installed_it(tmp_path):
    r, apt_calls, python_ran = _make_data(tmp_path, {})
    assert r.returncode == 0 and python_ran, r.stderr
    assert len(apt_calls) == 2 and all("DPkg::Lock::Timeout=600" in c for c in apt_calls)
