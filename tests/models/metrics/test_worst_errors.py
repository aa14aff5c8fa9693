"""The worst-errors metric: its combiner alone, then inside the real Evaluator with a baseline.

The combiner gets TFMA's StandardMetricInputs, as the Evaluator hands them over: labels,
predictions and the `source_path` feature of one example each. The Evaluator run uses
the pipeline's own eval config (jackknife intervals, per-class slices, the gate) and
fixed-answer models whose mistakes all have the same confidence (ties broken by path).
"""

from __future__ import annotations

import random

import apache_beam as beam
import numpy as np
import pytest
import tensorflow_model_analysis as tfma
from apache_beam.testing.util import assert_that, equal_to
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.metrics import metric_types
from tfx import v1 as tfx

from components.evaluation_report import gate
from components.evaluation_report.evaluation import Evaluation
from models import features
from models.metrics import eval_config, worst_errors
from models.metrics.worst_errors import WORST_ERRORS, WorstError
from tests.components import harness
from tests.components.standard.test_evaluator import COLORS, save_model

KEY = metric_types.MetricKey(worst_errors.WORST_ERRORS_METRIC)


def example(path: str, label: int, probabilities: list[float]) -> metric_types.StandardMetricInputs:
    return metric_types.StandardMetricInputs(
        {
            constants.LABELS_KEY: np.array([label]),
            constants.PREDICTIONS_KEY: np.array(probabilities, dtype=np.float32),
            constants.EXAMPLE_WEIGHTS_KEY: None,
            constants.FEATURES_KEY: {features.SOURCE_PATH_KEY: np.array([path.encode()])},
        }
    )


def expected_top(examples: list[tuple[str, int, list[float]]]) -> list[WorstError]:
    """Brute force: every wrong prediction, most confident first, ties by path."""
    wrong = [
        WorstError(path, label, int(np.argmax(p)), float(np.float32(max(p))))
        for path, label, p in examples
        if int(np.argmax(p)) != label
    ]
    return sorted(wrong, key=lambda e: (-e.confidence, e.source_path))[:WORST_ERRORS]


def combine(combiner, examples, partitions: int) -> list[WorstError]:
    """Partial accumulators over `partitions` interleaved shares, merged as Beam does."""
    accumulators = []
    for share in range(partitions):
        accumulator = combiner.create_accumulator()
        for path, label, p in examples[share::partitions]:
            accumulator = combiner.add_input(accumulator, example(path, label, p))
            assert len(accumulator) <= WORST_ERRORS  # bounded memory
        accumulators.append(accumulator)
    merged = combiner.merge_accumulators(accumulators)
    return worst_errors.from_json(combiner.extract_output(merged)[KEY])


def three_class_examples(n: int, seed: int) -> list[tuple[str, int, list[float]]]:
    rng = random.Random(seed)
    made = []
    for i in range(n):
        # Confidences on a coarse grid, so many mistakes tie.
        top = rng.choice([0.5, 0.6, 0.7, 0.8, 0.9])
        predicted = rng.randrange(3)
        p = [(1 - top) / 2] * 3
        p[predicted] = top
        made.append((f"test/c{i % 3}/{i:03d}.png", rng.randrange(3), p))
    return made


@pytest.mark.parametrize("partitions", [1, 2, 5])
def test_merged_partial_results_are_the_global_top_k_with_ties_by_path(partitions):
    examples = three_class_examples(80, seed=partitions)
    expected = expected_top(examples)
    assert len(expected) == WORST_ERRORS
    assert len({e.confidence for e in expected}) < WORST_ERRORS  # ties are exercised
    combiner = worst_errors.WorstErrorsCombiner(KEY)
    assert combine(combiner, examples, partitions) == expected
    # Any order of the examples and of the merge gives the same list.
    shuffled = list(examples)
    random.Random(7).shuffle(shuffled)
    assert combine(combiner, shuffled, partitions) == expected


def test_fewer_than_k_mistakes_are_all_listed_and_none_gives_an_empty_list():
    combiner = worst_errors.WorstErrorsCombiner(KEY)
    few = [
        ("a.png", 0, [0.3, 0.7]),  # wrong, 0.7
        ("b.png", 1, [0.9, 0.1]),  # wrong, 0.9
        ("c.png", 1, [0.2, 0.8]),  # right
    ]
    assert combine(combiner, few, 2) == [
        WorstError("b.png", 1, 0, pytest.approx(0.9)),
        WorstError("a.png", 0, 1, pytest.approx(0.7)),
    ]
    right = [("c.png", 1, [0.2, 0.8]), ("d.png", 0, [0.6, 0.4])]
    assert combine(combiner, right, 2) == []
    assert combiner.extract_output(combiner.create_accumulator())[KEY] == b"[]"
    assert combiner.extract_output(combiner.merge_accumulators([[], []]))[KEY] == b"[]"


def test_the_combiner_runs_under_beam():
    examples = three_class_examples(40, seed=11)
    combiner = worst_errors.WorstErrorsCombiner(KEY)
    with beam.Pipeline() as pipeline:
        result = (
            pipeline
            | beam.Create([example(*e) for e in examples])
            | beam.CombineGlobally(combiner).without_defaults()
            | beam.Map(lambda out: worst_errors.from_json(out[KEY]))
        )
        assert_that(result, equal_to([expected_top(examples)]))


def test_an_example_without_its_source_path_gets_a_clear_error():
    combiner = worst_errors.WorstErrorsCombiner(KEY)
    inputs = example("a.png", 0, [0.1, 0.9])
    inputs[constants.FEATURES_KEY] = {}
    with pytest.raises(ValueError, match="no 'source_path' feature"):
        combiner.add_input([], inputs)


@pytest.mark.slow
def test_the_evaluator_lists_the_candidates_mistakes_next_to_a_baseline(tmp_path):
    """The pipeline's eval config on 14 + 14 eval examples with a baseline: the metric
    is written for the candidate only, with no diff; intervals, the paired difference
    and the gate are as without it."""
    ingested = harness.ingest_images(
        str(tmp_path),
        {
            "train": {c: harness.coloured_images(5, rgb) for c, rgb in COLORS.items()},
            "test": {c: harness.coloured_images(14, rgb, seed=100) for c, rgb in COLORS.items()},
        },
    )
    paths = {c: [f"test/{c}/{i:03d}.png" for i in range(14)] for c in COLORS}
    # 14 mistakes, all at confidence 0.8: the list is the first WORST_ERRORS by path.
    candidate_wrong = paths["hot_dog"][:7] + paths["not_hot_dog"][:7]
    examples = harness.import_examples(ingested.output_dir)
    model = harness.import_model(save_model(str(tmp_path / "c"), candidate_wrong), "candidate")
    baseline = harness.import_model(
        save_model(str(tmp_path / "b"), paths["not_hot_dog"][10:]), "baseline"
    )
    evaluator = tfx.components.Evaluator(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        baseline_model=baseline.outputs[harness.IMPORT_KEY],
        eval_config=eval_config.build_eval_config(
            list(ingested.class_names), eval_config.GateSettings(0.6, 0.3, 0.01)
        ),
    )
    uri = harness.LocalRun(str(tmp_path / "run")).run(evaluator)["evaluation"][0].uri

    evaluation = Evaluation.load(uri)
    listed = evaluation.worst_errors
    classes = list(ingested.class_names)
    true = {path: classes.index(path.split("/")[1]) for path in candidate_wrong}
    assert listed == [
        WorstError(path, true[path], 1 - true[path], pytest.approx(0.8, abs=1e-6))
        for path in sorted(candidate_wrong)[:WORST_ERRORS]
    ]
    written = [
        (s.slice_key.single_slice_keys, e.key)
        for s in tfma.load_metrics(uri)
        for e in s.metric_keys_and_values
        if e.key.name == worst_errors.WORST_ERRORS_METRIC
    ]
    assert {key.model_name for _, key in written} == {"candidate"}
    assert not any(key.is_diff for _, key in written)
    decision = gate.read_gate(evaluation)
    assert decision.candidate.value == pytest.approx(14 / 28)
    assert decision.baseline.value == pytest.approx(24 / 28)
    assert decision.difference.value == pytest.approx(-10 / 28)
    assert decision.candidate.lower < decision.candidate.upper  # jackknife intervals
    assert decision.difference.lower < decision.difference.upper
    assert decision.blessed is False
