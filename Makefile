# flukeid: the two quick-start commands are `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test

.PHONY: demo test explore venv lint bench demo-model imagenet-model detector-model package package-test clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test]'
	touch $@ $(STAMP)

venv: $(STAMP)

## make demo: set up and start the app on its built-in demo catalog
demo: $(STAMP)
	$(VENV)/bin/flukeid demo

## make test: set up with the test extra and run the whole suite
test: $(TEST_STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q

## property tests with new random examples (the suite itself draws the same ones each run)
explore: $(TEST_STAMP)
	HYPOTHESIS_PROFILE=explore QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q \
		tests/model/test_records.py tests/reliability tests/app/test_undo_property.py tests/ui/test_review_truth.py

lint: $(TEST_STAMP)
	$(VENV)/bin/ruff check app model tests bench tools packaging
	$(VENV)/bin/lint-imports

## rebuild the demo bundle shipped in resources/models/demo (synthetic data only)
demo-model: $(STAMP)
	$(VENV)/bin/python -m tools.build_demo_model

## build the frozen ImageNet EfficientNet-Lite0 bundle (nothing trained) into /tmp/flukeid_imagenet_model/imagenet
imagenet-model: $(STAMP)
	$(VENV)/bin/python -m tools.build_imagenet_model

## rebuild the default fluke detector shipped in resources/models/detector (synthetic data only)
detector-model: $(STAMP)
	$(VENV)/bin/python -m tools.build_default_detector

## build the one-folder desktop program into dist/flukeid
package: $(STAMP)
	VENV=$(VENV) bash packaging/build.sh

## build (or reuse) the program and run its --self-test offscreen
package-test: $(TEST_STAMP)
	QT_QPA_PLATFORM=offscreen $(VENV)/bin/python -m pytest -q -m package tests/test_package.py

clean:
	rm -rf build dist .pytest_cache .ruff_cache
