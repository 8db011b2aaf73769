# Two commands set everything up on a fresh machine:
#   make demo   - export, lint, parity-check, benchmark and quantize the bundled examples (onnxtax ci),
#                 then one refused and one approved INT8 quantization
#   make test   - the test suite, including the OpenVINO provider in its own virtualenv and the
#                 Node.js serving host (onnxruntime-node from npm, cached: make node-env)
# Each creates or updates the virtualenvs and caches it needs.

PYTHON ?= python3
VENV   := .venv
OVVENV := .venv-openvino
PIP_FLAGS := --disable-pip-version-check -q -c constraints.txt

.PHONY: venv venv-openvino node-env demo test test-fast bench bench-scale bench-serve clean

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[test,plot,models,sign,minilm]'
	$(VENV)/bin/python -m compileall -q onnxtax  # an editable install is not byte-compiled by pip
	touch $@

# onnxruntime-openvino installs under the same import name as onnxruntime, so it
# lives in its own virtualenv: onnxtax without its onnxruntime dependency.
$(OVVENV)/.installed: pyproject.toml constraints.txt
	test -x $(OVVENV)/bin/python || $(PYTHON) -m venv $(OVVENV)
	$(OVVENV)/bin/pip install $(PIP_FLAGS) torch onnx onnxscript numpy typer rich \
		'onnxruntime-openvino==1.24.1' pytest jsonschema
	$(OVVENV)/bin/pip install $(PIP_FLAGS) --no-deps -e .
	$(OVVENV)/bin/python -m compileall -q onnxtax
	touch $@

venv: $(VENV)/.installed
venv-openvino: $(OVVENV)/.installed

# serve-bench's Node.js host: onnxruntime-node from npm into $ONNXTAX_NODE_DIR (default
# ~/.cache/onnxtax/node), installed once by onnxtax's own code and reused offline (needs node and npm)
node-env: venv
	$(VENV)/bin/python -m onnxtax.serve.node_env

# The quantization part: examples/fraud_data.py writes the data segments; the ci config's
# [models.fraud.quantize] approves an INT8 build; then one quantization that must be refused
# (calibrated on ordinary traffic only: the tail segment fails while the aggregate passes)
# and the approved one with its full table.
QUANTIZE_EVAL := --eval data/fraud_eval.npz --segment-key segment --labels label \
	--budget agreement@0.5=0.95 --budget accuracy_drop=2.5 --mode static --bench-batch-sizes 1,64

demo: venv
	cd examples && ../$(VENV)/bin/python fraud_data.py
	cd examples && ../$(VENV)/bin/onnxtax ci --config onnxtax.toml --reports ../build/reports
	cd examples && ../$(VENV)/bin/onnxtax quantize fraud_detector.py:FraudDetector ../build/onnx/fraud.onnx \
		-o ../build/onnx/fraud.refused.int8.onnx $(QUANTIZE_EVAL) --calibration data/fraud_calibration.npz; \
		test $$? -eq 1 && echo "(refused as expected: exit 1, nothing written)"
	cd examples && ../$(VENV)/bin/onnxtax quantize fraud_detector.py:FraudDetector ../build/onnx/fraud.onnx \
		-o ../build/onnx/fraud.int8.onnx $(QUANTIZE_EVAL) --calibration data/fraud_calibration_representative.npz \
		--auto-exclude

# one pytest worker per core (pytest-xdist); a test file's tests run in one worker, so its
# module fixtures (exported models) are built once; the ten slowest tests listed at the end
PYTEST := $(VENV)/bin/python -m pytest -q -n auto --dist loadfile --durations=10

test: venv venv-openvino node-env
	ONNXTAX_OPENVINO_PYTHON=$(CURDIR)/$(OVVENV)/bin/python $(PYTEST)

test-fast: venv
	$(PYTEST) -m "not openvino"

bench: venv
	$(VENV)/bin/python benchmarks/startup.py
	$(VENV)/bin/python benchmarks/parity_overhead.py
	$(VENV)/bin/python benchmarks/bench_floor.py
	$(VENV)/bin/python benchmarks/quantize_cost.py
	$(VENV)/bin/python benchmarks/parity_headroom.py

# serve-bench against its bare floors (torch, onnxruntime, onnxruntime-node loops without onnxtax),
# 3 runs each on the fraud MLP and a transformer-sized encoder: ~20 minutes, so not in `bench`
bench-serve: venv node-env
	$(VENV)/bin/python benchmarks/serve_floor.py

# every stage on a 1.07 GB model against the bare tools: minutes and ~5 GB of RAM, so not in `bench`
bench-scale: venv
	$(VENV)/bin/python benchmarks/scale.py

clean:
	rm -rf $(VENV) $(OVVENV) build .pytest_cache
