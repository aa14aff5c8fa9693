"""Compile the same pipeline for Vertex AI Pipelines / Kubeflow Pipelines v2.

`make compile-kubeflow OUTPUT=<dir>` runs this file: TFX's KubeflowV2DagRunner turns
create_pipeline (the one the local runner runs) into a PipelineJob JSON at
`OUTPUT/kubeflow_v2/<PIPELINE_NAME>.json`, every component running in CONTAINER_IMAGE
(built by the Dockerfile from uv.lock) and writing under PIPELINE_ROOT (a gs:// bucket on
Vertex). Knobs come from environment variables (pipeline/configs.py), as for local runs.
Compiling reads no photo: ImageExampleGen lists the IMAGES folder's class folders only.
"""

import os

# Keras 2 (tf_keras) must be chosen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import dataclasses  # noqa: E402
import sys  # noqa: E402

from tfx import v1 as tfx  # noqa: E402

from components.image_example_gen.ingest import IngestError  # noqa: E402
from models.weights import WeightsError  # noqa: E402
from pipeline.configs import COMMITTED_SCHEMA, REPO_ROOT, PipelineConfig  # noqa: E402
from pipeline.image_pipeline import create_pipeline  # noqa: E402
from pipeline.inputs import prepare_inputs  # noqa: E402

SPEC_DIR = "kubeflow_v2"
IMAGES_PARAMETER = "images"
# Where the Dockerfile puts the checkout inside CONTAINER_IMAGE, and the command every task
# runs there, named in the spec (the image's entrypoint is Beam's worker boot).
IMAGE_WORKDIR = "/pipeline"
EXECUTOR_COMMAND = [
    "python",
    "-m",
    "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor",
]


def spec_path(config: PipelineConfig) -> str:
    return os.path.join(config.output, SPEC_DIR, f"{config.pipeline_name}.json")


def compile_pipeline(config: PipelineConfig) -> str:
    """Write the PipelineJob JSON and return its path."""
    inputs = prepare_inputs(config)
    config = inputs.config  # the backbone may be the demo's pretrained substitute
    if config.schema == COMMITTED_SCHEMA:  # the image's copy, not this checkout's
        config = dataclasses.replace(
            config, schema=os.path.join(IMAGE_WORKDIR, os.path.relpath(COMMITTED_SCHEMA, REPO_ROOT))
        )
    path = spec_path(config)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=config.container_image, default_commands=EXECUTOR_COMMAND
        ),
        output_dir=os.path.dirname(path),
        output_filename=os.path.basename(path),
    )
    # The image folder is the run-time parameter `images`: submit the same spec on another
    # snapshot of the photos (same layout and classes) without recompiling.
    images = tfx.dsl.experimental.RuntimeParameter(
        name=IMAGES_PARAMETER, ptype=str, default=inputs.images_dir
    )
    runner.run(
        create_pipeline(
            config,
            images if inputs.images_dir else "",
            inputs.weights_record,
            package_modules=True,  # each task pip-installs the compiled checkout's modules
        ),
        # The listed folder is the parameter's value unless the submission overrides it.
        parameter_values={IMAGES_PARAMETER: inputs.images_dir} if inputs.images_dir else None,
    )
    return path


def main() -> int:
    try:
        path = compile_pipeline(PipelineConfig.from_env())
    except (IngestError, WeightsError, ValueError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 2
    print(f"KUBEFLOW V2 PIPELINE: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
