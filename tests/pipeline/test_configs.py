"""Knobs: defaults, environment overrides, clear errors for bad values."""

import dataclasses
import os
import subprocess
import sys

import pytest

from pipeline.configs import COMMITTED_SCHEMA, REPO_ROOT, PipelineConfig, shared_knobs


def test_defaults_match_the_documented_ones():
    config = PipelineConfig.from_env({})
    assert (config.image_size, config.epochs, config.backbone_weights) == (224, 5, "imagenet")
    assert config.is_demo and config.schema == COMMITTED_SCHEMA
    assert config.output == os.path.abspath("output")
    assert config.serving_model_dir == os.path.join(config.output, "serving", "image_classifier")


def test_environment_overrides_with_types():
    config = PipelineConfig.from_env(
        {
            "IMAGE_SIZE": "64",
            "ACCURACY_THRESHOLD": "0.8",
            "ENABLE_CACHE": "false",
            "IMAGES": "/data/photos",
            "EPOCHS": "",
        }
    )
    assert config.image_size == 64 and config.accuracy_threshold == 0.8
    assert config.enable_cache is False and not config.is_demo and config.epochs == 5


def test_bad_values_name_the_knob():
    with pytest.raises(ValueError, match="IMAGE_SIZE='big' is not a valid int"):
        PipelineConfig.from_env({"IMAGE_SIZE": "big"})


def test_configs_import_no_tensorflow():
    """Reading the knobs (the Makefile, the runners' wiring) does not pay TensorFlow's import."""
    code = (
        "import sys, pipeline.configs; print(sorted(m for m in sys.modules if 'tensorflow' in m))"
    )
    env = {**os.environ, "PYTHONPATH": REPO_ROOT}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert result.stdout.strip() == "[]"


def test_default_backbone_is_a_row_of_the_table():
    from models import backbones

    assert PipelineConfig().backbone in backbones.BACKBONES


def test_a_stage_takes_the_knobs_it_shares_by_name():
    @dataclasses.dataclass(frozen=True)
    class StageOptions:
        epochs: int = 1
        not_a_knob: str = "stage's own"

    config = PipelineConfig.from_env({"EPOCHS": "7"})
    assert shared_knobs(StageOptions) == ("epochs",)
    assert config.values_for(StageOptions) == {"epochs": 7}
