"""`make clean-old`: delete what no run can use again, knowing what ML Metadata references.

A run killed mid-component (a power cut, the OOM killer, Ctrl-\\) leaves the killed
execution's output folders under `pipeline_root/<component>/<output>/<execution id>/`; TFX
never publishes them, never reads them again and never deletes them. A killed feature pass
leaves a temporary `*.tmp-*` file in `FeatureCache/`. This tool lists every such folder and
file and deletes them (`--dry-run` only lists): an output folder is kept whenever ML
Metadata has an artifact at (or under) its path that is live, so everything a cached re-run,
the Evaluator's baseline or `make report` may read stays. Files younger than `--min-age`
minutes (default 60) are kept, so a run in progress on the same OUTPUT is not touched.

Published artifacts of old runs, old FeatureCache keys and old serving versions are not
deleted here: TFX's cache may still reuse the first, the second are reused by any run with
the same key, and serving versions have KEEP_VERSIONS (components/pusher/executor.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time

from ml_metadata.proto import metadata_store_pb2

from pipeline.configs import PipelineConfig
from pipeline.metadata import open_store

# Artifact states whose folders a run may still read (PENDING: a killed execution's output).
_KEPT_STATES = {
    metadata_store_pb2.Artifact.LIVE,
    metadata_store_pb2.Artifact.UNKNOWN,
    metadata_store_pb2.Artifact.REFERENCE,
}
FEATURE_CACHE_DIR = "FeatureCache"
_TEMP_MARK = ".tmp-"  # models/atomic_files.py's temporary names


@dataclasses.dataclass(frozen=True)
class Removable:
    path: str
    bytes: int
    why: str


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, fs in os.walk(path) for n in fs)


def referenced_uris(metadata_path: str) -> set[str]:
    store = open_store(metadata_path)
    return {
        os.path.normpath(a.uri) for a in store.get_artifacts() if a.state in _KEPT_STATES and a.uri
    }


def _referenced(path: str, uris: set[str]) -> bool:
    """Whether a live artifact is this folder, or inside it, or contains it."""
    path = os.path.normpath(path)
    return any(
        uri == path or uri.startswith(path + os.sep) or path.startswith(uri + os.sep)
        for uri in uris
    )


def _old_enough(path: str, min_age_seconds: float, now: float) -> bool:
    newest = os.path.getmtime(path)
    for directory, _, files in os.walk(path):
        for name in files:
            newest = max(newest, os.path.getmtime(os.path.join(directory, name)))
    return now - newest >= min_age_seconds


def find_removable(pipeline_root: str, metadata_path: str, min_age_minutes: float) -> list:
    """Unreferenced execution output folders and temporary feature-cache files."""
    uris = referenced_uris(metadata_path)
    now, min_age = time.time(), min_age_minutes * 60
    found = []
    for node in sorted(os.listdir(pipeline_root)):
        node_dir = os.path.join(pipeline_root, node)
        if node.startswith((".", "_")) or node == FEATURE_CACHE_DIR or not os.path.isdir(node_dir):
            continue
        for output in sorted(os.listdir(node_dir)):
            output_dir = os.path.join(node_dir, output)
            if output.startswith(".") or not os.path.isdir(output_dir):
                continue
            for execution_id in sorted(os.listdir(output_dir)):
                path = os.path.join(output_dir, execution_id)
                if (
                    execution_id.isdigit()
                    and not _referenced(path, uris)
                    and _old_enough(path, min_age, now)
                ):
                    found.append(Removable(path, _size(path), "no live artifact in ML Metadata"))
    cache = os.path.join(pipeline_root, FEATURE_CACHE_DIR)
    for directory, _, files in os.walk(cache):
        for name in sorted(files):
            path = os.path.join(directory, name)
            if _TEMP_MARK in name and _old_enough(path, min_age, now):
                found.append(Removable(path, _size(path), "temporary file of a killed write"))
    return found


def remove(found: list[Removable]) -> None:
    for item in found:
        if os.path.isdir(item.path):
            shutil.rmtree(item.path)
        else:
            os.remove(item.path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list, delete nothing")
    parser.add_argument(
        "--min-age", type=float, default=60.0, help="minutes: younger files are kept"
    )
    args = parser.parse_args(argv)
    config = PipelineConfig.from_env()
    if not os.path.isfile(config.metadata_path) or not os.path.isdir(config.pipeline_root):
        print(f"Nothing to clean: no run under {config.output}")
        return 0
    found = find_removable(config.pipeline_root, config.metadata_path, args.min_age)
    for item in found:
        print(f"{item.bytes:>12d}  {item.path}  ({item.why})")
    total = sum(item.bytes for item in found)
    if not args.dry_run:
        remove(found)
    verb = "would free" if args.dry_run else "freed"
    print(f"{len(found)} item(s); {verb} {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
