"""ImageInfraValidator's spec: TFX's InfraValidator with the local-process executor.

The component is TFX's (its InfraValidatorSpec: same inputs, InfraBlessing output,
ServingSpec / ValidationSpec / RequestSpec parameters, and TFX's executor with the validation
step replaced) plus one parameter, `model_server`, choosing the server the executor starts
(executor.py): `auto` (TF Serving's binary when the image has it, else the project's server),
`tensorflow_model_server` or `project`. The class derives from BaseComponent rather than from
TFX's InfraValidator class: KubeflowV2DagRunner refuses any instance of that class
(step_builder.py: "The component type ... is not supported", since TFX's runners need Docker
or a KFP v1 pod), while this executor runs inside the task's own container like any other.
`build` makes the pipeline's instance: LOAD_AND_QUERY with Classify requests built from the
eval split through the `classify` signature, the model's own warm-up records kept
(make_warmup off).
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component, base_driver, executor_spec
from tfx.proto import infra_validator_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ExecutionParameter

from components.infra_validator.executor import AUTO, MODEL_SERVER_KEY, Executor
from models import features

MODEL_NAME = "infra-validation-model"  # the name the candidate is served under (TFX's default)
NUM_EXAMPLES = 4  # eval examples sent as Classify requests (one example each)


class ImageInfraValidatorSpec(standard_component_specs.InfraValidatorSpec):
    PARAMETERS = {
        **standard_component_specs.InfraValidatorSpec.PARAMETERS,
        MODEL_SERVER_KEY: ExecutionParameter(type=str, optional=True),
    }


class ImageInfraValidator(base_component.BaseComponent):
    """TFX's InfraValidator whose executor starts the model server as a local process."""

    SPEC_CLASS = ImageInfraValidatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)
    DRIVER_CLASS = base_driver.BaseDriver  # as TFX's InfraValidator

    def __init__(
        self,
        model: types.BaseChannel,
        examples: types.BaseChannel | None,
        serving_spec: infra_validator_pb2.ServingSpec,
        request_spec: infra_validator_pb2.RequestSpec | None = None,
        validation_spec: infra_validator_pb2.ValidationSpec | None = None,
        model_server: str = AUTO,
    ):
        spec = ImageInfraValidatorSpec(
            model=model,
            examples=examples,
            blessing=types.Channel(type=standard_artifacts.InfraBlessing),
            serving_spec=serving_spec,
            validation_spec=validation_spec,
            request_spec=request_spec,
            model_server=model_server,
        )
        super().__init__(spec=spec)


def build(
    model: types.BaseChannel,
    examples: types.BaseChannel,
    split: str,
    max_loading_seconds: int,
    num_tries: int = 1,
    model_server: str = AUTO,
) -> ImageInfraValidator:
    """The pipeline's InfraValidator: load the candidate, then Classify `NUM_EXAMPLES`
    examples of `split` through the `classify` signature."""
    return ImageInfraValidator(
        model=model,
        examples=examples,
        serving_spec=infra_validator_pb2.ServingSpec(
            # The tag only names a binary to TFX (one validation per tag); the executor runs
            # the local one.
            tensorflow_serving=infra_validator_pb2.TensorFlowServing(tags=["local"]),
            model_name=MODEL_NAME,
        ),
        validation_spec=infra_validator_pb2.ValidationSpec(
            max_loading_time_seconds=max_loading_seconds, num_tries=num_tries
        ),
        request_spec=infra_validator_pb2.RequestSpec(
            tensorflow_serving=infra_validator_pb2.TensorFlowServingRequestSpec(
                signature_names=[features.CLASSIFY_SIGNATURE]
            ),
            split_name=split,
            num_examples=NUM_EXAMPLES,
            make_warmup=False,  # the model's own warm-up records stay (executor.py)
        ),
        model_server=model_server,
    )
