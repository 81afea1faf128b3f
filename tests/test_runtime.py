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
