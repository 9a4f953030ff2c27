#!/usr/bin/env bash
# The GPU session's one prepared script (issue: the 3B recipe on a GPU). Runs on the device machine from
# the project root through the bundle, which builds the addon against the machine's CUDA PyTorch first:
#   bash ../shared/gpu/make-bundle.sh                                   (here, after npm install)
#   bash .device-bundle/on-device.sh bash bench/gpu/run.sh [PHASE...]   (there; $OUT is brought back)
# Phases, in priority order (default: all): env tier train1024 train2048 decode card long5120.
# A phase starts only if its estimate fits before DEADLINE seconds (default 540) from the start, so the
# run ends inside the device's limit with the most important figures first. Everything lands in
# /tmp/gpu-results and is packed into $OUT/results.tgz after every phase (a killed run keeps what it had).
# bench/gpu/table.mjs turns bench.jsonl into the ratio table of bench/results.
set -uo pipefail
cd "$(dirname "$0")/../.."
R=/tmp/gpu-results; mkdir -p "$R"; OUTDIR=${OUT:-/tmp/gpu-out}; mkdir -p "$OUTDIR"
DEADLINE=${DEADLINE:-540}; START=$SECONDS
CFG=../shared/bench/configs/bloom-3b.json
PEER=../shared/gpu/peer_hf_cuda.py; [ -f "$PEER" ] || PEER=.device-bundle/peer_hf_cuda.py
PHASES=${*:-env tier train1024 train2048 decode card long5120}

log() { echo "[$(date +%T) +$((SECONDS - START))s] $*" | tee -a "$R/run.log"; }
pack() { tar czf "$OUTDIR/results.tgz.tmp" -C "$R" . && mv "$OUTDIR/results.tgz.tmp" "$OUTDIR/results.tgz"; }
fits() { [ $((SECONDS - START + $1)) -le "$DEADLINE" ] || { log "skip $2: needs ~$1 s, $((DEADLINE - SECONDS + START)) s left"; return 1; }; }
# ours LIMIT ARGS...: one `oasft bench` line into bench.jsonl; peer LIMIT ARGS...: the HF peer's lines.
# ours also samples nvidia-smi (a second opinion on memory: the whole device, allocator cache included).
ours() {
  local limit=$1; shift
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$R/smi.csv" 2>/dev/null & local smi=$!
  timeout "$limit" node bin/oasft.js bench "$@" --device cuda 2>>"$R/bench.err" | tail -1 | tee -a "$R/bench.jsonl"
  kill $smi 2>/dev/null
  echo "{\"impl\":\"nvidia-smi\",\"args\":\"$*\",\"peak_used_gb\":$(awk '$1 > m { m = $1 } END { print m / 1024 }' "$R/smi.csv")}" >> "$R/bench.jsonl"
}
peer() { [ "${SKIP_PEER:-0}" = 1 ] && return 0; local limit=$1; shift; PYTHONUNBUFFERED=1 timeout "$limit" python3 "$PEER" "$@" 2>>"$R/bench.err" | tee -a "$R/bench.jsonl"; }

phase_env() {
  { nvidia-smi; node --version; python3 -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda, "transformers", transformers.__version__)';
    node bin/oasft.js info; node -e 'import("./dist/src/torch/index.js").then((t) => console.log("features", JSON.stringify(t.features)))';
    tail -5 "$OUTDIR/addon-build.log" 2>/dev/null; grep -i "did not build" "$OUTDIR/addon-build.log" 2>/dev/null; } > "$R/env.txt" 2>&1
  grep -E "H200|torch|features|libtorch" "$R/env.txt" | head -8
}
phase_tier() { timeout 150 node --test --test-concurrency=1 dist/test-gpu/ > "$R/test-gpu.log" 2>&1; grep -E "^# (tests|pass|fail|skipped)|^not ok" "$R/test-gpu.log"; }
phase_train1024() {
  ours 150 train --model-config "$CFG" --seq-len 1024 --batch-size 4 --bf16 --steps 6 --warmup 3
  peer 200 "$CFG" 1024 4 bf16
}
# Decoding with CUDA graphs (native/graph.h; the default where built), then bf16 again with plain replays.
phase_decode() {
  ours 90 generate --model-config "$CFG" --dtype bf16 --prompt-len 32 --new-tokens 128 --steps 3 --warmup 1
  ours 90 generate --model-config "$CFG" --dtype fp32 --prompt-len 32 --new-tokens 128 --steps 3 --warmup 1
  OASFT_CUDA_GRAPH=0 ours 90 generate --model-config "$CFG" --dtype bf16 --prompt-len 32 --new-tokens 128 --steps 3 --warmup 1
}
phase_train2048() {
  ours 150 train --model-config "$CFG" --seq-len 2048 --batch-size 4 --bf16 --grad-ckpt --steps 6 --warmup 3
  peer 220 "$CFG" 2048 4 bf16 ckpt
}
phase_long5120() { ours 120 train --model-config "$CFG" --seq-len 5120 --batch-size 1 --bf16 --grad-ckpt --steps 4 --warmup 2; }
phase_card() { timeout $((DEADLINE - SECONDS + START)) bash bench/gpu/card-recipe.sh "$R/card" 2>&1 | tail -12; }

declare -A ESTIMATE=([env]=15 [tier]=90 [train1024]=60 [decode]=45 [train2048]=70 [long5120]=25 [card]=150)
log "phases: $PHASES (deadline ${DEADLINE}s)"
for p in $PHASES; do
  fits "${ESTIMATE[$p]:-60}" "$p" || continue
  log "phase $p"; "phase_$p"; log "phase $p done"; pack
done
log "all done"; pack
