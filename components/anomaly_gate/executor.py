"""The step that makes ExampleValidator's anomalies count: block the run, or warn.

ExampleValidator only records anomalies (images missing, a label outside the schema's
domain, an image format the schema does not list, ...); TFX runs Transform and the
Trainer regardless. This component reads the anomalies of every split and, in "block"
mode (the default, `ANOMALIES=block`), fails the run with a message naming each one;
Transform and the Trainer depend on it, so nothing is trained on such data. In "warn"
mode (`ANOMALIES=warn`) it logs the same message loudly and lets the run go on.
"""

import dataclasses
import logging
import os

from tensorflow_metadata.proto.v0 import anomalies_pb2
from tfx.dsl.io import fileio
from tfx.types import artifact_utils, standard_artifacts

BLOCK = "block"
WARN = "warn"
MODES = (BLOCK, WARN)
# Where ExampleValidator writes each split's Anomalies proto (tfx ExampleValidator executor).
ANOMALIES_FILE = "SchemaDiff.pb"
_BANNER = "!" * 78


class AnomaliesFound(RuntimeError):
    """ExampleValidator found anomalies and the gate blocks; the message lists them."""


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"ANOMALIES={mode!r}: use {' or '.join(MODES)}.")
    return mode


@dataclasses.dataclass(frozen=True)
class Anomaly:
    split: str
    feature: str  # "(dataset)" for an anomaly of the whole split
    reasons: tuple[str, ...]  # AnomalyInfo.Type names, e.g. FEATURE_TYPE_LOW_FRACTION_PRESENT
    description: str

    def __str__(self) -> str:
        return f"split {self.split}: {self.feature}: {self.description}"


def read_anomalies(anomalies: standard_artifacts.ExampleAnomalies) -> list[Anomaly]:
    """Every anomaly ExampleValidator recorded, split by split."""
    found = []
    for split in artifact_utils.decode_split_names(anomalies.split_names):
        path = os.path.join(artifact_utils.get_split_uri([anomalies], split), ANOMALIES_FILE)
        proto = anomalies_pb2.Anomalies()
        with fileio.open(path, "rb") as f:  # artifact URIs may be gs:// (Vertex)
            proto.ParseFromString(f.read())
        infos = sorted(proto.anomaly_info.items())
        if proto.HasField("dataset_anomaly_info"):
            infos.append(("(dataset)", proto.dataset_anomaly_info))
        for feature, info in infos:
            reasons = tuple(anomalies_pb2.AnomalyInfo.Type.Name(r.type) for r in info.reason)
            found.append(Anomaly(split, feature, reasons, info.description))
    return found


def describe(found: list[Anomaly], mode: str) -> str:
    listing = "\n".join(f"  {anomaly}" for anomaly in found)
    if mode == BLOCK:
        outcome = (
            "The run stops before Transform and training. Fix or remove those examples, "
            "or set ANOMALIES=warn to train anyway."
        )
    else:
        outcome = "ANOMALIES=warn: training goes on with this data."
    return f"ExampleValidator found data that breaks the schema:\n{listing}\n{outcome}"


def gate(anomalies: standard_artifacts.ExampleAnomalies, mode: str) -> None:
    """Raise AnomaliesFound (block) or log a loud warning (warn) when there are anomalies."""
    check_mode(mode)
    found = read_anomalies(anomalies)
    if not found:
        logging.info("ExampleValidator found no anomalies.")
        return
    message = describe(found, mode)
    if mode == BLOCK:
        raise AnomaliesFound(message)
    logging.warning("\n%s\n%s\n%s", _BANNER, message, _BANNER)
