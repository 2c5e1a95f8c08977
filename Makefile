# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 7860
STAMP   = $(VENV)/.installed
# Where local copies of the real data sets are (conll2003/, wikitext-2/): `make test LMLAB_DATA_DIR=...`
# also runs the tests about them, which otherwise skip (and `make bench` needs it for CoNLL-2003).
# Nothing is looked for beside the checkout.
LMLAB_DATA_DIR ?=
export LMLAB_DATA_DIR

.PHONY: run test setup assets browser engines bench lint clean

# Re-install only when a requirements file changed: the second `make run` is quick.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) assets

assets: $(STAMP)
	$(PY) -m models.core.assets fetch

run: setup
	$(PY) app.py --host $(HOST) --port $(PORT)

# Chromium for the browser tests where it can be had (see tests/chromium.sh); they skip where not.
browser: $(STAMP)
	bash tests/chromium.sh $(PY)

# vLLM for CPUs in its own environment, outside the clone ($$LMLAB_HOME/engines/vllm; ~3.5 GB, 6-11 min):
# the remote engine's integration tests (marked `engine`) run once it is there and skip, saying so, before.
engines: $(STAMP)
	$(PY) -m models.engines.vllm_server install

test: setup browser
	HF_HUB_OFFLINE=1 $(PY) -m pytest $(PYTEST_ARGS)

bench: setup
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.generation
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.ner
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.checkpoint_codec
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.text_compression
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.finetune

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
