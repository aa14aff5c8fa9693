"""The legacy-torch reader: refuses what a weights file does not need, before and while reading."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from models import backbones, efficientnet_lite, torch_checkpoint, weights


class _RunsAShellCommand:
    def __reduce__(self):
        return (os.system, ("touch /tmp/should-never-exist",))


def _legacy_file(path, state_object) -> None:
    with open(path, "wb") as f:
        for header in (torch_checkpoint.LEGACY_MAGIC_NUMBER, 1001, {"little_endian": True}):
            pickle.dump(header, f)
        pickle.dump(state_object, f)
        pickle.dump([], f)


def test_packaged_checkpoint_reads_every_tensor_with_its_layout():
    record = weights.resolve_weights("imagenet", backbones.get_backbone("efficientnet_lite0"))
    state = torch_checkpoint.read_checkpoint(record.path, record.sha256)
    assert len(state) == 296
    # Every float tensor, batch-norm running statistics included.
    assert sum(v.size for k, v in state.items() if v.dtype == np.float32) == 4_694_024
    # The file stores the dense kernel transposed (stride (1, 1000)): the view is honoured.
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].flags.c_contiguous


def test_a_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    _legacy_file(path, {"x": _RunsAShellCommand()})
    with pytest.raises(torch_checkpoint.CheckpointError, match="posix.system|os.system"):
        torch_checkpoint.read_checkpoint(str(path), None)
    assert not os.path.exists("/tmp/should-never-exist")


def test_a_file_with_another_hash_is_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    _legacy_file(path, {"x": _RunsAShellCommand()})
    pinned = efficientnet_lite.VARIANTS["efficientnet_lite0"].sha256
    with pytest.raises(torch_checkpoint.CheckpointError, match="refusing to unpickle"):
        torch_checkpoint.read_checkpoint(str(path), pinned)


def test_a_truncated_file_is_a_clear_error(tmp_path):
    record = weights.resolve_weights("imagenet", backbones.get_backbone("efficientnet_lite0"))
    with open(record.path, "rb") as f:
        data = f.read()
    with pytest.raises(torch_checkpoint.CheckpointError, match="truncated|cannot read"):
        torch_checkpoint.read_legacy_state_dict(data[: len(data) // 2])


def test_a_zip_checkpoint_is_not_taken_for_a_legacy_one(tmp_path):
    with pytest.raises(torch_checkpoint.CheckpointError):
        torch_checkpoint.read_legacy_state_dict(b"PK\x03\x04" + np.zeros(64, np.uint8).tobytes())
