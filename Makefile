# The README's two commands: `make app` and `make test`. Both create .venv when missing and install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 7860

.PHONY: app test install clean-venv browser llama-vocab

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip uninstall -y -q torchvision timm 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

app: $(STAMP)
	$(PY) app.py --preset nano --port $(PORT)

# the browser test drives Debian's chromium (no browser download); installed when missing
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# LLaMA's own tokenizer (Vicuna v0's) for the nextgpt-7b prompt tests: fetched once into the cache, never committed
llama-vocab: $(STAMP)
	$(PY) scripts/fetch_llama_vocab.py

test: $(STAMP) browser llama-vocab
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
