"""Training: prediction paths, fine-tuning (tail and whole network), pretraining and its resume."""
import contextlib

import pytest
import torch

import blocksparse.data
import blocksparse.training
import blocksparse_utils as bsu


@pytest.fixture(scope="module")
def shipped():
    return bsu.load_pretrained("fashion-mnist")



def test_channels_last_and_bf16_agree_with_fp32(shipped):
    x = bsu.load_dataset("fashion-mnist", "test", subset=256).tensors[0]
    ref = bsu.predict(shipped, x)
    assert torch.equal(bsu.predict(shipped, x, fast=True), ref)  # channels_last: same labels
    assert (bsu.predict(shipped, x, fast=True, bf16=True) == ref).float().mean() >= 0.98


# --- fine-tuning ------------------------------------------------------------
def test_finetune_lowers_training_loss_and_never_sees_test(monkeypatch):
    seen = []
    real = bsu.load_dataset

    def spy(name="fashion-mnist", split="test", *a, **k):
        seen.append(split)
        return real(name, split, *a, **k)
    monkeypatch.setattr(blocksparse.training, "load_dataset", spy)
    model = bsu.build_model()
    cfg = bsu.CodecConfig(block_size=4, ratio=0.3, bits=4)
    budget = bsu.Budget(steps=30, batch_size=32, lr=3e-3, train="all", eval_every=10)
    _, hist = bsu.finetune(model, cfg, budget, train_subset=256, val_subset=64)
    assert "test" not in seen and set(seen) == {"train", "val"}
    assert hist[-1]["loss"] < hist[1]["loss"]
    assert [h["step"] for h in hist] == [0, 10, 20, 30]


def test_finetune_runs_every_step_of_its_budget_and_keeps_the_best_validation(monkeypatch):
    """Validation that never improves does not cut a run short (the budget is equal in steps run), and
    the weights kept are the first best validation's (here step 0's: the model as it came in)."""
    monkeypatch.setattr(blocksparse.training, "accuracy", lambda *a, **k: 0.5)
    data = bsu.load_dataset(split="train", subset=16)
    model = _fresh()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tuned, hist = bsu.finetune(model, None, bsu.Budget(steps=8, batch_size=4, eval_every=1), train_data=data,
                               val_data=data, progress=False)
    assert [h["step"] for h in hist] == list(range(9))
    assert all(torch.equal(v, before[k]) for k, v in tuned.state_dict().items())


def test_finetune_bad_arguments():
    m = bsu.build_model()
    with pytest.raises(ValueError, match="budget.train"):  # a bottleneck's mode, not fine-tuning's
        bsu.finetune(m, bsu.CodecConfig(), bsu.Budget(train="frozen"))
    with pytest.raises(ValueError, match="budget must be"):
        bsu.finetune(m, bsu.CodecConfig(), dict(steps=10))
    with pytest.raises(ValueError, match="group_lasso_weight"):
        bsu.finetune(m, bsu.CodecConfig(), group_lasso_weight=-1.0)


def _fresh():
    bsu.set_seed(0)
    return bsu.build_model()


def test_finetune_tail_keeps_the_head_and_all_moves_it(tmp_path):
    """The weights as trained (the resumable state of the last step, not the best-validation
    weights that early stopping may restore): tail-only leaves the head and its batch-norm
    statistics untouched, the whole network moves the stem."""
    base = _fresh().state_dict()
    cfg = bsu.CodecConfig(block_size=4, ratio=0.3, bits=2)
    data = bsu.load_dataset(split="train", subset=64)
    budget = bsu.Budget(steps=3, batch_size=16, eval_every=3)
    common = dict(train_data=data, val_data=data, progress=False)
    bsu.finetune(_fresh(), cfg, budget.replace(train="tail"), state_path=tmp_path / "tail.pt", **common)
    tail = torch.load(tmp_path / "tail.pt", weights_only=False)["module"]
    head = [k for k in base if k.startswith(("net.conv1.", "net.bn1.", "net.layer1."))]
    assert head and all(torch.equal(tail[k], base[k]) for k in head)
    assert not torch.equal(tail["net.fc.weight"], base["net.fc.weight"])
    bsu.finetune(_fresh(), cfg, budget.replace(train="all", distill_weight=0.0), state_path=tmp_path / "all.pt", **common)
    assert not torch.equal(torch.load(tmp_path / "all.pt", weights_only=False)["module"]["net.conv1.weight"],
                           base["net.conv1.weight"])


def _one_thread_finetune(distill_weight=0.5, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order, so comparisons can be exact
    try:
        budget = bsu.Budget(steps=4, batch_size=8, eval_every=2, distill_weight=distill_weight)
        return bsu.finetune(_fresh(), bsu.CodecConfig(block_size=4, ratio=0.3, bits=2), budget, progress=False, **kwargs)
    finally:
        torch.set_num_threads(threads)


def test_teacher_inputs_are_what_the_teacher_sees_and_monitors_change_nothing():
    data = bsu.load_dataset(split="train", subset=32)
    val = bsu.load_dataset(split="val", subset=16)
    common = dict(train_data=data, val_data=val, distill_weight=1.0)
    ref, h_ref = _one_thread_finetune(**common)
    same, h_same = _one_thread_finetune(teacher_inputs=data.tensors[0].clone(), **common)
    other, _ = _one_thread_finetune(teacher_inputs=torch.zeros_like(data.tensors[0]), **common)
    mon, h_mon = _one_thread_finetune(monitor=dict(again=val, train=data), **common)

    def equal(a, b):
        return all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values()))
    assert equal(ref, same) and equal(ref, mon) and not equal(ref, other)
    assert [h["val_accuracy"] for h in h_mon] == [h["val_accuracy"] for h in h_ref]
    # the monitor on the validation images again reads the same accuracy; on other images its own
    assert all(h["again_accuracy"] == h["val_accuracy"] for h in h_mon)
    assert h_mon[0]["train_accuracy"] == bsu.accuracy(_fresh(), data, bsu.CodecConfig(block_size=4, ratio=0.3, bits=2))
    with pytest.raises(ValueError, match="teacher_inputs"):
        bsu.finetune(_fresh(), None, bsu.Budget(steps=1), train_data=data, val_data=val,
                     teacher_inputs=data.tensors[0][:5])


def test_group_lasso_against_a_direct_sum_over_blocks():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 7, 6, generator=g)
    b = 3
    expect = 0.0
    for n in range(2):
        for c in range(3):
            for i in range(0, 7, b):
                for j in range(0, 6, b):
                    blk = z[n, c, i:i + b, j:j + b]
                    rows = torch.arange(i, min(i + b, 7))[:, None]
                    cols = torch.arange(j, min(j + b, 6))[None, :]
                    border = (rows == 0) | (rows == 6) | (cols == 0) | (cols == 5)
                    expect += float(torch.where(border, 0.0, blk).pow(2).sum().sqrt())
    got = blocksparse.training.group_lasso(z, b)
    assert float(got) == pytest.approx(expect / 2, rel=1e-5)


def test_distillation_loss_against_the_definition():
    s, t = torch.tensor([[1.0, 2.0, 0.5]]), torch.tensor([[0.2, 3.0, -1.0]])
    T = 2.0
    p = torch.softmax(t / T, 1)
    expect = T * T * float((p * (p.log() - torch.log_softmax(s / T, 1))).sum())
    assert float(blocksparse.training.distillation_loss(s, t, T)) == pytest.approx(expect, rel=1e-6)
    assert float(blocksparse.training.distillation_loss(t, t, T)) == pytest.approx(0, abs=1e-7)


@contextlib.contextmanager
def _killed_at_validation(monkeypatch, k):
    """The k-th validation of a training run raises KeyboardInterrupt, as if the run were killed there."""
    real, calls = blocksparse.training.accuracy, []

    def accuracy(*a, **kw):
        calls.append(1)
        if len(calls) == k:
            raise KeyboardInterrupt
        return real(*a, **kw)
    monkeypatch.setattr(blocksparse.training, "accuracy", accuracy)
    with pytest.raises(KeyboardInterrupt):
        yield
    monkeypatch.setattr(blocksparse.training, "accuracy", real)


def test_finetune_resumes_where_it_stopped(tmp_path, monkeypatch):
    """A 6-step run == the same run interrupted after its step-3 evaluation, then resumed."""
    cfg = bsu.CodecConfig(block_size=4, ratio=0.3, bits=2)
    data = bsu.load_dataset(split="train", subset=64)
    common = dict(budget=bsu.Budget(steps=6, batch_size=8, eval_every=3, distill_weight=0.5), train_data=data,
                  val_data=data, progress=False, group_lasso_weight=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one summation order, so the comparison can be exact
    try:
        one, h1 = bsu.finetune(_fresh(), cfg, **common)
        state = tmp_path / "state.pt"
        with _killed_at_validation(monkeypatch, 3):  # 1: step 0, 2: step 3 (saved), 3: killed
            bsu.finetune(_fresh(), cfg, state_path=state, **common)
        assert torch.load(state, weights_only=False)["step"] == 3
        two, h2 = bsu.finetune(_fresh(), cfg, state_path=state, **common)
    finally:
        torch.set_num_threads(threads)
    assert [h["step"] for h in h2] == [0, 3, 6] and h2[-1]["val_accuracy"] == h1[-1]["val_accuracy"]
    assert all(torch.equal(a, b) for a, b in zip(one.state_dict().values(), two.state_dict().values()))


def _fake_fashion(root, n_train=5200, n_test=16):
    """Fashion-MNIST's idx files with random images, written where load_dataset looks first."""
    import gzip
    import struct

    import numpy as np
    d = root / "fashion-mnist"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, n in (("train", n_train), ("t10k", n_test)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))), ("labels-idx1", rng.integers(0, 10, n))):
            header = struct.pack(">BBBB", 0, 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
            with gzip.open(d / f"{stem}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + arr.astype(np.uint8).tobytes())


def test_pretrain_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Two epochs in one go == the run killed in epoch 2, then resumed (same weights, same history).
    A validation split of 100 images keeps the five validations short."""
    monkeypatch.setattr(blocksparse.data, "VAL_SIZE", 100)
    _fake_fashion(tmp_path / "a", n_train=300)
    _fake_fashion(tmp_path / "b", n_train=300)
    threads = torch.get_num_threads()
    try:
        common = dict(epochs=2, batch_size=64, lr=0.05, bf16=False, device="cpu", threads=1)
        whole = bsu.pretrain(root=tmp_path / "a", **common)
        with _killed_at_validation(monkeypatch, 2):  # 1: epoch 1 (then its state is saved), 2: killed
            bsu.pretrain(root=tmp_path / "b", **common)
        resumed = bsu.pretrain(root=tmp_path / "b", resume=True, **common)
    finally:
        torch.set_num_threads(threads)
    assert [h["epoch"] for h in resumed["history"]] == [1, 2]
    assert resumed["sha256"] == whole["sha256"]
    assert [h["val_accuracy"] for h in resumed["history"]] == [h["val_accuracy"] for h in whole["history"]]


@pytest.mark.parametrize("content", [b"garbage bytes", b""])
def test_pretrain_refuses_an_unreadable_resume_state_naming_it(content, tmp_path):
    state = tmp_path / "pretrain_state_fashion-mnist.pt"
    state.write_bytes(content)  # a state cut short or overwritten: torch raises UnpicklingError / EOFError
    with pytest.raises(ValueError, match="resume") as e:
        bsu.pretrain(epochs=1, resume=True, subset=16, root=tmp_path, threads=1)
    assert str(state) in str(e.value) and "\n" not in str(e.value)
