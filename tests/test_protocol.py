"""The protocol (blocksparse.protocol): disjoint validation halves, one budget, one rule, no test data in choices."""
import dataclasses

import pytest
import torch

from blocksparse import data, protocol


def test_the_two_validation_halves_are_disjoint_and_make_up_val():
    n = 60000
    stop, select = (data.split_indices(n, s) for s in (protocol.VAL_STOP, protocol.VAL_SELECT))
    val, train = data.split_indices(n, "val"), data.split_indices(n, "train")
    assert len(stop) == len(select) == data.VAL_SIZE // 2
    assert not set(stop.tolist()) & set(select.tolist())
    assert set(stop.tolist()) | set(select.tolist()) == set(val.tolist())
    assert not set(val.tolist()) & set(train.tolist())


def test_selection_helpers_refuse_every_split_but_val_select():
    for split in ("test", "val", "val-stop", "train"):
        with pytest.raises(ValueError, match="split"):
            protocol.selection_data("fashion-mnist", split)


def test_selection_and_stopping_data_read_their_own_half(monkeypatch):
    """The spy sits on the module that reads (``protocol.load_dataset``, the name protocol calls)."""
    seen = []
    monkeypatch.setattr(protocol, "load_dataset", lambda name, split, subset=None: seen.append((name, split, subset)))
    protocol.selection_data(subset=7)
    protocol.stopping_data("cifar10", subset=3)
    assert seen == [("fashion-mnist", "val-select", 7), ("cifar10", "val-stop", 3)]


def test_one_budget_is_compared_by_equality_and_refuses_bad_fields():
    b = protocol.BUDGET
    assert b == protocol.Budget() and b != b.replace(steps=b.steps - 1)
    assert b.replace(steps=5).asdict() == dict(b.asdict(), steps=5)
    for field, bad in (("steps", 0), ("batch_size", 1.5), ("eval_every", True), ("lr", 0), ("temperature", -1),
                       ("distill_weight", 2.0), ("optimizer", "lbfgs"), ("train", "head")):
        with pytest.raises(ValueError, match=field):
            protocol.Budget(**{field: bad})


def test_finetune_refuses_an_empty_dataset():
    from blocksparse.model import build_model
    from blocksparse.training import finetune
    empty = torch.utils.data.TensorDataset(torch.zeros(0, 1, 28, 28), torch.zeros(0, dtype=torch.long))
    some = torch.utils.data.TensorDataset(torch.zeros(4, 1, 28, 28), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="train_data"):
        finetune(build_model(), None, protocol.Budget(steps=1, distill_weight=0), train_data=empty, val_data=some)
