# Two commands set everything up on a fresh machine:
#   make demo   - export, lint, parity-check and benchmark the bundled examples (onnxtax ci)
#   make test   - the test suite, including the OpenVINO provider in its own virtualenv
# Each creates or updates the virtualenvs it needs.

PYTHON ?= python3
VENV   := .venv
OVVENV := .venv-openvino
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: venv venv-openvino demo test test-fast bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test,plot]'
	touch $@

# onnxruntime-openvino installs under the same import name as onnxruntime, so it
# lives in its own virtualenv: onnxtax without its onnxruntime dependency.
$(OVVENV)/.installed: pyproject.toml constraints.txt
	test -x $(OVVENV)/bin/python || $(PYTHON) -m venv $(OVVENV)
	$(OVVENV)/bin/pip install $(PIP_FLAGS) torch onnx onnxscript numpy typer rich \
		'onnxruntime-openvino==1.24.1' pytest jsonschema
	$(OVVENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	touch $@

venv: $(VENV)/.installed
venv-openvino: $(OVVENV)/.installed

demo: venv
	cd examples && ../$(VENV)/bin/onnxtax ci --config onnxtax.toml --reports ../build/reports

test: venv venv-openvino
	ONNXTAX_OPENVINO_PYTHON=$(CURDIR)/$(OVVENV)/bin/python $(VENV)/bin/python -m pytest -q

test-fast: venv
	$(VENV)/bin/python -m pytest -q -m "not openvino"

bench: venv
	$(VENV)/bin/python benchmarks/startup.py
	$(VENV)/bin/python benchmarks/parity_overhead.py
	$(VENV)/bin/python benchmarks/bench_floor.py
	$(VENV)/bin/python benchmarks/parity_headroom.py

clean:
	rm -rf $(VENV) $(OVVENV) build .pytest_cache
