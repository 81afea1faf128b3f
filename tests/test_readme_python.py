"""Every ```python block of the README runs as written, in order, in one namespace (what a reader pastes)."""
import contextlib
import io
import re

import pytest

from blocksparse.runtime import ROOT

BLOCKS = re.findall(r"^```python\n(.*?)^```$", (ROOT / "README.md").read_text(), re.S | re.M)


def test_the_readme_has_python_blocks():
    assert BLOCKS, "the README shows no python example"


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_a_python_block_of_the_readme_runs(i, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # as written, from any working directory
    namespace = {"__name__": "__readme__"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for code in BLOCKS[:i + 1]:  # a later block may use what an earlier one defined
            exec(compile(code, f"README.md python block {i}", "exec"), namespace)
    if "bsu.encode(" in BLOCKS[i]:  # the codec example: real bytes, decoded and classified through the tail
        blob, codebook = namespace["blob"], namespace["codebook"]
        assert isinstance(blob, bytes) and len(blob) > 0
        assert type(codebook).__name__ == "Codebook"  # the amortized code tables the answer counts, not a CodecConfig
        import blocksparse_utils as bsu
        z = namespace["model"].head(namespace["x"])
        assert (namespace["z_hat"] == bsu.compress(z, codebook.cfg)).all()  # what the decoder returns is the codec's output
        assert f"{len(blob)} bytes" in out.getvalue()
