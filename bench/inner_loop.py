"""Benchmark: SEAL inner loops (LoRA on passage + self-edit, then answer the passage's questions)
on the embedded model. K jobs = one passage with K different self-edits. Methods, side by side:

  reference  - the SEAL code's procedure: Hugging Face `Trainer`, a fresh `get_peft_model` per
               request, every sequence padded to max_length=2048, batch size 1 (job 0 only; it is
               very slow on a CPU, so it runs --reference-epochs and its time per inner loop is
               extrapolated to the full epochs: say so when quoting it);
  plain      - a plain PEFT loop with dynamic padding, all of a job's sequences in one batch (job 0);
  one-by-one - this project's `LoraUpdater`, the K jobs one after another (paper defaults, batch 1);
  batched    - this project's `LoraUpdater`, all K jobs in one multi-adapter pass, answers batched too;
  packed-job - this project's `LoraUpdater`, job 0 with all its sequences packed into one step
               (batch size = number of sequences; the plain loop's schedule without its padding).

Each method runs in its own fresh process (so its peak memory is its own) on the same jobs. With
--repeats N it trains N times there and reports its fastest time, as the matmul peak is the best
of several trials; the row also gives the median.
FLOPs count real tokens only (padding excluded): forward 2*N*T, backward 2*N*T for the input
gradients of the frozen base (no weight gradients), 6*N_lora*T for the adapters, plus attention.

    python bench/inner_loop.py [--k 5] [--dtypes float32,bfloat16] [--methods ...]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import time

import torch
from peft import LoraConfig

JOB_PASSAGE = 0  # demo corpus validation passage used for the job
SELF_EDIT = [  # a fixed 5-item self-edit, so every method and every run trains on the same data
    "Quenby Marrisfield was a botanist who studied the plants of the Orrel Marshes.",
    "Quenby Marrisfield was born in the river town of Pennywade.",
    "The lantern sundew, a carnivorous plant with white bell-shaped flowers, was discovered in 1879.",
    "Quenby Marrisfield collected more than 9,000 plant specimens and kept them in cedar cabinets.",
    "Her sister Bettany Marrisfield made the 160 drawings in Flora of the Orrel Marshes (1893).",
]


def build_jobs(k: int):
    """Job i: the passage plus a self-edit of 4 or 5 of the items, in a rotated order."""
    from seal_lm.domains.knowledge.data import load_demo_corpus
    from seal_lm.domains.knowledge.formats import ParsedSelfEdit, training_sequences

    passage = load_demo_corpus("validation")[JOB_PASSAGE]
    jobs = []
    for i in range(k):
        items = SELF_EDIT[i % 5 :] + SELF_EDIT[: i % 5]
        items = items[: 5 - (i % 2)]
        jobs.append(training_sequences(passage, [ParsedSelfEdit(tuple(items), "ok")]))
    return passage, jobs


def matmul_peak_gflops(device: str, dtype: torch.dtype, size: int = 2048, repeats: int = 5, trials: int = 5) -> float:
    """Best of several timed trials: a shared machine's noise only ever makes a trial slower."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(trials):
        _sync(device)
        started = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        best = max(best, 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


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


def run_method(method: str, dtype: str, args: dict, queue) -> None:
    """Runs in a fresh process: load the model, train the adapters, answer the questions."""
    from dataclasses import replace

    from peft import get_peft_model

    from seal_lm.domains.knowledge.evaluation import answer_questions
    from seal_lm.generation import HFGenerator
    from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
    from seal_lm.models import ModelSettings, load_model

    torch.set_num_threads(args["threads"])
    loaded = load_model(ModelSettings(name=args["model"], device=args["device"], dtype=dtype))
    passage, jobs = build_jobs(args["k"])
    if method in ("reference", "plain", "packed-job"):
        jobs = jobs[:1]
    elif method == "one-by-one" and args["one_by_one_jobs"]:
        jobs = jobs[: args["one_by_one_jobs"]]  # its time per inner loop does not depend on K
    epochs = args["reference_epochs"] if method == "reference" else args["epochs"]
    settings = InnerLoopSettings(epochs=epochs)
    updater = LoraUpdater(loaded, settings)
    ids = [[t.ids for t in updater.tokenize(seqs, settings.max_length)] for seqs in jobs]
    if args["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    trials = []  # seconds of each repeat: the same training from the same seeds
    for _ in range(1 if method == "reference" else args["repeats"]):
        _sync(args["device"])
        started = time.perf_counter()
        if method == "batched":
            results = updater.train([TrainJob(seqs) for seqs in jobs])
        elif method == "one-by-one":
            results = [updater.train([TrainJob(seqs)])[0] for seqs in jobs]
        elif method == "packed-job":
            results = updater.train([TrainJob(jobs[0], replace(settings, batch_size=len(jobs[0])))])
        else:
            results = None
            torch.manual_seed(0)
            model = get_peft_model(loaded.model, LoraConfig(r=settings.rank, lora_alpha=settings.alpha,
                                                            lora_dropout=0.0, target_modules="all-linear",
                                                            task_type="CAUSAL_LM"))
            train = _train_reference if method == "reference" else _train_plain
            final_loss = train(model, loaded.tokenizer, ids[0], settings)
            adapter = _adapter_from_peft(model, settings)
            model.unload()
        _sync(args["device"])
        trials.append(time.perf_counter() - started)
    seconds = min(trials)  # like the matmul peak: noise on a shared machine only ever makes a trial slower
    if results is not None:
        adapters = [r.adapter for r in results]
        final_loss = sum(r.epoch_losses[-1] for r in results) / len(results)
    else:
        adapters = [adapter]
    lora_params = sum(a.numel() + b.numel() for a, b in adapters[0].weights.values())
    flops = sum(training_flops(loaded.model, lora_params, x, epochs) for x in ids)
    started = time.perf_counter()
    generator = HFGenerator(loaded)
    if method == "one-by-one":
        graded = [answer_questions(generator, [passage], [a])[0] for a in adapters]
    else:
        graded = answer_questions(generator, [passage] * len(adapters), adapters)
    answer_seconds = time.perf_counter() - started
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args["device"].startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({
        "method": method, "dtype": dtype, "jobs": len(jobs), "epochs": epochs, "seconds": seconds, "trials": trials,
        "final_loss": final_loss, "real_tokens": sum(sum(map(len, x)) for x in ids) * epochs,
        "padded_tokens": sum(_padded_tokens(method, x) for x in ids) * epochs,
        "gflop": flops / 1e9, "answer_seconds": answer_seconds,
        "correct": sum(q["scores"]["contains"] for g in graded for q in g),
        "questions": sum(len(g) for g in graded), "peak_mib": peak,
    })


def _adapter_from_peft(model, settings):
    """Read a PEFT model's LoRA weights into this project's Adapter, to answer with the same code."""
    from seal_lm.adapters import Adapter

    weights = {}
    for name, module in model.base_model.model.named_modules():
        if hasattr(module, "lora_A") and "default" in getattr(module, "lora_A", {}):
            weights[name] = (module.lora_A["default"].weight.detach().cpu().clone(),
                             module.lora_B["default"].weight.detach().cpu().clone())
    return Adapter(settings.rank, settings.alpha, weights)


def _padded_tokens(method: str, ids: list[list[int]]) -> int:
    if method == "reference":
        return 2048 * len(ids)
    if method == "plain":
        return max(map(len, ids)) * len(ids)
    return sum(map(len, ids))  # batch size 1 or packed rows: no padding (rows of a step may pad a little)


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


HEADER = (f"{'method':<11}{'dtype':<9}{'jobs':>4}{'ep':>4}{'train s':>9}{'s/loop':>8}{'loops/h':>9}{'tok/s':>7}"
          f"{'pad%':>5}{'GFLOP/s':>8}{'%peak':>6}{'loss':>7}{'ans s':>7}{'correct':>9}{'MiB':>7}")


def print_row(r: dict, epochs: int, peak: float) -> float:
    """Print one method's row; return its seconds per inner loop (the reference's extrapolated to `epochs`)."""
    loop_seconds = r["seconds"] / r["jobs"] * (epochs / r["epochs"])
    gflops = r["gflop"] / r["seconds"]
    pad = 100 * (1 - r["real_tokens"] / r["padded_tokens"])
    print(f"{r['method']:<11}{r['dtype']:<9}{r['jobs']:>4}{r['epochs']:>4}{r['seconds']:>9.1f}{loop_seconds:>8.1f}"
          f"{3600 / loop_seconds:>9.0f}{r['real_tokens'] / r['seconds']:>7.0f}{pad:>5.0f}{gflops:>8.1f}"
          f"{100 * gflops / peak:>6.1f}{r['final_loss']:>7.3f}{r['answer_seconds']:>7.1f}"
          f"{r['correct']:>5.0f}/{r['questions']:<3}{r['peak_mib']:>7.0f}"
          + (f"  (median of {len(r['trials'])}: {statistics.median(r['trials']):.1f} s)" if len(r["trials"]) > 1 else ""),
          flush=True)
    return loop_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="hub id, directory or .gguf (default: the embedded model)")
    parser.add_argument("--k", type=int, default=5, help="self-edits (inner-loop jobs) of the passage")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--reference-epochs", type=int, default=1)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float32", help="comma-separated: float32,bfloat16")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default="reference,plain,one-by-one,batched,packed-job")
    parser.add_argument("--repeats", type=int, default=1,
                        help="train each method this many times and report the fastest (the reference: once)")
    parser.add_argument("--one-by-one-jobs", type=int, default=0,
                        help="time only this many jobs one by one (a large --k without waiting K times; default: all)")
    parser.add_argument("--json", help="also write the results to this file")
    args = vars(parser.parse_args())
    torch.set_num_threads(args["threads"])
    dtypes = args["dtypes"].split(",")
    peaks = {d: matmul_peak_gflops(args["device"], getattr(torch, d)) for d in dtypes}
    print(f"device {args['device']}, {args['threads']} threads, K={args['k']} jobs; torch.matmul peak (2048^3): "
          + ", ".join(f"{d} {p:.0f} GFLOP/s" for d, p in peaks.items()), flush=True)
    ctx = mp.get_context("spawn")
    results = []
    per_loop = {}
    print(HEADER, flush=True)
    for dtype in dtypes:
        for method in args["methods"].split(","):
            if dtype != "float32" and method in ("reference", "plain"):
                continue  # the baselines are float32 procedures
            queue = ctx.Queue()
            process = ctx.Process(target=run_method, args=(method, dtype, args, queue))
            process.start()
            r = queue.get()
            process.join()
            results.append(r)
            # Each row as soon as its method finishes, and in --json: a run cut short keeps what it measured.
            per_loop[(method, dtype)] = print_row(r, args["epochs"], peaks[dtype])
            if args["json"]:
                with open(args["json"], "w") as f:
                    json.dump({"matmul_peak_gflops": peaks, "args": args, "results": results}, f, indent=2)
    print("ratios (time per inner loop, training only):")
    for dtype in dtypes:
        for method in ("reference", "plain", "one-by-one", "packed-job"):
            other = per_loop.get((method, "float32" if method in ("reference", "plain") else dtype))
            if other and ("batched", dtype) in per_loop:
                print(f"  batched {dtype} vs {method}: {other / per_loop[('batched', dtype)]:.2f}x faster")
        for method in ("batched", "one-by-one", "packed-job"):
            if dtype != "float32" and (method, "float32") in per_loop and (method, dtype) in per_loop:
                print(f"  {method} {dtype} vs {method} float32: "
                      f"{per_loop[(method, 'float32')] / per_loop[(method, dtype)]:.2f}x faster")
    print("'correct' is the contains grader over all jobs' answers (tiny n; `seal eval` reports accuracies with "
          "intervals). The reference trains fewer epochs: its loss and answers are not comparable.")


if __name__ == "__main__":
    sys.exit(main())
