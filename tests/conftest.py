"""Shared fixtures: a tiny, randomly initialised Llama built from a config (no download), and the
embedded SmolLM2-135M model for integration tests (marked slow).

SEAL_TEST_DEVICE=cuda runs the model-computing tests on a GPU (default cpu): the same assertions
then check the CUDA paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from seal_lm.domains.knowledge.data import load_demo_corpus
from seal_lm.models import LoadedModel, ModelSettings, load_model

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL = ["<pad>", "<|im_start|>", "<|im_end|>"]
TEST_DEVICE = os.environ.get("SEAL_TEST_DEVICE", "cpu")


def build_tiny_model(directory: Path, chat: bool = True, seed: int = 0) -> Path:
    """A 2-layer Llama with a byte-level BPE tokenizer trained on the demo corpus, saved to `directory`."""
    texts = [f"{p.title}\n{p.context}\n" + "\n".join(q.question for q in p.questions)
             for split in ("train", "validation") for p in load_demo_corpus(split)]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<|im_end|>",
                                        bos_token="<|im_start|>")
    if chat:
        tokenizer.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-chat"))


@pytest.fixture(scope="session")
def tiny_base_model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-base"), chat=False)


@pytest.fixture(scope="session")
def test_device() -> str:
    return TEST_DEVICE


@pytest.fixture(scope="session")
def tiny(tiny_model_dir) -> LoadedModel:
    return load_model(ModelSettings(name=str(tiny_model_dir), device=TEST_DEVICE, dtype="float32"))


@pytest.fixture(scope="session")
def embedded() -> LoadedModel:
    return load_model(ModelSettings(device=TEST_DEVICE))


def assert_same_training(results, others, atol: float = 1e-4) -> None:
    """Two trainings of the same jobs ended alike: each job's epoch losses and its adapter's A and B."""
    for a, b in zip(results, others, strict=True):
        assert a.epoch_losses == pytest.approx(b.epoch_losses, rel=1e-5)
        for name, (wa, wb) in a.adapter.weights.items():
            assert torch.allclose(wa, b.adapter.weights[name][0], atol=atol)
            assert torch.allclose(wb, b.adapter.weights[name][1], atol=atol)


def write_passages(path: Path, count: int) -> Path:
    """The first `count` demo passages in the SEAL grouping, as a user would pass with --data."""
    data = [{"title": p.title, "context": p.context,
             "questions": [{"question": q.question, "answer": q.answers[0]} for q in p.questions]}
            for p in load_demo_corpus("validation")[:count]]
    path.write_text(json.dumps(data))
    return path


@pytest.fixture()
def passages_file(tmp_path) -> Path:
    return write_passages(tmp_path / "passages.json", 2)


class ScriptedGenerator:
    """A generator whose completions come from `answer(prompt, i)` (i counts completions), recording its calls."""

    def __init__(self, answer):
        self.answer, self.calls, self.count = answer, [], 0

    def generate(self, prompts, params, adapters=None):
        self.calls.append((len(prompts), params.n))
        out = []
        for p in prompts:
            outs = []
            for _ in range(params.n):
                outs.append(self.answer(p, self.count))
                self.count += 1
            out.append(outs)
        return out
