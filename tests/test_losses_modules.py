"""Module wrappers and the Hugging Face adapters (tiny random GPT-2, no downloads)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from logitkit.losses import (
    CrossEntropyLoss,
    EMOLoss,
    TaiLrLoss,
    causal_lm_loss,
    emo_loss,
    emo_mle_loss,
    linear_emo_loss,
    linear_tailr_loss,
    make_compute_loss_func,
    tailr_loss,
)

transformers = pytest.importorskip("transformers")

IGNORE = -100


def naive_shifted_emo(logits, labels, embedding):
    """EMO on shifted positions with an explicit V x V cosine cost and a loop over tokens."""
    unit = embedding / embedding.norm(dim=1, keepdim=True)
    cost = 1.0 - unit @ unit.T
    values = []
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1] - 1):
            t = int(labels[b, i + 1])
            if t != IGNORE:
                values.append((torch.softmax(logits[b, i].float(), 0) * cost[:, t]).sum())
    return torch.stack(values).mean()


@pytest.fixture(scope="module")
def tiny_gpt2():
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        n_layer=1, n_embd=32, n_head=2, vocab_size=61, n_positions=16, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config)


@pytest.fixture
def batch():
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 61, (3, 12), generator=gen)
    labels = ids.clone()
    labels[0, :5] = IGNORE
    mask = torch.ones_like(ids)
    mask[2, -3:] = 0
    labels[2, -3:] = IGNORE
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def grads_of(model, loss):
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_cross_entropy_reproduces_the_models_own_loss_and_grads(tiny_gpt2, batch):
    reference = tiny_gpt2(**batch).loss
    ref_grads = grads_of(tiny_gpt2, reference)
    ours = causal_lm_loss(tiny_gpt2, batch, chunk_size=5)
    our_grads = grads_of(tiny_gpt2, ours)
    torch.testing.assert_close(ours, reference)
    assert ref_grads.keys() == our_grads.keys()
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)


def test_num_items_in_batch_divides_the_sum(tiny_gpt2, batch):
    reference = tiny_gpt2(**batch, num_items_in_batch=torch.tensor(50)).loss
    ours = causal_lm_loss(tiny_gpt2, batch, num_items_in_batch=torch.tensor(50))
    torch.testing.assert_close(ours, reference)


def test_emo_through_the_model_matches_a_naive_reference(tiny_gpt2, batch):
    embedding = tiny_gpt2.lm_head.weight.detach().clone()
    logits = tiny_gpt2(input_ids=batch["input_ids"],
                       attention_mask=batch["attention_mask"]).logits
    reference = naive_shifted_emo(logits, batch["labels"], embedding)
    ref_grads = grads_of(tiny_gpt2, reference)
    ours = causal_lm_loss(tiny_gpt2, batch, EMOLoss(embedding), chunk_size=7)
    our_grads = grads_of(tiny_gpt2, ours)
    torch.testing.assert_close(ours, reference)
    for name in ref_grads:
        torch.testing.assert_close(our_grads[name], ref_grads[name], rtol=1e-4, atol=1e-6)


def test_compute_loss_func_for_trainer(tiny_gpt2, batch):
    outputs = tiny_gpt2(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    reference = tiny_gpt2(**batch).loss
    compute = make_compute_loss_func()
    torch.testing.assert_close(compute(outputs, batch["labels"]), reference)
    scaled = compute(outputs, batch["labels"], num_items_in_batch=40)
    counted = int((batch["labels"][:, 1:] != IGNORE).sum())
    torch.testing.assert_close(scaled, reference * counted / 40)
    tailr = make_compute_loss_func(TaiLrLoss(0.7))
    expected = tailr_loss(outputs.logits[:, :-1], batch["labels"][:, 1:], gamma=0.7)
    torch.testing.assert_close(tailr(outputs, batch["labels"]), expected)


def test_modules_match_the_functional_losses():
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 5, 9, generator=gen)
    target = torch.randint(0, 9, (4, 5), generator=gen)
    target[0, 0] = IGNORE
    embedding = torch.randn(9, 3, generator=gen)
    ce = F.cross_entropy(logits.reshape(-1, 9), target.reshape(-1), reduction="none")
    torch.testing.assert_close(CrossEntropyLoss(reduction="none")(logits, target),
                               ce.reshape(4, 5))
    torch.testing.assert_close(EMOLoss(embedding)(logits, target),
                               emo_loss(logits, target, embedding))
    torch.testing.assert_close(EMOLoss(embedding, mle_weight="adaptive")(logits, target),
                               emo_mle_loss(logits, target, embedding))
    module = TaiLrLoss(0.2, threshold=0.1, reduction="sum")
    torch.testing.assert_close(module(logits, target),
                               tailr_loss(logits, target, gamma=0.2, threshold=0.1,
                                          reduction="sum"))
    module.gamma = 0.9
    torch.testing.assert_close(module(logits, target, reduction="mean"),
                               tailr_loss(logits, target, gamma=0.9, threshold=0.1))
    hidden, weight = torch.randn(4, 5, 6, generator=gen), torch.randn(9, 6, generator=gen)
    torch.testing.assert_close(module.linear(hidden, weight, target, chunk_size=3),
                               linear_tailr_loss(hidden, weight, target, gamma=0.9,
                                                 threshold=0.1, reduction="sum"))


def test_emo_module_keeps_a_unit_buffer_and_validates():
    embedding = torch.randn(9, 3) * 5
    module = EMOLoss(embedding)
    assert "unit_embedding" in module.state_dict()
    assert not any(True for _ in module.parameters())
    torch.testing.assert_close(module.unit_embedding.norm(dim=1), torch.ones(9))
    with pytest.raises(ValueError, match="mle_weight"):
        EMOLoss(embedding, mle_weight=2.0)
    with pytest.raises(ValueError, match="reduction"):
        TaiLrLoss(0.5, reduction="avg")
    with pytest.raises(ValueError, match="gamma"):
        TaiLrLoss(-0.5)


def test_emo_module_passes_further_options_to_the_functional_losses(monkeypatch):
    """Keywords such as adaptive_cap reach emo_loss / emo_mle_loss / linear_emo_loss unchanged,
    both through forward (logits) and linear (fused), and are checked at construction."""
    import logitkit.losses.modules as modules

    calls = []

    def recording(real):
        def wrapper(*args, marker, **kwargs):
            calls.append((real.__name__, marker))
            return real(*args, **kwargs)
        return wrapper

    for name in ("emo_loss", "emo_mle_loss", "linear_emo_loss_of_cost"):
        monkeypatch.setattr(modules, name, recording(getattr(modules, name)))
    gen = torch.Generator().manual_seed(3)
    embedding, logits = torch.randn(9, 3, generator=gen), torch.randn(5, 9, generator=gen)
    hidden, weight = torch.randn(5, 4, generator=gen), torch.randn(9, 4, generator=gen)
    target = torch.randint(0, 9, (5,), generator=gen)
    mixed = EMOLoss(embedding, mle_weight=0.25, marker="a")  # construction evaluates it once
    torch.testing.assert_close(mixed(logits, target),
                               emo_mle_loss(logits, target, embedding, mle_weight=0.25))
    mixed.linear(hidden, weight, target)
    EMOLoss(embedding, marker="b")(logits, target)
    assert calls == [("emo_mle_loss", "a"), ("emo_mle_loss", "a"),
                     ("linear_emo_loss_of_cost", "a"),
                     ("emo_loss", "b"), ("emo_loss", "b")]
    assert "marker='a'" in repr(mixed)
    monkeypatch.undo()
    with pytest.raises(TypeError, match="no_such_option"):
        EMOLoss(embedding, mle_weight=0.5, no_such_option=1)


def test_emo_module_prepares_its_cost_once_and_again_after_a_change(monkeypatch):
    import logitkit.losses.modules as modules

    prepared = []
    real = modules.cost_for
    monkeypatch.setattr(modules, "cost_for",
                        lambda *args: prepared.append(1) or real(*args))
    gen = torch.Generator().manual_seed(4)
    embedding = torch.randn(9, 3, generator=gen)
    hidden, weight = torch.randn(5, 4, generator=gen), torch.randn(9, 4, generator=gen)
    target = torch.randint(0, 9, (5,), generator=gen)
    module = EMOLoss(embedding, mle_weight="adaptive")
    first = module.linear(hidden, weight, target)
    torch.testing.assert_close(module.linear(hidden, weight, target), first)
    assert len(prepared) == 1  # the norms of a frozen embedding are taken once
    module.linear(hidden.double(), weight.double(), target)  # another dtype: prepared again
    assert len(prepared) == 2
    with torch.no_grad():
        module.unit_embedding[:4] = module.unit_embedding[4:8]  # an in-place change
    changed = module.linear(hidden, weight, target)
    assert len(prepared) == 3
    torch.testing.assert_close(changed, linear_emo_loss(hidden, weight, target,
                                                        module.unit_embedding.clone(),
                                                        mle_weight="adaptive"))
