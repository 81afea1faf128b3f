"""requirements.txt, environment.yml and what is installed agree."""
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
