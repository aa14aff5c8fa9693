"""The Evaluator's module file: TFMA's own extractors, with a predictions step that reads
each model's stored eval predictions (stored_predictions.py) and checks a sample of them.

TFX's Evaluator calls `custom_extractors` (a module_file hook, see
tfx/components/evaluator/executor.py) and hands the list to TFMA. Everything but the
predictions step is `tfma.default_extractors`: features, labels, weights, slicing. The
predictions step is TFMA's ModelSignaturesDoFn, which loads the candidate and the baseline
and calls their `serving_tf_example` signature; ours answers from the stored predictions
where every example of a batch has one, runs the model on the checked sample of them and
on every batch that has an example without one, and stops the run on a disagreement.

The baseline's stored predictions are not checked again: the baseline is the last blessed
model, and its own Evaluator checked this same sample (chosen by example content) when it
was the candidate. So a model is loaded only when it must run: the candidate for its
check, the baseline only for examples it has no stored prediction for. A head-only re-run
then loads one SavedModel instead of two (about 1.3 s each for ResNet50), and runs the
backbone on one checked sample instead of two.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
import tensorflow_model_analysis as tfma
from tensorflow_model_analysis import constants
from tensorflow_model_analysis.extractors import extractor
from tensorflow_model_analysis.utils import model_util, util

from models import stored_predictions
from models.features import CLASS_INDEX_KEY, CLASS_NAME_KEY, PROBABILITIES_KEY
from models.metrics import calibration_histogram

PREDICTIONS_STAGE_NAME = "ExtractPredictions"  # TFMA's name for this step

# The executor loads this module before TFMA builds the metrics: calibration_histogram.py.
calibration_histogram.install()


class StoredPredictionsMismatch(Exception):
    """A stored prediction disagrees with the model. Not a ValueError or RuntimeError on
    purpose: TFMA retries a batch that raises those one example at a time."""


def _model_uri(model_path: str) -> str:
    """TFX hands TFMA `<Model artifact>/Format-Serving`; the stored file is beside it."""
    return os.path.dirname(model_path.rstrip("/"))


def _tfma_model_name(spec_name: str, model_count: int) -> str:
    """The name TFMA's predictions step keys a model by: '' when it evaluates one."""
    return "" if model_count == 1 else spec_name


def signature_output_keys(model_path: str, signature_name: str) -> list[str] | None:
    """The structure TFMA gives a signature's outputs, from the SavedModel's signature def
    (no model load): the sorted output keys, or None for a one-output signature, which
    TFMA unwraps (prefer_dict_outputs=False)."""
    saved_model = tf.__internal__.saved_model.parse_saved_model(model_path)
    outputs = saved_model.meta_graphs[0].signature_def[signature_name].outputs
    return None if len(outputs) == 1 else sorted(outputs)


@beam.typehints.with_input_types(tfma.types.Extracts)
@beam.typehints.with_output_types(tfma.types.Extracts)
class _StoredPredictionsDoFn(model_util.ModelSignaturesDoFn):
    def __init__(self, model_specs, eval_shared_models: dict):
        signature_names = {
            _tfma_model_name(spec.name, len(model_specs)): [spec.signature_name]
            for spec in model_specs
        }
        super().__init__(
            model_specs,
            eval_shared_models,
            output_keypath=[constants.PREDICTIONS_KEY],
            signature_names=signature_names,
            prefer_dict_outputs=False,  # as TFMA's PredictionsExtractor
        )
        self._model_paths = {name: model.model_path for name, model in eval_shared_models.items()}
        self._model_uris = {name: _model_uri(path) for name, path in self._model_paths.items()}
        self._baselines = {
            _tfma_model_name(spec.name, len(model_specs))
            for spec in model_specs
            if spec.is_baseline
        }
        self._stored_count = beam.metrics.Metrics.counter(
            constants.METRICS_NAMESPACE, "stored_predictions_used"
        )
        self._model_count = beam.metrics.Metrics.counter(
            constants.METRICS_NAMESPACE, "model_predictions_run"
        )

    def setup(self) -> None:
        # Not TFMA's setup, which loads every model: _model() loads one when it must run.
        self._loaded_models = {}
        self._tables: dict[str, dict[bytes, np.ndarray]] = {}
        self._class_names: dict[str, np.ndarray] = {}
        self._checked: set[str] = set()
        # model -> its signature's output keys (None: a single unnamed output): as its
        # checked sample gave them, or from its signature def if it never runs here.
        self._output_keys: dict[str, list[str] | None] = {}
        for name, uri in self._model_uris.items():
            stored = stored_predictions.read(uri)
            if stored is None:
                logging.info("Evaluator: model %r has no stored eval predictions (%s)", name, uri)
                continue
            self._tables[name] = stored.table()
            self._class_names[name] = np.array([c.encode() for c in stored.class_names], object)
            logging.info(
                "Evaluator: %d stored eval predictions for model %r (%s)",
                len(stored.digests),
                name,
                uri,
            )

    def _model(self, name: str) -> Any:
        """The model, loaded on first use (TFMA's shared handle: once per process)."""
        if name not in self._loaded_models:
            self._loaded_models[name] = self._model_loaders[name].load(
                model_load_time_callback=self._set_model_load_seconds
            )
        return self._loaded_models[name]

    def _run_model(self, name: str, serialized: np.ndarray) -> Any:
        """TFMA's own call of one model's signature on these examples: a dict of outputs, or
        the one output's array (TFMA unwraps a one-output signature)."""
        model = self._model(name)
        loaded = self._loaded_models
        self._loaded_models = {name: model}  # TFMA's call runs every model it holds
        try:
            result = super()._batch_reducible_process({constants.INPUT_KEY: serialized})
        finally:
            self._loaded_models = loaded
        self._model_count.inc(len(serialized))
        return result[0][constants.PREDICTIONS_KEY]

    def _stored_outputs(self, name: str, rows: list[np.ndarray]) -> Any:
        """The signature's outputs rebuilt from the stored probabilities, in the structure
        the model itself gave on the checked sample: the probabilities alone (a
        one-output signature, which TFMA unwraps), or export.py's three outputs."""
        probabilities = np.stack(rows).astype(np.float32)
        keys = self._signature_outputs(name)
        if keys is None:
            return probabilities
        class_index = np.argmax(probabilities, axis=-1).astype(np.int64)
        rebuilt = {
            PROBABILITIES_KEY: probabilities,
            CLASS_INDEX_KEY: class_index,
            CLASS_NAME_KEY: self._class_names[name][class_index],
        }
        return {key: rebuilt[key] for key in keys}

    def _signature_outputs(self, name: str) -> list[str] | None:
        """The model's output keys as it gave them on its checked sample; for a model that
        did not run here, as its signature def declares them."""
        if name not in self._output_keys:
            self._output_keys[name] = signature_output_keys(
                self._model_paths[name], self._signature_names[name][0]
            )
        return self._output_keys[name]

    def _rebuildable(self, name: str) -> bool:
        keys = self._signature_outputs(name)
        return keys is None or set(keys) <= {PROBABILITIES_KEY, CLASS_INDEX_KEY, CLASS_NAME_KEY}

    def _check(self, name: str, serialized: np.ndarray, rows: list, digests: list) -> None:
        if name in self._baselines:
            return  # checked on this same sample when it was the candidate (see the top)
        picked = [i for i, digest in enumerate(digests) if stored_predictions.is_checked(digest)]
        if name not in self._checked:  # at least one example per model and worker
            picked = sorted({0, *picked})
            self._checked.add(name)
        if not picked:
            return
        outputs = self._run_model(name, serialized[picked])
        is_dict = isinstance(outputs, dict)
        self._output_keys[name] = sorted(outputs) if is_dict else None
        computed = outputs[PROBABILITIES_KEY] if is_dict else outputs
        stored = np.stack([rows[i] for i in picked])
        error = np.abs(np.asarray(computed, np.float64) - stored)
        worst = int(np.argmax(error.max(axis=-1)))
        if error.max() > stored_predictions.TOLERANCE:
            raise StoredPredictionsMismatch(
                f"The eval predictions stored in {self._model_uris[name]} for model "
                f"{name or 'candidate'!r} disagree with its SavedModel: on an eval example "
                f"(digest {digests[picked[worst]].hex()}) the stored probabilities are "
                f"{stored[worst].round(6).tolist()} and the model gives "
                f"{np.asarray(computed[worst]).round(6).tolist()} (largest difference "
                f"{error.max():.3g} > {stored_predictions.TOLERANCE}). The export does not "
                "compute what the Trainer computed; STORED_EVAL_PREDICTIONS=false makes the "
                "Evaluator score every example with the model."
            )

    def _batch_reducible_process(self, batched_extract: tfma.types.Extracts) -> list:
        serialized = np.asarray(batched_extract[constants.INPUT_KEY]).flatten()
        digests = [stored_predictions.example_digest(s) for s in serialized]
        outputs: dict[str, Any] = {}
        for name in self._signature_names:
            table = self._tables.get(name, {})
            rows = [table.get(digest) for digest in digests]
            if any(row is None for row in rows):
                outputs[name] = self._run_model(name, serialized)
                continue
            self._check(name, serialized, rows, digests)
            if not self._rebuildable(name):  # outputs this module cannot rebuild: score
                outputs[name] = self._run_model(name, serialized)
                continue
            outputs[name] = self._stored_outputs(name, rows)
            self._stored_count.inc(len(rows))
        if len(outputs) == 1:  # one model: TFMA stores its outputs without the name
            outputs = next(iter(outputs.values()))
        return [util.copy_and_set_by_keys(batched_extract, [constants.PREDICTIONS_KEY], outputs)]


def stored_predictions_extractor(
    eval_config: tfma.EvalConfig, eval_shared_model: tfma.types.MaybeMultipleEvalSharedModels
) -> extractor.Extractor:
    models = model_util.verify_and_update_eval_shared_models(eval_shared_model)
    specs = list(eval_config.model_specs)
    by_name = {_tfma_model_name(m.model_name, len(specs)): m for m in models}
    return extractor.Extractor(
        stage_name=PREDICTIONS_STAGE_NAME,
        ptransform=beam.ParDo(_StoredPredictionsDoFn(specs, by_name)),
    )


def custom_extractors(eval_shared_model, eval_config, tensor_adapter_config) -> list:
    """TFX's Evaluator hook: TFMA's default extractors with the stored-predictions step."""
    return tfma.default_extractors(
        eval_shared_model=eval_shared_model,
        eval_config=eval_config,
        tensor_adapter_config=tensor_adapter_config,
        custom_predict_extractor=stored_predictions_extractor(eval_config, eval_shared_model),
    )
