"""Randomly initialised models of named architectures, for timing and memory at the paper's scale without
downloading anything. The configs are written here from the models' published config.json values;
accuracy on them is meaningless, time and memory are real. The tokenizer is the embedded model's (its ids
fit every vocabulary here).

    from shapes import random_model; loaded = random_model("qwen2.5-7b", "cuda", "bfloat16")
"""

from __future__ import annotations

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from seal_lm.models import LoadedModel, resolve_source

SHAPES = {
    "qwen2.5-0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True),
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=64, vocab_size=128256,
                         max_position_embeddings=131072, rope_theta=500000.0, rms_norm_eps=1e-5,
                         tie_word_embeddings=True,
                         rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                       "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
    "qwen2.5-7b": dict(model_type="qwen2", hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064, max_position_embeddings=131072,
                       rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False),
}


def random_model(shape: str, device: str = "cpu", dtype: str = "bfloat16", seed: int = 0) -> LoadedModel:
    """`shape`'s architecture with random weights, built directly on `device` in `dtype`, frozen, with the
    embedded model's tokenizer."""
    values = dict(SHAPES[shape])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    tokenizer = AutoTokenizer.from_pretrained(resolve_source("embedded"))
    config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, name=f"{shape} (random)", source=shape)


def save_random_model(shape: str, directory: str, dtype: str = "bfloat16") -> str:
    """`shape` with random weights saved as a model directory (weights and tokenizer), for commands that take a
    model.name; returns the directory."""
    loaded = random_model(shape, "cpu", dtype)
    loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    return directory


def weight_bytes(loaded: LoadedModel) -> int:
    return sum(p.numel() * p.element_size() for p in loaded.model.parameters())
