# `make demo` and `make test` each set up everything on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tuneserve-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install kserve-client bench-peers proto demo test test-slow test-all check format clean

install: $(STAMP)

# The kserve package's REST client, used by one server test, lives in its own environment:
# kserve pins pandas<3 and pulls kubernetes and gRPC, none of which tuneserve needs.
KSERVE_VENV ?= .venv-kserve
KSERVE_STAMP := $(KSERVE_VENV)/.installed
kserve-client: $(KSERVE_STAMP)

$(KSERVE_STAMP):
	@test -x $(KSERVE_VENV)/bin/python || $(PYTHON) -m venv $(KSERVE_VENV)
	$(KSERVE_VENV)/bin/python -m pip install --quiet --disable-pip-version-check "kserve==0.21.0"
	@touch $(KSERVE_STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "tuneserve needs Python 3.11 or newer; found " + sys.version.split()[0] + ". Hint: make PYTHON=python3.11 ...")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first and exactly pinned, so no other requirement can pull a CUDA build.
	$(PY) -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

# LitServe and BentoML, the peers of benchmarks/serve.py, only for that benchmark. They run
# tuneserve's Predictor from src/ (PYTHONPATH), so this holds its runtime needs, not torch.
bench-peers:
	@test -x .venv-peers/bin/python || $(PYTHON) -m venv .venv-peers
	.venv-peers/bin/python -m pip install --quiet --disable-pip-version-check \
		"litserve==0.2.19" "bentoml==1.4.40" onnxruntime tokenizers pillow pandas pyarrow pydantic

# The gRPC modules of the Open Inference Protocol, from the .proto beside them (checked in).
# Their messages go into a private descriptor pool: tritonclient's own generated modules
# define the same inference.* messages, and both are imported in one process by the tests.
PROTO_DIR := src/tuneserve/serving/proto
proto: install
	cd src && ../$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		tuneserve/serving/proto/grpc_predict_v2.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/_POOL = _descriptor_pool.DescriptorPool()  # tuneserve: private, see the Makefile\nDESCRIPTOR = _POOL.AddSerializedFile(/' \
		$(PROTO_DIR)/grpc_predict_v2_pb2.py

demo: install
	$(VENV)/bin/tuneserve demo

test: install $(KSERVE_STAMP)
	$(PY) -m pytest -m "not slow" -q

test-slow: install
	$(PY) -m pytest -m slow -q

test-all: install $(KSERVE_STAMP)
	$(PY) -m pytest -q

check: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) $(KSERVE_VENV) .venv-peers build .pytest_cache .mypy_cache .ruff_cache src/*.egg-info
