"""``python blocksparse_utils.py protocol ...`` (blocksparse.cli_protocol): the plan, bad arguments and
bad files, without training (every case here reads or refuses; none writes outside tmp_path)."""
import json

import pytest

from blocksparse import cli_protocol
from blocksparse.cli import main


def _usage_error(capsys, argv: list[str], one_line: bool = True) -> str:
    """stderr of a command that must end as a usage error (exit 2): argparse's usage and one error
    line, or (a bad file) the error line alone; never a traceback."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err and (len(lines) == 1 or not one_line and lines[0].startswith("usage:")), err
    return lines[-1]


def test_plan_of_an_empty_answer_folder_is_the_reference_first(tmp_path, capsys):
    # every rung is judged against the fine-tuned reference's seed 0: with no card, it is the only step
    main(["protocol", "plan", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line) for line in lines] == [dict(action="train", family="reference", split_at=None, seed=0)]


def test_remeasure_with_no_tested_model_says_so(tmp_path, capsys):
    main(["protocol", "remeasure", "--out", str(tmp_path)])
    assert capsys.readouterr().out.strip() == "no shipped model tested yet"


def test_remeasure_names_a_tested_v2_run_whose_weights_are_not_in_the_tree(tmp_path, capsys, monkeypatch):
    """A v2 seed 0 tested but not shipped (its weights lost with a session's machine) is said, not
    skipped in silence; one whose weights are there is re-measured."""
    from blocksparse import answer, protocol_v2, protocol_v2_runs
    (tmp_path / "there.pt").write_bytes(b"w")
    cards = [dict(path=str(tmp_path / "lost.json"), seed=0, test={}, weights="lost.pt"),
             dict(path=str(tmp_path / "there.json"), seed=0, test={}, weights="there.pt"),
             dict(path=str(tmp_path / "untested.json"), seed=0, weights="untested.pt"),
             dict(path=str(tmp_path / "seed1.json"), seed=1, test={}, weights="seed1.pt")]
    monkeypatch.setattr(answer, "read_cards", lambda out: [])
    monkeypatch.setattr(protocol_v2, "read_cards", lambda reuse_dir=None: cards)
    measured = []
    monkeypatch.setattr(protocol_v2_runs, "remeasure_run", lambda c, n: measured.append(c) or dict(
        card=c, mcnemar_p=1.0, differing=0))
    main(["protocol", "remeasure"])
    out = capsys.readouterr().out
    assert measured == [str(tmp_path / "there.json")]
    assert f"not re-measured: {tmp_path / 'lost.json'} was tested, but its files are not in the tree" in out
    assert "untested" not in out and "seed1" not in out


@pytest.mark.parametrize("argv, name", [
    (["protocol", "train", "--family", "reference", "--setting", "[1]"], "--setting must be a JSON object"),
    (["protocol", "train", "--family", "reference", "--setting", "{quality: 5"], "--setting must be a JSON object"),
    (["protocol", "train", "--family", "nope"], "--family"),
    (["protocol", "train", "--family", "bottleneck", "--split-at", "layer9"], "--split-at"),
    (["protocol", "next", "--family", "nope"], "--family"),
    (["protocol", "test"], "cards"),
    (["protocol"], "action"),
])
def test_bad_arguments_are_usage_errors(argv, name, capsys):
    assert name in _usage_error(capsys, argv, one_line=False)


def test_the_setting_argument_is_a_json_object():
    assert cli_protocol._setting('{"quality": 5, "x": [1]}') == {"quality": 5, "x": [1]}


def test_a_test_step_s_family_and_split_are_read_from_its_card(tmp_path):
    card = tmp_path / "bottleneck_layer2_seed0.json"
    card.write_text(json.dumps(dict(family="bottleneck", split_at="layer2")))
    assert cli_protocol._family(dict(action="test", card=str(card))) == "bottleneck"
    assert cli_protocol._split(dict(action="test", card=str(card))) == "layer2"
    assert cli_protocol._family(dict(action="train", family="webp", split_at=None, seed=0)) == "webp"
    assert cli_protocol._split(dict(action="train", family="webp", split_at=None, seed=0)) is None


@pytest.mark.parametrize("action", ["test", "remeasure"])
@pytest.mark.parametrize("bad", ["missing", "folder", "not json", "not text"])
def test_a_missing_or_unreadable_card_is_a_one_line_error(action, bad, tmp_path, capsys):
    path = tmp_path / "card.json"
    if bad == "folder":
        path.mkdir()
    elif bad == "not json":
        path.write_text("{not json")
    elif bad == "not text":
        path.write_bytes(b"\xff\xfe\x00 weights?")
    err = _usage_error(capsys, ["protocol", action, str(path)])
    assert err.startswith("blocksparse_utils.py protocol") and str(path) in err
    assert {"missing": "No such file", "folder": "Is a directory", "not json": "not valid JSON",
            "not text": "not text"}[bad] in err


def _card(tmp_path, **fields):
    path = tmp_path / "webp_q5_seed0.json"
    path.write_text(json.dumps(dict(family="webp", seed=0, split_at=None, dataset="fashion-mnist", setting={},
                                    rung=5) | fields))
    return path


@pytest.mark.parametrize("action, fields, reason", [
    ("remeasure", dict(weights="webp_q5_seed0.pt", sha256="0" * 64, test={}), "which are not there"),  # its weights
    ("test", dict(weights="webp_q5_seed0.pt", sha256="0" * 64), "which are not there"),
    ("remeasure", dict(weights=None), "no test result"),
    ("test", dict(weights=None, test={}), "tested already"),
])
def test_a_card_that_cannot_be_tested_or_remeasured_is_one_line(action, fields, reason, tmp_path, capsys):
    err = _usage_error(capsys, ["protocol", action, str(_card(tmp_path, **fields))])
    assert err.startswith(f"blocksparse_utils.py protocol {action}: error: ") and reason in err


def test_v2_next_with_report_renders_the_report_after_every_step_and_stops_when_the_walk_does(monkeypatch, capsys):
    done = []
    steps = iter(["a.json", "b.json", None])
    monkeypatch.setattr(cli_protocol.protocol_v2, "run_next", lambda *a, **k: done.append("step") or next(steps))
    monkeypatch.setattr(cli_protocol, "_v2_compare", lambda: done.append("compare"))
    monkeypatch.setattr(cli_protocol, "_v2_report", lambda: done.append("report") or "block")
    main(["protocol", "v2-next", "--split-at", "layer3", "--max-steps", "5", "--report"])
    assert done == ["step", "compare", "report", "step", "compare", "report", "step"]
    done.clear()
    steps = iter(["c.json"])
    main(["protocol", "v2-next", "--split-at", "layer3"])  # without --report: the step alone
    assert done == ["step"]
    assert "wrote c.json" in capsys.readouterr().out


def test_v2_sensitivity_keeps_a_finished_run_and_trains_only_what_is_missing(tmp_path, monkeypatch, capsys):
    """``make protocol-v2`` runs every subject's command again when it resumes: a subject whose run is
    done is reported, not trained again; one without a run is trained."""
    from blocksparse import protocol_v2, report_v2
    import pandas as pd
    subjects = [dict(family="reference", split_at=None), dict(family="bottleneck", split_at="layer3")]
    monkeypatch.setattr(protocol_v2, "sensitivity_subjects", lambda v1, v2: subjects)
    monkeypatch.setattr(protocol_v2, "SENSITIVITY_DIR", tmp_path)
    monkeypatch.setattr(cli_protocol, "results_dir", lambda: tmp_path / "results")
    monkeypatch.setattr(report_v2, "sensitivity_table", lambda subjects, long: pd.DataFrame(dict(n=[len(long)])))
    (tmp_path / "reference_seed0.json").write_text(json.dumps(dict(family="reference", split_at=None, sensitivity=True)))
    trained = []

    def run(subject, state_dir=None):
        trained.append(subject["family"])
        return tmp_path / "new.json"
    monkeypatch.setattr(protocol_v2, "sensitivity_run", run)
    main(["protocol", "v2-sensitivity", "--family", "reference"])
    assert trained == [] and "done already:" in capsys.readouterr().out
    main(["protocol", "v2-sensitivity", "--family", "bottleneck"])
    assert trained == ["bottleneck"]
