"""The Vertex AI / Kubeflow Pipelines v2 spec that `make compile-kubeflow` writes.

Compiled by the runner file the make target runs (KubeflowV2DagRunner, no cluster), then
checked against the pipeline object the local runner runs: every component is a task, the
task dependencies are the DAG's edges, every executor runs CONTAINER_IMAGE with the
executor command, and the run-time parameter is declared with its default.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from pipeline import demo_data, kubeflow_v2_runner
from pipeline.configs import REPO_ROOT, PipelineConfig
from pipeline.image_pipeline import create_pipeline
from tools import samples

IMAGE = "europe-docker.pkg.dev/my-project/tfx/image-transfer:test"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("kfp")
    images = root / "images"
    for split in ("train", "test"):
        for class_name in demo_data.CLASS_NAMES:
            (images / split / class_name).mkdir(parents=True)
            demo_data.demo_image(class_name, 0, seed=3).save(images / split / class_name / "0.png")
    env = {
        **os.environ,
        "HOME": str(root / "home"),
        "IMAGES": str(images),
        "OUTPUT": str(root / "out"),
        "BACKBONE_WEIGHTS": "random",
        "CONTAINER_IMAGE": IMAGE,
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
