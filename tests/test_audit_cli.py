"""`logitkit audit` end to end, the summary text and the plot."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from logitkit.audit import check_argmaxable
from logitkit.audit.cli import parse_classes
from logitkit.audit.report import plot_norms, summary
from logitkit.cli import main

BLOG_W = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)


def test_cli_audits_a_checkpoint_and_writes_json_and_plot(tmp_path, capsys):
    path = tmp_path / "head.npy"
    np.save(path, BLOG_W)
    out, png = tmp_path / "out.json", tmp_path / "norms.png"
    assert main(["audit", str(path), "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "unargmaxable: 1" in printed and "unargmaxable ids: 4" in printed
    assert "-|w_i|^2 / 2" in printed  # the remedies are explained
    payload = json.loads(out.read_text())
    assert payload["unargmaxable"] == [4]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bias_box_classes_and_method(tmp_path, capsys):
    path = tmp_path / "head.safetensors"
    save_file({"lm_head.weight": BLOG_W, "lm_head.bias": np.array([0, 0, 0, 0, 1], np.float32)},
              str(path))
    out = tmp_path / "out.json"
    assert main(["audit", str(path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["counts"]["unargmaxable"] == 0
    assert main(["audit", str(path), "--no-bias", "--classes", "2-4", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["n_classes"] == 3 and payload["unargmaxable"] == [4]
    assert main(["audit", str(path), "--no-bias", "--method", "fast", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["unknown"] == [4]
    assert main(["audit", str(path), "--box", "0.1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["box"] == 0.1
    capsys.readouterr()


def test_cli_errors_are_clean(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing.npy")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    np.save(tmp_path / "w.npy", BLOG_W)
    assert main(["audit", str(tmp_path / "w.npy"), "--classes", "3-x"]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "w.npy"), "--classes", "9"]) == 2


def test_parse_classes():
    assert parse_classes("0,5,10-12") == [0, 5, 10, 11, 12]
    with pytest.raises(ValueError):
        parse_classes("5-3")


def test_summary_lists_tokens_and_plot_marks_statuses(tmp_path):
    class Vocab:
        def id_to_token(self, k):
            return f"tok{k}"

    result = check_argmaxable(BLOG_W, show_progress=False)
    text = summary(result, Vocab())
    assert "4 'tok4'" in text and "certified fast: 4" in text and "by exact LP: 0" in text
    assert plot_norms(result, BLOG_W, tmp_path / "p.png").stat().st_size > 1000
