"""The ImagePusher's push is atomic and crash-safe: a real push process killed with SIGKILL.

TF Serving loads any numeric directory the moment it appears, so a push must never show a
half-written version. Each case forks a process that runs the real executor (`Executor.Do`
with real artifacts) and kills itself with SIGKILL just before its N-th file-system operation
under the serving directory (Python audit events: opens, mkdirs, copies, the rename, the
directory sync after it), so the 20 kill points are deterministic and spread over the whole
push, before and after the rename. After each kill: either no new version or a complete one;
then a second run finishes or redoes the push and leaves exactly one complete version and no
temporary directory.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import signal
import sys
import traceback

import pytest
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.utils import proto_utils

from components.artifact_types import ExtraAssets
from components.pusher import executor as pusher

KILL_POINTS = 20
WATCHED_EVENTS = {
    "open", "os.mkdir", "os.rename", "os.listdir", "os.scandir", "os.remove", "os.rmdir",
    "os.chmod", "os.utime", "shutil.copyfile", "shutil.copystat", "shutil.copytree",
    "shutil.rmtree",
}  # fmt: skip


def write_file(path, size: int, seed: int) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(bytes((seed + i) % 251 for i in range(size)))


@pytest.fixture
def push_inputs(tmp_path):
    """A SavedModel-shaped Trainer output, extra assets, a blessing; the serving dir holds an
    older version 1 of another model."""
    model_uri = tmp_path / "model"
    export = model_uri / "Format-Serving"
    for index, (name, size) in enumerate(
        [
            ("saved_model.pb", 300_000),
            ("fingerprint.pb", 60),
            ("variables/variables.index", 2_000),
            ("variables/variables.data-00000-of-00001", 900_000),
            ("assets/labels.txt", 30),
            ("assets.extra/training_metadata.json", 500),
            ("assets.extra/tf_serving_warmup_requests", 40_000),
        ]
    ):
        write_file(str(export / name), size, seed=index)
    extra = tmp_path / "extra_assets"
    write_file(str(extra / "model_card.html"), 5_000, seed=20)
    write_file(str(extra / "model_card.proto"), 700, seed=21)
    serving = tmp_path / "serving" / "model"
    write_file(str(serving / "1" / "saved_model.pb"), 100, seed=30)
    write_file(str(serving / "1" / "variables" / "variables.index"), 100, seed=31)

    model = standard_artifacts.Model()
    model.uri = str(model_uri)
    blessing = standard_artifacts.ModelBlessing()
    blessing.uri = str(tmp_path / "blessing")
    blessing.set_int_custom_property("blessed", 1)
    assets = ExtraAssets()
    assets.uri = str(extra)
    destination = pusher_pb2.PushDestination(
        filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=str(serving))
    )
    return {
        "model": model,
        "blessing": blessing,
        "extra": assets,
        "export": str(export),
        "extra_dir": str(extra),
        "serving": str(serving),
        "exec_properties": {
            standard_component_specs.PUSH_DESTINATION_KEY: proto_utils.proto_to_json(destination)
        },
    }


def run_push(inputs, with_extra: bool = True) -> standard_artifacts.PushedModel:
    pushed = standard_artifacts.PushedModel()
    pushed.uri = os.path.join(os.path.dirname(inputs["serving"]), "pushed_model")
    input_dict = {
        standard_component_specs.MODEL_KEY: [inputs["model"]],
        standard_component_specs.MODEL_BLESSING_KEY: [inputs["blessing"]],
    }
    if with_extra:
        input_dict[pusher.EXTRA_ASSETS_KEY] = [inputs["extra"]]
    output_dict = {standard_component_specs.PUSHED_MODEL_KEY: [pushed]}
    pusher.Executor().Do(input_dict, output_dict, dict(inputs["exec_properties"]))
    return pushed


def push_in_child(inputs, kill_at: int | None, report: str) -> int:
    """Fork a push process; it SIGKILLs itself before its `kill_at`-th watched operation (or,
    with None, counts the operations into `report`). Returns the child's wait status."""
    base = inputs["serving"]
    pid = os.fork()
    if pid == 0:  # the push process
        try:
            seen = []

            def hook(event: str, args: tuple) -> None:
                if event not in WATCHED_EVENTS:
                    return
                if any(isinstance(a, str) and a.startswith(base) for a in args):
                    seen.append(event)
                    if len(seen) == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)

            sys.addaudithook(hook)
            run_push(inputs)
            with open(report, "w") as f:
                json.dump(seen, f)
            os._exit(0)
        except BaseException:
            with open(report, "w") as f:
                f.write(traceback.format_exc())
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    return status


def versions(base: str) -> set[str]:
    return {name for name in os.listdir(base) if name.isdigit()}


def same_tree(version_dir: str, inputs) -> bool:
    """The version holds exactly the export plus the extra assets in assets.extra/."""
    expected = {}
    for root, _, files in os.walk(inputs["export"]):
        for name in files:
            path = os.path.join(root, name)
            expected[os.path.relpath(path, inputs["export"])] = path
    for name in os.listdir(inputs["extra_dir"]):
        expected[os.path.join("assets.extra", name)] = os.path.join(inputs["extra_dir"], name)
    actual = set()
    for root, _, files in os.walk(version_dir):
        actual |= {os.path.relpath(os.path.join(root, name), version_dir) for name in files}
    return actual == set(expected) and all(
        filecmp.cmp(source, os.path.join(version_dir, rel), shallow=False)
        for rel, source in expected.items()
    )


def test_push_killed_at_20_points_leaves_no_or_a_complete_version(push_inputs, tmp_path):
    base = push_inputs["serving"]
    report = str(tmp_path / "report.json")
    status = push_in_child(push_inputs, None, report)
    with open(report) as f:
        text = f.read()
    assert status == 0, text
    operations = json.loads(text)
    assert len(operations) >= KILL_POINTS, operations
    dry_run = versions(base) - {"1"}
    for version in dry_run:
        shutil.rmtree(os.path.join(base, version))

    points = sorted({1 + round(i * (len(operations) - 1) / (KILL_POINTS - 1)) for i in range(20)})
    assert len(points) == KILL_POINTS
    outcomes = []
    for point in points:
        status = push_in_child(push_inputs, point, report)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (point, status)
        new = versions(base) - {"1"}
        # Killed: no new version, or a complete one.
        assert len(new) <= 1, (point, new)
        if new:
            assert same_tree(os.path.join(base, *new), push_inputs), (point, operations[point - 1])
        outcomes.append(bool(new))
        # The next run finishes or redoes the push: one complete version, no temporary left.
        pushed = run_push(push_inputs)
        after = versions(base) - {"1"}
        assert len(after) == 1 and (not new or after == new), (point, new, after)
        (version,) = after
        assert same_tree(os.path.join(base, version), push_inputs)
        assert pushed.get_string_custom_property("pushed_version") == version
        assert pushed.get_int_custom_property("pushed") == 1
        assert not [n for n in os.listdir(base) if n.startswith(pusher.TEMP_PREFIX)]
        shutil.rmtree(os.path.join(base, version))
    # The points cover both sides of the rename.
    assert any(outcomes) and not all(outcomes), outcomes


def test_identical_model_is_recorded_as_its_version_and_unblessed_is_not_pushed(push_inputs):
    first = run_push(push_inputs)
    version = first.get_string_custom_property("pushed_version")
    assert same_tree(os.path.join(push_inputs["serving"], version), push_inputs)
    again = run_push(push_inputs, with_extra=False)
    assert again.get_string_custom_property("pushed_version") == version
    assert versions(push_inputs["serving"]) == {"1", version}
    assert int(version) > 1  # the new version is the latest

    push_inputs["blessing"].set_int_custom_property("blessed", 0)
    write_file(os.path.join(push_inputs["export"], "saved_model.pb"), 1000, seed=99)
    refused = run_push(push_inputs)
    assert refused.get_int_custom_property("pushed") == 0
    assert versions(push_inputs["serving"]) == {"1", version}
