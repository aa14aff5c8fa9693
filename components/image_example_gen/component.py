"""ImageExampleGen: the image-folder ingest as the pipeline's ExampleGen.

TFX's documented custom-executor pattern: FileBasedExampleGen (its driver fingerprints the
input files, so the component re-runs when a photo changes and is served from cache when
none did; driver.py extends the fingerprint to names that are not UTF-8) with an executor
that decodes and splits the photos on Beam workers
(ingest.py) and writes sharded, gzip'd TFRecords through ExampleGen's own WriteSplit.
Output splits: train, validation, eval. The ingest report
(`ingest_report.json`: class names, counts per split and class, skipped files with their
reasons, converted files, duplicates) is written into the Examples artifact, and its
headline numbers are custom properties of the artifact in ML Metadata.
"""

from __future__ import annotations

from google.protobuf import any_pb2, struct_pb2
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.orchestration.data_types import RuntimeParameter
from tfx.proto import example_gen_pb2

from components.image_example_gen import ingest
from components.image_example_gen.driver import ImageFolderDriver
from components.image_example_gen.executor import Executor
from components.image_example_gen.unlabelled import UNLABELLED


class ImageExampleGen(FileBasedExampleGen):
    """ExampleGen over an image folder: `<dir>/train|test/<class>/*` or `<dir>/<class>/*`."""

    EXECUTOR_SPEC = executor_spec.BeamExecutorSpec(Executor)
    # Fingerprints local names that are not UTF-8 too (driver.py).
    DRIVER_CLASS = ImageFolderDriver

    def __init__(
        self,
        images_dir: str | RuntimeParameter,
        validation_fraction: float = ingest.SplitOptions.validation_fraction,
        eval_fraction: float = ingest.SplitOptions.eval_fraction,
        unlabelled: bool = False,
        layout: str = "",
    ):
        """Lists the folder's top level (not its photos) to choose the fingerprinted glob.

        `images_dir` may be a RuntimeParameter (Kubeflow/Vertex): its default is listed,
        and a folder given at submission must have the same layout. `unlabelled`: any
        folder of photos, any nesting, into one `unlabelled` split (unlabelled.py; TFX
        fingerprints its top level only, so its pipeline runs uncached). `layout` (split |
        flat; a compile that may not read the folder) names the layout instead of listing it.
        """
        listed = images_dir.default if isinstance(images_dir, RuntimeParameter) else images_dir
        options = struct_pb2.Struct()
        options.update({"validation_fraction": validation_fraction, "eval_fraction": eval_fraction})
        options.update({"unlabelled": unlabelled})
        splits = (UNLABELLED,) if unlabelled else ingest.SPLITS
        if unlabelled:
            pattern = "*"
        elif layout:
            if layout not in ingest.LAYOUT_PATTERNS:
                raise ValueError(
                    f"IMAGES_LAYOUT={layout!r}: choose split (train/ and test/ holding the "
                    "class folders) or flat (the class folders at the top), or leave it empty."
                )
            pattern = ingest.LAYOUT_PATTERNS[layout]
        else:
            pattern = ingest.input_pattern(listed)
        packed = any_pb2.Any()
        packed.Pack(options)
        super().__init__(
            input_base=images_dir,
            input_config=example_gen_pb2.Input(
                splits=[example_gen_pb2.Input.Split(name="images", pattern=pattern)]
            ),
            # Names the output splits; the executor assigns them (by folder and content
            # hash, fractions from custom_config), so hash_buckets are not used.
            output_config=example_gen_pb2.Output(
                split_config=example_gen_pb2.SplitConfig(
                    splits=[
                        example_gen_pb2.SplitConfig.Split(name=name, hash_buckets=1)
                        for name in splits
                    ]
                )
            ),
            custom_config=example_gen_pb2.CustomConfig(custom_config=packed),
        )
