"""The Evaluator's TFMA configuration: metrics, slices and the blessing thresholds."""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from components.modules import features

ACCURACY_METRIC = "sparse_categorical_accuracy"


def build_eval_config(
    num_classes: int, accuracy_threshold: float, accuracy_max_drop: float
) -> tfma.EvalConfig:
    """Accuracy gates the push: it must reach `accuracy_threshold`, and be at most
    `accuracy_max_drop` below the last blessed model's (when there is one)."""
    accuracy_gate = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": accuracy_threshold}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -accuracy_max_drop - 1e-10},
        ),
    )
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=features.TF_EXAMPLE_SIGNATURE,
                label_key=features.LABEL_KEY,
                prediction_key=features.PROBABILITIES_KEY,
                # tf_generic: call the signature, don't reload the Keras model and
                # recompute its compiled metrics (6x faster, half the memory).
                model_type=tfma.TF_GENERIC,
            )
        ],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=[features.LABEL_TEXT_KEY]),
        ],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        # The gate is the overall accuracy; per-class slices are reported
                        # but do not gate (each is that class's recall).
                        per_slice_thresholds=[
                            tfma.PerSliceMetricThreshold(
                                slicing_specs=[tfma.SlicingSpec()], threshold=accuracy_gate
                            )
                        ],
                    ),
                    tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
                ]
            ),
            # One-vs-rest per class, macro-averaged: AUC, precision and recall are
            # defined for any number of classes this way.
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="AUC"),
                    tfma.MetricConfig(class_name="Precision"),
                    tfma.MetricConfig(class_name="Recall"),
                ],
                binarize=tfma.BinarizationOptions(class_ids={"values": list(range(num_classes))}),
                aggregate=tfma.AggregationOptions(
                    macro_average=True, class_weights={i: 1.0 for i in range(num_classes)}
                ),
            ),
        ],
    )
