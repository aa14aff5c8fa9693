"""Compile the same pipeline for Vertex AI Pipelines / Kubeflow Pipelines v2.

`make compile-kubeflow OUTPUT=<dir>` runs this file: TFX's KubeflowV2DagRunner turns
create_pipeline (the one the local runner runs) into a PipelineJob JSON at
`OUTPUT/kubeflow_v2/<PIPELINE_NAME>.json`, every component running in CONTAINER_IMAGE
(built by the Dockerfile from uv.lock) and writing under PIPELINE_ROOT (a gs:// bucket on
Vertex). Knobs come from environment variables (pipeline/configs.py), as for local runs.

Compiling needs neither the photos nor the weights (they belong to the run, in the
container): IMAGES becomes the run-time parameter `images` as given, unread; the backbone
weights are resolved by the Trainer when it runs (models/weights.py, deferred_record), and
the class names come from ImageExampleGen's report at run time (components/evaluator/).
The Trainer's task gets TRAINER_CPU / TRAINER_MEMORY / TRAINER_ACCELERATOR as a ResourceSpec
(TFX's with_platform_config, which KubeflowV2DagRunner copies into the container spec), and
every Beam component BEAM_PIPELINE_ARGS (e.g. Dataflow's flags), with CONTAINER_IMAGE as
the Beam workers' image unless the flags name another.
"""

import os

# Keras 2 (tf_keras) must be chosen before anything imports TensorFlow.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import dataclasses  # noqa: E402
import shlex  # noqa: E402
import sys  # noqa: E402

from kfp.pipeline_spec import pipeline_spec_pb2  # noqa: E402
from tfx import v1 as tfx  # noqa: E402

from components.image_example_gen.ingest import IngestError  # noqa: E402
from models.weights import WeightsError  # noqa: E402
from pipeline.configs import COMMITTED_SCHEMA, REPO_ROOT, PipelineConfig  # noqa: E402
from pipeline.image_pipeline import create_pipeline  # noqa: E402
from pipeline.inputs import prepare_packaged_inputs  # noqa: E402

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


TRAINER_NODE = "Trainer"
SDK_CONTAINER_IMAGE_FLAG = "--sdk_container_image"
ResourceSpec = pipeline_spec_pb2.PipelineDeploymentConfig.PipelineContainerSpec.ResourceSpec


def trainer_resources(config: PipelineConfig) -> ResourceSpec | None:
    """The Trainer task's ResourceSpec from TRAINER_CPU, TRAINER_MEMORY (GB) and
    TRAINER_ACCELERATOR (count TRAINER_ACCELERATOR_COUNT); None when none is set."""
    if not (config.trainer_cpu or config.trainer_memory or config.trainer_accelerator):
        return None
    spec = ResourceSpec(cpu_limit=config.trainer_cpu, memory_limit=config.trainer_memory)
    if config.trainer_accelerator:
        spec.accelerator.type = config.trainer_accelerator
        spec.accelerator.count = config.trainer_accelerator_count
    return spec


def container_beam_args(config: PipelineConfig) -> list[str]:
    """BEAM_PIPELINE_ARGS (or the in-memory default) for tasks that run in CONTAINER_IMAGE:
    remote Beam workers (Dataflow's, or a portable runner's) need this project's code, which
    only CONTAINER_IMAGE has (the Dockerfile builds it on Beam's SDK worker image), so it is
    the SDK container image unless the flags name one."""
    args = [
        arg
        for arg in config.beam_args
        if config.beam_pipeline_args or not arg.startswith(SDK_CONTAINER_IMAGE_FLAG)
    ]
    if not any(arg.startswith(SDK_CONTAINER_IMAGE_FLAG) for arg in args):
        args.append(f"{SDK_CONTAINER_IMAGE_FLAG}={config.container_image}")
    return args


def compile_pipeline(config: PipelineConfig) -> str:
    """Write the PipelineJob JSON and return its path."""
    inputs = prepare_packaged_inputs(config)
    config = dataclasses.replace(
        inputs.config, beam_pipeline_args=shlex.join(container_beam_args(inputs.config))
    )
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
    # snapshot of the photos (same layout; the classes are read at run time).
    images = tfx.dsl.experimental.RuntimeParameter(
        name=IMAGES_PARAMETER, ptype=str, default=inputs.images_dir
    )
    pipeline = create_pipeline(
        config,
        images if inputs.images_dir else "",
        inputs.weights_record,
        package_modules=True,  # each task pip-installs the compiled checkout's modules
    )
    resources = trainer_resources(config)
    if resources is not None:
        [trainer] = [node for node in pipeline.components if node.id == TRAINER_NODE]
        trainer.with_platform_config(resources)
    runner.run(
        pipeline,
        # IMAGES is the parameter's value unless the submission overrides it.
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
