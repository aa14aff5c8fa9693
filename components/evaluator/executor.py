"""The ImageEvaluator's executor: the class-dependent part of the eval_config (the classes
binarized for per-class metrics and curves, the macro average's weights, ClassRecall's
names, which the per-class gate reads) rewritten for the classes in ImageExampleGen's report
(models.metrics.eval_config.with_class_names), then TFX's Evaluator executor.

Records without a report (ImportExampleGen over EXAMPLES: labels.txt, read when the pipeline
is built) keep the config they were compiled with. Subclassing TFX's executor keeps what
the Kubeflow V2 entrypoint does for Evaluators (the blessing's model ids become ML Metadata
resource names: kubeflow_v2_run_executor.py checks issubclass(..., evaluator.Executor)).
"""

from __future__ import annotations

import logging

import tensorflow_model_analysis as tfma
from tfx.components.evaluator import executor as evaluator_executor
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from models import ingest_report
from models.metrics import eval_config


class Executor(evaluator_executor.Executor):
    def Do(self, input_dict, output_dict, exec_properties) -> None:  # noqa: N802 - TFX's name
        examples = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.EXAMPLES_KEY]
        )
        report = ingest_report.read_report(examples.uri)
        if report is not None:
            key = standard_component_specs.EVAL_CONFIG_KEY
            config = proto_utils.json_to_proto(exec_properties[key], tfma.EvalConfig())
            names = list(report["class_names"])
            logging.info("Evaluator: per-class metrics and gate for the ingested classes %s", names)
            exec_properties = {
                **exec_properties,
                key: proto_utils.proto_to_json(eval_config.with_class_names(config, names)),
            }
        super().Do(input_dict, output_dict, exec_properties)
