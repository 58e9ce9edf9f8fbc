import json
import subprocess
import sys

import pytest

from logitkit import __version__, cli
from logitkit._utils import MissingExtra
from logitkit.cli import main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for verb in ("audit", "thresholds", "pairs", "reproduce", "bench"):
        assert verb in text


def test_version_matches_package_metadata(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"logitkit {__version__}"
    assert __version__ != "0.0.0+unknown"


@pytest.mark.parametrize("module", ["logitkit", "logitkit.cli"])
def test_runs_as_a_module(module):
    done = subprocess.run([sys.executable, "-m", module, "--version"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("logitkit ")


def test_help_imports_no_heavy_library():
    code = ("import sys; from logitkit.cli import main\ntry:\n    main(['--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'numpy', 'matplotlib', 'transformers', "
            "'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0
    assert done.stderr.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("verb", sorted(cli.VERBS))
def test_a_verbs_help_imports_only_what_it_needs(verb):
    code = (f"import sys; from logitkit.cli import main\ntry:\n    main([{verb!r}, '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'matplotlib', 'transformers', "
            "'sentence_transformers', 'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_unknown_verb_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def _verb_raising(error):
    def handler(args):
        raise error
    return handler


@pytest.mark.parametrize("error, expected", [
    (MissingExtra('drawing plots needs matplotlib: pip install "logitkit[plots]"'),
     'drawing plots needs matplotlib: pip install "logitkit[plots]"'),
    (KeyError("no tensor named lm_head.weight"), "no tensor named lm_head.weight"),
    (PermissionError(13, "Permission denied", "/root/o.json"), "/root/o.json: Permission denied"),
    (ValueError("--classes: bad"), "--classes: bad"),
])
def test_user_errors_print_one_clean_line_and_exit_2(monkeypatch, capsys, error, expected):
    monkeypatch.setattr("logitkit.thresholds.cli.run", _verb_raising(error))
    assert main(["thresholds", "apply", "--probs", "p.npy", "--weights", "w.npy"]) == 2
    assert capsys.readouterr().err == f"logitkit thresholds: error: {expected}\n"


def test_ctrl_c_exits_130_without_a_traceback(monkeypatch, capsys):
    monkeypatch.setattr("logitkit.thresholds.cli.run", _verb_raising(KeyboardInterrupt()))
    assert main(["thresholds", "apply", "--probs", "p.npy", "--weights", "w.npy"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_the_benchmarks_ship_inside_the_package():
    from logitkit import bench

    assert {"audit", "losses", "matching", "optim", "thresholds"} <= set(bench.available())
    assert "harness" not in bench.available()
    assert bench.command("losses", None, True)[1:] == ["-m", "logitkit.benchmarks.losses",
                                                        "--quick"]


def test_bench_names_a_missing_baseline_before_running(monkeypatch, capsys, tmp_path):
    from logitkit import bench

    real = bench.importlib.import_module

    def missing(name):
        if name.startswith("logitkit.benchmarks."):
            raise ModuleNotFoundError("No module named 'lion_pytorch'", name="lion_pytorch")
        return real(name)

    monkeypatch.setattr(bench.importlib, "import_module", missing)
    assert main(["bench", "optim", "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (
        "logitkit bench: error: benchmark 'optim' needs the Python package 'lion_pytorch', "
        'which is not installed: pip install "logitkit[bench]"\n')


@pytest.mark.slow
def test_bench_runs_a_bundled_benchmark_outside_the_source_tree(tmp_path):
    done = subprocess.run([sys.executable, "-m", "logitkit", "bench", "thresholds", "--quick",
                           "--out", "out"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((tmp_path / "out" / "thresholds.json").read_text())["benchmark"]


def test_bench_rejects_unknown_names(capsys, tmp_path):
    assert main(["bench", "no_such_benchmark", "--out", str(tmp_path)]) == 2
    assert "unknown benchmark" in capsys.readouterr().err


def test_bench_runs_scripts_and_saves_their_json(tmp_path, capsys):
    scripts = tmp_path / "benchmarks"
    scripts.mkdir()
    (scripts / "harness.py").write_text("raise SystemExit('the harness is not a benchmark')\n")
    (scripts / "tiny.py").write_text(
        "import json, sys\nprint('noise')\n"
        "print(json.dumps({'benchmark': 'tiny', 'quick': '--quick' in sys.argv}))\n"
    )
    (scripts / "broken.py").write_text("raise SystemExit(3)\n")
    out = tmp_path / "out"
    assert main(["bench", "tiny", "--quick", "--dir", str(scripts), "--out", str(out)]) == 0
    assert json.loads((out / "tiny.json").read_text()) == {"benchmark": "tiny", "quick": True}
    assert main(["bench", "all", "--dir", str(scripts), "--out", str(out)]) == 1
    assert "failed: ['broken']" in capsys.readouterr().err
