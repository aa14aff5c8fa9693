"""ImagePusher's spec: TFX's Pusher with an optional `extra_assets` input and the atomic
executor (executor.py). It pushes only a model blessed by the Evaluator (`model_blessing`)
and, when given, by the InfraValidator (`infra_blessing`): TFX's CheckBlessing reads both."""

from __future__ import annotations

from tfx import types
from tfx.components.pusher import component as pusher_component
from tfx.dsl.components.base import base_component, executor_spec
from tfx.proto import pusher_pb2
from tfx.types import standard_artifacts, standard_component_specs
from tfx.types.component_spec import ChannelParameter
from tfx.utils import json_utils

from components.artifact_types import ExtraAssets, TFLiteEvaluation
from components.pusher.executor import (
    EXTRA_ASSETS_KEY,
    KEEP_VERSIONS_KEY,
    TFLITE_EVALUATION_KEY,
    Executor,
)


class ImagePusherSpec(standard_component_specs.PusherSpec):
    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        EXTRA_ASSETS_KEY: ChannelParameter(type=ExtraAssets, optional=True),
        TFLITE_EVALUATION_KEY: ChannelParameter(type=TFLiteEvaluation, optional=True),
    }


class ImagePusher(pusher_component.Pusher):
    """TFX's Pusher with the atomic executor and an optional `extra_assets` input."""

    SPEC_CLASS = ImagePusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(Executor)

    def __init__(
        self,
        model: types.BaseChannel,
        model_blessing: types.BaseChannel | None,
        push_destination: pusher_pb2.PushDestination,
        extra_assets: types.BaseChannel | None = None,
        tflite_evaluation: types.BaseChannel | None = None,
        keep_versions: int = 0,
        infra_blessing: types.BaseChannel | None = None,
    ):
        """keep_versions: versions kept after a push (the newest); 0 keeps every one."""
        spec = ImagePusherSpec(
            model=model,
            model_blessing=model_blessing,
            infra_blessing=infra_blessing,
            push_destination=push_destination,
            custom_config=json_utils.dumps({KEEP_VERSIONS_KEY: keep_versions}),
            pushed_model=types.Channel(type=standard_artifacts.PushedModel),
            extra_assets=extra_assets,
            tflite_evaluation=tflite_evaluation,
        )
        base_component.BaseComponent.__init__(self, spec=spec)
