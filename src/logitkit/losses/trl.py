"""TRL's ``SFTTrainer`` with the fused EMO / TaiLr / CE losses.

Importing this module imports ``trl`` (the ``finetune`` extra); ``import logitkit.losses`` does not.
``SFTTrainer`` (TRL >= 1.0) computes cross-entropy from a fused LM head of its own
(``outputs.log_probs``), so a model patched with ``patch_causal_lm`` would silently train with
cross-entropy there (``patch_causal_lm`` now refuses that with an error). ``FusedLossSFTTrainer``
is ``SFTTrainer`` with one change: the loss is ``loss`` (CE by default), computed inside the
model's forward by ``patch_causal_lm``, so the logits are never formed in training::

    from logitkit.losses import TaiLrLoss
    from logitkit.losses.trl import FusedLossSFTTrainer
    trainer = FusedLossSFTTrainer(model=model, args=SFTConfig(...), train_dataset=data,
                                  loss=TaiLrLoss(0.8, threshold=0.2))

Everything else is TRL's: dataset preparation (chat templates, packing, ``completion_only_loss``,
``assistant_only_loss``: their masks become ``-100`` labels, which the loss ignores), PEFT
(``peft_config=...``, or a ``PeftModel``; ``modules_to_save=["lm_head"]`` works, LoRA on
``lm_head`` is refused by SFTTrainer itself: ``logitkit.losses.hf.FusedLossTrainer`` fuses it
exactly), gradient accumulation (sum over the accumulated tokens / ``num_items_in_batch``),
token averaging across processes, the MoE router loss (``router_aux_loss_coef``, weighted as
``SFTTrainer`` weights it), and the ``num_tokens`` / ``aux_loss`` metrics.
``mean_token_accuracy`` and ``entropy`` are logged in evaluation only (they need the logits,
which training never forms).
TRL's preference and RL trainers (DPO, KTO, GRPO, RLOO, reward) score whole sequences with
their own objectives and have no token-level loss to replace: they are out of scope.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from logitkit._utils import require
from logitkit.losses.causal_lm import _aux_loss_coefficient, patch_causal_lm
from logitkit.losses.modules import OutputLoss

trl = require("trl", extra="finetune", purpose="logitkit.losses.trl (SFTTrainer)")


class FusedLossSFTTrainer(trl.SFTTrainer):
    """``trl.SFTTrainer`` whose loss is ``loss`` (CE by default), fused in the model's forward.

    ``FusedLossSFTTrainer(model=..., args=SFTConfig(...), ..., loss=EMOLoss(...),
    chunk_size=None)``; every other argument is ``SFTTrainer``'s (``model`` may be a model id
    or path, as there). After TRL has prepared the model (PEFT included), it is patched
    (``patch_causal_lm(model, loss, chunk_size=chunk_size)``), and the training loss is, with
    ``h`` the final hidden states and Hugging Face's shift::

        loss.linear(h[:, :-1], lm_head.weight, labels[:, 1:], reduction="sum") / num_items_in_batch
        (+ router_aux_loss_coef * aux_loss / accumulation steps for a MoE model, as SFTTrainer)

    times the number of processes when ``average_tokens_across_devices`` (DDP then averages).

    Args:
        model: the causal LM, or its id/path (``SFTTrainer`` loads it); required.
        *args: ``trl.SFTTrainer``'s positional arguments (``args``, ...); default none.
        loss: the ``OutputLoss`` to train with, or None for cross-entropy; default None.
        chunk_size: tokens per chunk of the fused loss, or None for automatic; default None.
        **kwargs: ``trl.SFTTrainer``'s keyword arguments; default none.

    Returns:
        A ``trl.SFTTrainer``; ``train()``/``evaluate()`` report the fused loss.

    Raises:
        ValueError: a ``compute_loss_func``, ``loss_type="dft"``, a nonzero
            ``label_smoothing_factor`` (each replaces the loss), sequence parallelism (its
            loss path reduces the model's own loss across ranks), or a model that cannot be
            fused (``patch_causal_lm``).
        TypeError: ``loss`` has no ``linear`` method.

    Reference:
        The loss's own (EMO: Ren et al., ICLR 2024, arXiv 2310.04691; TaiLr: Ji et al., ICLR
        2023, arXiv 2302.13344); the training loop is TRL's ``SFTTrainer``.

    Example:
        >>> import tempfile, datasets, tokenizers, transformers
        >>> from trl import SFTConfig
        >>> from logitkit.losses import TaiLrLoss
        >>> from logitkit.losses.trl import FusedLossSFTTrainer
        >>> config = transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2, vocab_size=16,
        ...                                  n_positions=8, bos_token_id=0, eos_token_id=0)
        >>> model = transformers.GPT2LMHeadModel(config)  # tiny, random weights
        >>> words = tokenizers.models.WordLevel({f"t{i}": i for i in range(16)}, unk_token="t1")
        >>> tokenizer = transformers.PreTrainedTokenizerFast(
        ...     tokenizer_object=tokenizers.Tokenizer(words), pad_token="t0", eos_token="t0")
        >>> data = datasets.Dataset.from_list([{"input_ids": [1, 2, 3, 4]}] * 4)  # tokenized
        >>> out = tempfile.TemporaryDirectory()
        >>> args = SFTConfig(out.name, max_steps=2, report_to=[], use_cpu=True)
        >>> trainer = FusedLossSFTTrainer(model=model, args=args, train_dataset=data,
        ...                               processing_class=tokenizer,
        ...                               loss=TaiLrLoss(0.8, threshold=0.2))
        >>> # Not run here: training prints progress and writes checkpoints under out.name.
        >>> trainer.train()  # doctest: +SKIP
        >>> out.cleanup()
    """

    def __init__(self, model: nn.Module | str, *args: Any, loss: OutputLoss | None = None,
                 chunk_size: int | None = None, **kwargs: Any) -> None:
        training_args = kwargs.get("args", args[0] if args else None)
        replaced = []
        if kwargs.get("compute_loss_func") is not None:
            replaced.append("compute_loss_func")
        if getattr(training_args, "loss_type", "nll") != "nll":
            replaced.append(f"loss_type={training_args.loss_type!r}")
        if getattr(training_args, "label_smoothing_factor", 0.0):
            replaced.append("label_smoothing_factor")
        if replaced:
            raise ValueError(f"FusedLossSFTTrainer trains with loss=...; {', '.join(replaced)} "
                             "would replace it (label smoothing also needs the logits the fused "
                             "loss never forms): leave them at their defaults")
        if loss is not None and not callable(getattr(loss, "linear", None)):
            raise TypeError(f"loss must be an OutputLoss (with a .linear method), got "
                            f"{type(loss).__name__}")
        try:
            super().__init__(model, *args, **kwargs)
        except ValueError as error:
            if "lm_head" not in str(error):
                raise
            raise ValueError(f"{error} (SFTTrainer refuses any adapter on the output layer. "
                             "logitkit fuses LoRA on lm_head exactly in "
                             "logitkit.losses.hf.FusedLossTrainer(model=get_peft_model(model, "
                             "config), ...), the transformers.Trainer version; with "
                             "SFTTrainer, train the head with modules_to_save=['lm_head'])"
                             ) from None
        parallelism = getattr(self.accelerator, "parallelism_config", None)
        if parallelism is not None and getattr(parallelism, "sp_enabled", False):
            raise ValueError("FusedLossSFTTrainer does not support sequence parallelism: "
                             "SFTTrainer reduces the model's own loss across ranks there")
        patch_causal_lm(self.model, loss, chunk_size=chunk_size)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any],
                     return_outputs: bool = False,
                     num_items_in_batch: int | torch.Tensor | None = None) -> Any:
        """The fused loss of ``inputs`` (see the class docstring), with SFTTrainer's metrics."""
        mode = "train" if self.model.training else "eval"
        inputs = {**inputs, "use_cache": False}
        if self.aux_loss_enabled:
            inputs["output_router_logits"] = True
        if num_items_in_batch is not None:
            inputs["num_items_in_batch"] = num_items_in_batch
        outputs = model(**inputs)
        loss = outputs["loss"]
        aux = outputs.get("aux_loss") if self.aux_loss_enabled else None
        if aux is not None:  # the model's own weight of it, applied by the patched forward
            loss = loss - _aux_loss_coefficient(self.model) * aux
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        if aux is not None:  # SFTTrainer's weighting under accumulation
            steps = self.current_gradient_accumulation_steps if num_items_in_batch is not None \
                else 1
            loss = loss + self.router_aux_loss_coef * aux / steps
        self._log_metrics(mode, inputs, outputs, aux)
        return (loss, outputs) if return_outputs else loss

    def _log_metrics(self, mode: str, inputs: dict[str, Any], outputs: Any,
                     aux: torch.Tensor | None) -> None:
        """``num_tokens`` (train) and ``aux_loss`` as SFTTrainer logs them; in evaluation also
        ``mean_token_accuracy`` and ``entropy`` over the counted tokens, from the logits."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        if mode == "train":
            if "attention_mask" in inputs:
                tokens = gather(inputs["attention_mask"].sum()).sum().item()
            else:
                positions = inputs["position_ids"]
                tokens = gather(torch.tensor(positions.size(1), device=positions.device))
                tokens = tokens.sum().item()
            self._total_train_tokens += tokens // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]
        if aux is not None:
            metrics["aux_loss"].append(gather(aux.detach()).mean().item())
        logits = outputs.get("logits")
        labels = inputs.get("labels")
        if logits is None or labels is None or logits.shape[1] != labels.shape[1]:
            return
        with torch.no_grad():
            logp = logits[:, :-1].float().log_softmax(-1)
            target = labels[:, 1:].to(logp.device)
            counted = target != -100
            correct = (logp.argmax(-1) == target) & counted
            entropy = -(logp.exp() * logp).sum(-1)[counted]
            total = gather(counted.sum()).sum()
            if total > 0:
                metrics["mean_token_accuracy"].append((gather(correct.sum()).sum() / total).item())
                metrics["entropy"].append((gather(entropy.sum()).sum() / total).item())


__all__ = ["FusedLossSFTTrainer"]
