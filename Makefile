# Two commands set everything up on a fresh machine: `make demo` and `make test` (README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mkd-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# Debian packages the demo corpus and the tests need: the fortunes text, three speech engines for training
# voices, espeak-ng for the unseen-speech test, and alsa-utils for its recorded human voice.
APT_PKGS := fortunes flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts espeak-ng alsa-utils

.PHONY: install sysdeps lint test test-integration test-slow demo clean

install: $(STAMP) sysdeps

# Installs what is missing when run as root; otherwise stops with one line naming the command to run.
sysdeps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing system packages: $$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "make: missing system packages:" $$missing "- install them with: sudo apt-get install" $$missing >&2; exit 1; \
	  fi; \
	fi

# torch==2.13.0 first: that pin takes the CPU wheel from local disk; anything else pulls CUDA builds.
# piper-tts with --no-deps: its onnxruntime dependency would replace onnxruntime-gpu (README, Install).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[train,test,demo,lint,serve,ray]"
	$(BIN)/pip install -q --no-deps piper-tts==1.8.0
	touch $(STAMP)

# ruff (lint + format), mypy on the package, and the layer contract (pyproject.toml, [tool.importlinter]).
# mypy and lint-imports read folders, so they run on a hard-linked tree where cli/, models/ and exporters/
# sit inside mkdeploy/ as setuptools maps them (.ci/typecheck_tree.py).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python .ci/typecheck_tree.py mypy -p mkdeploy
	$(BIN)/python .ci/typecheck_tree.py lint-imports

# Unit tests on tiny random-weight models (a few minutes); the end-to-end ones on real weights, servers and
# processes are `make test-integration`; CI runs both (.ci/run).
test: $(STAMP) sysdeps
	$(BIN)/pytest -q -m "not slow and not integration"

test-integration: $(STAMP) sysdeps
	$(BIN)/pytest -q -m "integration and not slow"

test-slow: $(STAMP) sysdeps
	$(BIN)/pytest -q -m slow

demo: $(STAMP) sysdeps
	$(BIN)/mkd demo --workdir work/demo

clean:
	rm -rf $(VENV) work build *.egg-info
