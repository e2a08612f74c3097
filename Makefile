# Development of the template itself. Needs only Python 3.11+ with pip and
# access to PyPI: every tool lands in ./.venv.
#
#   make test   install the tools + every pinned dependency, run the whole suite
#   make demo   render the default project into ./demo/ and serve it (SQLite)
#   make docs   build the documentation strictly into ./site/
#   make lint   ruff over the template's own hooks, tests and scripts
#   make locks  one uv.lock per combination of modules (after a pin or module change)
#   make pins   refresh pins.toml to the newest versions, then make locks

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.9
PINS := {{cookiecutter.project_slug}}/.template/pins.toml
STAMP := $(VENV)/.installed
# pytest-xdist workers; the bakes are spread across them
WORKERS ?= auto
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test demo docs lint bench locks pins clean

help:
	@echo "make test   run the template's whole test suite (installs what it needs)"
	@echo "make demo   render the default project into ./demo/ and serve it on SQLite"
	@echo "make docs   build the docs strictly into ./site/"
	@echo "make lint   ruff check + format check of hooks/, tests/, scripts/"
	@echo "make bench  benchmark the default project against bare FastAPI (throughput, start-up, memory), and its jobs (needs wrk)"
	@echo "make locks  write each missing or stale lock in .template/locks/ (needs PyPI)"
	@echo "make pins   refresh pins.toml to the newest versions on PyPI, then make locks"
	@echo "make clean  remove .venv, demo/, site/"

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(UV): | $(VPY)
	$(VPY) -m pip install --quiet uv==$(UV_VERSION)

# One shared venv: the template's tools plus the union of all pins (with the
# extras the post-gen hook's requirement table asks for).
$(STAMP): pyproject.toml scripts/pins.py $(PINS) $(wildcard hooks/post_gen_project.py) | $(UV)
	$(VPY) scripts/pins.py > $(VENV)/requirements.txt
	$(UV) pip install --quiet --python $(VPY) -r $(VENV)/requirements.txt
	@touch $@

install: $(STAMP)

test: $(STAMP)
	$(VPY) -m pytest -n $(WORKERS) --dist loadgroup $(PYTEST_ARGS)

demo: $(STAMP)
	rm -rf demo
	$(VPY) -m cookiecutter --no-input --overwrite-if-exists --output-dir demo .
	cd demo/*/ && $(MAKE) install && $(MAKE) dev

docs: $(STAMP)
	$(VPY) -m mkdocs build --strict --site-dir site

bench: $(STAMP) ## needs wrk (apt-get install wrk); BENCH_DATABASE_URL for PostgreSQL, BENCH_REDIS_URL (or redis-server) for jobs
	$(VPY) bench/run.py $(BENCH_ARGS)

lint: $(STAMP)
	$(VPY) -m ruff check hooks tests scripts bench
	$(VPY) -m ruff format --check hooks tests scripts bench

locks: $(STAMP)
	$(VPY) scripts/lock.py

pins: $(STAMP)
	$(VPY) scripts/update_pins.py
	$(VPY) scripts/lock.py

clean:
	rm -rf $(VENV) demo site
