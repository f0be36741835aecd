#!/usr/bin/env bash
# run.sh BUILD_DIR SECONDS - runs the image decoder fuzzer (make fuzz).
#
# Seeds: the small test images (tests/assets/images/*, dev/), the inputs of
# past crashes (tests/fuzz/regressions/image_decode/) and the corpus grown
# by earlier runs in BUILD_DIR/corpus. A crash leaves its input in
# BUILD_DIR/crashes/: once fixed, copy it to tests/fuzz/regressions/
# image_decode/ so ctest fuzz_replay_image_decode replays it.
set -euo pipefail
build="${1:-build-fuzz}"
seconds="${2:-60}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="$build/bin/fuzz_image_decode"
corpus="$build/corpus/image_decode"
seeds="$build/seeds/image_decode"
mkdir -p "$corpus" "$seeds" "$build/crashes"
# Seeds up to 64 KB: bigger ones only slow every mutation down.
find "$root/tests/assets/images" -type f -size -64k \
  \( -name '*.jpg' -o -name '*.png' -o -name '*.gif' -o -name '*.webp' -o -name '*.bmp' \) \
  -exec cp -f {} "$seeds/" \;
find "$root/tests/fuzz/regressions/image_decode" -type f ! -name 'README*' -exec cp -f {} "$seeds/" \;
echo "fuzz: $bin for ${seconds}s, $(ls "$seeds" | wc -l) seeds, corpus $corpus" >&2
ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" \
UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}" \
  "$bin" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2560 \
  -dict="$root/tests/fuzz/image.dict" -artifact_prefix="$build/crashes/" \
  -print_final_stats=1 "$corpus" "$seeds"
