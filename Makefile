# Two commands set everything up on a fresh machine: `make demo` and `make test` (README).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mkd-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-slow demo clean

install: $(STAMP)

# torch==2.13.0 first: that pin takes the CPU wheel from local disk; anything else pulls CUDA builds.
# piper-tts with --no-deps: its onnxruntime dependency would replace onnxruntime-gpu (DESIGN §8).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test,demo]"
	$(BIN)/pip install -q --no-deps piper-tts==1.8.0
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

test-slow: $(STAMP)
	$(BIN)/pytest -q -m slow

demo: $(STAMP)
	$(BIN)/mkd demo --workdir work/demo

clean:
	rm -rf $(VENV) work build *.egg-info
