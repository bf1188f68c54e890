# The two commands a new user runs: `make demo` and `make test`.
# Both create (or reuse) a local virtual environment in .venv and install what they need.
PYTHON ?= $(shell command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test validate docs docs-fast bench bench-env clean

$(STAMP): pyproject.toml setup.py lmmbayes/engines/collapsed/_kernel.c
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), "lmmbayes needs Python >= 3.12, found " + sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m lmmbayes.app.demo

# Type hints checked by mypy, then two pytest workers, one test file each at a time (module
# fixtures stay in one process): the joint engine's compiles and the samplers overlap on the 2 cores.
test: $(STAMP)
	$(BIN)/python -m mypy
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

# Long validations (simulation-based calibration, coverage): not part of `make test`.
# Writes docs/validation.md.
validate: $(STAMP)
	$(BIN)/python validation/sbc.py
	$(BIN)/python -m pytest -q -m slow -o addopts=""

# The documentation site: regenerate the tutorial's and the after-the-fit page's figures from
# the examples, then build with mkdocs in strict mode (broken references fail). No network
# needed. Output: site/.
docs: $(STAMP)
	$(BIN)/python examples/bounce_times_workflow.py docs/figures
	$(BIN)/python examples/after_the_fit.py docs/figures
	$(BIN)/mkdocs build --strict

# What CI runs (tests/test_docs.py): strict build on the committed figures.
docs-fast: $(STAMP)
	$(BIN)/mkdocs build --strict

# Benchmarks against bambi (its own environment: bambi 0.21 pins formulae < 0.7).
bench-env:
	test -x benchmarks/.venv-bambi/bin/python || ($(PYTHON) -m venv benchmarks/.venv-bambi && \
	  benchmarks/.venv-bambi/bin/python -m pip install --quiet "bambi==0.21.*" nutpie)

# lme4 and brms join where R is installed (optional; see benchmarks/worker_r.R). About 45 min.
bench: $(STAMP) bench-env
	$(BIN)/python benchmarks/run.py --append-doc --cases bounce,sleepstudy \
	  --tools lmmbayes-collapsed,lmmbayes-joint,bambi-nutpie,bambi-pymc,lme4,brms
	$(BIN)/python benchmarks/run.py --append-doc --cases sim_N10000_G10,sim_N10000_G1000 --timeout 900 \
	  --tools lmmbayes-collapsed,lmmbayes-joint,bambi-nutpie,bambi-pymc,lme4
	$(BIN)/python benchmarks/run.py --append-doc --cases sim_N100000_G10,sim_N100000_G1000 --timeout 900 \
	  --tools lmmbayes-collapsed,lmmbayes-joint,bambi-nutpie,lme4
	$(BIN)/python benchmarks/run.py --append-doc --cases sim_N1000000_G10 --phases cold \
	  --tools lmmbayes-collapsed,lme4
	$(BIN)/python benchmarks/run.py --append-doc --cases sim_N1000000_G1000 --phases cold --timeout 1200 \
	  --tools lmmbayes-collapsed,lme4,bambi-nutpie

clean:
	rm -rf $(VENV) .pytest_cache
