"""The blessing gate: the real Evaluator, alone under LocalDagRunner, on imported artifacts.

The eval records are the project's own ingest output. The models are real SavedModels
with the pipeline's `serving_tf_example` signature whose answers are fixed in advance
(right for every example except a chosen list of source paths), so each test knows the
exact accuracy, per-class recall and paired difference it sets up, and what the gate
must decide. TFMA computes everything (its jackknife intervals included) and
its validator decides; components/evaluation_report/gate.py explains the decision.
"""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from components.evaluation_report import gate
from components.evaluation_report.evaluation import Evaluation
from components.image_example_gen import ingest
from models import features, stored_predictions
from models.metrics import eval_config
from pipeline.image_pipeline import EVALUATOR_MODULE
from tests.components import harness

N_PER_CLASS = 20  # eval examples per class of the balanced set
COLORS = {"hot_dog": (220, 60, 40), "not_hot_dog": (40, 90, 220)}


class _FixedAnswerModel(tf.Module):
    """Predicts the example's own label, except for the listed source paths (the next
    class instead) or, with `always`, one class for everything; confidence 0.8."""

    def __init__(self, num_classes: int, wrong_paths: list[str], always: int | None = None):
        super().__init__()
        self.num_classes = num_classes
        self.wrong = tf.constant(list(wrong_paths) or [""], tf.string)
        self.always = always

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="examples")])
    def serve(self, examples):
        parsed = tf.io.parse_example(
            examples,
            {
                features.LABEL_KEY: tf.io.FixedLenFeature([], tf.int64),
                features.SOURCE_PATH_KEY: tf.io.FixedLenFeature([], tf.string),
            },
        )
        label = parsed[features.LABEL_KEY]
        wrong = tf.reduce_any(
            tf.equal(parsed[features.SOURCE_PATH_KEY][:, None], self.wrong[None, :]), axis=1
        )
        predicted = tf.where(wrong, (label + 1) % self.num_classes, label)
        if self.always is not None:
            predicted = tf.fill(tf.shape(label), tf.constant(self.always, tf.int64))
        rest = 0.2 / (self.num_classes - 1)
        probabilities = tf.one_hot(predicted, self.num_classes) * (0.8 - rest) + rest
        # The exported model's three outputs (export.py), so stored predictions are
        # rebuilt into the same structure TFMA gets from the model.
        return {
            features.PROBABILITIES_KEY: probabilities,
            features.CLASS_INDEX_KEY: predicted,
            features.CLASS_NAME_KEY: tf.gather(tf.constant(sorted(COLORS)), predicted),
        }


def save_model(path: str, wrong_paths: list[str], always: int | None = None) -> str:
    module = _FixedAnswerModel(len(COLORS), wrong_paths, always)
    tf.saved_model.save(module, path, signatures={features.TF_EXAMPLE_SIGNATURE: module.serve})
    return path


def eval_paths(ingested, class_name: str) -> list[str]:
    """Source paths of one class's eval examples, as the records hold them."""
    return sorted(
        f"test/{class_name}/{i:03d}.png" for i in range(ingested.counts["eval"][class_name])
    )


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """A balanced eval split (20 + 20) and an imbalanced one (30 + 10)."""
    made = {}
    for name, counts in {"balanced": (N_PER_CLASS, N_PER_CLASS), "imbalanced": (30, 10)}.items():
        root = str(tmp_path_factory.mktemp(name))
        images = {
            "train": {c: harness.coloured_images(10, rgb) for c, rgb in COLORS.items()},
            "test": {
                c: harness.coloured_images(n, rgb, seed=100)
                for (c, rgb), n in zip(COLORS.items(), counts)
            },
        }
        made[name] = (root, harness.ingest_images(root, images))
    return made


def eval_records(ingested) -> list[bytes]:
    """The eval split's serialized tf.Examples, in file order."""
    files = sorted(tf.io.gfile.glob(os.path.join(ingested.output_dir, ingest.EVAL, "*")))
    return [r.numpy() for r in tf.data.TFRecordDataset(files, compression_type="GZIP")]


def store_answers(model_path: str, node_id: str, ingested, flipped: set[bytes] = frozenset()):
    """Store the model's own answers on every eval example as the Trainer would, in the
    Model artifact harness.import_model makes; the `flipped` records' answers are moved
    to the next class (the model's own stay right)."""
    records = eval_records(ingested)
    served = tf.saved_model.load(model_path).signatures[features.TF_EXAMPLE_SIGNATURE]
    probabilities = served(**{features.TF_EXAMPLE_INPUT_KEY: tf.constant(records)})[
        features.PROBABILITIES_KEY
    ].numpy()
    for i, record in enumerate(records):
        if record in flipped:
            probabilities[i] = np.roll(probabilities[i], 1)
    artifact_uri = os.path.join(os.path.dirname(os.path.abspath(model_path)), f"{node_id}_artifact")
    stored_predictions.write(
        artifact_uri, stored_predictions.build(records, probabilities, ingested.class_names)
    )


def evaluate(
    tmp_path,
    dataset,
    candidate_wrong: list[str],
    baseline_wrong: list[str] | None = None,
    always: int | None = None,
    accuracy_threshold: float = 0.6,
    min_class_recall: float = 0.3,
    accuracy_max_drop: float = 0.01,
    stored: tuple[str, ...] = (),
    flipped: set[bytes] = frozenset(),
    baseline_flipped: set[bytes] = frozenset(),
    unloadable_baseline: bool = False,
) -> tuple[gate.GateDecision, bool]:
    """Run the Evaluator as the pipeline builds it; return (explained decision, blessed).

    `stored`: the models ("candidate", "baseline") whose answers are stored in their
    artifact (the Evaluator then runs with the pipeline's module file), `flipped`
    (`baseline_flipped`) the candidate's (baseline's) stored answers that are wrong.
    `unloadable_baseline` deletes the baseline SavedModel's variables once its answers are
    stored: loading it then fails."""
    root, ingested = dataset
    examples = harness.import_examples(ingested.output_dir)
    candidate_path = save_model(str(tmp_path / "candidate"), candidate_wrong, always)
    if "candidate" in stored:
        store_answers(candidate_path, "candidate", ingested, flipped)
    model = harness.import_model(candidate_path, "candidate")
    baseline = None
    if baseline_wrong is not None:
        baseline_path = save_model(str(tmp_path / "baseline"), baseline_wrong)
        if "baseline" in stored:
            store_answers(baseline_path, "baseline", ingested, baseline_flipped)
        if unloadable_baseline:
            shutil.rmtree(os.path.join(baseline_path, "variables"))
        baseline = harness.import_model(baseline_path, "baseline")
    evaluator = tfx.components.Evaluator(
        examples=examples.outputs[harness.IMPORT_KEY],
        model=model.outputs[harness.IMPORT_KEY],
        baseline_model=baseline.outputs[harness.IMPORT_KEY] if baseline else None,
        eval_config=eval_config.build_eval_config(
            list(ingested.class_names),
            eval_config.GateSettings(
                accuracy_threshold=accuracy_threshold,
                min_class_recall=min_class_recall,
                accuracy_max_drop=accuracy_max_drop,
            ),
        ),
        module_file=EVALUATOR_MODULE if stored else None,
    )
    outputs = harness.LocalRun(str(tmp_path / "run")).run(evaluator)
    blessing = outputs["blessing"][0]
    blessed = os.path.exists(os.path.join(blessing.uri, "BLESSED"))
    return gate.read_gate(Evaluation.load(outputs["evaluation"][0].uri)), blessed


def outcome(decision: gate.GateDecision) -> dict[str, bool]:
    return {r.name: r.passed for r in decision.rules if r.applied}


def test_blesses_a_good_model_and_class_recall_gates_only_through_its_floor(tmp_path, datasets):
    """Imbalanced eval split (30 + 10), no baseline yet: accuracy 0.85 is above the
    threshold and the majority-class rate 0.75; the minority class's recall 0.4 is below
    ACCURACY_THRESHOLD (a rule for overall accuracy) but above MIN_CLASS_RECALL."""
    dataset = datasets["imbalanced"]
    wrong = eval_paths(dataset[1], "not_hot_dog")[:6]
    decision, blessed = evaluate(tmp_path, dataset, wrong)
    assert blessed and decision.blessed
    assert decision.candidate.value == pytest.approx(34 / 40)
    # TFMA's jackknife interval surrounds the estimate.
    assert decision.candidate.lower < 0.85 < decision.candidate.upper
    assert decision.class_recall["not_hot_dog"].value == pytest.approx(0.4)
    assert decision.class_recall["hot_dog"].value == pytest.approx(1.0)
    assert decision.majority_rate == pytest.approx(0.75)
    assert decision.baseline is None and decision.difference is None
    assert curve_models(tmp_path) == {""}  # one model: TFMA names it ""
    assert outcome(decision) == {
        eval_config.RULE_ACCURACY: True,
        eval_config.RULE_MAJORITY: True,
        eval_config.RULE_CLASS_RECALL: True,
    }
    assert decision.decided_by.startswith("blessed")


def test_a_class_below_the_recall_floor_is_refused_by_that_rule_alone(tmp_path, datasets):
    dataset = datasets["imbalanced"]
    wrong = eval_paths(dataset[1], "not_hot_dog")[:6]  # the same model as above
    decision, blessed = evaluate(tmp_path, dataset, wrong, min_class_recall=0.5)
    assert not blessed and not decision.blessed
    assert outcome(decision) == {
        eval_config.RULE_ACCURACY: True,
        eval_config.RULE_MAJORITY: True,
        eval_config.RULE_CLASS_RECALL: False,
    }
    assert decision.decided_by == "refused by class_recall"


def test_always_answering_the_majority_class_is_refused(tmp_path, datasets):
    """Accuracy 0.75 by always answering the larger class: above ACCURACY_THRESHOLD 0.6,
    refused because it is not above the majority-class rate (recall floor off here, so
    the majority rule alone decides)."""
    decision, blessed = evaluate(tmp_path, datasets["imbalanced"], [], always=0, min_class_recall=0)
    assert not blessed
    assert decision.candidate.value == pytest.approx(0.75)
    assert outcome(decision) == {
        eval_config.RULE_ACCURACY: True,
        eval_config.RULE_MAJORITY: False,
        eval_config.RULE_CLASS_RECALL: True,
    }


def test_worse_than_a_better_baseline_beyond_noise_is_refused(tmp_path, datasets):
    dataset = datasets["balanced"]
    wrong = eval_paths(dataset[1], "hot_dog")[:7] + eval_paths(dataset[1], "not_hot_dog")[:7]
    decision, blessed = evaluate(tmp_path, dataset, wrong, baseline_wrong=[])
    assert not blessed
    assert decision.baseline.value == pytest.approx(1.0)
    assert decision.difference.value == pytest.approx(26 / 40 - 1.0)
    assert decision.difference.upper < -0.01  # the whole interval is below -max drop
    assert outcome(decision) == {
        eval_config.RULE_ACCURACY: True,
        eval_config.RULE_MAJORITY: True,
        eval_config.RULE_CLASS_RECALL: True,
        eval_config.RULE_BASELINE: False,
    }
    assert decision.decided_by == "refused by vs_baseline"


def test_a_difference_within_noise_does_not_flip_the_decision(tmp_path, datasets):
    """2.5 points worse than the baseline on 40 examples: a plain change threshold of 1
    point would refuse it; the paired interval reaches above -ACCURACY_MAX_DROP: blessed."""
    dataset = datasets["balanced"]
    paths = eval_paths(dataset[1], "hot_dog") + eval_paths(dataset[1], "not_hot_dog")
    decision, blessed = evaluate(
        tmp_path, dataset, candidate_wrong=paths[0:5], baseline_wrong=paths[20:24]
    )
    assert decision.difference.value == pytest.approx(-1 / 40)
    assert decision.difference.value < -0.01 < decision.difference.upper
    assert blessed and outcome(decision)[eval_config.RULE_BASELINE] is True
    # The report's curves are the candidate's; the baseline's are not computed.
    assert curve_models(tmp_path) == {"candidate"}


def curve_models(tmp_path) -> set[str]:
    """The models that have ROC / calibration curves in the Evaluator's output."""
    pattern = tmp_path / "run" / "**" / "Evaluator" / "evaluation" / "*"
    (evaluation,) = glob.glob(str(pattern), recursive=True)
    curves = ("confusion_matrix_at_thresholds", "calibration_histogram_buckets")
    return {
        entry.key.model_name
        for plots in tfma.load_plots(evaluation)
        for entry in plots.plot_keys_and_values
        if any(entry.value.HasField(curve) for curve in curves)
    }


def _point_values(decision: gate.GateDecision) -> dict:
    return {
        "candidate": decision.candidate.value,
        "baseline": decision.baseline.value,
        "difference": decision.difference.value,
        "recall": {name: v.value for name, v in decision.class_recall.items()},
        "majority": decision.majority_rate,
        "rules": outcome(decision),
        "blessed": decision.blessed,
    }


def test_stored_predictions_give_the_decision_the_models_give(tmp_path, datasets):
    """The Trainer's stored answers for both models, read by the pipeline's Evaluator
    module: the same metrics and decision as scoring every example with the models."""
    dataset = datasets["balanced"]
    paths = eval_paths(dataset[1], "hot_dog") + eval_paths(dataset[1], "not_hot_dog")
    runs = {
        name: evaluate(
            tmp_path / name,
            dataset,
            candidate_wrong=paths[0:5],
            baseline_wrong=paths[20:24],
            stored=stored,
        )
        for name, stored in (("models", ()), ("stored", ("candidate", "baseline")))
    }
    assert _point_values(runs["stored"][0]) == _point_values(runs["models"][0])
    assert runs["stored"][0].candidate.value == pytest.approx(35 / 40)
    assert runs["stored"][1] == runs["models"][1] is True


def test_the_evaluator_scores_the_stored_predictions_and_checks_a_sample(tmp_path, datasets):
    """The candidate's model is right on every example, but four unchecked stored answers
    are wrong: accuracy is 36/40, so the stored answers are what was scored. The baseline
    has none stored: the model scores it (all right)."""
    _, ingested = dataset = datasets["balanced"]
    records = eval_records(ingested)
    digest = stored_predictions.example_digest
    unchecked = [r for r in records[3:] if not stored_predictions.is_checked(digest(r))]
    decision, _ = evaluate(
        tmp_path,
        dataset,
        candidate_wrong=[],
        baseline_wrong=[],
        stored=("candidate",),
        flipped=set(unchecked[-4:]),
    )
    assert decision.candidate.value == pytest.approx(36 / 40)
    assert decision.baseline.value == pytest.approx(1.0)


def test_a_stored_prediction_the_model_disagrees_with_stops_the_evaluator(tmp_path, datasets):
    """Every stored answer wrong: the checked sample (the first example at least) shows
    the model answers otherwise, and the Evaluator fails with what to do."""
    _, ingested = dataset = datasets["balanced"]
    with pytest.raises(Exception, match="disagree with its SavedModel") as failure:
        evaluate(
            tmp_path,
            dataset,
            candidate_wrong=[],
            stored=("candidate",),
            flipped=set(eval_records(ingested)),
        )
    assert "STORED_EVAL_PREDICTIONS=false" in str(failure.value)


def test_the_baseline_is_scored_from_its_stored_predictions_without_loading_it(tmp_path, datasets):
    """The baseline is the last blessed model: its own Evaluator checked its stored answers,
    on this same sample, when it was the candidate. They are not checked again, and its
    SavedModel (variables deleted here, so it cannot load) is never loaded. Its wrong stored
    answers, two of them on checked examples, are what is scored: 36/40."""
    _, ingested = dataset = datasets["balanced"]
    records = eval_records(ingested)
    digest = stored_predictions.example_digest
    checked = [r for r in records if stored_predictions.is_checked(digest(r))][:2]
    unchecked = [r for r in records if r not in checked][: 4 - len(checked)]
    decision, _ = evaluate(
        tmp_path,
        dataset,
        candidate_wrong=[],
        baseline_wrong=[],
        stored=("candidate", "baseline"),
        baseline_flipped=set(checked + unchecked),
        unloadable_baseline=True,
    )
    assert checked  # the sample the candidate's check reads is not empty
    assert decision.baseline.value == pytest.approx(36 / 40)
    assert decision.candidate.value == pytest.approx(1.0)
