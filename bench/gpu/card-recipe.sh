#!/usr/bin/env bash
# The card's recipe end to end on one GPU, as a user would run it (issue: the 3B recipe on a GPU):
#   train   oasft train --configs defaults bloom-zh-3b shared-sample --deepspeed (ZeRO-3 from the card's
#           DeepSpeed JSON, here over NCCL in a one-process world), gradient checkpointing, bf16, on a
#           3B-shaped BLOOM (random init from ../shared/bench/configs/bloom-3b.json) and the shared samples;
#   reload  oasft eval --tasks mmlu --limit 1 on the saved folder (sharded safetensors);
#   serve   oasft serve answering one streamed chat completion;
#   serve16 16 concurrent streams through the engine against one (bench/serve.mjs);
#   export  oasft export gguf --type q8_0.
# Each step's wall time and the GPU's peak memory in use (nvidia-smi, sampled every 200 ms) go to
# $RESULTS/card-recipe.jsonl; logs beside it. On a machine without a GPU it runs the same steps on the
# CPU with a tiny model (MODEL_CONFIG=configs/bloom-tiny.json DEVICE=cpu MAX_STEPS=2), to check the script.
#   bash bench/gpu/card-recipe.sh [RESULTS_DIR]
set -uo pipefail
cd "$(dirname "$0")/../.."
RESULTS=${1:-${OUT:-/tmp}/card-recipe}; mkdir -p "$RESULTS"
MODEL_CONFIG=${MODEL_CONFIG:-../shared/bench/configs/bloom-3b.json}
DEVICE=${DEVICE:-cuda}; MAX_STEPS=${MAX_STEPS:-30}; ACCUM=${ACCUM:-4}
WORK=${WORK:-$(mktemp -d /tmp/oasft-card-XXXX)}
OASFT="node bin/oasft.js"
jsonl=$RESULTS/card-recipe.jsonl

# step NAME CMD...: runs CMD, logs to $RESULTS/NAME.log, appends {step, seconds, exit, gpu_peak_used_gb}.
step() {
  local name=$1; shift
  local mem=$WORK/$name.mem sampler=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$mem" 2>/dev/null & sampler=$!
  fi
  local t0; t0=$(date +%s.%N)
  "$@" > "$RESULTS/$name.log" 2>&1; local rc=$?
  local secs; secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  local peak; peak=$( [ -s "$mem" ] && sort -n "$mem" | tail -1 || echo 0)
  printf '{"step":"%s","seconds":%.1f,"exit":%d,"gpu_peak_used_gb":%.1f}\n' "$name" "$secs" "$rc" "$(awk -v p="$peak" 'BEGIN { print p / 1024 }')" | tee -a "$jsonl"
  [ $rc -eq 0 ] || { tail -20 "$RESULTS/$name.log"; return $rc; }
}

export RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 LOCAL_WORLD_SIZE=1 MASTER_ADDR=127.0.0.1 MASTER_PORT=${MASTER_PORT:-29611}
backend=$([ "$DEVICE" = cpu ] && echo gloo || echo nccl)
step train $OASFT train --configs defaults bloom-zh-3b shared-sample --deepspeed --cache_dir ../shared/data \
  --tokenizer_name tokenizers/oasst-tiny-bpe --tokenizer_family bloom --model_name "$MODEL_CONFIG" \
  --output_dir "$WORK/run" --device "$DEVICE" --dtype bf16 --dist_backend "$backend" --max_steps "$MAX_STEPS" \
  --gradient_accumulation_steps "$ACCUM" --warmup_steps 5 --learning_rate 1e-5 --eval_steps 1000000 \
  --save_steps 1000000 --logging_steps 1 --num_train_epochs 1 || exit 1
unset RANK WORLD_SIZE LOCAL_RANK LOCAL_WORLD_SIZE MASTER_ADDR MASTER_PORT
cp "$WORK/run/log.jsonl" "$RESULTS/train-log.jsonl" 2>/dev/null
ls -la "$WORK/run" > "$RESULTS/saved-folder.txt"

step eval $OASFT eval --model "$WORK/run" --tasks mmlu --limit 1 --data-dir ../shared/data --out "$WORK/eval" \
  --device "$DEVICE" --dtype bf16 && cp "$WORK/eval/results.json" "$RESULTS/eval-results.json"

serve_once() {
  local port=$((18500 + RANDOM % 500))
  $OASFT serve --model "$WORK/run" --port $port --device "$DEVICE" --dtype bf16 & local pid=$!
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.5; done
  curl -sN "http://127.0.0.1:$port/v1/chat/completions" -H 'content-type: application/json' \
    -d '{"messages":[{"role":"user","content":"What is the capital of Italy?"}],"max_tokens":16,"stream":true}'
  local rc=$?; kill $pid; wait $pid 2>/dev/null; return $rc
}
step serve serve_once
# The engine under load: aggregate tok/s of 16 concurrent streams against one (target: >= 8x).
step serve16 node bench/serve.mjs --model "$WORK/run" --device "$DEVICE" --dtype bf16 --streams 1,16 \
  --new-tokens 64 --repeats 1 && cp "$RESULTS/serve16.log" "$RESULTS/serve-streams.md"

step export $OASFT export gguf --model "$WORK/run" --out "$WORK/model-q8_0.gguf" --type q8_0 --device "$DEVICE" \
  && ls -la "$WORK/model-q8_0.gguf" >> "$RESULTS/saved-folder.txt"
[ "${KEEP:-0}" = 1 ] || rm -rf "$WORK"
