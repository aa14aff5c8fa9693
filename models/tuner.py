"""Tuner module: tuner_fn searches the head's hyperparameters on cached backbone features.

Why it is cheap: the backbone is frozen during the head's training, so a trial only
trains the small dense head on pooled features. The features come from the same store
and key as the Trainer's (feature_cache.py): the Tuner computes them once (or reuses an
earlier run's), every trial reads them from memory, and the Trainer that follows finds
them cached. TUNE=true wires TFX's Tuner component with this module; the Trainer takes
the best values through TFX's `hyperparameters` channel (TrainingOptions.with_hyperparameters).

The search space (learning rate, dropout, epochs, label smoothing) and the trial budget
are knobs (pipeline/configs.py, TUNE_*); trials are scored on the split the Trainer
evaluates on (FnArgs.eval_files) by validation accuracy, the metric the Evaluator gates on.
"""

from __future__ import annotations

import keras_tuner
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from models import ingest_report, model, tf_data, trainer
from models.feature_cache import FeatureSource
from models.options import TrainingOptions, TuningOptions

OBJECTIVE = "val_accuracy"
# Batches per graph call in a trial: the head is so small that Python's per-step overhead
# would otherwise dominate.
STEPS_PER_EXECUTION = 64


def _values(text: str, kind: type) -> list:
    values = [kind(v) for v in text.replace(" ", "").split(",") if v]
    if not values:
        raise ValueError(f"empty search-space list {text!r}")
    return values


def search_space(tuning: TuningOptions) -> keras_tuner.HyperParameters:
    """One Choice per tuned knob, named like TrainingOptions' fields."""
    hp = keras_tuner.HyperParameters()
    hp.Choice("learning_rate", _values(tuning.tune_learning_rates, float))
    hp.Choice("dropout", _values(tuning.tune_dropouts, float))
    hp.Choice("epochs", _values(tuning.tune_epochs, int))
    hp.Choice("label_smoothing", _values(tuning.tune_label_smoothings, float))
    return hp


class HeadTuner(keras_tuner.Tuner):
    """Random search over the Trainer's head (model.build_head, compiled like
    train_network does), the epoch count a hyperparameter too.

    KerasTuner's own build-and-fit path only accepts Keras 3 models, and the project's
    models are tf_keras (Keras 2, see the stack notes): overriding run_trial, KerasTuner's
    documented hook for custom training, keeps its oracle, search loop and results, which
    is all TFX's Tuner executor reads.

    Every trial trains the same head object: building, compiling and tracing a new Keras
    model costs seconds, training a dense head on cached features a fraction of one, so a
    new model per trial made a 20-trial search cost about as much as a backbone pass. The
    learning rate, the dropout rate and the label smoothing are variables the traced
    training step reads; before each trial they take the trial's values, and the head's
    weights and the optimizer's state go back to the same seeded start a fresh head has.
    A trial therefore trains what the Trainer would train with those values (only the
    dropout masks and shuffle order are drawn from other points of the same seeded streams).
    """

    def __init__(self, feature_dim: int, num_classes: int, seed: int, **kwargs):
        super().__init__(**kwargs)
        self._dropout = tf.Variable(0.0, trainable=False, name="trial_dropout")
        self._label_smoothing = tf.Variable(0.0, trainable=False, name="trial_smoothing")
        self._head = model.build_head(feature_dim, num_classes, self._dropout, seed)
        # The learning rate is each trial's (_trial_head); 0.0 until the first one.
        model.compile_model(
            self._head,
            0.0,
            num_classes,
            self._label_smoothing,
            steps_per_execution=STEPS_PER_EXECUTION,
        )
        self._initial_weights = self._head.get_layer(model.HEAD_DENSE).get_weights()

    def _trial_head(self, hp: keras_tuner.HyperParameters) -> tf_keras.Model:
        """The shared head, reset to its seeded start and set to the trial's values."""
        head = self._head
        head.get_layer(model.HEAD_DENSE).set_weights(self._initial_weights)
        for variable in head.optimizer.variables:  # Adam's moments and iteration count
            variable.assign(tf.zeros_like(variable))
        head.optimizer.learning_rate = hp.get("learning_rate")
        self._dropout.assign(hp.get("dropout"))
        self._label_smoothing.assign(hp.get("label_smoothing"))
        return head

    def run_trial(self, trial, x, validation_data, class_weight=None, verbose=0) -> dict:
        hp = trial.hyperparameters
        # The trial's epochs as one Keras epoch over the data repeated: the same optimizer
        # steps over the same passes (each reshuffled), with Keras' per-epoch overhead
        # (iterators, callbacks, a validation pass) paid once. The Trainer keeps the last
        # epoch's head: that is the one scored.
        history = self._trial_head(hp).fit(
            x.repeat(hp.get("epochs")),
            validation_data=validation_data,
            epochs=1,
            class_weight=class_weight,
            verbose=verbose,
        )
        return {
            OBJECTIVE: float(history.history[OBJECTIVE][-1]),
            "val_loss": float(history.history["val_loss"][-1]),
        }


def build_tuner(
    tuning: TuningOptions, feature_dim: int, num_classes: int, seed: int, directory: str
) -> HeadTuner:
    return HeadTuner(
        feature_dim,
        num_classes,
        seed,
        oracle=keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective(OBJECTIVE, direction="max"),
            max_trials=tuning.tune_trials,
            hyperparameters=search_space(tuning),
            seed=seed,
        ),
        directory=directory,
        project_name="head",
        overwrite=True,
    )


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    # Class names and counts from ImageExampleGen's report, as run_fn reads them.
    report = ingest_report.read_report(ingest_report.examples_uri_of(fn_args.train_files[0]))
    config = {**fn_args.custom_config, **ingest_report.class_config(report)}
    options = TrainingOptions.from_config(config)
    tuning = TuningOptions.from_config(config)
    transform_graph = fn_args.transform_graph_path or fn_args.transform_output
    tf_transform_output = tft.TFTransformOutput(transform_graph)

    def dataset(files):
        # Unshuffled: this pass only feeds the backbone once; built only on a miss.
        return lambda: tf_data.make_dataset(
            files, fn_args.data_accessor, tf_transform_output, options.batch_size, False, 0
        )

    spec = trainer.spec_of(config, options)
    # The backbone is built only if the features are not stored yet.
    source = FeatureSource(
        spec,
        spec.build,
        options,
        fn_args.working_dir or "",
        split_files={"train": fn_args.train_files, "eval": fn_args.eval_files},
        transform_graph_dir=transform_graph,
    )
    caches = source.features(
        {"train": dataset(fn_args.train_files), "eval": dataset(fn_args.eval_files)}
    )
    num_classes = len(config["class_names"])
    tuner = build_tuner(
        tuning,
        spec.feature_dim,
        num_classes,
        options.seed,
        fn_args.working_dir,
    )
    return TunerFnResult(
        tuner=tuner,
        fit_kwargs={
            "x": caches["train"].dataset(options.batch_size, shuffle=True, seed=options.seed),
            "validation_data": caches["eval"].dataset(options.batch_size),
            "class_weight": options.class_weight(num_classes),
            "verbose": 0,
        },
    )
