"""The shared Food-101 photos for the runs that need real features: where they are, and
small subsets of them copied into a test's temporary folder (never into the project).

food101-hotdog-64 holds real 64x64 Food-101 JPEGs, hot dog against 100 other dishes, as
`{train,test}/{hot_dog,not_hot_dog}/*.jpg`. A two-colour generated folder is separable by
any pretrained backbone at a glance; these photos are not, so an accuracy or a prediction
asserted on them says the run learned from its backbone's features.

The folder is $FOOD101_HOTDOG_DIR, else /work/shared/data/food101-hotdog-64, else
../shared/data/food101-hotdog-64 beside the checkout (CI's layout). A test that needs it
fails, naming those places, when it is in none of them.
"""

from __future__ import annotations

import os
import shutil

import pytest

from pipeline.configs import REPO_ROOT

DATA_NAME = os.path.join("shared", "data", "food101-hotdog-64")


def shared_photos_dir() -> str:
    candidates = [
        os.environ.get("FOOD101_HOTDOG_DIR", ""),
        os.path.join("/work", DATA_NAME),
        os.path.join(os.path.dirname(REPO_ROOT), DATA_NAME),
    ]
    for candidate in candidates:
        if candidate and os.path.isdir(os.path.join(candidate, "train")):
            return candidate
    pytest.fail(
        "The shared Food-101 photos are not here: set FOOD101_HOTDOG_DIR or put them at "
        + " or ".join(candidates[1:])
    )


def copy_subset(target: str, per_class: dict[str, int]) -> dict[str, list[tuple[str, int]]]:
    """Copy the first photos (by name) of each class of each split, e.g. {"train": 40,
    "test": 40}, into target/<split>/<class>/; {split: [(copied path, label)]}, the labels
    being the classes' indices in sorted order."""
    source = shared_photos_dir()
    files: dict[str, list[tuple[str, int]]] = {split: [] for split in per_class}
    for split, count in per_class.items():
        classes = sorted(os.listdir(os.path.join(source, split)))
        for label, class_name in enumerate(classes):
            os.makedirs(os.path.join(target, split, class_name))
            names = sorted(os.listdir(os.path.join(source, split, class_name)))[:count]
            for name in names:
                copy = os.path.join(target, split, class_name, name)
                shutil.copyfile(os.path.join(source, split, class_name, name), copy)
                files[split].append((copy, label))
    return files
