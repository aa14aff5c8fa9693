"""A full disk during the push, and KEEP_VERSIONS: the real executor on a real small tmpfs.

The serving directory is put on a tmpfs mounted by the test (we run as root in CI; skipped
with the reason where mounting is refused). Two ways to run out of space: the model is
larger than the free space (caught before copying), and the free space passes that check but
the copy still fills the disk (tmpfs rounds every file up to whole pages): each fails with
PushError naming the serving directory and its free bytes, leaves no temporary directory,
and version 1 stays the only (served) one. After the disk is grown (remount) the same push
succeeds. KEEP_VERSIONS keeps the newest N versions.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_component_specs
from tfx.utils import json_utils, proto_utils

from components.pusher import executor as pusher
from tests.components.pusher import test_executor
from tests.components.pusher.test_executor import run_push, same_tree, versions, write_file

push_inputs = test_executor.push_inputs  # the fixture: a model, extra assets, version 1

PAGE = os.sysconf("SC_PAGE_SIZE")


def mount_tmpfs(path: str, size: int) -> None:
    os.makedirs(path, exist_ok=True)
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", path],
        capture_output=True,
        text=True,
    )
    if result.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN): {result.stderr}")


def remount(path: str, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", path], check=True)


def tree_bytes(root: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, fs in os.walk(root) for n in fs)


@pytest.fixture
def small_disk(push_inputs, tmp_path):
    """push_inputs with the serving directory (holding version 1) on a tmpfs; yields the
    inputs and the mount point, and unmounts after."""
    disk = str(tmp_path / "disk")
    mount_tmpfs(disk, 64 * PAGE)
    serving = os.path.join(disk, "model")
    shutil.copytree(push_inputs["serving"], serving)
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving)
    )
    inputs = {
        **push_inputs,
        "serving": serving,
        "exec_properties": {
            standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)
        },
    }
    try:
        yield inputs, disk
    finally:
        subprocess.run(["umount", disk], check=False)


def needed_bytes(inputs) -> int:
    return tree_bytes(inputs["export"]) + tree_bytes(inputs["extra_dir"])


def check_failed_push_left_version_1(inputs, message: str, disk: str) -> None:
    free = shutil.disk_usage(disk).free
    assert f"No space to push the model to {inputs['serving']}: " in message
    assert f"{free} bytes free on its file system" in message
    assert f"the model needs {needed_bytes(inputs)} bytes" in message
    assert "the served version is still 1" in message
    assert versions(inputs["serving"]) == {"1"}
    assert not [n for n in os.listdir(inputs["serving"]) if n.startswith(pusher.TEMP_PREFIX)]


def grow_and_push_again(inputs, disk: str) -> None:
    remount(disk, 1024 * PAGE)
    pushed = run_push(inputs)
    version = pushed.get_string_custom_property("pushed_version")
    assert versions(inputs["serving"]) == {"1", version}
    assert same_tree(os.path.join(inputs["serving"], version), inputs)


def test_model_larger_than_the_free_space_is_refused_before_copying(small_disk):
    inputs, disk = small_disk
    assert needed_bytes(inputs) > shutil.disk_usage(disk).free
    with pytest.raises(pusher.PushError) as error:
        run_push(inputs)
    print(error.value)
    assert "(checked before copying)" in str(error.value)
    check_failed_push_left_version_1(inputs, str(error.value), disk)
    grow_and_push_again(inputs, disk)


def test_disk_filling_during_the_copy_removes_the_partial_version(small_disk):
    inputs, disk = small_disk
    needed = needed_bytes(inputs)
    # Free space just above the model's bytes: the check passes, but tmpfs rounds each of
    # the model's files up to whole pages, so the copy runs out of space.
    used = 64 * PAGE - shutil.disk_usage(disk).free
    remount(disk, used + (needed // PAGE + 2) * PAGE)
    assert shutil.disk_usage(disk).free >= needed
    with pytest.raises(pusher.PushError) as error:
        run_push(inputs)
    print(error.value)
    assert "the copy failed:" in str(error.value) and "No space left on device" in str(error.value)
    check_failed_push_left_version_1(inputs, str(error.value), disk)
    grow_and_push_again(inputs, disk)


def test_keep_versions_keeps_the_newest(push_inputs):
    properties = push_inputs["exec_properties"]
    properties[standard_component_specs.CUSTOM_CONFIG_KEY] = json_utils.dumps(
        {pusher.KEEP_VERSIONS_KEY: 2}
    )
    pushed = []
    for seed in (1, 2, 3):  # three different models
        write_file(os.path.join(push_inputs["export"], "saved_model.pb"), 1000, seed=seed)
        pushed.append(run_push(push_inputs).get_string_custom_property("pushed_version"))
        kept = versions(push_inputs["serving"])
        assert pushed[-1] in kept and len(kept) <= 2, kept
    assert versions(push_inputs["serving"]) == set(pushed[-2:])
    assert not [n for n in os.listdir(push_inputs["serving"]) if n.startswith(pusher.TEMP_PREFIX)]
    # 0 (the default) keeps every version.
    properties[standard_component_specs.CUSTOM_CONFIG_KEY] = json_utils.dumps(
        {pusher.KEEP_VERSIONS_KEY: 0}
    )
    write_file(os.path.join(push_inputs["export"], "saved_model.pb"), 1000, seed=4)
    run_push(push_inputs)
    assert len(versions(push_inputs["serving"])) == 3


def test_runner_reports_a_full_disk_as_a_message_not_a_traceback():
    """What `make run` prints (exit code 2) when Beam re-raises the Pusher's error."""
    from pipeline.local_runner import _data_error_message

    error = pusher.PushError("No space to push the model to /x: 10 bytes free on its file system")
    wrapped = RuntimeError(f"PushError: {error} [while running 'Pusher']")
    assert _data_error_message(wrapped) == str(error)
    assert _data_error_message(error) == str(error)
