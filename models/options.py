"""The Trainer's and the Tuner's options: one typed object per stage, defaults written once.

Why a module of its own: pipeline/configs.py takes the default of every knob these stages
share from these classes, and must not import TensorFlow; the pipeline passes the values by
name through custom_config (PipelineConfig.values_for), and the module files rebuild the
objects with from_config.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

# The TFLite gate's defaults (components/tflite_evaluator/: TFLITE_MIN_AGREEMENT and
# TFLITE_MAX_DROP), here so that pipeline/configs.py reads them without TensorFlow. The
# agreement comes from bench/deploy_bench.py on 500 real held-out photos with pretrained
# EfficientNet-Lite0 at 224 px: the float32 file agreed with the SavedModel on 0.994 of them,
# the int8 file on 0.968 (accuracy 0.854 against 0.870, a drop the accuracy rule judges); a
# broken conversion (a corrupted weight, a wrong input scaling) agrees on far fewer.
TFLITE_MIN_AGREEMENT = 0.95  # top-1 agreement with the SavedModel
TFLITE_MAX_DROP = 0.01  # accuracy drop allowed beyond noise

# Head knobs the Tuner searches (models/tuner.py); the Trainer takes its best
# values for these names from TFX's `hyperparameters` channel.
TUNED_HYPERPARAMETERS = ("learning_rate", "dropout", "epochs", "label_smoothing")


@dataclasses.dataclass(frozen=True)
class TrainingOptions:
    """The Trainer's knobs (custom_config); defaults keep the seed's behaviour."""

    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    dropout: float = 0.2
    seed: int = 42
    cache_features: bool = True  # frozen phase on cached backbone features
    cache_memory_mb: int = 1024  # feature cache held in RAM up to this, else spilled to disk
    augmentation: str = ""  # e.g. "flip,rotation,zoom,contrast"; train data only
    fine_tune_blocks: int = 0  # top backbone blocks unfrozen in the fine-tuning phase
    fine_tune_epochs: int = 0  # 0 = no fine-tuning phase
    fine_tune_learning_rate: float = 1e-5
    class_weights: bool = False  # weight the loss by inverse training class frequency
    class_counts: tuple[int, ...] = ()  # training examples per class (for class_weights)
    early_stopping_patience: int = 0  # 0 = off; else stop on val_loss, restore best weights
    label_smoothing: float = 0.0
    backbone_dtype: str = "float32"  # compute dtype of the cached backbone pass (bfloat16)
    feature_cache_dir: str = ""  # where features persist across runs; "" = scratch, per run
    # Predict the eval split from cached features and store it in the Model artifact, where
    # the Evaluator reads it (checking a sample against the model): stored_predictions.py.
    stored_eval_predictions: bool = True
    shuffle: bool = True  # shuffle the training data (tests turn it off to compare paths)

    @classmethod
    def from_config(cls, config: Mapping) -> TrainingOptions:
        names = {field.name for field in dataclasses.fields(cls)}
        values = {k: v for k, v in config.items() if k in names and v is not None}
        if "class_counts" in values:
            values["class_counts"] = tuple(int(c) for c in values["class_counts"])
        return cls(**values)

    def with_hyperparameters(self, values: Mapping | None) -> TrainingOptions:
        """These options with the Tuner's best values (FnArgs.hyperparameters["values"])."""
        if not values:
            return self
        names = {field.name for field in dataclasses.fields(self)} & set(TUNED_HYPERPARAMETERS)
        return dataclasses.replace(self, **{k: v for k, v in values.items() if k in names})

    def class_weight(self, num_classes: int) -> dict[int, float] | None:
        if not self.class_weights:
            return None
        if len(self.class_counts) != num_classes:
            raise ValueError(
                f"CLASS_WEIGHTS needs class_counts for {num_classes} classes, "
                f"got {list(self.class_counts)}."
            )
        return class_weights_from_counts(self.class_counts)


def class_weights_from_counts(counts: Sequence[int]) -> dict[int, float]:
    """Inverse-frequency ("balanced") weights: total / (classes * count).

    A balanced dataset gets weight 1 everywhere; a class with half the average count
    gets 2, so every class contributes equally to the loss. Classes without training
    examples get 0 and are not counted in `classes`.
    """
    total = sum(counts)
    present = sum(1 for count in counts if count)
    return {
        index: (total / (present * count) if count else 0.0) for index, count in enumerate(counts)
    }


@dataclasses.dataclass(frozen=True)
class TuningOptions:
    """The Tuner's knobs (custom_config): trial budget and the values each knob may take."""

    tune_trials: int = 20
    tune_learning_rates: str = "0.0003,0.001,0.003,0.01"
    tune_dropouts: str = "0.0,0.2,0.5"
    tune_epochs: str = "3,5,10"
    tune_label_smoothings: str = "0.0,0.1"

    @classmethod
    def from_config(cls, config: Mapping) -> TuningOptions:
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names and v is not None})
