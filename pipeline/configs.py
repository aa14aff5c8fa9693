"""Every knob of a run, with its default, in one dataclass.

The Makefile and the `tfx` CLI pass knobs as environment variables named after the
fields in upper case (IMAGE_SIZE=64, BACKBONE_WEIGHTS=/path/to/file.h5, ...).
"""

from __future__ import annotations

import dataclasses
import os
import shlex
from collections.abc import Mapping

from models.features import DEFAULT_BACKBONE
from models.options import TFLITE_MAX_DROP, TFLITE_MIN_AGREEMENT, TrainingOptions, TuningOptions

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMITTED_SCHEMA = os.path.join(REPO_ROOT, "schemas", "schema.pbtxt")
# The code TFX's module files run (Transform, Tuner, Trainer, Evaluator): models/.
MODULES_DIR = os.path.join(REPO_ROOT, "models")
# In-process DirectRunner: one worker keeps peak memory at one copy of the model. The
# container image names where remote Beam workers find TFX (TFX's own image); without any
# such dependency flag, every Beam component would first copy TFX's installed tree and build
# an sdist of it to stage (~10-25 s each), which the in-process runner never reads.
DEFAULT_BEAM_PIPELINE_ARGS = (
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
    "--sdk_container_image=gcr.io/tfx-oss-public/tfx:1.16.0",
)


@dataclasses.dataclass(frozen=True)
class PipelineConfig:
    # The knobs the Trainer and the Tuner share take their defaults from those stages'
    # options (models/options.py): each default is written once.
    # Input and output.
    images: str = ""  # image folder; empty = generate the demo dataset under OUTPUT
    output: str = "output"  # everything a run writes lives under here
    eval_fraction: float = 0.2  # eval share of a bare <class>/ folder (no test/ folder)
    validation_fraction: float = 0.2  # validation share of train/ (or of a bare folder)
    examples: str = ""  # image TFRecords (train/ validation/ eval/ + labels.txt) instead of IMAGES
    demo_images_per_class: int = 100  # size of the generated demo dataset
    # Names.
    pipeline_name: str = "image-transfer"
    model_name: str = "image_classifier"  # serving name: SERVING_DIR/<model_name>/<version>
    # where the Pusher writes versions; empty: OUTPUT/serving; may be a bucket (gs://...)
    serving_dir: str = ""
    keep_versions: int = 0  # serving versions the Pusher keeps (newest); 0 = all
    # Model and training.
    image_size: int = 224
    backbone: str = DEFAULT_BACKBONE
    backbone_weights: str = "imagenet"  # imagenet | path to a Keras weights file | random
    epochs: int = TrainingOptions.epochs
    batch_size: int = TrainingOptions.batch_size
    learning_rate: float = TrainingOptions.learning_rate
    dropout: float = TrainingOptions.dropout
    seed: int = TrainingOptions.seed
    # Training phases (models/trainer.py).
    # frozen phase trains the head on features computed once
    cache_features: bool = TrainingOptions.cache_features
    # RAM for cached features; beyond it they spill to a temp file
    cache_memory_mb: int = TrainingOptions.cache_memory_mb
    # the Trainer predicts the eval split from cached features; the Evaluator reuses them
    stored_eval_predictions: bool = TrainingOptions.stored_eval_predictions
    # train-only: e.g. flip,rotation,zoom,contrast; disables the cache
    augmentation: str = TrainingOptions.augmentation
    # top backbone blocks to fine-tune; batch norm stays frozen
    fine_tune_blocks: int = TrainingOptions.fine_tune_blocks
    # epochs of fine-tuning after the frozen phase; 0 = none
    fine_tune_epochs: int = TrainingOptions.fine_tune_epochs
    # Adam learning rate of the fine-tuning phase
    fine_tune_learning_rate: float = TrainingOptions.fine_tune_learning_rate
    # weight the loss by inverse training-class frequency
    class_weights: bool = TrainingOptions.class_weights
    # 0 = off; else stop on eval loss, restore the best weights
    early_stopping_patience: int = TrainingOptions.early_stopping_patience
    label_smoothing: float = TrainingOptions.label_smoothing  # 0 = plain cross-entropy
    # float32 | bfloat16: compute dtype of the cached features
    backbone_dtype: str = TrainingOptions.backbone_dtype
    # Tuning (models/tuner.py): TUNE=true adds TFX's Tuner before the Trainer;
    # its search runs on the cached features and the Trainer takes the best values.
    tune: bool = False
    tune_trials: int = TuningOptions.tune_trials  # trial budget (random search)
    tune_learning_rates: str = TuningOptions.tune_learning_rates  # values tried, comma-separated
    tune_dropouts: str = TuningOptions.tune_dropouts
    tune_epochs: str = TuningOptions.tune_epochs
    tune_label_smoothings: str = TuningOptions.tune_label_smoothings
    # Data validation (components/anomaly_gate/component.py).
    anomalies: str = "block"  # ExampleValidator anomalies: block = stop the run, warn = log, go on
    # Evaluation and blessing (models/metrics/eval_config.py; the rule is in the README).
    accuracy_threshold: float = 0.6  # absolute: eval accuracy must reach this to be pushed
    min_class_recall: float = 0.3  # every class's eval recall must reach this
    beat_majority_class: bool = True  # eval accuracy must exceed the majority-class rate
    accuracy_max_drop: float = 0.01  # refused only if worse than the last blessed model by
    # more than this beyond noise (upper end of the paired 95% interval of the difference)
    # TFLite (models/tflite_export.py, components/tflite_evaluator/): float32 + int8 files,
    # each pushed beside the SavedModel only when it passes its gate against the SavedModel.
    tflite_export: bool = True  # also write model.tflite and model_int8.tflite
    # refused below this top-1 agreement with the SavedModel (the default: measured, see
    # models/options.py)
    tflite_min_agreement: float = TFLITE_MIN_AGREEMENT
    tflite_max_drop: float = TFLITE_MAX_DROP  # refused if worse by more than this beyond noise
    # Batch inference (make predict-folder): a pushed version dir; empty = latest blessed model
    model: str = ""
    # Infra validation (components/infra_validator/): the candidate is loaded in a model
    # server (TF Serving's binary if on PATH, else serving/) and queried before the push.
    infra_validation: bool = True
    infra_validation_timeout: int = 300  # seconds the server may take to load the candidate
    # Orchestration.
    schema: str = COMMITTED_SCHEMA  # a schema.pbtxt for ImportSchemaGen, or "infer" (SchemaGen)
    enable_cache: bool = True
    beam_pipeline_args: str = ""  # Beam flags, shell-quoted; empty: in-memory DirectRunner
    pipeline_root: str = ""  # TFX artifacts; empty: OUTPUT/pipeline_root; may be gs://...
    container_image: str = "tfx-image-transfer:latest"  # Kubeflow/Vertex component image
    # The image folder's layout, for a Vertex compile that does not read IMAGES: split
    # (train/ + test/) | flat (<class>/); empty = listed when local, else flat (docs/vertex.md).
    images_layout: str = ""
    # The Trainer's task on Vertex (a ResourceSpec in the spec); 0 / empty = Vertex's default.
    trainer_cpu: float = 0.0  # vCPU limit
    trainer_memory: float = 0.0  # memory limit, GB
    trainer_accelerator: str = ""  # e.g. NVIDIA_TESLA_T4; empty = none
    trainer_accelerator_count: int = 1  # accelerators of that type (with TRAINER_ACCELERATOR)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Defaults overridden by upper-case environment variables; empty means default."""
        env = os.environ if env is None else env
        values = {}
        for field in dataclasses.fields(cls):
            raw = env.get(field.name.upper(), "").strip()
            if raw:
                values[field.name] = _parse(field, raw)
        output = values.get("output", cls.output)
        # A bucket URL (gs://...) stays as it is: Vertex runs write there.
        values["output"] = output if "://" in output else os.path.abspath(output)
        return cls(**values)

    def __post_init__(self) -> None:
        if self.trainer_cpu < 0 or self.trainer_memory < 0 or self.trainer_accelerator_count < 1:
            raise ValueError(
                "TRAINER_CPU and TRAINER_MEMORY must be >= 0 (0 = Vertex's default) and "
                "TRAINER_ACCELERATOR_COUNT >= 1."
            )
        if not self.pipeline_root:
            object.__setattr__(self, "pipeline_root", os.path.join(self.output, "pipeline_root"))

    def values_for(self, options_type: type) -> dict:
        """This run's values of the knobs a stage's options dataclass shares (shared_knobs)."""
        return {name: getattr(self, name) for name in shared_knobs(options_type)}

    @property
    def beam_args(self) -> list[str]:
        """BEAM_PIPELINE_ARGS split like a shell would, or the in-memory default."""
        return shlex.split(self.beam_pipeline_args) or list(DEFAULT_BEAM_PIPELINE_ARGS)

    @property
    def is_demo(self) -> bool:
        return not self.images and not self.examples

    @property
    def demo_images_dir(self) -> str:
        return os.path.join(self.output, "demo_images")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output, "metadata.sqlite")

    @property
    def feature_cache_dir(self) -> str:
        """Backbone features kept across runs, one folder per key (feature_cache.py)."""
        return os.path.join(self.pipeline_root, "FeatureCache")

    @property
    def serving_model_dir(self) -> str:
        """<SERVING_DIR>/<MODEL_NAME>: the Pusher's base directory (TF Serving's model base
        path); a bucket URL stays as it is."""
        base = self.serving_dir or os.path.join(self.output, "serving")
        return os.path.join(base if "://" in base else os.path.abspath(base), self.model_name)

    @property
    def report_dir(self) -> str:
        return os.path.join(self.output, "report")

    @property
    def predictions_dir(self) -> str:
        """make predict-folder's predictions.jsonl and predictions.csv."""
        return os.path.join(self.output, "predictions")

    @property
    def summary_path(self) -> str:
        return os.path.join(self.output, "run_summary.json")


def shared_knobs(options_type: type) -> tuple[str, ...]:
    """The fields of the dataclass `options_type` that are knobs too. A stage's options take
    them by name, so a knob added to both reaches the stage without being listed anywhere."""
    knobs = {field.name for field in dataclasses.fields(PipelineConfig)}
    return tuple(f.name for f in dataclasses.fields(options_type) if f.name in knobs)


def _parse(field: dataclasses.Field, raw: str):
    kind = field.type if isinstance(field.type, str) else field.type.__name__
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise ValueError(
            f"{field.name.upper()}={raw!r} is not a valid {kind} (default: {field.default!r})."
        ) from None
    return raw
