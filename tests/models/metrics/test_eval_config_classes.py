"""The Evaluator's config completed at run time for the classes that were ingested.

A spec compiled without reading the photos carries build_eval_config([]); the Evaluator's
executor (components/evaluator/) applies with_class_names with the names of
ImageExampleGen's report. The result must be exactly the config a listing at compile
time would have built, whatever the config was compiled with.
"""

from __future__ import annotations

import pytest
import tensorflow_model_analysis as tfma
from tfx.utils import proto_utils

from models.metrics import eval_config

GATE = eval_config.GateSettings(
    accuracy_threshold=0.6, min_class_recall=0.3, accuracy_max_drop=0.01
)


@pytest.mark.parametrize("compiled_with", [[], ["x", "y"], ["a", "b", "c", "d"]])
def test_completed_config_equals_the_one_built_for_those_classes(compiled_with):
    names = ["cat", "dog", "hot_dog"]
    # Through JSON, as the config travels in the spec.
    compiled = proto_utils.json_to_proto(
        proto_utils.proto_to_json(eval_config.build_eval_config(compiled_with, GATE)),
        tfma.EvalConfig(),
    )
    completed = eval_config.with_class_names(compiled, names)
    assert completed == eval_config.build_eval_config(names, GATE)
    assert eval_config.class_names(completed) == names
    assert eval_config.class_names(compiled) == compiled_with  # the input is not changed
