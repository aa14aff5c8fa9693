"""ImageExampleGen: the image-folder ingest as the pipeline's ExampleGen.

TFX's documented custom-executor pattern: FileBasedExampleGen (its driver fingerprints the
input files, so the component re-runs when a photo changes and is served from cache when
none did) with an executor that decodes and splits the photos on Beam workers
(components/ingest.py) and writes sharded, gzip'd TFRecords through ExampleGen's own
WriteSplit. Output splits: train, validation, eval. The ingest report
(`ingest_report.json`: class names, counts per split and class, skipped files with their
reasons, converted files, duplicates) is written into the Examples artifact, and its
headline numbers are custom properties of the artifact in ML Metadata.
"""

from __future__ import annotations

import json
import os
from typing import Any

from google.protobuf import any_pb2, json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs

from components import ingest
from components.modules.ingest_report import REPORT_FILE, read_report


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


class Executor(BaseExampleGenExecutor):
    """Lists the image folder, then decodes, validates and splits it in the Beam pipeline."""

    def GetInputSourceToExamplePTransform(self):  # noqa: N802 - TFX's name
        raise NotImplementedError("ImageExampleGen splits by content: see GenerateExamplesByBeam")

    def GenerateExamplesByBeam(self, pipeline, exec_properties):  # noqa: N802 - TFX's name
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
        report = read_report(examples.uri)
        ingest.check_report(report)  # stops the run, with the reason, on unusable data
        examples.set_string_custom_property("class_names", json.dumps(report["class_names"]))
        examples.set_int_custom_property("skipped_files", len(report["skipped"]))
        for split in ingest.SPLITS:
            examples.set_int_custom_property(f"{split}_images", report["totals"][split])


class ImageExampleGen(FileBasedExampleGen):
    """ExampleGen over an image folder: `<dir>/train|test/<class>/*` or `<dir>/<class>/*`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)

    def __init__(
        self,
        images_dir: str | RuntimeParameter,
        validation_fraction: float = ingest.SplitOptions.validation_fraction,
        eval_fraction: float = ingest.SplitOptions.eval_fraction,
    ):
        """Lists the folder's top level (not its photos) to choose the fingerprinted glob.

        `images_dir` may be a RuntimeParameter (Kubeflow/Vertex): its default is listed,
        and a folder given at submission must have the same layout.
        """
        listed = images_dir.default if isinstance(images_dir, RuntimeParameter) else images_dir
        options = struct_pb2.Struct()
        options.update({"validation_fraction": validation_fraction, "eval_fraction": eval_fraction})
        packed = any_pb2.Any()
        packed.Pack(options)
        super().__init__(
            input_base=images_dir,
            input_config=example_gen_pb2.Input(
                splits=[
                    example_gen_pb2.Input.Split(name="images", pattern=ingest.input_pattern(listed))
                ]
            ),
            # Names the output splits; the executor assigns them (by folder and content
            # hash, fractions from custom_config), so hash_buckets are not used.
            output_config=example_gen_pb2.Output(
                split_config=example_gen_pb2.SplitConfig(
                    splits=[
                        example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in ingest.SPLITS
                    ]
                )
            ),
            custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
        )
