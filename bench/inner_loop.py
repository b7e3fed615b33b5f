"""Benchmark: one SEAL inner loop (LoRA on passage + self-edit, then answer its questions) on the
embedded model, side by side with

  reference - the SEAL code's procedure: Hugging Face `Trainer`, a fresh `get_peft_model` per
              request, every sequence padded to max_length=2048, batch size 1;
  plain     - a plain PEFT loop with dynamic padding, all sequences in one batch;
  seal-lm   - this project's `LoraUpdater` (paper defaults: batch size 1, no padding).

Each method runs in its own fresh process (so its peak memory is its own) on the same job.
The reference is very slow on a CPU, so by default it runs 1 epoch and its time per epoch is
compared (the others run the paper's 10 epochs). FLOPs count real tokens only (padding
excluded): forward 2*N*T, backward 2*N*T for input gradients of the frozen base (no weight
gradients), 6*N_lora*T for the adapters, plus attention scores.

    python bench/inner_loop.py [--epochs 10] [--reference-epochs 1] [--device cpu] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time

import torch

JOB_PASSAGE = 0  # demo corpus validation passage used for the job
SELF_EDIT = [  # a fixed 5-item self-edit, so every method and every run trains on the same data
    "Quenby Marrisfield was a botanist who studied the plants of the Orrel Marshes.",
    "Quenby Marrisfield was born in the river town of Pennywade.",
    "The lantern sundew, a carnivorous plant with white bell-shaped flowers, was discovered in 1879.",
    "Quenby Marrisfield collected more than 9,000 plant specimens and kept them in cedar cabinets.",
    "Her sister Bettany Marrisfield made the 160 drawings in Flora of the Orrel Marshes (1893).",
]


def build_job():
    from seal_lm.data import load_demo_corpus
    from seal_lm.formats.knowledge import ParsedSelfEdit, training_sequences

    passage = load_demo_corpus("validation")[JOB_PASSAGE]
    return passage, training_sequences(passage, [ParsedSelfEdit(tuple(SELF_EDIT), "ok")])


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 10) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def training_flops(model, lora_params: int, sequences_ids: list[list[int]], epochs: int) -> float:
    linear_params = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    cfg = model.config
    attn_dim = cfg.num_attention_heads * getattr(cfg, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
    total = 0.0
    for ids in sequences_ids:
        t = len(ids)
        dense = 4 * linear_params * t + 6 * lora_params * t
        attention = 3 * cfg.num_hidden_layers * 2 * 2 * attn_dim * t * t / 2  # QK^T and AV, causal half, fwd+bwd
        total += dense + attention
    return total * epochs


def run_method(method: str, args: dict, queue) -> None:
    """Runs in a fresh process: load the model, train one adapter, answer the questions."""
    from peft import get_peft_model

    from seal_lm.adapters import Adapter
    from seal_lm.domains.knowledge import answer_questions
    from seal_lm.generation import HFGenerator
    from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
    from seal_lm.models import ModelSettings, load_model

    torch.set_num_threads(args["threads"])
    loaded = load_model(ModelSettings(device=args["device"], dtype=args["dtype"]))
    passage, sequences = build_job()
    epochs = args["reference_epochs"] if method == "reference" else args["epochs"]
    settings = InnerLoopSettings(epochs=epochs)
    updater = LoraUpdater(loaded, settings)
    ids = updater.tokenize(sequences, settings.max_length)
    if args["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    _sync(args["device"])
    started = time.perf_counter()
    if method == "seal-lm":
        result, = updater.train([TrainJob(sequences)])
        adapter, final_loss = result.adapter, result.epoch_losses[-1]
    else:
        torch.manual_seed(0)
        model = get_peft_model(loaded.model, settings.lora_config())
        train = _train_reference if method == "reference" else _train_plain
        final_loss = train(model, loaded.tokenizer, ids, settings)
        adapter = Adapter.from_peft_model(model)
        model.unload()
    _sync(args["device"])
    seconds = time.perf_counter() - started
    lora_params = sum(w.numel() for w in adapter.weights.values())
    flops = training_flops(loaded.model, lora_params, ids, epochs)
    started = time.perf_counter()
    graded = answer_questions(HFGenerator(loaded), [passage], adapter)[0]
    answer_seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args["device"].startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({
        "method": method, "epochs": epochs, "seconds": seconds, "final_loss": final_loss,
        "real_tokens": sum(map(len, ids)) * epochs, "padded_tokens": _padded_tokens(method, ids) * epochs,
        "gflop": flops / 1e9, "answer_seconds": answer_seconds,
        "correct": sum(q["scores"]["contains"] for q in graded), "questions": len(graded), "peak_mib": peak,
    })


def _padded_tokens(method: str, ids: list[list[int]]) -> int:
    if method == "reference":
        return 2048 * len(ids)
    if method == "plain":
        return max(map(len, ids)) * len(ids)
    return sum(map(len, ids))


def _train_plain(model, tokenizer, ids, settings) -> float:
    """All sequences in one batch, right-padded to the longest; one optimizer step per epoch."""
    width = max(map(len, ids))
    device = next(model.parameters()).device
    input_ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids], device=device)
    mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
    labels = input_ids.masked_fill(mask == 0, -100)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=settings.learning_rate)
    model.train()
    for _ in range(settings.epochs):
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return loss.item()


def _train_reference(model, tokenizer, ids, settings) -> float:
    """The SEAL code's procedure: Trainer, padding to max_length=2048, batch size 1."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    rows = []
    for x in ids:
        pad = 2048 - len(x)
        rows.append({"input_ids": x + [tokenizer.pad_token_id] * pad, "attention_mask": [1] * len(x) + [0] * pad,
                     "labels": x + [-100] * pad})
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model=model, train_dataset=rows, args=TrainingArguments(
            output_dir=out, per_device_train_batch_size=1, num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate, save_strategy="no", report_to=[], logging_strategy="no",
            disable_tqdm=True, use_cpu=not torch.cuda.is_available(), seed=0,
        ))
        output = trainer.train()
    model.eval()
    return output.training_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--reference-epochs", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default="reference,plain,seal-lm")
    parser.add_argument("--json", help="also write the results to this file")
    args = vars(parser.parse_args())
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[args["dtype"]]
    torch.set_num_threads(args["threads"])
    peak = matmul_peak_gflops(args["device"], dtype)
    print(f"device {args['device']}, {args['dtype']}, {args['threads']} threads; "
          f"torch.matmul peak (2048^3): {peak:.0f} GFLOP/s", flush=True)
    ctx = mp.get_context("spawn")
    results = []
    for method in args["methods"].split(","):
        queue = ctx.Queue()
        process = ctx.Process(target=run_method, args=(method, args, queue))
        process.start()
        results.append(queue.get())
        process.join()
        print(f"  {method}: {results[-1]['seconds']:.1f} s", flush=True)
    by_name = {r["method"]: r for r in results}
    header = (f"{'method':<10}{'epochs':>7}{'train s':>9}{'s/epoch':>9}{'real tok/s':>11}{'pad %':>7}"
              f"{'GFLOP/s':>9}{'% peak':>8}{'loss':>7}{'answer s':>9}{'correct':>9}{'peak MiB':>10}")
    print(header)
    for r in results:
        per_epoch = r["seconds"] / r["epochs"]
        gflops = r["gflop"] / r["seconds"]
        pad = 100 * (1 - r["real_tokens"] / r["padded_tokens"])
        print(f"{r['method']:<10}{r['epochs']:>7}{r['seconds']:>9.1f}{per_epoch:>9.2f}{r['real_tokens'] / r['seconds']:>11.0f}"
              f"{pad:>7.0f}{gflops:>9.1f}{100 * gflops / peak:>8.1f}{r['final_loss']:>7.3f}{r['answer_seconds']:>9.1f}"
              f"{r['correct']:>5.0f}/{r['questions']:<3}{r['peak_mib']:>10.0f}")
    ours = by_name.get("seal-lm")
    if ours:
        for other in ("reference", "plain"):
            if other in by_name:
                ratio = (by_name[other]["seconds"] / by_name[other]["epochs"]) / (ours["seconds"] / ours["epochs"])
                print(f"speed-up of seal-lm over {other} (time per epoch): {ratio:.2f}x")
    print("note: 'correct' is the contains-grader on the passage's questions (n is tiny; see seal eval for "
          "accuracies with intervals); the reference trains fewer epochs, so its loss and answers are not comparable.")
    if args["json"]:
        with open(args["json"], "w") as f:
            json.dump({"matmul_peak_gflops": peak, "args": args, "results": results}, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
