# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# faiss flavour: cpu (default) or gpu (`make install EXTRA=gpu`)
EXTRA  ?= cpu
STAMP  := $(VENV)/.installed-$(EXTRA)
DEMO_OUT ?= runs/demo

export RAY_USAGE_STATS_ENABLED=0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1

.PHONY: install demo test test-fast readme lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[$(EXTRA),dev]'
	touch $@

demo: install
	$(BIN)/culturesim demo --out $(DEMO_OUT)

test: install
	$(BIN)/python -m pytest -q -ra --durations=15

# the unit tests only (pure code, no Ray, no browser): under 3 minutes here
test-fast: install
	$(BIN)/python -m pytest -q -ra -m "not ray" tests/unit

# the README's command tables, regenerated from the argparse definitions
readme: install
	$(BIN)/python -m culturesim_ray.cli_docs --write README.md

lint: install
	$(BIN)/ruff check culturesim_ray jobs tests benchmarks

bench: install
	$(BIN)/python benchmarks/embed.py --quick

clean:
	rm -rf $(VENV) runs
