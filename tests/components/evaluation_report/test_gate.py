"""Reading evaluations made before ClassRecall: per-class slices held recall and counts."""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from components.evaluation_report import gate
from models.metrics import eval_config


def test_an_older_evaluation_s_class_slices_give_recall_and_counts():
    """Evaluations made before ClassRecall (their config records no class names) had a
    `label_text=<class>` slice per class: its accuracy is the class's recall. Reports of
    such runs are rebuilt from ML Metadata with today's code (report/rebuild.py)."""

    def slice_metrics(accuracy: float, count: int) -> dict:
        return {
            (eval_config.ACCURACY_METRIC, "candidate", False): gate.Interval(accuracy, 0.0, 1.0),
            (eval_config.ACCURACY_METRIC, "baseline", False): gate.Interval(0.5, 0.0, 1.0),
            ("example_count", "candidate", False): gate.Interval(count, count, count),
        }

    metrics = {
        gate.OVERALL: slice_metrics(0.85, 40),
        "not_hot_dog": slice_metrics(0.4, 10),
        "hot_dog": slice_metrics(1.0, 30),
    }
    recall, counts = gate.class_results_from_slices(metrics, "candidate")
    assert {name: interval.value for name, interval in recall.items()} == {
        "hot_dog": 1.0,
        "not_hot_dog": 0.4,
    }
    assert counts == {"hot_dog": 30, "not_hot_dog": 10}
    assert eval_config.class_names(tfma.EvalConfig()) == []


def test_the_eval_config_records_its_class_names_and_no_per_class_slice():
    config = eval_config.build_eval_config(
        ["hot_dog", "not_hot_dog"], eval_config.GateSettings(0.6, 0.3, 0.01)
    )
    assert eval_config.class_names(config) == ["hot_dog", "not_hot_dog"]
    # One slice: every metric on a per-class slice cost as much again (eval_config.py).
    assert [tfma.SlicingSpec()] == list(config.slicing_specs)
