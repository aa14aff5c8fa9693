# The component image for Vertex AI Pipelines / Kubeflow Pipelines v2: the environment CI
# tests (uv.lock, Python from .python-version) plus the project's code and module files.
#   docker build -t $CONTAINER_IMAGE . && docker push $CONTAINER_IMAGE
# Every task of the compiled pipeline (make compile-kubeflow) names its command in the spec:
#   python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...
# (ImageExampleGen's driver: python -m tfx.orchestration.kubeflow.v2.file_based_example_gen.driver).
# The entrypoint is Beam's worker boot, so the same image is the Beam SDK worker image for
# Dataflow (--sdk_container_image) and for Flink/Spark (--environment_config).
FROM apache/beam_python3.10_sdk:2.59.0 AS beam
# TF Serving's model server, for the InfraValidator (components/infra_validator/): on PATH,
# its executor validates the candidate in tensorflow_model_server instead of serving/.
FROM tensorflow/serving:2.16.1 AS tf_serving
FROM python:3.10.13-slim
COPY --from=beam /opt/apache/beam /opt/apache/beam
COPY --from=tf_serving /usr/bin/tensorflow_model_server /usr/local/bin/tensorflow_model_server

# The module files are packaged into a wheel and installed with pip at run time, and the
# Trainer builds no native code: no compiler needed.
RUN pip install --no-cache-dir "uv==0.13.9"

WORKDIR /pipeline
ENV UV_PROJECT_ENVIRONMENT=/pipeline/.venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
# Dependencies first (cached layer while only the code changes), exactly as locked.
COPY pyproject.toml uv.lock .python-version README.md ./
RUN uv sync --frozen --no-dev --no-install-project --python /usr/local/bin/python3.10

COPY components ./components
COPY models ./models
COPY pipeline ./pipeline
COPY schemas ./schemas
COPY serving ./serving
COPY tools ./tools
RUN uv sync --frozen --no-dev --python /usr/local/bin/python3.10

ENV PATH=/pipeline/.venv/bin:$PATH \
    PYTHONPATH=/pipeline \
    TF_USE_LEGACY_KERAS=1 \
    TF_CPP_MIN_LOG_LEVEL=1
ENTRYPOINT ["/opt/apache/beam/boot"]
