"""ImageInfraValidator, run by TFX's LocalDagRunner in front of the ImagePusher, as the pipeline
wires them: the candidate is loaded in a real model server process (the project's server
here; TF Serving's binary where it is on PATH) and sent Classify requests built from the eval
split by TFX's request builder; only what it blesses is pushed, and the run summary says why
not.

Four candidates, one small run each (component + Pusher, one server start):
- a real export of the project's model (random weights, 32 px): blessed and pushed;
- a model whose `classify` signature raises on real input (it requires a feature the
  examples lack): loads, fails its queries, not pushed;
- the real export with a loading deadline the server cannot meet: not pushed;
- a version whose saved_model.pb is corrupt: the server reports it END, not pushed.
"""

from __future__ import annotations

import os
import shutil

import pytest
import tensorflow as tf
from tfx.proto import infra_validator_pb2, pusher_pb2
from tfx.types import standard_artifacts
from tfx.utils import proto_utils

from components.evaluation_report import build
from components.image_example_gen import ingest
from components.infra_validator import component as infra_validator
from components.infra_validator import executor as infra_executor
from components.pusher.component import ImagePusher
from pipeline import summary
from pipeline.metadata import component_executions, latest_run, open_store
from tests.components import harness
from tools import samples

pytestmark = pytest.mark.slow


def _broken_classify_export(export_dir: str) -> str:
    """A SavedModel whose `classify` signature (TF Serving's classify method) parses a
    feature no example has: it loads and answers metadata, and fails every real request."""

    class Broken(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def classify(self, inputs):
            parsed = tf.io.parse_example(
                inputs, {"feature_that_is_missing": tf.io.FixedLenFeature([], tf.float32)}
            )
            value = parsed["feature_that_is_missing"]
            return {"scores": tf.stack([value, 1 - value], axis=1)}

    module = Broken()
    tf.saved_model.save(module, export_dir, signatures={"classify": module.classify})
    path = os.path.join(export_dir, "saved_model.pb")
    saved_model = tf.__internal__.saved_model.parse_saved_model(export_dir)
    for meta_graph in saved_model.meta_graphs:
        meta_graph.signature_def["classify"].method_name = tf.saved_model.CLASSIFY_METHOD_NAME
    with open(path, "wb") as f:
        f.write(saved_model.SerializeToString())
    return export_dir


@pytest.fixture(scope="module")
def good_export(tmp_path_factory) -> str:
    return samples.export_untrained_model(str(tmp_path_factory.mktemp("good") / "export"))


def _run(root, export_dir: str, dataset, max_loading_seconds: int = 120) -> dict:
    """InfraValidator + Pusher (Evaluator's blessing: blessed) over export_dir; returns the
    summary's view of the run, the blessing, and where the Pusher pushed."""
    root = str(root)
    examples = harness.import_examples(dataset.output_dir)
    model = harness.import_model(export_dir)
    model_blessing = harness.import_blessing(os.path.join(root, "blessing"), True, model_id=1)
    infra = infra_validator.build(
        model=model.outputs[harness.IMPORT_KEY],
        examples=examples.outputs[harness.IMPORT_KEY],
        split=ingest.EVAL,
        max_loading_seconds=max_loading_seconds,
        model_server=infra_executor.PROJECT,
    ).with_id(summary.INFRA_VALIDATOR_NODE)
    serving_dir = os.path.join(root, "serving", "image_classifier")
    pusher = ImagePusher(
        model=model.outputs[harness.IMPORT_KEY],
        model_blessing=model_blessing.outputs[harness.IMPORT_KEY],
        infra_blessing=infra.outputs["blessing"],
        push_destination=pusher_pb2.PushDestination(
            filesystem=pusher_pb2.PushDestination.Filesystem(base_directory=serving_dir)
        ),
    ).with_id("Pusher")
    run = harness.LocalRun(root)
    run.run(pusher)
    blessing = run.outputs(summary.INFRA_VALIDATOR_NODE)["blessing"][0]
    store = open_store(run.metadata_path)
    components = component_executions(store, latest_run(store, harness.PIPELINE_NAME))
    result = {**summary.infra_validation_summary(components), **summary.push_summary(components)}
    result["components"] = components
    result["blessing"] = blessing
    result["serving_dir"] = serving_dir
    result["state"] = run.execution_state(summary.INFRA_VALIDATOR_NODE)
    if not result["pushed"]:
        result["reason"] = summary.not_pushed_reason(result)
    return result


def _marker(blessing) -> set[str]:
    return set(os.listdir(blessing.uri))


def test_a_good_model_is_infra_blessed_and_pushed(tmp_path, dataset, good_export):
    result = _run(tmp_path, good_export, dataset)
    assert result["state"] == "COMPLETE"
    assert result["infra_validation"] == {
        "blessed": True,
        "model_server": infra_executor.PROJECT,
        "failure": None,
    }
    assert _marker(result["blessing"]) == {"INFRA_BLESSED"}
    assert result["pushed"], result
    assert os.listdir(result["serving_dir"]) == [os.path.basename(result["pushed_path"])]
    # The model's own warm-up records are pushed, not replaced by validation requests.
    warmup_file = os.path.join("assets.extra", "tf_serving_warmup_requests")
    pushed_warmup = os.path.join(result["pushed_path"], warmup_file)
    original = os.path.join(good_export, warmup_file)
    with open(pushed_warmup, "rb") as a, open(original, "rb") as b:
        assert a.read() == b.read()
    assert not result["blessing"].get_int_custom_property("has_model")
    # Before the Pusher, in the run's order.
    order = list(result["components"])
    assert order.index(summary.INFRA_VALIDATOR_NODE) < order.index("Pusher")
    seconds = {node: c["seconds"] for node, c in result["components"].items()}
    print(f"InfraValidator cost: {seconds}")


def test_a_model_that_fails_its_queries_is_not_pushed(tmp_path, dataset):
    export = _broken_classify_export(str(tmp_path / "broken_export"))
    result = _run(tmp_path / "run", export, dataset)
    assert result["state"] == "COMPLETE"  # the component ran; its verdict is the blessing
    assert _marker(result["blessing"]) == {"INFRA_NOT_BLESSED"}
    assert not result["pushed"]
    assert not os.path.isdir(result["serving_dir"]) or not os.listdir(result["serving_dir"])
    failure = result["infra_validation"]["failure"]
    assert failure.startswith("the model loaded but failed its queries: INVALID_ARGUMENT"), failure
    assert "feature_that_is_missing" in failure
    assert (
        "failed infra validation" in result["reason"]
        and "feature_that_is_missing" in (result["reason"])
    )
    # The evaluation report's section, from the same blessing through the same reader.
    section = build.infra_section(result["blessing"].mlmd_artifact)
    assert section["statement"] == f"FAILED in project: {failure}; the model is not pushed"


def test_a_model_that_does_not_load_in_time_is_not_pushed(tmp_path, dataset, good_export):
    result = _run(tmp_path, good_export, dataset, max_loading_seconds=1)
    assert _marker(result["blessing"]) == {"INFRA_NOT_BLESSED"}
    assert not result["pushed"]
    failure = result["infra_validation"]["failure"]
    assert failure.startswith("the model was not loaded within max_loading_time_seconds=1"), failure


def test_a_model_that_fails_to_load_is_not_pushed(tmp_path, dataset, good_export):
    """Variables missing: the graph parses (requests are built) but the server's load fails
    and GetModelStatus reports the version END with its error, which the blessing keeps."""
    broken = str(tmp_path / "no_variables_export")
    shutil.copytree(good_export, broken, ignore=shutil.ignore_patterns("variables"))
    result = _run(tmp_path / "run", broken, dataset)
    assert result["state"] == "COMPLETE"
    assert not result["pushed"]
    failure = result["infra_validation"]["failure"]
    assert failure.startswith("the model server failed to load the model: version "), failure


def test_an_unreadable_saved_model_is_not_pushed(tmp_path, dataset, good_export):
    """saved_model.pb corrupt: TFX's request builder cannot read the signatures; the
    executor refuses the model (INFRA_NOT_BLESSED) rather than failing the run."""
    corrupt = str(tmp_path / "corrupt_export")
    shutil.copytree(good_export, corrupt)
    with open(os.path.join(corrupt, "saved_model.pb"), "wb") as f:
        f.write(b"\x08\x01this is not a SavedModel")
    result = _run(tmp_path / "run", corrupt, dataset)
    assert result["state"] == "COMPLETE"
    assert not result["pushed"]
    assert _marker(result["blessing"]) == {"INFRA_NOT_BLESSED"}
    failure = result["infra_validation"]["failure"]
    assert failure.startswith("the model cannot be read as a SavedModel: "), failure


def test_make_warmup_is_refused(tmp_path, good_export):
    """TFX's make_warmup would replace the model's own warm-up records: the executor refuses it
    before starting anything (the pipeline's build() leaves it off)."""
    model = standard_artifacts.Model()
    model.uri = str(tmp_path / "model")
    shutil.copytree(good_export, os.path.join(model.uri, "Format-Serving"))
    blessing = standard_artifacts.InfraBlessing()
    blessing.uri = str(tmp_path / "blessing")
    request_spec = infra_validator_pb2.RequestSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(), make_warmup=True
    )
    serving_spec = infra_validator_pb2.ServingSpec(
        tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=["local"])
    )
    with pytest.raises(ValueError, match="make_warmup would replace the model's own warm-up"):
        infra_executor.Executor().Do(
            {"model": [model]},
            {"blessing": [blessing]},
            {
                "serving_spec": proto_utils.proto_to_json(serving_spec),
                "request_spec": proto_utils.proto_to_json(request_spec),
                infra_executor.MODEL_SERVER_KEY: infra_executor.PROJECT,
            },
        )
    assert not os.path.exists(os.path.join(blessing.uri, "INFRA_BLESSED"))
