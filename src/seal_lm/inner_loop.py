"""The inner loop: LoRA finetuning of the frozen base model on a list of sequences.

Callers hand in a list of jobs and get one result per job; how the jobs are run (one after
another here, many adapters at once later) is this module's business, not theirs. Every job
starts from the untouched base model, and the base model is restored after each job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from peft import LoraConfig, get_peft_model

from seal_lm.adapters import Adapter
from seal_lm.models import LoadedModel


@dataclass
class InnerLoopSettings:
    """LoRA and optimisation settings; defaults are the SEAL paper's knowledge-incorporation ones."""

    rank: int = 32
    alpha: int = 64
    dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"  # every linear projection except the LM head
    learning_rate: float = 1e-3
    epochs: int = 10
    batch_size: int = 1
    max_length: int = 2048  # longer sequences are truncated; shorter ones are never padded to it
    seed: int = 0

    def lora_config(self) -> LoraConfig:
        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        return LoraConfig(
            r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
            bias="none", task_type="CAUSAL_LM",
        )


@dataclass
class TrainJob:
    """Sequences to learn, with the settings to learn them by (None: the updater's defaults)."""

    sequences: Sequence[str]
    settings: InnerLoopSettings | None = None


@dataclass
class TrainResult:
    """The adapter of one job, its mean loss per epoch, and what it cost."""

    adapter: Adapter
    epoch_losses: list[float]
    train_tokens: int  # real (unpadded) tokens processed over all epochs
    seconds: float
    extra: dict = field(default_factory=dict)


class LoraUpdater:
    """Runs inner loops against one shared, frozen base model."""

    def __init__(self, loaded: LoadedModel, settings: InnerLoopSettings | None = None):
        self.loaded = loaded
        self.settings = settings or InnerLoopSettings()

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        return [self._train_one(job) for job in jobs]

    def tokenize(self, sequences: Sequence[str], max_length: int) -> list[list[int]]:
        """Token ids of each sequence, ending with EOS so the model also learns where a fact ends."""
        tokenizer = self.loaded.tokenizer
        out = []
        for text in sequences:
            ids = tokenizer(text, add_special_tokens=True)["input_ids"]
            if tokenizer.eos_token_id is not None:
                ids = ids + [tokenizer.eos_token_id]
            out.append(ids[:max_length])
        return out

    def _train_one(self, job: TrainJob) -> TrainResult:
        settings = job.settings or self.settings
        started = time.perf_counter()
        examples = [ids for ids in self.tokenize(job.sequences, settings.max_length) if len(ids) > 1]
        if not examples:
            raise ValueError("an inner-loop job needs at least one non-empty sequence")
        torch.manual_seed(settings.seed)  # LoRA initialisation and batch order depend on the seed only
        order_rng = torch.Generator().manual_seed(settings.seed)
        model = get_peft_model(self.loaded.model, settings.lora_config())
        try:
            trainable = [p for p in model.parameters() if p.requires_grad]
            optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=0.0)
            steps_per_epoch = math.ceil(len(examples) / settings.batch_size)
            total_steps = steps_per_epoch * settings.epochs
            # Linear decay to zero without warm-up, as the Hugging Face Trainer that SEAL used does.
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 - step / total_steps)
            model.train()
            epoch_losses = []
            for _ in range(settings.epochs):
                permutation = torch.randperm(len(examples), generator=order_rng).tolist()
                losses = []
                for start in range(0, len(examples), settings.batch_size):
                    batch = [examples[i] for i in permutation[start : start + settings.batch_size]]
                    loss = self._loss(model, batch)
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(loss.item())
                epoch_losses.append(sum(losses) / len(losses))
            model.eval()
            adapter = Adapter.from_peft_model(model)
        finally:
            model.unload()
        tokens = sum(len(ids) for ids in examples) * settings.epochs
        return TrainResult(adapter, epoch_losses, tokens, time.perf_counter() - started)

    def _loss(self, model, batch: list[list[int]]) -> torch.Tensor:
        """Causal-LM loss on a right-padded batch, padded only to its own longest sequence."""
        width = max(len(ids) for ids in batch)
        pad = self.loaded.tokenizer.pad_token_id
        device = self.loaded.device
        input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids in batch], device=device)
        attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in batch], device=device)
        labels = input_ids.masked_fill(attention == 0, -100)
        return model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
