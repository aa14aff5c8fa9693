"""The demo dataset: deterministic, varied, and ingestible with exactly its two broken files."""

import hashlib
import os

from pipeline import demo_data
from tools import ingest as folder_ingest


def digest_tree(root: str) -> dict:
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                out[os.path.relpath(os.path.join(dirpath, name), root)] = hashlib.sha256(
                    f.read()
                ).hexdigest()
    return out


def test_same_seed_same_files_and_ingest_report(tmp_path):
    a = demo_data.generate_demo_images(str(tmp_path / "a"), images_per_class=10, seed=3)
    b = demo_data.generate_demo_images(str(tmp_path / "b"), images_per_class=10, seed=3)
    assert digest_tree(a) == digest_tree(b)

    result = folder_ingest.ingest(a, str(tmp_path / "out"))
    assert result.class_names == demo_data.CLASS_NAMES
    assert result.counts["eval"] == {"hot_dog": 2, "not_hot_dog": 2}  # the test/ folder
    for class_name in demo_data.CLASS_NAMES:  # train/ is split into train and validation
        assert result.counts["train"][class_name] + result.counts["validation"][class_name] == 8
    assert sorted(s["path"] for s in result.skipped) == sorted(demo_data.BROKEN_FILES)


def test_sizes_and_formats_vary(tmp_path):
    root = demo_data.generate_demo_images(str(tmp_path / "d"), images_per_class=20)
    extensions = {name.rsplit(".", 1)[-1] for name in digest_tree(root)}
    assert {"jpg", "png", "bmp", "gif"} <= extensions
    sizes = {demo_data.demo_image("hot_dog", i, 0).size for i in range(20)}
    assert len(sizes) >= 3
