"""Version discovery and state, with a stand-in loader (no TensorFlow, milliseconds each)."""

from __future__ import annotations

import os

import pytest

from serving import errors
from serving.models import ModelRegistry, ModelSource, State, VersionPolicy, parse_version_labels


class Loaded:
    def __init__(self, name: str, version: int, path: str):
        with open(os.path.join(path, "saved_model.pb")) as f:
            content = f.read()
        if content != "ok":
            raise ValueError("corrupt saved_model.pb")
        self.name, self.version = name, version


def write_version(model_dir, version: int, content: str = "ok") -> str:
    path = os.path.join(model_dir, str(version))
    os.makedirs(os.path.join(path, "variables"), exist_ok=True)
    with open(os.path.join(path, "saved_model.pb"), "w") as f:
        f.write(content)
    return path


def poll(registry: ModelRegistry, times: int = 2) -> None:
    for _ in range(times):
        registry.poll()


def test_latest_version_is_served_and_others_ignored(tmp_path) -> None:
    for version in (1, 7, 3):
        write_version(tmp_path / "m", version)
    os.makedirs(tmp_path / "m" / "tmp-push")  # not a version
    registry = ModelRegistry(str(tmp_path), Loaded)
    poll(registry)
    assert registry.resolve("m").version == 7
    assert [(s.version, s.state) for s in registry.status("m")] == [(7, State.AVAILABLE)]
    with pytest.raises(errors.ServingError, match=r"Specific\(m, 3\)"):
        registry.resolve("m", version=3)


def test_num_versions_keeps_the_latest_n(tmp_path) -> None:
    for version in (1, 2, 3):
        write_version(tmp_path / "m", version)
    registry = ModelRegistry(str(tmp_path), Loaded, num_versions=2)
    poll(registry)
    assert registry.resolve("m", version=2).version == 2
    assert [s.version for s in registry.status("m")] == [3, 2]


def test_a_version_loads_only_once_its_directory_is_stable(tmp_path) -> None:
    write_version(tmp_path / "m", 1)
    registry = ModelRegistry(str(tmp_path), Loaded)
    poll(registry)
    partial = tmp_path / "m" / "2"
    os.makedirs(partial / "variables")
    registry.poll()
    registry.poll()  # no saved_model.pb: waits
    assert registry.status("m", version=2)[0].state is State.START
    write_version(tmp_path / "m", 2)
    registry.poll()  # changed since the last poll: still waits
    assert registry.resolve("m").version == 1
    registry.poll()
    assert registry.resolve("m").version == 2
    assert registry.status("m", version=1)[0].state is State.END


def test_failed_version_is_reported_never_served_and_retried_on_change(tmp_path) -> None:
    write_version(tmp_path / "m", 1)
    registry = ModelRegistry(str(tmp_path), Loaded)
    poll(registry)
    write_version(tmp_path / "m", 2, content="corrupt")
    poll(registry)
    failed = registry.status("m", version=2)[0]
    assert failed.state is State.END and failed.error_code is errors.Code.INTERNAL
    assert "corrupt saved_model.pb" in failed.error_message
    assert registry.resolve("m").version == 1  # the old version keeps answering
    write_version(tmp_path / "m", 2, content="ok")
    poll(registry)
    assert registry.resolve("m").version == 2


def test_single_model_directory_like_tf_servings_model_base_path(tmp_path) -> None:
    write_version(tmp_path / "flowers", 5)
    registry = ModelRegistry(str(tmp_path / "flowers"), Loaded)
    poll(registry)
    assert registry.resolve("flowers").version == 5
    named = ModelRegistry(str(tmp_path / "flowers"), Loaded, model_names=["roses"])
    poll(named)
    assert named.resolve("roses").version == 5


def test_labels_resolve_to_versions(tmp_path) -> None:
    write_version(tmp_path / "m", 4)
    registry = ModelRegistry(str(tmp_path), Loaded, version_labels=parse_version_labels(["m:a=4"]))
    poll(registry)
    assert registry.resolve("m", label="a").version == 4
    with pytest.raises(errors.ServingError, match="Unrecognized servable version label: b"):
        registry.resolve("m", label="b")
    with pytest.raises(ValueError):
        parse_version_labels(["m-a-4"])


def test_unknown_model_errors_match_tf_serving(tmp_path) -> None:
    registry = ModelRegistry(str(tmp_path / "missing"), Loaded)
    registry.poll()
    with pytest.raises(errors.ServingError, match=r"Servable not found for request: Latest\(x\)"):
        registry.resolve("x")
    with pytest.raises(errors.ServingError, match="Could not find any versions of model x"):
        registry.status("x")


def test_config_sources_policies_labels_and_removal(tmp_path) -> None:
    for version in (1, 2, 3):
        write_version(tmp_path / "a", version)
    os.rename(tmp_path / "a" / "1", tmp_path / "a" / "007")  # version 7, as SimpleAtoi reads it
    write_version(tmp_path / "b", 5)
    a = ModelSource("a", str(tmp_path / "a"), VersionPolicy("specific", versions=(2, 7, 9)))
    b = ModelSource("b", str(tmp_path / "b"), VersionPolicy("all"))
    registry = ModelRegistry("", Loaded, sources=[a, b])
    assert [(s.version, s.state) for s in registry.status("a")] == [
        (7, State.AVAILABLE),
        (2, State.AVAILABLE),
    ]
    assert registry.resolve("b").version == 5

    with pytest.raises(errors.ServingError, match="not currently available") as raised:
        registry.reconfigure([ModelSource("a", a.base_path, a.policy, (("stable", 3),)), b])
    assert raised.value.code is errors.Code.FAILED_PRECONDITION
    assert registry.version_labels.get("a", {}) == {}  # the previous config stays

    registry.reconfigure([ModelSource("a", a.base_path, a.policy, (("stable", 2),))])
    assert registry.resolve("a", label="stable").version == 2
    assert [s.state for s in registry.status("b")] == [State.END]  # b left the config
    with pytest.raises(errors.ServingError, match=r"Latest\(b\)"):
        registry.resolve("b")


def test_a_failing_warmup_fails_the_load(tmp_path) -> None:
    write_version(tmp_path / "m", 1)

    def warmup(name, version, servable) -> None:
        raise errors.ServingError(errors.Code.INVALID_ARGUMENT, "Failed to parse warmup record")

    registry = ModelRegistry(str(tmp_path), Loaded, warmup=warmup)
    poll(registry)
    (status,) = registry.status("m")
    assert status.state is State.END
    assert "warmup" in status.error_message
    with pytest.raises(errors.ServingError):
        registry.resolve("m")
