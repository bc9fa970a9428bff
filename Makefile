# prune-lab: every target installs what it needs into .venv first (a fresh machine needs
# only python3 >= 3.10 with venv; torch/torchvision come from PyPI).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
CIFAR10_DIR ?= data/cifar10-jpeg
CIFAR10_LABEL ?= CIFAR-10 (JPEG q75 copy)

.PHONY: install demo test test-integration test-slow lint report bench reproduce-l1-short reproduce-l1-table1 clean

$(STAMP): pyproject.toml
	@avail=$$(df -Pk . | awk 'NR==2 {print int($$4/1024)}'); [ "$$avail" -ge 6500 ] || echo "install: only $$avail MiB free here; the .venv takes about 6 GiB on x86_64 (PyPI's torch is a CUDA build): free space first if pip stops with 'No space left on device'" >&2
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)          ## the embedded default: digits 8x8, small VGG, L1-norm 50%, fine-tune (~17 s on 2 idle CPU cores)
	$(VENV)/bin/prune-exp

test: $(STAMP)          ## fast CPU test suite (what CI runs): one worker per core, one torch thread each; the 10 slowest listed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n auto --durations=10

test-integration: $(STAMP)   ## subprocess runs, sweeps (joblib), torchrun (DDP on CPU), wheel build, SIGTERM/Ctrl-C, every preset's jobs dry-run; prints its time (budget: 15 min)
	@start=$$(date +%s); $(PY) -m pytest -q -m integration --durations=15; rc=$$?; \
	echo "make test-integration: $$(( $$(date +%s) - start )) s (budget 900 s)"; exit $$rc

test-slow: $(STAMP)     ## slow end-to-end tests on the real data in ../shared/data (skip when absent)
	$(PY) -m pytest -q -m slow

lint: $(STAMP)          ## ruff: lint rules (line length 120 included) and formatting
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

report: $(STAMP)        ## regenerate every table under results/tables from the runs under results/
	$(VENV)/bin/prune-report

bench: $(STAMP)         ## training speed (engine vs plain loop) + dense/pruned latency + LM tokens/s -> results/benchmarks/
	$(PY) scripts/bench_train.py --data-root $(CIFAR10_DIR) --data-label "$(CIFAR10_LABEL)" $(BENCH_ARGS)
	$(PY) scripts/bench_lm.py $(BENCH_LM_ARGS)

$(CIFAR10_DIR)/cifar-10-batches-py/test_batch:
	$(PY) ../shared/data/cifar10/prepare.py $(CIFAR10_DIR)

reproduce-l1-short: $(STAMP) $(CIFAR10_DIR)/cifar-10-batches-py/test_batch   ## short-budget CPU evidence (~1 h on 2 cores)
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/reproduce_l1_short_cpu.sh $(CIFAR10_DIR)

reproduce-l1-table1: $(STAMP)   ## Rethinking Table 1 (CIFAR-10) at the paper's budget: a GPU job
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash scripts/reproduce_rethinking_l1_cifar10.sh

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache
