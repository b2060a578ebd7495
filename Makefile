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

.PHONY: deps build test rust-test python-test lint serve demo doctor clean

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

clean:
	rm -rf $(VENV) target
