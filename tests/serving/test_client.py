"""The `predict` CLI classifies a folder through the REST API, one line per file.

Runs the CLI as a user would (`python -m serving.client predict ...`) against the same target
as the conformance suite: this project's server, or TF_SERVING_URL.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.serving.helpers import CLASS_NAMES, ROOT, Target, image

pytest_plugins = ["tests.serving.helpers"]


@pytest.fixture(scope="module")
def target(serving_target: Target) -> Target:
    return serving_target


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "serving.client", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("photos")
    (folder / "nested").mkdir()
    paths = [folder / f"photo_{i}.jpg" for i in range(4)] + [folder / "nested" / "last.JPG"]
    for i, path in enumerate(paths):
        path.write_bytes(image(seed=100 + i))
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    return folder, paths


def parse_lines(stdout: str) -> dict[str, tuple[str, float]]:
    rows = {}
    for line in stdout.splitlines():
        path, class_name, probability = line.split("\t")
        rows[path] = (class_name, float(probability))
    return rows


def test_predict_cli_prints_one_line_per_file(target: Target, photos) -> None:
    folder, paths = photos
    done = run_cli(
        "predict", "--url", target.url, "--model", target.model, "--batch-size", "2", str(folder)
    )
    assert done.returncode == 0, done.stderr
    rows = parse_lines(done.stdout)
    assert sorted(rows) == sorted(str(p) for p in paths)
    for class_name, probability in rows.values():
        assert 0.0 <= probability <= 1.0
        if target.local:
            assert class_name in CLASS_NAMES


def test_predict_cli_by_version_and_label(target: Target, photos) -> None:
    _, paths = photos
    for which in (["--version", str(target.version)], ["--label", str(target.label)]):
        if which[1] == "None":
            continue
        done = run_cli(
            "predict", "--url", target.url, "--model", target.model, *which, str(paths[0])
        )
        assert done.returncode == 0, done.stderr
        assert list(parse_lines(done.stdout)) == [str(paths[0])]


def test_predict_cli_reports_a_bad_file_and_classifies_the_rest(target: Target, photos, tmp_path):
    _, paths = photos
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    done = run_cli("predict", "--url", target.url, "--model", target.model, str(paths[0]), str(bad))
    assert done.returncode == 1
    assert list(parse_lines(done.stdout)) == [str(paths[0])]
    assert f"{bad}\tERROR\tHTTP 400" in done.stderr


def test_status_command(target: Target) -> None:
    done = run_cli("status", "--url", target.url, "--model", target.model)
    assert done.returncode == 0, done.stderr
    assert '"AVAILABLE"' in done.stdout
    missing = run_cli("status", "--url", target.url, "--model", "no_such_model")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


def test_predict_cli_over_grpc_matches_rest(target: Target, photos, tmp_path) -> None:
    if target.grpc is None:
        pytest.skip("no gRPC endpoint (TF_SERVING_GRPC)")
    _, paths = photos
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    files = [str(paths[0]), str(paths[1]), str(bad)]
    common = ["--model", target.model, "--batch-size", "3", *files]
    over_grpc = run_cli("predict", "--url", target.url, "--grpc", target.grpc, *common)
    over_rest = run_cli("predict", "--url", target.url, *common)
    assert over_grpc.returncode == over_rest.returncode == 1, over_grpc.stderr
    grpc_rows, rest_rows = parse_lines(over_grpc.stdout), parse_lines(over_rest.stdout)
    assert sorted(grpc_rows) == sorted(rest_rows) == files[:2]
    for path, (class_name, probability) in rest_rows.items():
        assert grpc_rows[path][0] == class_name
        assert grpc_rows[path][1] == pytest.approx(probability, abs=1e-4)
    assert f"{bad}\tERROR\tHTTP 400" in over_grpc.stderr
