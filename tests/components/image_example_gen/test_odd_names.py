"""File and folder names that are not UTF-8: skipped and reported, never a stopped run.

Latin-1 (`caf\\xe9.jpg`: old cameras, Windows shares), Shift-JIS (Japanese file names from a
Windows machine) and a lone surrogate (UTF-8 bytes of U+D800, which no UTF-8 decoder
accepts) in the train and the eval folders, and a class folder in Latin-1. TF's listing and
TFX's input fingerprint cannot read these names; ingest lists the folder at the bytes level,
reports each one with \\x escapes and the `convmv` fix, like a corrupt file, and ingests the
rest. ImageExampleGen runs under TFX's LocalDagRunner, so the fingerprint its driver
computes decides (as in a pipeline run) whether an added or removed such file re-runs it.
A whole pipeline run over such a folder that pushes: tests/pipeline/test_crash_rerun.py
(its uninterrupted reference run).
"""

from __future__ import annotations

import json
import os

import pytest

from components.image_example_gen import ingest
from models.ingest_report import REPORT_FILE
from tests.components.image_example_gen.test_component import run_example_gen
from tools import ingest as folder_ingest
from tools import samples

# Raw names -> how the report shows them.
ODD_NAMES = {
    b"caf\xe9.jpg": "caf\\xe9.jpg",  # Latin-1
    # Shift-JIS: only the bytes that are not UTF-8 are escaped (\xca\x90 happens to be ʐ).
    "写真.jpg".encode("shift_jis"): "\\x8eʐ^.jpg",
    b"lone\xed\xa0\x80.jpg": "lone\\xed\\xa0\\x80.jpg",  # U+D800 as UTF-8 bytes
}


def write(path: bytes, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def make_odd_folder(root) -> str:
    """train/ and test/ with two classes of good photos, odd names in both splits, and a
    class folder named in Latin-1 (in test/, where it is reported, not a class)."""
    base = os.fsencode(str(root))
    for split, count in ((b"train", 5), (b"test", 2)):
        for c, class_name in enumerate((b"blue", b"red")):
            colour = ((30, 30, 220), (220, 30, 30))[c]
            for i in range(count):
                write(
                    os.path.join(base, split, class_name, b"%d.png" % i),
                    samples.image_bytes(
                        16, 16, "png", seed=c * 100 + i + 50 * (split == b"test"), color=colour
                    ),
                )
    photo = samples.image_bytes(16, 16, "png", seed=999)
    for raw in ODD_NAMES:
        write(os.path.join(base, b"train", b"red", raw), photo)
        write(os.path.join(base, b"test", b"blue", raw), photo)
    write(os.path.join(base, b"test", b"gr\xfcn", b"0.png"), photo)
    return str(root)


def expected_skips() -> set[str]:
    return (
        {f"train/red/{shown}" for shown in ODD_NAMES.values()}
        | {f"test/blue/{shown}" for shown in ODD_NAMES.values()}
        | {"test/gr\\xfcn"}
    )


def test_listing_reports_odd_names_and_keeps_the_rest(tmp_path):
    listing = ingest.list_folder(make_odd_folder(tmp_path / "images"))
    assert listing.class_names == ("blue", "red")
    odd = {f.relpath: f for f in listing.files if f.name_problem}
    assert set(odd) == expected_skips()
    assert all("convmv" in f.name_problem for f in odd.values())
    assert "class folder name is not valid UTF-8" in odd["test/gr\\xfcn"].name_problem
    assert len([f for f in listing.files if not f.name_problem]) == 14
    skipped = ingest.decode_file(odd["train/red/caf\\xe9.jpg"])
    assert isinstance(skipped, ingest.Skipped) and "not valid UTF-8" in skipped.reason


def test_out_of_pipeline_ingest_goes_on_and_reports_them(tmp_path, capsys):
    """`make ingest` used to stop with exit code 2 on the first Latin-1 name."""
    images = make_odd_folder(tmp_path / "images")
    assert folder_ingest.main([images, str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / REPORT_FILE).read_text())
    reasons = {s["path"]: s["reason"] for s in report["skipped"]}
    assert set(reasons) == expected_skips()
    assert report["totals"]["train"] + report["totals"]["validation"] == 10
    assert report["totals"]["eval"] == 4
    assert "caf\\xe9.jpg: file name is not valid UTF-8" in capsys.readouterr().out


def test_fingerprint_counts_odd_names(tmp_path):
    images = make_odd_folder(tmp_path / "images")
    before = ingest.local_fingerprint("images", images, "*/*/*")
    assert "num_files:21," in before  # 14 photos + 6 odd names + the odd class folder
    os.remove(os.path.join(os.fsencode(images), b"train", b"red", b"caf\xe9.jpg"))
    after = ingest.local_fingerprint("images", images, "*/*/*")
    assert "num_files:20," in after


@pytest.fixture(scope="module")
def component_runs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("odd_names")
    images = make_odd_folder(root / "images")
    runs = {"first": run_example_gen(images, str(root))}
    runs["unchanged"] = run_example_gen(images, str(root))
    # One more Latin-1 name: only the bytes-level fingerprint sees it.
    write(
        os.path.join(os.fsencode(images), b"test", b"red", b"na\xefve.jpg"),
        samples.image_bytes(16, 16, "png", seed=5),
    )
    runs["added"] = run_example_gen(images, str(root))
    os.remove(os.path.join(os.fsencode(images), b"test", b"red", b"na\xefve.jpg"))
    runs["removed"] = run_example_gen(images, str(root))
    return runs


def read_report(execution: dict) -> dict:
    uri = execution["outputs"]["Examples"][0].uri
    with open(os.path.join(uri, REPORT_FILE)) as f:
        return json.load(f)


def test_component_ingests_the_rest_and_reports_each_odd_name(component_runs):
    first = component_runs["first"]
    assert first["state"] == "COMPLETE"
    report = read_report(first)
    assert {s["path"] for s in report["skipped"]} == expected_skips()
    assert report["totals"]["eval"] == 4
    custom = first["outputs"]["Examples"][0].custom_properties
    assert custom["skipped_files"].int_value == len(expected_skips())


def test_adding_or_removing_an_odd_name_reruns_ingest(component_runs):
    assert component_runs["unchanged"]["state"] == "CACHED"
    added = component_runs["added"]
    assert added["state"] == "COMPLETE"
    assert "test/red/na\\xefve.jpg" in {s["path"] for s in read_report(added)["skipped"]}
    # Removed again: the folder is as at first, so is its fingerprint: the first run's
    # output is reused, not the added run's (which listed the removed file).
    removed = component_runs["removed"]
    assert removed["state"] == "CACHED"
    uri = {name: component_runs[name]["outputs"]["Examples"][0].uri for name in component_runs}
    assert uri["removed"] == uri["first"] != uri["added"]
    fingerprint = {
        name: run["outputs"]["Examples"][0].custom_properties["input_fingerprint"].string_value
        for name, run in component_runs.items()
    }
    assert "num_files:21," in fingerprint["first"] and "num_files:22," in fingerprint["added"]
