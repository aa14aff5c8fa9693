# One entry point for people and CI. Every knob is a Make variable passed to the
# pipeline as an environment variable of the same name (see pipeline/configs.py).
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL ?= 1
export PYTHONWARNINGS ?= ignore::FutureWarning

# Pipeline knobs: pipeline/configs.py defines each one with its default. Make passes every
# variable set on its command line (`make run EPOCHS=10`) or in the environment to the
# recipes' environment, so no knob is listed here; these two have Make-side defaults.
IMAGES ?=
OUTPUT ?= output
export IMAGES OUTPUT
# Server knobs: REST on PORT, gRPC on GRPC_PORT (TF Serving's 8501 and 8500).
PORT ?= 8501
GRPC_PORT ?= 8500
HOST ?= 127.0.0.1

TENSORBOARD_PORT ?= 6006

.PHONY: help setup chromium libusb run predict-folder ingest compile-kubeflow replay-kubeflow report tensorboard serve predict test test-fast lint bench bench-serving clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

# The venv is built from uv.lock only, with the Python of .python-version: pyenv's, a
# python3.10 on PATH, or (neither found) uv's own managed Python (tools/setup_venv.sh).
# --compile-bytecode writes every installed module's .pyc once, here: without them, a shell
# with PYTHONDONTWRITEBYTECODE=1 (common in containers and CI) compiles TF, Beam, TFX and
# TFMA from source at every start: 10.5-11.9 s to import them, 6.0-7.9 s with the .pyc.
# (Up-to-date files are skipped, so a re-sync costs ~1.5 s.)
$(VENV)/.synced: pyproject.toml uv.lock .python-version Makefile tools/setup_venv.sh
	@bash tools/setup_venv.sh
	@touch $@

setup: $(VENV)/.synced chromium libusb  ## build .venv from uv.lock (no-op when nothing changed)

# Debian packages the tests need, pinned (bookworm; chromium from bookworm-security, whose
# next update retires this version: then bump it here).
CHROMIUM_VERSION := 156.0.8078.114-1~deb12u1
LIBUSB_VERSION := 2:1.0.26-1

# Headless Chromium for the report's browser test (tests/components/evaluation_report/test_report.py): Debian's
# package, installed when missing and we are root; otherwise say how.
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium=$(CHROMIUM_VERSION); \
	else echo "chromium is missing: install Debian's chromium package (apt-get install chromium)"; fi

# libusb-1.0 for tflite-support (the TFLite metadata writer loads it): Debian's package.
libusb:
	@ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0' || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q libusb-1.0-0=$(LIBUSB_VERSION); \
	else echo "libusb-1.0 is missing: install Debian's libusb-1.0-0 package (apt-get install libusb-1.0-0)"; fi

run: setup  ## the whole pipeline; IMAGES=<dir> for your folder, OUTPUT=<dir> for its outputs
	$(PY) pipeline/local_runner.py

ingest: setup  ## only ingest IMAGES into OUTPUT/data (image TFRecords for EXAMPLES=)
	$(PY) -m tools.ingest "$(IMAGES)" "$(OUTPUT)/data" $(if $(EVAL_FRACTION),--eval-fraction $(EVAL_FRACTION)) $(if $(VALIDATION_FRACTION),--validation-fraction $(VALIDATION_FRACTION)) --beam-pipeline-args "$(BEAM_PIPELINE_ARGS)"

compile-kubeflow: setup  ## Vertex AI / Kubeflow v2 PipelineJob JSON in OUTPUT/kubeflow_v2/
	$(PY) pipeline/kubeflow_v2_runner.py

# Replays OUTPUT's compiled spec here, task by task, as Vertex's launcher would (no Docker, no
# Vertex): its state (image folder, logs, the artifact record the resolvers query) in
# OUTPUT/replay/. Compile it with a local PIPELINE_ROOT first (docs/vertex.md).
replay-kubeflow: setup  ## run OUTPUT's compiled Kubeflow V2 spec task by task, here (tools/replay_kubeflow.py)
	$(PY) -m tools.replay_kubeflow $(if $(IMAGES),--images "$(IMAGES)")

report: setup  ## rebuild a past run's evaluation report into OUTPUT/report; RUN=<pipeline run id> (default: latest)
	$(PY) -m tools.report $(if $(RUN),--run "$(RUN)")

clean-old: setup  ## delete what killed runs left (output folders no ML Metadata artifact references); DRY_RUN=1 lists
	$(PY) -m tools.clean_old $(if $(DRY_RUN),--dry-run)

tensorboard: setup  ## TensorBoard on the Trainer's logs of OUTPUT, at HOST:TENSORBOARD_PORT
	$(PY) -m tensorboard.main --logdir "$(OUTPUT)/pipeline_root/Trainer/model_run" --host $(HOST) --port $(TENSORBOARD_PORT)

# Batching is on here (the server's default is off, as TF Serving's); SERVE_ARGS="..." passes
# any server flag, e.g. --batching_parameters_file=<file> or --no-enable-batching.
serve: setup  ## TF Serving's REST (PORT) and gRPC (GRPC_PORT) APIs over OUTPUT/serving, or MODEL_CONFIG_FILE; SERVE_ARGS: more flags
	$(PY) -m serving.server $(if $(MODEL_CONFIG_FILE),--model_config_file "$(MODEL_CONFIG_FILE)",--model-base-path "$(OUTPUT)/serving") \
		--host $(HOST) --port $(PORT) --grpc-port $(GRPC_PORT) --enable_batching $(SERVE_ARGS)

predict: setup  ## classify IMAGES (files or a folder) through the server on HOST:PORT (GRPC=1: gRPC on GRPC_PORT; TFLITE=<file>: that TFLite model, no server)
	$(PY) -m serving.client predict --url http://$(HOST):$(PORT) $(if $(GRPC),--grpc $(HOST):$(GRPC_PORT)) $(if $(TFLITE),--tflite "$(TFLITE)") --model $(or $(MODEL_NAME),image_classifier) "$(IMAGES)"

predict-folder: setup  ## batch inference over IMAGES (any nesting) into OUTPUT/predictions/ (BulkInferrer; MODEL=<pushed version dir>, default: latest blessed)
	$(PY) pipeline/batch_inference.py

test: setup  ## the whole test suite, end-to-end runs included
	$(PY) -m pytest -q

test-fast: setup  ## the tests that take seconds (no end-to-end pipeline runs)
	$(PY) -m pytest -q -m "not slow"

lint: setup  ## ruff (the rules and the formatting) and the layer contracts (import-linter)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(VENV)/bin/lint-imports

bench: setup  ## benchmarks; results in bench/results/
	$(PY) -m bench.run_all

bench-serving: setup  ## the serving benchmark alone (REST, gRPC, in-process); bench/results/serving.*
	$(PY) -m bench.serving_bench

clean:  ## remove outputs (keeps .venv)
	rm -rf output .pytest_cache
