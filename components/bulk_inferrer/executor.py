"""TFX's BulkInferrer, without the photos in its output.

TFX's executor writes every PredictionLog as RunInference returns it, and a ClassifyLog
carries its request: the whole input tf.Example, so the photo's bytes. Over a backlog of
photos that copies the whole folder into the inference result. This executor runs the same
reading and the same tfx-bsl RunInference (TFX's own `_RunInference` transform) and drops
the image feature from each logged request before writing, keeping the source path and
the other small features that identify the photo.
"""

from __future__ import annotations

import os

import apache_beam as beam
from tensorflow_serving.apis import prediction_log_pb2
from tfx.components.bulk_inferrer import executor as bulk_inferrer_executor
from tfx.components.util import tfxio_utils
from tfx.types import artifact_utils
from tfx.utils import io_utils

from models import features

PREDICTION_LOGS_FILE = "prediction_logs"  # TFX's name (bulk_inferrer/executor.py)


def without_image(log: prediction_log_pb2.PredictionLog) -> prediction_log_pb2.PredictionLog:
    """The log with the image bytes removed from every example of its request."""
    stripped = prediction_log_pb2.PredictionLog()
    stripped.CopyFrom(log)
    kind = stripped.WhichOneof("log_type")
    request = getattr(stripped, kind).request
    inputs = (
        request.input.example_list.examples
        if kind in ("classify_log", "regress_log", "multi_inference_log")
        else []
    )
    for example in inputs:
        if features.IMAGE_KEY in example.features.feature:
            del example.features.feature[features.IMAGE_KEY]
    if kind == "predict_log":
        request.inputs.clear()  # a predict request holds the serialized examples
    return stripped


class Executor(bulk_inferrer_executor.Executor):
    def _run_model_inference(  # TFX's method, without the photos in what it writes
        self,
        data_spec,
        output_example_spec,
        examples,
        output_examples,
        inference_result,
        inference_endpoint,
    ) -> None:
        if output_examples is not None:
            raise ValueError("This BulkInferrer writes inference results, not output examples.")
        splits = {}
        for artifact in examples:
            for split in artifact_utils.decode_split_names(artifact.split_names):
                if not data_spec.example_splits or split in data_spec.example_splits:
                    splits[split] = artifact_utils.get_split_uri([artifact], split)
        payload_format, _ = tfxio_utils.resolve_payload_format_and_data_view_uri(examples)
        tfxio_factory = tfxio_utils.get_tfxio_factory_from_artifact(
            examples,
            ["ImageBulkInferrer"],
            schema=None,
            read_as_raw_records=True,
            raw_record_column_name="unused",
        )
        with self._make_beam_pipeline() as pipeline:
            logs = [
                pipeline
                | f"ReadData[{split}]"
                >> tfxio_factory([io_utils.all_files_pattern(uri)]).RawRecordBeamSource()
                | f"RunInference[{split}]"
                >> bulk_inferrer_executor._RunInference(payload_format, inference_endpoint)
                for split, uri in splits.items()
            ]
            _ = (
                logs
                | "Flatten" >> beam.Flatten(pipeline=pipeline)
                | "WithoutImages" >> beam.Map(without_image)
                | "WritePredictionLogs"
                >> beam.io.WriteToTFRecord(
                    os.path.join(inference_result.uri, PREDICTION_LOGS_FILE),
                    file_name_suffix=".gz",
                    coder=beam.coders.ProtoCoder(prediction_log_pb2.PredictionLog),
                )
            )
