"""How the components find the project's code, and how a code change reaches their cache key.

A local run names the installed project's functions (no wheel is built or pip-installed);
the code's fingerprint in custom_config is then what makes TFX re-run Transform, the Tuner
and the Trainer after a change. The Kubeflow/Vertex runner keeps TFX's wheels.
"""

from __future__ import annotations

import shutil

import pytest

from pipeline import demo_data, image_pipeline
from pipeline.configs import REPO_ROOT, PipelineConfig
from tools.samples import random_weights


@pytest.fixture
def images(tmp_path):
    return demo_data.generate_demo_images(str(tmp_path / "images"), images_per_class=2)


def _nodes(images: str, tmp_path, packaged: bool, **knobs) -> dict:
    config = PipelineConfig.from_env({"IMAGES": images, "OUTPUT": str(tmp_path / "out"), **knobs})
    pipeline = image_pipeline.create_pipeline(
        config, images, random_weights(config.backbone), package_modules=packaged
    )
    return {node.id: node.exec_properties for node in pipeline.components}


def test_a_local_run_imports_the_installed_modules(images, tmp_path):
    nodes = _nodes(images, tmp_path, packaged=False, TUNE="true")
    assert nodes["Transform"]["preprocessing_fn"] == ("models.preprocessing.preprocessing_fn")
    assert nodes["Tuner"]["tuner_fn"] == "models.tuner.tuner_fn"
    assert nodes["Trainer"]["run_fn"] == "models.trainer.run_fn"
    assert nodes["Evaluator"]["module_path"] == "models.evaluator"
    for node in ("Transform", "Tuner", "Trainer", "Evaluator"):
        assert not nodes[node].get("module_file"), node
    fingerprint = image_pipeline.code_fingerprint()
    for node in ("Transform", "Tuner", "Trainer"):
        assert f'"code_fingerprint": "{fingerprint}"' in nodes[node]["custom_config"], node


def test_the_kubeflow_pipeline_ships_the_module_files(images, tmp_path):
    nodes = _nodes(images, tmp_path, packaged=True)
    assert nodes["Trainer"]["module_file"] == image_pipeline.TRAINER_MODULE
    assert nodes["Transform"]["module_file"] == image_pipeline.TRANSFORM_MODULE
    assert nodes["Evaluator"]["module_file"] == image_pipeline.EVALUATOR_MODULE
    assert "code_fingerprint" not in nodes["Trainer"]["custom_config"]


def test_a_changed_module_changes_the_trainers_cache_key(images, tmp_path, monkeypatch):
    tree = tmp_path / "tree"
    for package in ("components", "models"):
        shutil.copytree(f"{REPO_ROOT}/{package}", tree / package)
    monkeypatch.setattr(image_pipeline, "MODULES_DIR", str(tree / "models"))
    before = _nodes(images, tmp_path, packaged=False)

    build = tree / "components" / "evaluation_report" / "build.py"
    build.write_text("# not code the module files run\n")
    assert _nodes(images, tmp_path, packaged=False) == before

    # A new metric file is in the key without being listed anywhere.
    for changed in (
        "metrics/new_metric.py",
        "evaluator.py",
        "metrics/class_metrics.py",
        "metrics/worst_errors.py",
    ):
        path = tree / "models" / changed
        path.write_text((path.read_text() if path.exists() else "") + "\n# changed\n")
        after = _nodes(images, tmp_path, packaged=False)
        assert after["Trainer"]["custom_config"] != before["Trainer"]["custom_config"], changed
        assert after["Transform"]["custom_config"] != before["Transform"]["custom_config"]
        before = after
