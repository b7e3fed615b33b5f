"""Benchmark: one passage's self-edit evaluation as SEAL runs it, at a model's real size.

An evaluation is an inner loop (10 epochs, batch 1, the passage and 5 implications of typical length)
and then 5 closed-book answers of up to 64 tokens. Side by side, each in its own fresh process:
  one-by-one - K=5 self-edits evaluated one after another (SEAL's procedure: one adapter at a time);
  batched    - the 5 trained together in one multi-adapter pass and their 25 answers in one batch.
Prints seconds per self-edit (training and answers), training tokens/s, the share of the device's
matmul peak measured in the same run, and peak memory (resident on the CPU, allocated on a GPU).
The model is the embedded one or a random-weight architecture from shapes.py (timing only). The inner loop
is seal-lm's default (LoRA rank 32 on every linear layer, no clipping, the loss on the sequences' own
tokens); with --lora reference, LoRA as SEAL's src/inner/TTT_server.py sets it (no target_modules, so
PEFT's default q_proj and v_proj) with the Trainer's gradient clipping at 1.0. Either way sequences are
packed, not padded to 2048 as the reference pads them (bench/inner_loop.py's reference method times that).

    python bench/self_edit_eval.py [--model embedded|qwen2.5-0.5b|llama-3.2-1b|qwen2.5-7b] [--device cpu]
                                   [--dtype bfloat16] [--kv_cache static] [--methods batched-graph,batched]
                                   [--lora all-linear|reference]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import time

import torch

from inner_loop import build_jobs, matmul_peak_gflops, training_flops

QUESTIONS = ["Who studied the plants of the Orrel Marshes?", "Where was Quenby Marrisfield born?",
             "When was the lantern sundew discovered?", "How many specimens did she collect?",
             "Who made the drawings?"]


def run(method: str, args: dict, queue) -> None:
    from dataclasses import replace

    from seal_lm.domains.knowledge.data import Passage, Question
    from seal_lm.domains.knowledge.evaluation import QuestionSettings, answer_questions
    from seal_lm.generation import HFGenerator
    from seal_lm.inner_loop import InnerLoopSettings, LoraUpdater, TrainJob
    from seal_lm.models import ModelSettings, load_model

    torch.set_num_threads(args["threads"])
    if args["model"] == "embedded":
        loaded = load_model(ModelSettings(device=args["device"], dtype=args["dtype"]))
    else:
        from shapes import random_model

        loaded = random_model(args["model"], args["device"], args["dtype"])
        loaded.model.generation_config.min_new_tokens = 64  # random weights: every answer its full length
    if args["kv_cache"] == "static":  # as model.kv_cache static: compiled, graph-captured decoding on CUDA
        loaded.model.generation_config.cache_implementation = "static"
    passage, jobs = build_jobs(args["k"])
    asked = Passage(passage.title, passage.context, tuple(Question(q, ("x",)) for q in QUESTIONS))
    # "-graph": the same method with inner_loop.cuda_graph (captured training steps on CUDA)
    name, method, graphed = method, method.removesuffix("-graph"), method.endswith("-graph")
    lora = {"target_modules": "peft-default", "max_grad_norm": 1.0} if args["lora"] == "reference" else {}
    settings = InnerLoopSettings(epochs=args["epochs"], cuda_graph=graphed, **lora)
    updater = LoraUpdater(loaded, settings, max_adapters=args["k"] if method == "batched" else 1)
    if args["device"].startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    results = updater.train([TrainJob(seqs, replace(settings, seed=i)) for i, seqs in enumerate(jobs)])
    _sync(args["device"])
    trained = time.perf_counter() - started
    generator = HFGenerator(loaded, batch_size=64)
    questions = QuestionSettings(max_new_tokens=64)
    started = time.perf_counter()
    if method == "batched":
        answer_questions(generator, [asked] * len(results), [r.adapter for r in results], questions)
    else:
        for r in results:
            answer_questions(generator, [asked], [r.adapter], questions)
    _sync(args["device"])
    answered = time.perf_counter() - started
    ids = [[t.ids for t in updater.tokenize(seqs, settings.max_length)] for seqs in jobs]
    lora = sum(a.numel() + b.numel() for a, b in results[0].adapter.weights.values())
    flops = sum(training_flops(loaded.model, lora, seq_ids, args["epochs"]) for seq_ids in ids)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if args["device"].startswith("cuda")
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put({"method": name, "train_s": trained, "answer_s": answered, "tokens": sum(map(len, sum(ids, []))) *
               args["epochs"], "flops": flops, "peak_mib": peak})


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="embedded", help="embedded, or a shape from shapes.py")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--k", type=int, default=5, help="self-edits of the passage (default 5)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--methods", default="batched,one-by-one")
    parser.add_argument("--kv_cache", default="dynamic", choices=("dynamic", "static"), help="answer generation's")
    parser.add_argument("--lora", default="all-linear", choices=("all-linear", "reference"),
                        help="all-linear: seal-lm's default inner loop; reference: LoRA on q_proj and v_proj with "
                             "gradients clipped at 1.0, as SEAL's TTT_server.py")
    args = vars(parser.parse_args())
    peak = matmul_peak_gflops(args["device"], getattr(torch, args["dtype"]))
    context = mp.get_context("spawn")
    rows = []
    for method in args["methods"].split(","):
        queue = context.Queue()
        process = context.Process(target=run, args=(method, args, queue))
        process.start()
        rows.append(queue.get())
        process.join()
        row = rows[-1]
        per_edit = (row["train_s"] + row["answer_s"]) / args["k"]
        gflops = row["flops"] / row["train_s"] / 1e9
        print(json.dumps({**row, "seconds_per_self_edit": per_edit, "train_gflops": gflops,
                          "percent_of_peak": 100 * gflops / peak}), flush=True)
    print(f"\n{args['model']} on {args['device']} ({args['dtype']}, {args['kv_cache']} KV cache, LoRA {args['lora']}), "
          f"matmul peak {peak:.0f} GFLOP/s, K={args['k']}, {args['epochs']} epochs, 5 answers of 64 tokens per self-edit")
    print(f"{'method':<16}{'s/self-edit':>12}{'train s':>10}{'answer s':>10}{'train tok/s':>12}{'% peak':>8}"
          f"{'peak MiB':>10}")
    for row in rows:
        gflops = row["flops"] / row["train_s"] / 1e9
        print(f"{row['method']:<16}{(row['train_s'] + row['answer_s']) / args['k']:>12.2f}{row['train_s']:>10.1f}"
              f"{row['answer_s']:>10.1f}{row['tokens'] / row['train_s']:>12.0f}{100 * gflops / peak:>8.1f}"
              f"{row['peak_mib']:>10.0f}")
    if len(rows) == 2:  # the first method against the second, the reference
        ours, theirs = rows
        print(f"{ours['method']} vs {theirs['method']}: "
              f"{(theirs['train_s'] + theirs['answer_s']) / (ours['train_s'] + ours['answer_s']):.2f}x overall, "
              f"training {theirs['train_s'] / ours['train_s']:.2f}x")


if __name__ == "__main__":
    main()
