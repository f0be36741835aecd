# llava - top-level driver for CMake. Targets:
#   make              build everything (Release) into build/bin/, quietly: CMake's
#                     and the compiler's output go to build/build.log, shown only
#                     when the build fails
#   make test         install deps, build, run every test; then again under ASan+UBSan
#   make test T=tok   only the tests whose name matches "tok"
#   make run          install deps, build (quietly, as make), serve a model with
#                     llava-server on 127.0.0.1:8080 (MODEL=path or ORG/NAME
#                     [HOST=… PORT=…]; default models/demo): its own lines show
#   make asan         build the ASan+UBSan tree in build-asan/
#   make format       clang-format every C and CUDA file in place
#   make fuzz         build the libFuzzer targets (clang) in build-fuzz/, fuzz the image
#                     decoders for FUZZ_SECONDS (default 60), then the safetensors reader,
#                     the tokenizer.json loader, the GGUF reader, the JSON Schema and grammar
#                     compilers, the OpenAI request parser, media URLs, the chat template,
#                     the config readers, the tokenizer on arbitrary text/ids, the SSE
#                     writer and the HTTP layer for a quarter of that each
#   make test-arm64   cross-build the engine core for ARM64 into build-arm64/ (Debian's
#                     gcc-aarch64-linux-gnu, LLAVA_BACKEND_ONLY) and run its tests under
#                     qemu-aarch64: the NEON kernels' correctness (ARM64_TESTS, T= as above)
#   make test-cuda    on a machine with an NVIDIA GPU: build with the CUDA backend into
#                     build-cuda/ (-DLLAVA_CUDA=ON) and run the GPU suite (ctest -L cuda:
#                     ops, attention and transformers parity on the device), then the
#                     same under compute-sanitizer memcheck and racecheck
#   make build-cuda   only that build (CI compiles it wherever nvcc is installed)
#   make cluster      install deps, build, start N (default 3) llava-server replicas of MODEL
#                     behind HAProxy on 127.0.0.1:8080 (scripts/cluster.sh; deploy/haproxy):
#                     a conversation stays on the replica holding its caches
#   make cluster-stop drain and stop them all
#   make install      build, then install the tools, the demo model, the docs and a
#                     systemd unit under PREFIX (default /usr/local), staged below
#                     DESTDIR if given (packagers: make install PREFIX=/usr DESTDIR=pkg)
#   make clean        remove build trees
JOBS  ?= $(shell nproc 2>/dev/null || echo 2)
T     ?=
MODEL ?= models/demo
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60
PREFIX ?= /usr/local
DESTDIR ?=
CTEST_ARGS = --output-on-failure $(if $(T),-R $(T),)
# The tests test-arm64 builds and runs under qemu: every test that links
# without the server's libraries and needs no tool binary (a few minutes).
ARM64_TESTS ?= kernels_neon;backend;qdot;quant;layers;forward;gguf;safetensors;tokenizer;chat_template;hf_config;hf_cache;model_dir;vqa_score;base;base64

.PHONY: all build build-quiet setup test test-release test-asan asan run format clean fuzz \
        test-arm64 build-cuda test-cuda install cluster cluster-stop

all: build-quiet

build:
	@cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build build -j $(JOBS)

# The same build with its output in build/build.log: printed, with where it
# is, only when the build fails.
build-quiet:
	@mkdir -p build
	@if ! { cmake -S . -B build -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) && \
	        cmake --build build -j $(JOBS); } > build/build.log 2>&1; then \
	  cat build/build.log; echo "make: the build failed (its output: build/build.log)" >&2; exit 1; fi

asan:
	@cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DLLAVA_SANITIZE=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-asan -j $(JOBS)

setup:
	@bash scripts/setup.sh

test: setup test-release test-asan

test-release: build
	@cd build && ctest $(CTEST_ARGS)

test-asan: asan
	@cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest $(CTEST_ARGS)

run: setup build-quiet
	@if [ ! -d "$(MODEL)" ] && ! echo "$(MODEL)" | grep -q '^[^/]*/[^/]*$$'; then \
	  echo "make run: no model at '$(MODEL)'. Give one: make run MODEL=path/to/llava-v1.6-mistral-7b-hf"; \
	  echo "(or a Hugging Face repo id ORG/NAME: taken from the local cache, else downloaded)"; exit 1; fi
	@build/bin/llava-server --model "$(MODEL)" --host "$${HOST:-127.0.0.1}" --port "$${PORT:-8080}"

install: build
	@DESTDIR="$(DESTDIR)" cmake --install build --prefix "$(PREFIX)"

fuzz:
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DLLAVA_FUZZ=ON -DLLAVA_TESTS=OFF $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-fuzz -j $(JOBS)
	@bash tests/fuzz/run.sh build-fuzz $(FUZZ_SECONDS)
	@for t in safetensors tokenizer gguf json_schema grammar oai_request media chat_template configs tok_text sse http; do mkdir -p build-fuzz/corpus/$$t build-fuzz/crashes; \
	  echo "fuzz: fuzz_$$t for $$(( $(FUZZ_SECONDS) / 4 ))s" >&2; \
	  build-fuzz/bin/fuzz_$$t -max_total_time=$$(( $(FUZZ_SECONDS) / 4 )) -max_len=32768 -timeout=10 \
	    -artifact_prefix=build-fuzz/crashes/ -print_final_stats=0 build-fuzz/corpus/$$t \
	    tests/fuzz/seeds/$$t tests/fuzz/regressions/$$t > build-fuzz/fuzz_$$t.log 2>&1; rc=$$?; \
	  tail -n 2 build-fuzz/fuzz_$$t.log; [ $$rc -eq 0 ] || { cat build-fuzz/fuzz_$$t.log; exit 1; }; done

test-arm64:
	@bash scripts/setup.sh --arm64
	@cmake -S . -B build-arm64 -DCMAKE_TOOLCHAIN_FILE=cmake/aarch64-linux-gnu.cmake \
	  -DCMAKE_BUILD_TYPE=Release -DLLAVA_BACKEND_ONLY=ON "-DLLAVA_BACKEND_ONLY_TESTS=$(ARM64_TESTS)" \
	  $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-arm64 -j $(JOBS)
	@cd build-arm64 && ctest $(CTEST_ARGS)

build-cuda:
	@cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DLLAVA_CUDA=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build build-cuda -j $(JOBS)

# compute-sanitizer runs the op and attention suites (the model parity suite
# takes the fixtures' small models through the same kernels).
SANITIZE_TESTS ?= test_cuda_ops test_cuda_attention
test-cuda: build-cuda
	@cd build-cuda && ctest -L cuda $(CTEST_ARGS)
	@if ! command -v compute-sanitizer >/dev/null; then \
	  echo "test-cuda: compute-sanitizer not found; sanitizer runs skipped"; exit 0; fi; \
	for t in $(SANITIZE_TESTS); do for tool in memcheck racecheck; do \
	  echo "test-cuda: compute-sanitizer --tool $$tool $$t"; \
	  (cd build-cuda && compute-sanitizer --tool $$tool --error-exitcode 9 --report-api-errors no \
	    $$([ $$tool = memcheck ] && echo --leak-check full) \
	    bin/$$t > sanitizer-$$t-$$tool.log 2>&1) || { tail -40 build-cuda/sanitizer-$$t-$$tool.log; exit 1; }; \
	  tail -1 build-cuda/sanitizer-$$t-$$tool.log; done; done

format:
	@clang-format -i $$(git ls-files '*.c' '*.h' '*.cu' '*.cuh')

clean:
	rm -rf build build-asan build-fuzz build-arm64 build-cuda

N ?= 3
cluster: setup build-quiet
	@MODEL="$(MODEL)" scripts/cluster.sh start $(N)

cluster-stop:
	@scripts/cluster.sh stop
