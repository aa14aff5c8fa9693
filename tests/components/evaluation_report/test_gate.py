"""The eval config the gate reads back, and an evaluation the reader refuses.

(The gate's decisions on real Evaluator runs: tests/components/standard/test_evaluator.py.)
"""

from __future__ import annotations

import pytest
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis.writers import eval_config_writer

from components.evaluation_report.evaluation import Evaluation, EvaluationError
from models.metrics import eval_config


def test_the_eval_config_records_its_class_names_and_no_per_class_slice():
    config = eval_config.build_eval_config(
        ["hot_dog", "not_hot_dog"], eval_config.GateSettings(0.6, 0.3, 0.01)
    )
    assert eval_config.class_names(config) == ["hot_dog", "not_hot_dog"]
    # One slice: every metric on a per-class slice cost as much again (eval_config.py).
    assert [tfma.SlicingSpec()] == list(config.slicing_specs)


def _write_eval_run(folder, config: tfma.EvalConfig) -> str:
    """An Evaluator output holding only its eval config, written as TFMA writes it."""
    path = folder / f"{eval_config_writer.EVAL_CONFIG_FILE}.json"
    path.write_text(
        eval_config_writer._serialize_eval_run(config, "data", "tfrecords", {"": "model"})
    )
    return str(folder)


def test_an_evaluation_made_before_class_recall_is_refused_with_the_fix(tmp_path):
    """An Evaluator of project 0.x (no ClassRecall, per-class slices instead): the report
    says to run the pipeline again instead of showing an empty per-class table."""
    older = tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(label_key="label")],
        slicing_specs=[tfma.SlicingSpec(), tfma.SlicingSpec(feature_keys=["label_text"])],
    )
    with pytest.raises(EvaluationError, match="before the Evaluator computed ClassRecall.*again"):
        Evaluation.load(_write_eval_run(tmp_path, older))


def test_a_folder_that_is_no_evaluator_output_is_refused(tmp_path):
    with pytest.raises(EvaluationError, match="no eval config"):
        Evaluation.load(str(tmp_path))
