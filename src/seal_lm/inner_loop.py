"""The inner loop: LoRA finetuning of the frozen base model on lists of sequences.

Callers hand in a list of jobs and get one adapter per job. Jobs that share the LoRA shape are
trained together: all their adapters live side by side on the one base model (multi_lora.py),
and each optimizer step packs the current batch of every job into dense rows (per-sequence
attention boundaries and position ids, no padding inside a row), so one forward and backward
pass serves every adapter. Each adapter sees exactly what it would see if trained alone: its own
sequences in its own seeded order, its own loss normalisation, its own Adam state and learning
rate schedule. The base model is never modified.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from seal_lm.adapters import Adapter
from seal_lm.config import ConfigError, at_least, one_of
from seal_lm.generation import Prompt, encode_prompt
from seal_lm.linear_cross_entropy import linear_cross_entropy, plain_output_head
from seal_lm.models import LoadedModel
from seal_lm.multi_lora import STRIDED_GRADIENTS_WARNING, MultiLora, TokenRouting, injected
from seal_lm.packed_attention import per_sequence_attention, sequence_bounds
from seal_lm.packed_linear import packed_linears

SCHEDULES = ("linear", "cosine")
LABELS = ("content", "padded")


@dataclass
class InnerLoopSettings:
    """LoRA and optimisation settings of one update."""

    rank: int = 32
    """LoRA rank"""
    alpha: int = 64
    """LoRA alpha (the update is scaled by alpha / rank)"""
    dropout: float = 0.0
    """LoRA dropout"""
    target_modules: str | tuple[str, ...] = "all-linear"
    """modules to adapt: a list of names (e.g. [q_proj,v_proj]), all-linear (every linear layer but the head), or
    peft-default (what PEFT adapts when none are named: q_proj and v_proj for Llama and Qwen2)"""
    learning_rate: float = 1e-3
    """peak learning rate of AdamW"""
    epochs: int = 10
    """passes over the sequences"""
    batch_size: int = 1
    """sequences per optimizer step"""
    max_length: int = 2048
    """longer sequences are truncated (labels padded: every sequence is padded to it)"""
    schedule: str = "linear"
    """learning-rate decay to zero after the warm-up: linear (the Hugging Face Trainer's) or cosine"""
    warmup_steps: int = 0
    """optimizer steps of linear warm-up from 0 to the learning rate"""
    max_grad_norm: float | None = None
    """clip each adapter's gradient to this norm (the Hugging Face Trainer's default is 1.0); null: no clipping"""
    labels: str = "content"
    """content: the loss covers a sequence's own tokens (and the EOS appended to it), never padding; padded: as
    SEAL's inner loop, every sequence is padded with EOS to max_length and the mean loss runs over every position,
    padding included (the content's share of the gradient is its share of max_length)"""
    cuda_graph: bool = False
    """capture each training step (forward, backward, clipping, AdamW) as a CUDA graph and replay it, one graph per
    step shape: rows, widths and LoRA slots are padded to powers of two so that few shapes exist. Removes the
    kernel-launch overhead that bounds small models on a GPU. Elsewhere the same padded step runs uncaptured"""
    distill_top_k: int = 64
    """context distillation (jobs with a teacher context): the teacher's k most likely next tokens per position,
    renormalised, are the target (the full distribution would be [tokens, vocab] floats per sequence)"""
    seed: int = 0
    """seed of the adapter's initialisation and batch order (runs derive one per job from it)"""

    def validate(self, key: str) -> None:
        for name in ("rank", "alpha", "epochs", "batch_size", "max_length", "distill_top_k"):
            at_least(f"{key}.{name}", getattr(self, name), 1)
        if not self.learning_rate > 0:
            raise ConfigError(f"{key}.learning_rate", f"must be positive (got {self.learning_rate})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"{key}.dropout", f"must be in [0, 1) (got {self.dropout})")
        one_of(f"{key}.schedule", self.schedule, SCHEDULES)
        one_of(f"{key}.labels", self.labels, LABELS)
        at_least(f"{key}.warmup_steps", self.warmup_steps, 0)
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"{key}.max_grad_norm", f"must be positive or null (got {self.max_grad_norm})")
        if isinstance(self.target_modules, str) and self.target_modules not in ("all-linear", "peft-default"):
            raise ConfigError(f"{key}.target_modules", f"unknown value {self.target_modules!r} (choose a list of "
                                                       "module names, all-linear or peft-default)")

    def lr_at(self, step: int, total: int) -> float:
        """The Hugging Face schedulers' learning rate at `step` of `total`: linear warm-up, then decay to 0."""
        if step < self.warmup_steps:
            return self.learning_rate * step / self.warmup_steps
        progress = (step - self.warmup_steps) / max(1, total - self.warmup_steps)
        if self.schedule == "cosine":
            return self.learning_rate * 0.5 * (1 + math.cos(math.pi * progress))
        return self.learning_rate * max(0.0, 1 - progress)

    def shape_key(self) -> tuple:
        """Jobs with equal keys can be trained together in one multi-adapter pass."""
        return (self.rank, self.alpha, self.dropout, self.target_modules, self.max_length, self.labels,
                self.cuda_graph)


@dataclass(frozen=True)
class Example:
    """A prompt and its completion, the prompt rendered exactly as generation renders it. The loss
    covers the completion only (policy updates, few-shot output-only training) unless
    `train_on_prompt` (few-shot all-token training)."""

    prompt: Prompt
    completion: str
    train_on_prompt: bool = False


Sequence_ = str | Example  # plain text is learned whole


@dataclass
class TrainJob:
    """Sequences to learn, with the settings to learn them by (None: the updater's defaults).

    With a `teacher_context`, plain-text sequences are learned by context distillation instead of next-token
    cross-entropy: the adapted model, reading a sequence alone, is trained to match the next-token distributions
    (KL divergence) of the base model reading `teacher_context` followed by the same sequence. `Example` items
    of such a job keep the cross-entropy loss."""

    sequences: Sequence[Sequence_]
    settings: InnerLoopSettings | None = None
    teacher_context: str | None = None


@dataclass
class TrainResult:
    """The adapter of one job, its mean loss per epoch, and what it cost."""

    adapter: Adapter
    epoch_losses: list[float]
    step_losses: list[float]  # each optimizer step's loss, in order
    train_tokens: int  # real (unpadded) tokens processed over all epochs
    seconds: float  # wall time of the multi-adapter pass this job was part of, shared equally


class LoraUpdater:
    """Runs inner loops against one shared, frozen base model.

    `max_adapters` bounds how many jobs train together; `max_row_tokens` bounds a packed row
    (attention cost grows with the square of a row's length).
    """

    def __init__(self, loaded: LoadedModel, settings: InnerLoopSettings | None = None,
                 max_adapters: int = 16, max_row_tokens: int = 2048):
        self.loaded = loaded
        self.settings = settings or InnerLoopSettings()
        self.max_adapters = max_adapters
        self.max_row_tokens = max_row_tokens

    def train(self, jobs: Sequence[TrainJob]) -> list[TrainResult]:
        results: list[TrainResult | None] = [None] * len(jobs)
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((*(job.settings or self.settings).shape_key(), job.teacher_context is not None),
                              []).append(i)
        for indices in groups.values():
            for start in range(0, len(indices), self.max_adapters):
                chunk = indices[start : start + self.max_adapters]
                for i, result in zip(chunk, self._train_together([jobs[i] for i in chunk])):
                    results[i] = result
        return results  # type: ignore[return-value]

    def tokenize(self, sequences: Sequence[Sequence_], max_length: int, append_eos: bool = True) -> list[Tokens]:
        """Token ids of each sequence, ending with EOS (unless not `append_eos`: with padded labels the
        padding's EOS follows instead) so the model also learns where a fact (or a completion) ends; for an
        `Example`, also where its completion starts."""
        tokenizer = self.loaded.tokenizer
        eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
        out = []
        for item in sequences:
            if isinstance(item, Example):
                prompt = encode_prompt(self.loaded, item.prompt)
                ids = prompt + tokenizer(item.completion, add_special_tokens=False)["input_ids"] + eos
                out.append(Tokens(ids[:max_length], 0 if item.train_on_prompt else len(prompt)))
            else:
                ids = tokenizer(item, add_special_tokens=True)["input_ids"] + (eos if append_eos else [])
                out.append(Tokens(ids[:max_length]))
        return [t for t in out if t.n_predicted > 0]

    def mean_loss(self, sequences: Sequence[Sequence_], max_length: int = 2048) -> float:
        """Mean next-token loss of the model as it is (no adapter) on the tokens training would predict."""
        return self.tokens_loss(self.tokenize(sequences, max_length))

    def tokens_loss(self, tokens: Sequence[Tokens]) -> float:
        """Mean next-token loss of the model as it is over the predicted tokens of `tokens`."""
        if not tokens:
            raise ValueError("a mean loss needs at least one sequence with something to predict")
        total, count = 0.0, 0
        with torch.no_grad():
            for start in range(0, len(tokens), 8):
                packed = pack_sequences([(0, t) for t in tokens[start : start + 8]], self.max_row_tokens,
                                        self.loaded.tokenizer.pad_token_id).to(self.loaded.device)
                logits = self.loaded.model(input_ids=packed.input_ids, position_ids=packed.position_ids,
                                           use_cache=False).logits
                losses = F.cross_entropy(logits.float().flatten(0, 1), packed.labels.flatten(),
                                         ignore_index=-100, reduction="sum")
                total += losses.item()
                count += int((packed.labels != -100).sum())
        return total / count

    def _train_together(self, jobs: list[TrainJob]) -> list[TrainResult]:
        started = time.perf_counter()
        settings = [job.settings or self.settings for job in jobs]
        shape = settings[0]
        examples = []
        for job, s in zip(jobs, settings):
            ids = self.tokenize(job.sequences, s.max_length, append_eos=s.labels == "content")
            if not ids:
                raise ValueError("an inner-loop job needs at least one non-empty sequence")
            if job.teacher_context is not None:
                if s.labels == "padded":
                    raise ValueError("context distillation learns a sequence's own tokens: it needs labels content")
                ids = [self._with_teacher_targets(t, job.teacher_context, s.distill_top_k) if t.n_prompt == 0 else t
                       for t in ids]
            examples.append(ids)
        schedules = [_batch_schedule(ids, s) for ids, s in zip(examples, settings)]
        n_steps = max(len(schedule) for schedule in schedules)
        model = self.loaded.model
        with (injected(model, len(jobs), shape.rank, shape.alpha, shape.target_modules, shape.dropout) as lora,
              per_sequence_attention(model) as per_sequence, packed_linears(model, self.loaded.prepack_weights)):
            for k, s in enumerate(settings):
                lora.init_adapter(k, s.seed)
            # One parameter group per adapter, its row of the weights: its own learning rate, and its own
            # Adam state, updated in one fused call.
            rows = lora.optimizer_rows()
            # Distillation's soft targets vary in shape with the sequences: those jobs always run eagerly.
            static = shape.cuda_graph and not any(job.teacher_context for job in jobs)
            capture = static and torch.device(self.loaded.device).type == "cuda"
            optimizer = torch.optim.AdamW(
                [{"params": [row], "lr": torch.tensor(s.learning_rate, device=row.device) if capture
                  else s.learning_rate} for row, s in zip(rows, settings)],
                weight_decay=0.0, fused=_fused_supported(model), capturable=capture)
            graphs = StepGraphs(self, lora, optimizer, [s.max_grad_norm for s in settings], capture) if static else None
            padded = shape.max_length if shape.labels == "padded" else None
            step_losses: list[list[float]] = [[] for _ in jobs]
            model.train()
            try:
                for step in range(n_steps):
                    active = [k for k, schedule in enumerate(schedules) if step < len(schedule)]
                    batch = [(k, seq) for k in active for seq in schedules[k][step]]
                    # Each job's learning rate follows its own schedule.
                    for k in active:
                        _set_lr(optimizer.param_groups[k], settings[k].lr_at(step, len(schedules[k])))
                    if graphs is not None:
                        losses = graphs.step(batch, active, padded)
                    else:
                        losses = self._eager_step(lora, optimizer, rows, batch, active, per_sequence, padded,
                                                  [s.max_grad_norm for s in settings])
                    for k in active:
                        step_losses[k].append(losses[k])
            finally:
                model.eval()
                lora.route(None)
            adapters = [Adapter(shape.rank, shape.alpha, lora.adapter_weights(k)) for k in range(len(jobs))]
        seconds = (time.perf_counter() - started) / len(jobs)
        results = []
        for k, s in enumerate(settings):
            per_epoch = len(schedules[k]) // s.epochs
            losses = step_losses[k]
            epoch_losses = [sum(losses[e * per_epoch : (e + 1) * per_epoch]) / per_epoch for e in range(s.epochs)]
            tokens = sum(len(t.ids) for t in examples[k]) * s.epochs
            results.append(TrainResult(adapters[k], epoch_losses, losses, tokens, seconds))
        return results

    def _with_teacher_targets(self, tokens: Tokens, context: str, top_k: int) -> Tokens:
        """`tokens` with the base model's next-token distribution at each of its positions, read after `context`
        (the model as it is: called before any adapter is injected)."""
        tokenizer = self.loaded.tokenizer
        prefix = tokenizer(context, add_special_tokens=True)["input_ids"]
        # A leading BOS of the sequence is already at the start of the prefix; position i of the sequence is
        # position len(prefix) + i - skip of the teacher's input.
        skip = int(tokenizer.bos_token_id is not None and tokens.ids[0] == tokenizer.bos_token_id)
        ids = torch.tensor([prefix + tokens.ids[skip:]], device=self.loaded.device)
        with torch.no_grad():
            logits = self.loaded.model(input_ids=ids, use_cache=False).logits[0, len(prefix) - skip:]
            values, indices = logits.float().topk(min(top_k, logits.shape[-1]), dim=-1)
        return Tokens(tokens.ids, tokens.n_prompt, Soft(indices.cpu(), values.log_softmax(-1).cpu()))

    def _eager_step(self, lora: MultiLora, optimizer: torch.optim.Optimizer, rows: list[torch.nn.Parameter],
                    batch: list[tuple[int, Tokens]], active: list[int], per_sequence: bool, padded_to: int | None,
                    max_norms: list[float | None]) -> list[float]:
        """One optimizer step over `batch`, its shapes as they come; each adapter's loss."""
        device = self.loaded.device
        packed, weights, attention = self.step_batch(batch, len(rows), padded_to)
        if attention is not None:
            extra = {"attention_mask": attention.to(device)}
        else:  # sequence boundaries are read on the host, before the batch moves to the device
            extra = {"cu_seq_lens_q": sequence_bounds(packed.position_ids)} if per_sequence else {}
        # Routed on the host, from owners the device need not be waited on for.
        lora.route(TokenRouting.from_owners(packed.owners, device))
        per_adapter = self.loss_and_backward(packed.to(device), weights.to(device), extra, len(rows))
        _clip_per_adapter(lora.gradients, _clip_plan(max_norms, active, device))
        # An adapter whose schedule has ended shows the optimizer no gradient, so its weights and state stay
        # as they are.
        for k, (row, gradient) in enumerate(zip(rows, lora.gradients)):
            row.grad = gradient if k in active else None
        optimizer.step()
        lora.gradients.zero_()
        return per_adapter.tolist()  # one transfer (and device sync) for all adapters

    def step_batch(self, batch: list[tuple[int, Tokens]], n_adapters: int,
                   padded_to: int | None) -> tuple[PackedBatch, torch.Tensor, torch.Tensor | None]:
        """One step's sequences as rows on the host: packed (or, with `padded_to`, one per sequence padded to it,
        with its attention mask), and each token's loss weight, so that each adapter's loss is its own token
        mean (with `padded_to`, the mean over every position of its sequences, padding included)."""
        if padded_to is None:
            packed, attention = pack_sequences(batch, self.max_row_tokens, self.loaded.tokenizer.pad_token_id), None
        else:
            packed, attention = pad_sequences(batch, padded_to, self.loaded.tokenizer.eos_token_id)
        owners, labels = packed.owners.flatten(), packed.labels.flatten()
        slots = owners.clamp(min=0)  # row padding has no label, so its slot never counts
        if padded_to is None:
            predicted = torch.zeros(n_adapters).index_add(0, slots, (labels != -100).float())
        else:  # the Hugging Face Trainer's count: every label before the shift, i.e. all but the prompt's
            predicted = torch.zeros(n_adapters)
            for k, seq in batch:
                predicted[k] += padded_to - seq.n_prompt
        weights = torch.where(owners >= 0, 1.0 / predicted.clamp(min=1)[slots], 0.0).view_as(packed.owners)
        return packed, weights, attention

    def loss_and_backward(self, packed: PackedBatch, token_weights: torch.Tensor, extra: dict,
                          n_adapters: int) -> torch.Tensor:
        """Forward and backward on the device, without a host sync (so that it can be captured); each adapter's
        loss, [n_adapters]. The routing is already set."""
        model = self.loaded.model
        inputs = {"input_ids": packed.input_ids, "position_ids": packed.position_ids, **extra}
        owners, labels, token_weights = packed.owners.flatten(), packed.labels.flatten(), token_weights.flatten()
        head = plain_output_head(model)
        if packed.soft is not None:  # context distillation: the logits are needed whole
            logits = model(**inputs, use_cache=False).logits.float().flatten(0, 1)
            token_loss = F.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
            indices, teacher = packed.soft[0].flatten(0, 1), packed.soft[1].flatten(0, 1)
            kl = (teacher.exp() * (teacher - logits.log_softmax(-1).gather(1, indices))).sum(-1)
            distilled = packed.soft_mask.flatten() & (labels != -100)
            token_loss = torch.where(distilled, kl, token_loss)
            total = (token_loss * token_weights).sum()
        elif head is not None:  # the loss from the last hidden states, without [tokens, vocab] logits
            hidden = model.get_decoder()(**inputs, use_cache=False).last_hidden_state
            total, token_loss = linear_cross_entropy(hidden.flatten(0, 1), head, labels, token_weights)
        else:
            logits = model(**inputs, use_cache=False).logits
            token_loss = F.cross_entropy(logits.float().flatten(0, 1), labels, ignore_index=-100, reduction="none")
            total = (token_loss * token_weights).sum()
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=STRIDED_GRADIENTS_WARNING)
            total.backward()
        return torch.zeros(n_adapters, device=token_loss.device).index_add(
            0, owners.clamp(min=0), (token_loss * token_weights).detach())


class StepGraphs:
    """Training steps at a few fixed shapes, each captured once as a CUDA graph and then replayed.

    A step's rows are padded to a power-of-two count and width (padding has no owner and no label), its LoRA
    slots likewise, and attention is one [rows, 1, width, width] mask made on the host: transformers' own mask
    from position ids asks the host whether a batch is packed, which a capture cannot. The first step of each
    shape runs eagerly on a side stream, as the warm-up (it also creates the Adam state); then the shape is
    captured, and later steps copy their inputs into its static buffers and replay it. Without `capture`, or
    past `MAX_GRAPHS` shapes (each holds its own activation memory), the padded step runs eagerly."""

    MAX_GRAPHS = 8

    def __init__(self, updater: LoraUpdater, lora: MultiLora, optimizer: torch.optim.Optimizer,
                 max_norms: list[float | None], capture: bool):
        self.updater, self.lora, self.optimizer, self.max_norms = updater, lora, optimizer, max_norms
        self.rows = [group["params"][0] for group in optimizer.param_groups]
        self.capture = capture
        self.shapes: dict[tuple, _StepShape] = {}

    def step(self, batch: list[tuple[int, Tokens]], active: list[int], padded_to: int | None) -> list[float]:
        device = self.updater.loaded.device
        packed, weights, attention = self.updater.step_batch(batch, len(self.rows), padded_to)
        height = _power_of_two(packed.input_ids.shape[0])
        width = padded_to or _power_of_two(packed.input_ids.shape[1], 64)
        host = _static_step_inputs(packed, weights, attention, height, width)
        routing = TokenRouting.from_owners(host["owners"], "cpu", bucket=True)
        if routing.scatter is not None:
            host.update(scatter=routing.scatter, gather=routing.gather, index=routing.index)
        key = (height, width, routing.slots, tuple(routing.adapters), routing.scatter is None, tuple(active))
        shape = self.shapes.get(key)
        if shape is None:
            inputs = {name: tensor.to(device) for name, tensor in host.items()}
            shape = _StepShape(inputs, TokenRouting(routing.adapters, routing.slots, inputs.get("scatter"),
                                                    inputs.get("gather"), inputs.get("index")),
                               _clip_plan(self.max_norms, active, device))
            self.shapes[key] = shape
        else:
            for name, tensor in host.items():
                shape.inputs[name].copy_(tensor, non_blocking=True)
        self.lora.route(shape.routing)
        for k, (row, gradient) in enumerate(zip(self.rows, self.lora.gradients)):
            row.grad = gradient if k in active else None  # as in the eager step: ended adapters stay as they are
        if shape.graph is not None:
            shape.graph.replay()
            return shape.losses.tolist()
        if not (self.capture and sum(s.graph is not None for s in self.shapes.values()) < self.MAX_GRAPHS):
            return self._run(shape).tolist()
        warm_up = torch.cuda.Stream()
        warm_up.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(warm_up):
            losses = self._run(shape).tolist()
        torch.cuda.current_stream().wait_stream(warm_up)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                shape.losses = self._run(shape)
        except RuntimeError as error:  # nothing was executed: the warm-up was this step
            warnings.warn(f"inner_loop.cuda_graph: capturing a training step failed ({error}); training eagerly",
                          stacklevel=2)
            self.capture = False
        else:
            shape.graph = graph
        return losses

    def _run(self, shape: _StepShape) -> torch.Tensor:
        """Forward, backward, clipping and AdamW on the shape's buffers: what a graph captures."""
        inputs = shape.inputs
        self.lora.gradients.zero_()
        packed = PackedBatch(inputs["input_ids"], inputs["position_ids"], inputs["labels"], inputs["owners"])
        losses = self.updater.loss_and_backward(packed, inputs["weights"], {"attention_mask": inputs["mask"]},
                                                len(self.rows))
        _clip_per_adapter(self.lora.gradients, shape.clip)
        self.optimizer.step()
        return losses


@dataclass
class _StepShape:
    inputs: dict[str, torch.Tensor]  # on the device; a graph reads them where they are
    routing: TokenRouting
    clip: torch.Tensor | None  # each adapter's max gradient norm (_clip_plan)
    graph: torch.cuda.CUDAGraph | None = None
    losses: torch.Tensor | None = None  # the graph's output


def _power_of_two(n: int, minimum: int = 1) -> int:
    return max(minimum, 1 << (n - 1).bit_length())


def _static_step_inputs(packed: PackedBatch, weights: torch.Tensor, attention: torch.Tensor | None, height: int,
                        width: int) -> dict[str, torch.Tensor]:
    """The step grown to [height, width] with rows and columns that own nothing and predict nothing, and its
    attention mask [height, 1, width, width]: causal, within each sequence (positions restart at 0), to keys
    not masked out by `attention` (padded labels)."""
    rows, columns = packed.input_ids.shape

    def grown(t: torch.Tensor, fill: float) -> torch.Tensor:
        out = t.new_full((height, width), fill)
        out[:rows, :columns] = t
        return out

    positions = torch.arange(width).repeat(height, 1)  # padding columns start a sequence of their own
    positions[:rows, :columns] = packed.position_ids
    keys = grown(attention, 1) if attention is not None else torch.ones(height, width, dtype=torch.long)
    sequence = (positions == 0).cumsum(1)
    same = sequence[:, :, None] == sequence[:, None, :]
    mask = same & torch.ones(width, width, dtype=torch.bool).tril() & keys.bool()[:, None, :]
    return {"input_ids": grown(packed.input_ids, 0), "position_ids": positions, "labels": grown(packed.labels, -100),
            "owners": grown(packed.owners, -1), "weights": grown(weights, 0.0), "mask": mask[:, None]}


@dataclass(frozen=True)
class Soft:
    """A teacher's next-token targets at each position of a sequence: its top-k token ids and their
    log-probabilities, renormalised over those k. [positions, k] each."""

    indices: torch.Tensor
    log_probs: torch.Tensor


@dataclass(frozen=True)
class Tokens:
    """A tokenized training sequence; the loss covers the tokens from index `n_prompt` on (against the teacher's
    distributions where `soft` is given)."""

    ids: list[int]
    n_prompt: int = 0
    soft: Soft | None = field(default=None, compare=False)

    @property
    def n_predicted(self) -> int:
        return len(self.ids) - max(self.n_prompt, 1)

    def labels(self) -> list[int]:
        """Next token at each position; -100 where nothing is learned (inside the prompt, last token)."""
        start = max(self.n_prompt, 1)
        return [t if i + 1 >= start else -100 for i, t in enumerate(self.ids[1:])] + [-100]


@dataclass
class PackedBatch:
    """Sequences packed into dense rows: positions restart at 0 for every sequence (transformers
    then keeps attention within each sequence), labels are next tokens within a sequence."""

    input_ids: torch.Tensor  # [rows, width]
    position_ids: torch.Tensor
    labels: torch.Tensor  # -100 where nothing is predicted (last token of a sequence, row padding)
    owners: torch.Tensor  # adapter of each token; -1 for row padding
    # Where any sequence has a teacher's targets: their token ids and log-probabilities [rows, width, k], and
    # which positions have them [rows, width].
    soft: tuple[torch.Tensor, torch.Tensor] | None = None
    soft_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> PackedBatch:
        soft = None if self.soft is None else (self.soft[0].to(device), self.soft[1].to(device))
        return PackedBatch(self.input_ids.to(device), self.position_ids.to(device), self.labels.to(device),
                           self.owners.to(device), soft, None if self.soft_mask is None else self.soft_mask.to(device))


def pack_sequences(sequences: list[tuple[int, Tokens]], max_row_tokens: int, pad_id: int) -> PackedBatch:
    """Pack (adapter, tokens) pairs into rows of at most `max_row_tokens`, in adapter order, so
    that each adapter's tokens form one contiguous run (two runs where it crosses into a new row)."""
    rows: list[list[tuple[int, Tokens]]] = []
    used: list[int] = []
    for item in sorted(sequences, key=lambda kv: kv[0]):  # stable: keeps each job's batch order
        if rows and used[-1] + len(item[1].ids) <= max_row_tokens:
            rows[-1].append(item)
            used[-1] += len(item[1].ids)
        else:
            rows.append([item])
            used.append(len(item[1].ids))
    width = max(used)
    columns: dict[str, list[list[int]]] = {"input_ids": [], "position_ids": [], "labels": [], "owners": []}
    for row, length in zip(rows, used):
        fill = width - length
        columns["input_ids"].append([t for _, seq in row for t in seq.ids] + [pad_id] * fill)
        # Row padding is its own "sequence" starting at position 0, so it never joins a real one.
        columns["position_ids"].append([p for _, seq in row for p in range(len(seq.ids))] + list(range(fill)))
        columns["labels"].append([t for _, seq in row for t in seq.labels()] + [-100] * fill)
        columns["owners"].append([k for k, seq in row for _ in seq.ids] + [-1] * fill)
    packed = PackedBatch(**{name: torch.tensor(value) for name, value in columns.items()})  # on the host
    targets = [seq.soft for _, seq in sequences if seq.soft is not None]
    if targets:
        k = targets[0].indices.shape[1]
        indices = torch.zeros(len(rows), width, k, dtype=torch.long)
        log_probs = torch.zeros(len(rows), width, k)
        mask = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, row in enumerate(rows):
            at = 0
            for _, seq in row:
                if seq.soft is not None:
                    n = len(seq.ids)
                    indices[r, at : at + n], log_probs[r, at : at + n] = seq.soft.indices, seq.soft.log_probs
                    mask[r, at : at + n] = True
                at += len(seq.ids)
        packed.soft, packed.soft_mask = (indices, log_probs), mask
    return packed


def pad_sequences(sequences: list[tuple[int, Tokens]], length: int, pad_id: int) -> tuple[PackedBatch, torch.Tensor]:
    """One row per sequence, padded with `pad_id` to `length` as SEAL's inner loop pads (tokenizer padding to
    `max_length`, pad = EOS, labels a copy of the input ids): padding is never attended to, but every position
    but the last predicts the next token, padding's EOS included. Also the attention mask."""
    rows = sorted(sequences, key=lambda kv: kv[0])
    ids = [seq.ids + [pad_id] * (length - len(seq.ids)) for _, seq in rows]
    start = [max(seq.n_prompt, 1) for _, seq in rows]
    labels = [[t if i + 1 >= s else -100 for i, t in enumerate(row[1:])] + [-100] for row, s in zip(ids, start)]
    batch = PackedBatch(torch.tensor(ids), torch.arange(length).repeat(len(rows), 1), torch.tensor(labels),
                        torch.tensor([[k] * length for k, _ in rows]))
    attention = torch.tensor([[1] * len(seq.ids) + [0] * (length - len(seq.ids)) for _, seq in rows])
    return batch, attention


def _clip_plan(max_norms: list[float | None], active: list[int], device: torch.device | str) -> torch.Tensor | None:
    """Each adapter's max gradient norm, on the device (made before a capture, not in it): infinity for an adapter
    that is inactive or does not clip, which leaves its row as it is; None when no active adapter clips."""
    if all(max_norms[k] is None for k in active):
        return None
    limits = [max_norms[k] if k in active and max_norms[k] is not None else math.inf for k in range(len(max_norms))]
    return torch.tensor(limits, device=device, dtype=torch.float32)


def _clip_per_adapter(gradients: torch.Tensor, limits: torch.Tensor | None) -> None:
    """Clip each adapter's whole gradient (its row) to its limit, as `clip_grad_norm_` clips a model's: scale by
    max_norm / (norm + 1e-6) when that is below 1. In place: a copy of the [K, numel] buffer is fresh memory at
    every step, whose page faults cost the embedded model 0.16 s a step at K=5 on a CPU (docs/benchmarks.md)."""
    if limits is None:
        return
    scale = (limits / (gradients.norm(dim=1) + 1e-6)).clamp(max=1.0)  # an infinite limit: 1.0, the row unchanged
    gradients.mul_(scale[:, None])


def _set_lr(group: dict, lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):  # a captured optimizer step reads it from the device
        group["lr"].fill_(lr)
    else:
        group["lr"] = lr


def _fused_supported(model: torch.nn.Module) -> bool:
    return next(model.parameters()).device.type in ("cpu", "cuda")


def _batch_schedule(examples: list[Tokens], settings: InnerLoopSettings) -> list[list[Tokens]]:
    """The job's batches for all epochs, in its own seeded order (independent of other jobs)."""
    generator = torch.Generator().manual_seed(settings.seed)
    schedule = []
    for _ in range(settings.epochs):
        order = torch.randperm(len(examples), generator=generator).tolist()
        for start in range(0, len(order), settings.batch_size):
            schedule.append([examples[i] for i in order[start : start + settings.batch_size]])
    return schedule
