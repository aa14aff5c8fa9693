"""ImageExampleGen's executor: lists the image folder, then decodes, validates and splits it
on Beam workers (ingest.py), writes the splits through ExampleGen's own WriteSplit, and
records the ingest report's headline numbers on the Examples artifact."""

from __future__ import annotations

import json
import os
from typing import Any

from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components.image_example_gen import ingest, unlabelled
from models.crash_points import crash_point
from models.ingest_report import REPORT_FILE, read_report


def _split_options(exec_properties: dict[str, Any]) -> ingest.SplitOptions:
    custom = example_gen_pb2.CustomConfig()
    raw = exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY)
    if raw:
        json_format.Parse(raw, custom)
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    values = json_format.MessageToDict(struct)
    return ingest.SplitOptions(
        validation_fraction=float(values["validation_fraction"]),
        eval_fraction=float(values["eval_fraction"]),
    )


def _is_unlabelled(exec_properties: dict[str, Any]) -> bool:
    custom = example_gen_pb2.CustomConfig()
    json_format.Parse(
        exec_properties.get(standard_component_specs.CUSTOM_CONFIG_KEY) or "{}", custom
    )
    struct = struct_pb2.Struct()
    custom.custom_config.Unpack(struct)
    return bool(json_format.MessageToDict(struct).get("unlabelled"))


class Executor(BaseExampleGenExecutor):
    """Lists the image folder, then decodes, validates and splits it in the Beam pipeline."""

    def GetInputSourceToExamplePTransform(self):  # noqa: N802 - TFX's name
        raise NotImplementedError("ImageExampleGen splits by content: see GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline, exec_properties):  # noqa: N802 - TFX's name
        if _is_unlabelled(exec_properties):
            return unlabelled.generate(self, pipeline, exec_properties)
        options = _split_options(exec_properties)
        options.check()
        listing = ingest.list_folder(exec_properties[standard_component_specs.INPUT_BASE_KEY])
        listing_path = ingest.write_listing(listing, self._get_tmp_dir())
        return pipeline | "IngestImages" >> ingest.IngestImages(
            listing, listing_path, options, self._report_path
        )

    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        examples = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.EXAMPLES_KEY]
        )
        self._report_path = os.path.join(examples.uri, REPORT_FILE)
        super().Do(input_dict, output_dict, exec_properties)
        crash_point("ImageExampleGen")  # records written, the execution not yet published
        report = read_report(examples.uri)
        if _is_unlabelled(exec_properties):
            unlabelled.record(examples, report)
            return
        ingest.check_report(report)  # stops the run, with the reason, on unusable data
        examples.set_string_custom_property("class_names", json.dumps(report["class_names"]))
        examples.set_int_custom_property("skipped_files", len(report["skipped"]))
        for split in ingest.SPLITS:
            examples.set_int_custom_property(f"{split}_images", report["totals"][split])
