# The README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
HOST   ?= 127.0.0.1
PORT   ?= 7860
STAMP   = $(VENV)/.installed

.PHONY: run test setup assets bench lint clean

# Re-install only when a requirements file changed: the second `make run` is quick.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q --upgrade pip
	$(PY) -m pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP) assets

assets: $(STAMP)
	$(PY) -m models.assets fetch

run: setup
	$(PY) app.py --host $(HOST) --port $(PORT)

test: setup
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
