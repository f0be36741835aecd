#!/bin/bash
# run.sh - on the GPU machine, over what scripts/device/pack.sh put in
# .device/: the GPU suite and the figures of docs/CUDA_NOTES.md.
#   bash scripts/device/run.sh [tests|caches|conversation|sanitize|bench|model|all]...
# Logs go to $OUT (the device tool's folder that comes back) when set.
set -u
root=$PWD
D=$root/.device
export LD_LIBRARY_PATH=$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export LLAVA_TEST_DATA=$root/tests/data LLAVA_TEST_ASSETS=$root/tests/assets
export LLAVA_BIN_DIR=$D/bin LLAVA_TMP=/tmp/llava-test LLAVA_SRC_DIR=$root/src
mkdir -p "$LLAVA_TMP"
[ -d $D/bin ] || tar -C $D -xJf $D/pack.tar.xz || exit 1
out=${OUT:-/tmp/llava-out}
mkdir -p "$out"
M7=/tmp/m7b-q4_0

log() { echo "== $*" >&2; }

make_7b() { # the 7B-shaped random Q4_0 GGUF pair (about 3 minutes, one core)
  [ -f $M7/text.gguf ] && return
  $D/bin/llava-quantize --random --preset llava-v1.6-mistral-7b --format gguf-q4_0 \
    --tokenizer $D/bin/tokenizer.json --out $M7 > "$out/quantize.log" 2>&1
}

tests() {
  local rc=0
  for t in test_cuda_ops test_cuda_attention; do
    log "$t"; $D/bin/$t 2>&1 | tee "$out/$t.log" | tail -40; [ ${PIPESTATUS[0]} = 0 ] || rc=1
  done
  log "test_forward on cuda"
  LLAVA_TEST_CUDA=1 $D/bin/test_forward 2>&1 | tee "$out/test_forward_cuda.log" | tail -30
  [ ${PIPESTATUS[0]} = 0 ] || rc=1
  return $rc
}

# The scheduler's caches and the memory governor on the GPU: every cached
# answer bit for bit the cold one, on the device.
caches() {
  local rc=0
  for t in test_prefix_cache test_image_cache test_governor; do
    log "$t on cuda"; LLAVA_TEST_DEVICE=cuda $D/bin/$t 2>&1 | tee "$out/$t-cuda.log" | tail -12
    [ ${PIPESTATUS[0]} = 0 ] || rc=1
  done
  return $rc
}

# A three-turn conversation about one image on the 7B pair, history resent:
# time to first token of each turn with the caches, then the same
# conversations on a server with both caches off (the answers must match).
conversation() {
  make_7b || return 1
  local img=$root/models/demo/samples/sample_03_400x400.png port=18090 mode
  for mode in cached cold; do
    local flags=; [ $mode = cold ] && flags="--no-prefix-cache --image-cache-mb 0"
    $D/bin/llava-server --model $M7/text.gguf --mmproj $M7/mmproj.gguf --device cuda --port $port \
      --parallel 4 $flags > "$out/server-7b-$mode.log" 2>&1 &
    local pid=$! i
    for i in $(seq 240); do
      env -u LD_LIBRARY_PATH curl -sf http://127.0.0.1:$port/health >/dev/null && break; sleep 0.5
    done
    log "conversation, 7B Q4_0, cuda, caches $mode"
    env -u LD_LIBRARY_PATH python3 tools/bench/conversation_ttft.py --port $port --image "$img" \
      --runs 3 --conv-base 1000 --json "$out/conversation-7b-$mode.json" 2>&1 |
      tee "$out/conversation-7b-$mode.txt"
    kill $pid; wait $pid 2>/dev/null
    port=$((port + 1))
  done
  python3 tools/bench/conversation_ttft.py --compare "$out/conversation-7b-cached.json" \
    "$out/conversation-7b-cold.json"
}

sanitize() {
  local rc=0
  for t in ${SANITIZE_TESTS:-test_cuda_ops test_cuda_attention}; do for tool in memcheck racecheck; do
    log "compute-sanitizer --tool $tool $t"
    extra=; [ $tool = memcheck ] && extra="--leak-check full"
    timeout ${SANITIZE_SECONDS:-150} compute-sanitizer --tool $tool --error-exitcode 9 \
      --report-api-errors no $extra \
      $D/bin/$t > "$out/san-$t-$tool.log" 2>&1 || rc=1
    grep -E "ERROR SUMMARY|PASSED|FAILED" "$out/san-$t-$tool.log" | tail -3
  done; done
  return $rc
}

bench() { # BENCH_ARGS: more llava-gpu-bench options (--only, --dtype, --n, --repeat)
  log "llava-gpu-bench"
  $D/bin/llava-gpu-bench --device cuda ${BENCH_ARGS:-} 2>&1 | tee "$out/gpu-bench.txt"
}

# Ours and llama.cpp's (its CUDA build in .peer/, see docs/CUDA_NOTES.md) on
# the same GGUF files, alternating: decode tg128 and prefill pp512, then an
# image question (the 672x672 image, 5 tiles).
model() {
  make_7b || { cat "$out/quantize.log"; return 1; }
  local P=/tmp/peer img=$root/.peer/a/image-672x672.png
  # llama.cpp's CUDA build travels in two calls (.peer/a, .peer/b: the carry limit)
  if [ ! -x $P/bin/llama-bench ] && [ -f $root/.peer/b/llama.tar.xz.part-ac ]; then
    mkdir -p $P && cat $root/.peer/a/llama.tar.xz.part-* $root/.peer/b/llama.tar.xz.part-* |
      tar -C $P -xJf - || return 1
  fi
  for round in 1 2; do
    log "round $round: llava-bench model, 7B Q4_0, cuda"
    $D/bin/llava-bench model --model $M7/text.gguf --mmproj $M7/mmproj.gguf --device cuda \
      --tg 128 --pp 512 --repeat 3 2>&1 | tee -a "$out/model-q4_0.txt"
    if [ -x $P/bin/llama-bench ]; then
      log "round $round: llama-bench, same file, -ngl 99"
      LD_LIBRARY_PATH=$P/bin:/usr/local/cuda/lib64 $P/bin/llama-bench -m $M7/text.gguf -ngl 99 -p 512 -n 128 -r 3 \
        2>&1 | tee -a "$out/llama-bench.txt"
    fi
  done
  if [ -f "$img" ]; then
    log "image question: ours"
    $D/bin/llava-bench model --model $M7/text.gguf --mmproj $M7/mmproj.gguf --device cuda \
      --image "$img" --tg 32 --repeat 3 2>&1 | tee "$out/model-image.txt"
    if [ -x $P/bin/llama-mtmd-cli ]; then
      log "image question: llama-mtmd-cli"
      LD_LIBRARY_PATH=$P/bin:/usr/local/cuda/lib64 $P/bin/llama-mtmd-cli -m $M7/text.gguf --mmproj $M7/mmproj.gguf \
        --image "$img" -p "Describe the image in detail." -n 32 -ngl 99 --temp 0 \
        > "$out/mtmd.txt" 2>&1
      grep -E "image|prompt eval|eval time|load time|total" "$out/mtmd.txt" | tail -12
    fi
  fi
}

# 32 streams through the server's scheduler (llava-bench serve) on the 7B pair.
serve() {
  make_7b || return 1
  log "llava-bench serve, 32 streams, 7B Q4_0, cuda"
  $D/bin/llava-bench serve --model $M7 --streams 32 --tokens 128 --device cuda 2>&1 |
    tee "$out/serve-32.txt"
}

# The demo model's 600 held-out questions on the GPU; the answers compared with
# the CPU's exact mode (.peera/eval-cpu-exact.json, made on the dev machine).
eval_demo() {
  log "llava-eval demo held-out, cuda"
  $D/bin/llava-eval --model models/demo --questions models/demo/heldout/questions.json \
    --annotations models/demo/heldout/annotations.json --images models/demo/heldout/images \
    --device cuda --parallel 32 --report "$out/eval-cuda.json" > "$out/eval-cuda.log" 2>&1 || return 1
  tail -3 "$out/eval-cuda.log"
  [ -f $root/.peera/eval-cpu-exact.json ] &&
    python3 tools/bench/same_answers.py "$out/eval-cuda.json" $root/.peera/eval-cpu-exact.json
}

# 1000 image requests through llava-server on the GPU; device memory before and after.
leak() {
  log "llava-server, 1000 requests"
  $D/bin/llava-server --model models/demo --device cuda --port 18080 --parallel 8 \
    > "$out/server.log" 2>&1 &
  local pid=$! i
  # the system's curl, not with the carried libraries
  for i in $(seq 60); do
    env -u LD_LIBRARY_PATH curl -sf http://127.0.0.1:18080/health >/dev/null && break; sleep 0.5
  done
  python3 tools/bench/leak_check.py http://127.0.0.1:18080 \
    models/demo/heldout/images/heldout_000000000001.png 1000
  local rc=$?
  kill $pid; wait $pid 2>/dev/null
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem,driver_version \
  --format=csv,noheader >&2
rc=0
for step in "${@:-all}"; do
  case $step in
    all) tests || rc=1; bench || rc=1; model || rc=1 ;;
    tests|caches|conversation|sanitize|bench|model|make_7b|serve|eval_demo|leak) $step || rc=1 ;;
    *) echo "run.sh: unknown step $step" >&2; exit 2 ;;
  esac
done
exit $rc
