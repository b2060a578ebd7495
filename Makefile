# Two commands do all the set-up on a fresh machine (make demo, make test):
#   make demo    - build, install into .venv with the pinned Inference, run a patched stream
#                  manager on real pipelines and report what happens (the main job)
#   make serve   - the same set-up, then a patched stream manager that keeps serving
#   make test    - build, install, then run the Rust and Python test suites
# Everything lives in ./.venv; pip's cache makes the second run fast.

VENV          ?= .venv
PYTHON        ?= python3
PY            := $(VENV)/bin/python
# The upstream release the tests run against (see ../shared/DESIGN.md "Targets").
INFERENCE_PIN ?= inference-cpu[http]==0.54.1
# The app's import chain needs psutil, which inference-cpu does not declare.
TEST_DEPS     := "$(INFERENCE_PIN)" psutil==7.2.2 "maturin>=1.5,<2" pytest==8.4.2 pytest-timeout==2.4.0 prometheus-client==0.26.0 "pyyaml>=6"
HOST          ?= 127.0.0.1
PORT          ?= 7070

.PHONY: deps build test rust-test python-test lint serve demo doctor clean compat-streamvision compat-inference17 stress fuzz sanitize

$(VENV)/.deps-stamp: Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TEST_DEPS)
	touch $@

deps: $(VENV)/.deps-stamp

build: deps
	VIRTUAL_ENV=$(abspath $(VENV)) $(VENV)/bin/maturin develop --release -q

rust-test:
	cargo test --quiet

python-test: build
	# pytest-timeout fails a hung test; this outer bound also catches a hang that holds the GIL.
	timeout 2400 $(PY) -m pytest

test: build rust-test python-test

lint:
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings

serve: build
	$(PY) -m stream_manager_patches serve --host $(HOST) --port $(PORT)

demo: build
	$(PY) -m stream_manager_patches demo

doctor: build
	$(PY) -m stream_manager_patches doctor

# inference >= 1.8 generation: streamvision (pulls torch, several GB) in its own venv;
# runs the suites that need no inference-specific pipeline against its app module.
SV_VENV ?= .venv-streamvision
SV_SUITES := tests/test_command_path.py tests/test_daemons.py tests/test_patching.py \
             tests/test_config.py tests/test_observability.py tests/test_manager_process.py \
             tests/test_hardening.py
compat-streamvision:
	test -x $(SV_VENV)/bin/python || $(PYTHON) -m venv $(SV_VENV)
	$(SV_VENV)/bin/python -m pip install -q "streamvision[webrtc,workflows]==0.1.4" psutil pytest==8.4.2 pytest-timeout==2.4.0 prometheus-client==0.26.0 "pyyaml>=6" "maturin>=1.5,<2"
	VIRTUAL_ENV=$(abspath $(SV_VENV)) $(SV_VENV)/bin/maturin develop --release -q
	SMP_TARGET_MODULE=streamvision.stream_manager.manager_app.app timeout 1800 $(SV_VENV)/bin/python -m pytest $(SV_SUITES) tests/test_compat.py

# inference-cpu 1.7.4: its legacy module path aliases to streamvision 0.1.1.
I17_VENV ?= .venv-inference17
compat-inference17:
	test -x $(I17_VENV)/bin/python || $(PYTHON) -m venv $(I17_VENV)
	$(I17_VENV)/bin/python -m pip install -q "inference-cpu[http]==1.7.4" psutil pytest pytest-timeout prometheus-client "pyyaml>=6" "maturin>=1.5,<2"
	VIRTUAL_ENV=$(abspath $(I17_VENV)) $(I17_VENV)/bin/maturin develop --release -q
	SMP_TARGET_MODULE=inference.core.interfaces.stream_manager.manager_app.app timeout 1800 $(I17_VENV)/bin/python -m pytest $(SV_SUITES) tests/test_compat.py

# Hardening runs that take longer than CI should (see README "Hardening").
STRESS_RUNS  ?= 100
FUZZ_SECONDS ?= 300
stress: build
	$(PY) scripts/sigterm_stress.py --runs $(STRESS_RUNS)

# cargo-fuzz needs a nightly toolchain (libFuzzer, -Zsanitizer=address).
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cargo +nightly fuzz run config_from_env -- -max_total_time=$(FUZZ_SECONDS)
	cargo +nightly fuzz run frame_reader -- -max_total_time=$(FUZZ_SECONDS)

# The Rust unit and property tests under AddressSanitizer (nightly: -Zsanitizer).
sanitize:
	RUSTFLAGS="-Zsanitizer=address" RUSTDOCFLAGS="-Zsanitizer=address" \
	  cargo +nightly test --lib --target x86_64-unknown-linux-gnu --target-dir target/asan

clean:
	rm -rf $(VENV) target
