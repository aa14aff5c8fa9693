"""The Vertex AI / Kubeflow Pipelines v2 spec that `make compile-kubeflow` writes.

Compiled by the runner file the make target runs (KubeflowV2DagRunner, no cluster) with the
default weights knobs (BACKBONE_WEIGHTS=imagenet, ResNet50) on a machine that has neither
the weights (HOME and KERAS_HOME are empty folders) nor the photos (IMAGES does not exist),
then checked against the pipeline object the local runner runs: every component is a task,
the task dependencies are the DAG's edges, every executor runs CONTAINER_IMAGE with the
executor command, the run-time parameter is declared with its default, the weights and
the class names are left to the run, and the Trainer's resources and the Dataflow flags
are in the spec.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline import kubeflow_v2_runner
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.image_pipeline import create_pipeline
from tools import samples

IMAGE = "europe-docker.pkg.dev/my-project/tfx/image-transfer:test"
DATAFLOW_ARGS = [
    "--runner=DataflowRunner",
    "--project=my-project",
    "--region=europe-west4",
    "--temp_location=gs://my-bucket/tmp",
    "--machine_type=n2-standard-4",
]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kfp")
    images = root / "photos-only-the-run-can-read"  # does not exist here
    home = root / "home"
    home.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("BACKBONE", "BACKBONE_WEIGHTS", "BEAM_PIPELINE_ARGS", "IMAGES_LAYOUT")
    }
    env = {
        **env,
        "HOME": str(home),  # no Keras cache: no ImageNet file for ResNet50
        "KERAS_HOME": str(home / ".keras"),
        "IMAGES": str(images),
        "OUTPUT": str(root / "out"),
        "CONTAINER_IMAGE": IMAGE,
        "TRAINER_CPU": "8",
        "TRAINER_MEMORY": "30",
        "TRAINER_ACCELERATOR": "NVIDIA_TESLA_T4",
        "TRAINER_ACCELERATOR_COUNT": "2",
        "BEAM_PIPELINE_ARGS": " ".join(DATAFLOW_ARGS),
        # On Vertex a gs:// bucket; compiling stages the module files' wheel there, so
        # offline the test uses a folder.
        "PIPELINE_ROOT": str(root / "pipeline_root"),
        "TF_USE_LEGACY_KERAS": "1",
    }
    result = subprocess.run(
        [sys.executable, os.path.join(REPO_ROOT, "pipeline", "kubeflow_v2_runner.py")],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    # Keras writes its keras.json on import; a weights download would land in models/.
    assert not (home / ".keras" / "models").exists(), "compiling fetched backbone weights"
    config = PipelineConfig.from_env(env)
    path = kubeflow_v2_runner.spec_path(config)
    assert f"KUBEFLOW V2 PIPELINE: {path}" in result.stdout
    with open(path) as f:
        spec = json.load(f)
    pipeline = create_pipeline(
        config, str(images), samples.random_weights(config.backbone), package_modules=True
    )
    return {"spec": spec, "pipeline": pipeline, "images": str(images), "config": config}


def _task_names(node_id: str, tasks: dict) -> set[str]:
    """A Resolver node compiles to one task per resolved channel (`<id>-<channel>-resolver`)."""
    if node_id in tasks:
        return {node_id}
    return {name for name in tasks if name.startswith(node_id + "-")}


def _upstream_tasks(node, tasks: dict) -> set[str]:
    """The tasks that produce the node's inputs (a resolver's per-channel task by name),
    and those it only runs after (`add_upstream_node`, e.g. the AnomalyGate)."""
    expected = {up.id for up in node.upstream_nodes if up.id in tasks}
    for channel in node.inputs.values():
        for producer in getattr(channel, "_input_channels", [channel]):
            up = producer.producer_component_id
            if up in tasks:
                expected.add(up)
            elif up is not None:
                expected.add(f"{up}-{producer.output_key}-resolver")
    return expected


def test_every_component_is_a_task_with_the_dags_dependencies(compiled):
    tasks = compiled["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]
    for node in compiled["pipeline"].components:
        names = _task_names(node.id, tasks)
        assert names, f"{node.id} is not a task of the compiled spec: {sorted(tasks)}"
        if node.id == "latest_blessed_model_resolver":
            continue  # its tasks query ML Metadata: no upstream task
        [name] = names
        declared = set(tasks[name].get("dependentTasks", []))
        assert declared == _upstream_tasks(node, tasks), name
        # ... and every edge of the DAG is there: no upstream node is missing.
        assert {t.split("-")[0] for t in declared} == {up.id for up in node.upstream_nodes}


def test_every_executor_runs_the_container_image(compiled):
    executors = compiled["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
    containers = {name: e["container"] for name, e in executors.items() if "container" in e}
    # Everything but the two ML Metadata queries of the resolver runs in a container.
    assert len(containers) == len(compiled["pipeline"].components) - 1
    for name, container in containers.items():
        assert container["image"] == IMAGE, name
        assert container["command"] == kubeflow_v2_runner.EXECUTOR_COMMAND, name
        assert "{{$}}" in container["args"], name
    example_gen = containers["ImageExampleGen_executor"]
    assert example_gen["args"][:2] == [
        "--executor_class_path",
        "components.image_example_gen.executor.Executor",
    ]
    # TFX's driver (the input fingerprint) runs before the cache check, in the same image: the
    # V2 compile ignores ImageExampleGen's own driver (components/image_example_gen/driver.py).
    driver = example_gen["lifecycle"]["preCacheCheck"]
    assert driver["command"][-1] == "tfx.orchestration.kubeflow.v2.file_based_example_gen.driver"


def test_runtime_parameters_and_pipeline_root(compiled):
    spec = compiled["spec"]
    parameters = spec["pipelineSpec"]["root"]["inputDefinitions"]["parameters"]
    assert kubeflow_v2_runner.IMAGES_PARAMETER in parameters
    runtime = spec["runtimeConfig"]
    values = runtime.get("parameterValues") or {
        k: v.get("stringValue") for k, v in runtime.get("parameters", {}).items()
    }
    assert values[kubeflow_v2_runner.IMAGES_PARAMETER] == compiled["images"]
    assert runtime["gcsOutputDirectory"] == compiled["config"].pipeline_root
    example_gen_inputs = spec["pipelineSpec"]["root"]["dag"]["tasks"]["ImageExampleGen"]["inputs"]
    assert (
        example_gen_inputs["parameters"]["input_base"]["componentInputParameter"]
        == kubeflow_v2_runner.IMAGES_PARAMETER
    )


def _parameter(task: dict, name: str) -> str:
    return task["inputs"]["parameters"][name]["runtimeValue"]["constantValue"]["stringValue"]


def test_the_weights_are_resolved_by_the_trainer_not_the_compile(compiled):
    trainer = compiled["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]["Trainer"]
    custom_config = json.loads(_parameter(trainer, "custom_config"))
    weights = custom_config["weights"]
    assert weights["backbone"] == "resnet50"
    assert weights["deferred"] is True and weights["path"] == "imagenet"
    assert weights["sha256"] == ""  # recorded when the Trainer resolves the file
    assert custom_config["class_names"] == []  # from ImageExampleGen's report at run time


def test_the_class_names_are_left_to_the_run(compiled):
    import tensorflow_model_analysis as tfma
    from tfx.utils import proto_utils

    from models.metrics import eval_config as eval_config_lib

    evaluator_task = compiled["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]["Evaluator"]
    config = proto_utils.json_to_proto(_parameter(evaluator_task, "eval_config"), tfma.EvalConfig())
    assert eval_config_lib.class_names(config) == []
    executors = compiled["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
    assert executors["Evaluator_executor"]["container"]["args"][1] == (
        "components.evaluator.executor.Executor"
    )
    # The unread folder's layout is not guessed from a listing: the flat glob, which matches
    # a split folder's class folders too (docs/vertex.md: IMAGES_LAYOUT).
    example_gen = compiled["spec"]["pipelineSpec"]["root"]["dag"]["tasks"]["ImageExampleGen"]
    assert '"pattern": "*/*"' in _parameter(example_gen, "input_config")


def test_the_trainer_task_carries_its_resources(compiled):
    executors = compiled["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
    resources = executors["Trainer_executor"]["container"]["resources"]
    assert resources == {
        "cpuLimit": 8.0,
        "memoryLimit": 30.0,
        "accelerator": {"type": "NVIDIA_TESLA_T4", "count": "2"},
    }
    others = [name for name, e in executors.items() if "resources" in e.get("container", {})]
    assert others == ["Trainer_executor"]


def test_beam_components_get_the_dataflow_flags_and_the_image(compiled):
    executors = compiled["spec"]["pipelineSpec"]["deploymentSpec"]["executors"]
    for name in ("ImageExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = executors[f"{name}_executor"]["container"]["args"]
        assert args[-len(DATAFLOW_ARGS) - 1 : -1] == DATAFLOW_ARGS, name
        # Dataflow's workers run this project's code: CONTAINER_IMAGE, the Beam worker image.
        assert args[-1] == f"--sdk_container_image={IMAGE}", name
    driver = executors["ImageExampleGen_executor"]["container"]["lifecycle"]["preCacheCheck"]
    assert DATAFLOW_ARGS[0] in driver["args"]
