# vuegraf developer and demo targets. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Home Assistant, for the tests that run it, in a venv of its own (its pins clash with ours).
HA_VENV ?= .venv-ha
HA_STAMP := $(HA_VENV)/.installed
HA_REQUIREMENTS := tests/harness/homeassistant-requirements.txt

.DEFAULT_GOAL := help
.PHONY: help deps venv venv-ha test test-unit test-dates lint demo docker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP) ## create .venv with vuegraf and the test tools

# Made anew when the pins change, so nothing of an older set is left in it.
$(HA_STAMP): $(HA_REQUIREMENTS)
	rm -rf $(HA_VENV)
	$(PYTHON) -m venv $(HA_VENV)
	$(HA_VENV)/bin/python -m pip install -q --upgrade pip
	$(HA_VENV)/bin/python -m pip install -q -r $(HA_REQUIREMENTS)
	touch $(HA_STAMP)

venv-ha: $(HA_STAMP) ## create .venv-ha with Home Assistant 2024.3.3 for its tests (about 670 MB)

deps: ## install the test servers (InfluxDB 1.x, VictoriaMetrics, Mosquitto, Docker) with apt if missing
	bash .ci/install-deps

test: deps $(STAMP) $(HA_STAMP) ## set up and run every test (integration tests start their own servers)
	$(VPY) -m pytest -q -n 3 --dist worksteal

test-unit: $(STAMP) ## only the tests that need no server
	$(VPY) -m pytest -q -n 2 -m "not integration"

# Instants the wall-clock tests are moved to by `make test-dates`: just before both DST changes
# of the simulated house (America/New_York) and of Europe, the days after the house's (so its
# 23- and 25-hour days lie inside the history windows), a local New Year, a leap day.
TEST_DATES ?= 2027-03-14T06:58:30Z 2027-11-07T05:58:30Z 2027-03-28T00:58:30Z \
	2027-10-31T00:58:30Z 2027-03-15T15:00:00Z 2027-11-08T15:00:00Z \
	2028-01-01T04:59:00Z 2028-02-29T23:59:00Z

test-dates: deps $(STAMP) ## the wall-clock tests (-m realclock) once at each of TEST_DATES
	@set -e; for start in $(TEST_DATES); do \
		echo "== VUEGRAF_TEST_START=$$start"; \
		VUEGRAF_TEST_START=$$start $(VPY) -m pytest -q -n 2 -m realclock; \
	done

lint: $(STAMP) ## ruff and mypy over sources, tests and benchmarks (mypy settings: pyproject.toml)
	$(VPY) -m ruff check src tests bench
	$(VPY) -m mypy

demo: $(STAMP) ## bundled simulator in, embedded SQLite store out; prints watts as they arrive
	$(VPY) -m vuegraf.demo

# `make docker` works with Docker 20.10 and newer, with the classic builder or BuildKit. More
# `docker build` options go in DOCKER_BUILD_OPTS, e.g. another Debian 12 base with Python 3.11+:
#   make docker DOCKER_BUILD_OPTS="--build-arg BASE_IMAGE=my-debian-python:12"
DOCKER ?= docker
DOCKER_IMAGE ?= vuegraf
DOCKER_BUILD_OPTS ?=

docker: ## build the Docker image (tag: DOCKER_IMAGE, default vuegraf; needs Docker 20.10 or newer)
	$(DOCKER) build --build-arg VERSION="$$(sed -n 's/^__version__ = "\(.*\)"/\1/p' src/vuegraf/__init__.py)" \
		$(DOCKER_BUILD_OPTS) -t $(DOCKER_IMAGE) .

clean: ## remove the venvs, caches and demo data
	rm -rf $(VENV) $(HA_VENV) build dist src/*.egg-info .pytest_cache .ruff_cache .mypy_cache demo
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
