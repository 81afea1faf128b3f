"""Runtime helpers: measuring the machine must not disturb seeded runs."""
import torch

from blocksparse import runtime


def test_measuring_bf16_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.get_rng_state()
    runtime.bf16_is_faster.__wrapped__("cpu")  # the measurement itself, not the cached answer
    assert torch.equal(torch.get_rng_state(), before)


def test_machine_names_the_threads_and_torch():
    import os
    import torch
    from blocksparse.runtime import machine
    m = machine()
    assert f"{torch.get_num_threads()} of {os.cpu_count()} CPU threads" in m and m.endswith(f"torch {torch.__version__}")
    # the CPU's vector capability, which decides whether a run repeats bit for bit: read here from the kernel
    import re
    from pathlib import Path
    capability = re.match(r"[^ ]+ \(([^)]+)\), ", m).group(1)
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set(re.findall(r"\b(avx2|avx512f)\b", cpuinfo))
    if flags == {"avx2"}:  # no AVX-512 on this CPU: torch's kernels cannot be AVX512's
        assert capability == "AVX2"
    elif "avx512f" in flags:
        assert capability.startswith("AVX512") or capability == "AVX2"  # torch may pick AVX2 on some AVX-512 CPUs


def test_an_unreadable_weights_file_is_a_one_line_value_error_naming_it(tmp_path):
    import pytest
    from blocksparse.runtime import read_torch_file
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"garbage bytes")  # torch's own message for this is a dozen lines of advice
    folder = tmp_path / "folder.pt"
    folder.mkdir()
    for path in (bad, folder, tmp_path / "missing.pt"):
        with pytest.raises(ValueError, match="not a readable torch file") as e:
            read_torch_file(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
