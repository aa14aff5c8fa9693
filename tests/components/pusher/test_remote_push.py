"""The ImagePusher on a serving base path with a scheme (here TF's ram://, as gs:// on GCP):
everything goes through tf.io.gfile, the version's saved_model.pb is published last (a bucket
has no folder rename, see the executor's docstring), a stale temporary folder is removed, an
identical model is recorded as its version, and no local file call touches a URI."""

from __future__ import annotations

import contextlib
import os
import uuid

import pytest
import tensorflow as tf
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.artifact_types import ExtraAssets
from components.pusher import executor as pusher
from tests.components.no_local_io import LocalIOOnURI, forbid_local_io

FILES = {
    "Format-Serving/saved_model.pb": b"graph" * 1000,
    "Format-Serving/fingerprint.pb": b"fp",
    "Format-Serving/variables/variables.index": b"index" * 10,
    "Format-Serving/variables/variables.data-00000-of-00001": b"weights" * 5000,
    "Format-Serving/assets/labels.txt": b"a\nb\n",
}


def _write(path: str, data: bytes) -> None:
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(data)


@pytest.fixture
def remote():
    root = f"ram://push-{uuid.uuid4().hex}"
    for name, data in FILES.items():
        _write(f"{root}/model/{name}", data)
    _write(f"{root}/extra/model_card.html", b"<html>card</html>")
    yield root
    for directory, _dirs, files in list(tf.io.gfile.walk(root)):
        for name in files:
            with contextlib.suppress(tf.errors.NotFoundError):  # ram:// lists phantoms
                tf.io.gfile.remove(os.path.join(directory, name))


def _push(root: str) -> standard_artifacts.PushedModel:
    model = standard_artifacts.Model()
    model.uri = f"{root}/model"
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = f"{root}/blessing"
    blessing.set_int_custom_property("blessed", 1)
    extra = ExtraAssets()
    extra.uri = f"{root}/extra"
    pushed = standard_artifacts.PushedModel()
    pushed.uri = f"{root}/pushed"
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=f"{root}/serving")
    )
    pusher.Executor().Do(
        {
            standard_component_specs.MODEL_KEY: [model],
            standard_component_specs.MODEL_BLESSING_KEY: [blessing],
            pusher.EXTRA_ASSETS_KEY: [extra],
        },
        {standard_component_specs.PUSHED_MODEL_KEY: [pushed]},
        {standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)},
    )
    return pushed


def _tree(folder: str) -> dict[str, bytes]:
    found = {}
    for directory, _dirs, files in tf.io.gfile.walk(folder):
        for name in files:
            path = os.path.join(directory, name)
            if not tf.io.gfile.exists(path):
                continue  # a ram:// listing phantom (assets.extra/x shown as assets/.extra)
            with tf.io.gfile.GFile(path, "rb") as f:
                found[os.path.relpath(path, folder)] = f.read()
    return found


def test_push_to_a_uri_publishes_a_whole_version_saved_model_last(remote, monkeypatch):
    renamed = []
    real_rename = tf.io.gfile.rename
    monkeypatch.setattr(
        tf.io.gfile, "rename", lambda a, b, o=False: (renamed.append(b), real_rename(a, b, o))
    )
    _write(f"{remote}/serving/{pusher.TEMP_PREFIX}123/saved_model.pb", b"half")  # a killed push
    with forbid_local_io():
        pushed = _push(remote)
    version = pushed.get_string_custom_property("pushed_version")
    assert pushed.get_int_custom_property("pushed") == 1
    assert sorted(tf.io.gfile.listdir(f"{remote}/serving")) == [version]  # stale one removed
    expected = {name.removeprefix("Format-Serving/"): data for name, data in FILES.items()}
    expected["assets.extra/model_card.html"] = b"<html>card</html>"
    assert _tree(f"{remote}/serving/{version}") == expected
    assert renamed[-1] == f"{remote}/serving/{version}/saved_model.pb"
    assert len(renamed) == len(expected)

    with forbid_local_io():
        again = _push(remote)
    assert again.get_string_custom_property("pushed_version") == version
    assert tf.io.gfile.listdir(f"{remote}/serving") == [version]


def test_a_local_call_on_a_uri_fails_the_test_instead_of_creating_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LocalIOOnURI), forbid_local_io():
        os.makedirs("ram://bucket/x")
    assert not (tmp_path / "ram:").exists()
