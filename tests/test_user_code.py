"""How the components find the project's code, and how a code change reaches their cache key.

A local run names the installed project's functions (no wheel is built or pip-installed);
the code's fingerprint in custom_config is then what makes TFX re-run Transform, the Tuner
and the Trainer after a change. The Kubeflow/Vertex runner keeps TFX's wheels.
"""

from __future__ import annotations

import shutil

import pytest

from components import demo_data
from components.samples import random_weights
from pipeline import image_pipeline
from pipeline.configs import REPO_ROOT, PipelineConfig


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
    assert nodes["Transform"]["preprocessing_fn"] == (
        "components.modules.preprocessing.preprocessing_fn"
    )
    assert nodes["Tuner"]["tuner_fn"] == "components.modules.tuner.tuner_fn"
    assert nodes["Trainer"]["run_fn"] == "components.modules.trainer.run_fn"
    assert nodes["Evaluator"]["module_path"] == "components.modules.evaluator"
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
    components = tmp_path / "components"
    shutil.copytree(f"{REPO_ROOT}/components", components)
    monkeypatch.setattr(image_pipeline, "MODULES_DIR", str(components / "modules"))
    before = _nodes(images, tmp_path, packaged=False)

    (components / "report" / "build.py").write_text("# not code the components run\n")
    assert _nodes(images, tmp_path, packaged=False) == before

    for changed in ("modules/evaluator.py", "class_metrics.py", "report/worst_errors.py"):
        path = components / changed
        path.write_text(path.read_text() + "\n# changed\n")
        after = _nodes(images, tmp_path, packaged=False)
        assert after["Trainer"]["custom_config"] != before["Trainer"]["custom_config"], changed
        assert after["Transform"]["custom_config"] != before["Transform"]["custom_config"]
        before = after
