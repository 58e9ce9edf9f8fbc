"""`logitkit audit` end to end: summary, JSON with or without evidence, margin plot, exit codes."""

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from logitkit.audit import check_argmaxable
from logitkit.audit.cli import parse_classes, parse_statuses
from logitkit.audit.report import plot_margins, summary
from logitkit.cli import main

BLOG_W = np.array([[1.0, 2.0], [2.0, 1.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], np.float32)


def test_cli_audits_a_checkpoint_and_writes_json_and_plot(tmp_path, capsys):
    path = tmp_path / "head.npy"
    np.save(path, BLOG_W)
    out, png = tmp_path / "out.json", tmp_path / "margins.png"
    assert main(["audit", str(path), "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "unargmaxable: 1" in printed and "unargmaxable ids: 4" in printed
    assert "tolerance 1e-09" in printed and "array (float32 -> float64)" not in printed
    assert "certificate: depth" in printed  # the listed class's evidence and its margin
    assert "-|w_i|^2 / 2" in printed  # the remedies are explained
    payload = json.loads(out.read_text())
    assert payload["unargmaxable"] == [4] and "certificates" not in payload
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_json_keeps_evidence_on_request(tmp_path, capsys):
    np.save(tmp_path / "w.npy", BLOG_W)
    out = tmp_path / "out.json"
    assert main(["audit", str(tmp_path / "w.npy"), "--json", str(out), "--evidence"]) == 0
    payload = json.loads(out.read_text())
    assert set(payload["witnesses"]) == {"0", "1", "2", "3"}
    z = np.array(payload["witnesses"]["1"])
    assert np.argmax(BLOG_W.astype(np.float64) @ z) == 1
    assert payload["certificates"]["4"]["kind"] == "depth"
    assert main(["audit", str(tmp_path / "w.npy"), "--evidence"]) == 2  # needs --json
    assert "--evidence needs --json" in capsys.readouterr().err


@pytest.mark.parametrize(("fail_on", "code"), [("unargmaxable", 1), ("tie", 0),
                                                ("tie,unargmaxable", 1), ("unknown", 0)])
def test_fail_on_sets_the_exit_status(tmp_path, capsys, fail_on, code):
    np.save(tmp_path / "w.npy", BLOG_W)
    assert main(["audit", str(tmp_path / "w.npy"), "--fail-on", fail_on]) == code
    assert ("failing (--fail-on): 1 unargmaxable" in capsys.readouterr().err) == (code == 1)


def test_fail_on_ties_and_unknown(tmp_path, capsys):
    np.save(tmp_path / "w.npy", np.vstack([BLOG_W, BLOG_W[:1]]))  # class 5 duplicates class 0
    assert main(["audit", str(tmp_path / "w.npy"), "--fail-on", "tie"]) == 1
    printed = capsys.readouterr().out
    assert "duplicate rows (1 groups): [0 5]" in printed and "tie:" in printed
    assert main(["audit", str(tmp_path / "w.npy"), "--method", "fast", "--fail-on",
                 "unknown"]) == 1
    assert main(["audit", str(tmp_path / "w.npy"), "--fail-on", "broken"]) == 2
    assert "--fail-on: expected" in capsys.readouterr().err


def test_outputs_are_checked_before_the_audit(tmp_path, capsys, monkeypatch):
    np.save(tmp_path / "w.npy", BLOG_W)

    def never(*args, **kwargs):
        raise AssertionError("the audit ran before the outputs were checked")

    monkeypatch.setattr("logitkit.audit.argmaxable.check_argmaxable", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for flag in ("--json", "--plot"):
        assert main(["audit", str(tmp_path / "w.npy"), flag, str(blocker / "out")]) == 2
        err = capsys.readouterr().err
        assert "cannot write" in err and err.count("logitkit audit: error:") == 1


def test_cli_bias_box_classes_and_method(tmp_path, capsys):
    path = tmp_path / "head.safetensors"
    save_file({"lm_head.weight": BLOG_W, "lm_head.bias": np.array([0, 0, 0, 0, 1], np.float32)},
              str(path))
    out = tmp_path / "out.json"
    assert main(["audit", str(path), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["counts"]["unargmaxable"] == 0
    assert "lm_head.weight (float32) in head.safetensors, bias lm_head.bias" in \
        capsys.readouterr().out
    assert main(["audit", str(path), "--no-bias", "--classes", "2-4", "--json", str(out)]) == 0
    payload = json.loads(out.read_text())
    assert payload["n_classes"] == 3 and payload["unargmaxable"] == [4]
    assert main(["audit", str(path), "--no-bias", "--method", "fast", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["unknown"] == [4]
    assert main(["audit", str(path), "--box", "0.1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["settings"]["box"] == 0.1
    capsys.readouterr()


def test_cli_errors_are_clean_and_quoted_once(tmp_path, capsys):
    assert main(["audit", str(tmp_path / "missing.npy")]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    np.save(tmp_path / "w.npy", BLOG_W)
    assert main(["audit", str(tmp_path / "w.npy"), "--classes", "3-x"]) == 2
    assert "--classes" in capsys.readouterr().err
    assert main(["audit", str(tmp_path / "w.npy"), "--classes", "9"]) == 2
    save_file({"encoder.weight": BLOG_W}, str(tmp_path / "x.safetensors"))
    assert main(["audit", str(tmp_path / "x.safetensors"), "--key", "lm_head.weight"]) == 2
    err = capsys.readouterr().err
    assert "error: key 'lm_head.weight' not found" in err and "error: \"" not in err


def test_a_wrong_key_lists_the_closest_tensors_not_every_one(tmp_path, capsys):
    tensors = {f"model.layers.{i}.{part}.weight": BLOG_W for i in range(20)
               for part in ("q_proj", "k_proj", "v_proj", "o_proj", "mlp")}
    tensors["lm_head.weight"] = BLOG_W
    save_file(tensors, str(tmp_path / "big.safetensors"))
    assert main(["audit", str(tmp_path / "big.safetensors"), "--key", "lm_haed.weight"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("logitkit audit: error: key 'lm_haed.weight' "
                                                   "not found in ")
    assert "closest: 'lm_head.weight'; 101 tensors, e.g. " in err
    assert err.count("model.layers.") <= 5 and len(err) < 400
    del tensors["lm_head.weight"]
    save_file(tensors, str(tmp_path / "headless.safetensors"))
    assert main(["audit", str(tmp_path / "headless.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "pass --key NAME; 100 tensors, e.g. " in err and err.count("model.layers.") <= 5


def test_an_output_under_a_file_names_the_file(tmp_path, capsys):
    np.save(tmp_path / "w.npy", BLOG_W)
    (tmp_path / "afile").write_text("x")
    png = tmp_path / "afile" / "x.png"
    assert main(["audit", str(tmp_path / "w.npy"), "--plot", str(png)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'afile'} is a file, not a folder" in err and "File exists" not in err


def test_help_does_not_import_heavy_modules():
    code = ("import sys; from logitkit.cli import main\n"
            "try:\n    main(['audit', '--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'transformers') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip().endswith("[]")


def test_parsers():
    assert parse_classes("0,5,10-12") == [0, 5, 10, 11, 12]
    with pytest.raises(ValueError):
        parse_classes("5-3")
    assert parse_statuses("tie, unargmaxable") == ["tie", "unargmaxable"]
    with pytest.raises(ValueError, match="--fail-on"):
        parse_statuses("argmaxable")


def test_summary_lists_tokens_and_plot_marks_statuses(tmp_path):
    class Vocab:
        def id_to_token(self, k):
            return f"tok{k}"

    result = check_argmaxable(BLOG_W, show_progress=False)
    text = summary(result, Vocab(), source="test head")
    assert "4 'tok4'" in text and "fast 4" in text and "exact 1" in text and "test head" in text
    assert plot_margins(result, BLOG_W, tmp_path / "p.png").stat().st_size > 1000


def test_cli_audits_the_head_it_read_in_place(tmp_path, capsys, monkeypatch):
    """The head the CLI reads is its own: it asks for no scaled copy (``copy=False``), and the
    verdicts are those of the library's default."""
    import logitkit.audit.argmaxable as argmaxable_module

    weight = np.vstack([BLOG_W, BLOG_W[:1]]) * np.float32(40.0)  # scaled by 2^-5; a twin
    save_file({"lm_head.weight": weight}, str(tmp_path / "head.safetensors"))
    calls, original = [], argmaxable_module.check_argmaxable

    def recording(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(argmaxable_module, "check_argmaxable", recording)
    out = tmp_path / "out.json"
    assert main(["audit", str(tmp_path / "head.safetensors"), "--json", str(out)]) == 0
    assert calls and calls[0]["copy"] is False
    payload = json.loads(out.read_text())
    expected = check_argmaxable(weight, show_progress=False)
    assert payload["unargmaxable"] == expected.unargmaxable.tolist() == [4]
    assert payload["tie"] == expected.classes[expected.status == "tie"].tolist() == [0, 5]
