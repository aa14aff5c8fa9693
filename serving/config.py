"""TF Serving's config files: --model_config_file, --monitoring_config_file and
--batching_parameters_file.

Both are text-format protos, read with protobuf's own text parser so anything TF Serving
accepts parses the same way (and anything it refuses fails with the parser's message):
- ModelServerConfig comes from tensorflow-serving-api (tensorflow_serving.config);
- BatchingParameters is not shipped in it either: serving/protos/ vendors TF Serving's .proto,
  compiled with grpcio-tools;
- MonitoringConfig is not shipped in that wheel, so its two messages are declared here from
  tensorflow_serving/config/monitoring_config.proto, field for field.

The checks mirror ServerCore's (server_core.cc): a model listed twice, a relative base_path,
or a config that is not a model_config_list are refused with TF Serving's messages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from tensorflow_serving.config import model_server_config_pb2

from serving import errors
from serving.models import ModelSource, VersionPolicy

DEFAULT_METRICS_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath


def parse_model_server_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    config = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise errors.invalid_argument(f"Invalid ModelServerConfig: {exc}") from None
    return config


def read_batching_parameters_file(path: str):
    """--batching_parameters_file: a BatchingParameters text proto (ParseProtoTextFile)."""
    from serving.protos import batching_parameters_pb2

    with open(path) as f:
        text = f.read()
    parameters = batching_parameters_pb2.BatchingParameters()
    try:
        text_format.Parse(text, parameters)
    except text_format.ParseError as exc:
        raise errors.invalid_argument(f"Invalid BatchingParameters in {path}: {exc}") from None
    return parameters


def read_model_config_file(path: str) -> model_server_config_pb2.ModelServerConfig:
    with open(path) as f:
        return parse_model_server_config(f.read())


def model_sources(config: model_server_config_pb2.ModelServerConfig) -> list[ModelSource]:
    """The models of a ModelServerConfig, validated as ServerCore::ReloadConfig does."""
    if config.WhichOneof("config") != "model_config_list":
        raise errors.invalid_argument(
            "ServerModelConfig type not supported by HandleReloadConfigRequest. Only "
            "ModelConfigList is currently supported"
        )
    sources, names = [], set()
    for model in config.model_config_list.config:
        if model.name in names:
            raise errors.invalid_argument(
                f"Illegal to list model {model.name} multiple times in config list"
            )
        names.add(model.name)
        if "://" not in model.base_path and not os.path.isabs(model.base_path):
            raise errors.invalid_argument(
                f"Expected model {model.name} to have an absolute path or URI; got "
                f"base_path()={model.base_path}"
            )
        if model.model_platform not in ("", "tensorflow"):
            raise errors.invalid_argument(
                f"Model {model.name}: platform {model.model_platform!r} is not served here "
                "(only tensorflow SavedModels)"
            )
        sources.append(
            ModelSource(
                model.name,
                model.base_path,
                _policy(model.model_version_policy),
                tuple(sorted(model.version_labels.items())),
            )
        )
    return sources


def _policy(proto) -> VersionPolicy:
    kind = proto.WhichOneof("policy_choice") or "latest"
    if kind == "specific":
        return VersionPolicy("specific", versions=tuple(proto.specific.versions))
    if kind == "all":
        return VersionPolicy("all")
    return VersionPolicy("latest", num_versions=max(proto.latest.num_versions, 1))


# ---- monitoring ----


@dataclass(frozen=True)
class Monitoring:
    enable: bool = True
    path: str = DEFAULT_METRICS_PATH


def _monitoring_message_class():
    file = descriptor_pb2.FileDescriptorProto(
        name="serving_local/monitoring_config.proto",
        package="tensorflow.serving.local",
        syntax="proto3",
    )
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1, type=8, label=1)  # bool
    prometheus.field.add(name="path", number=2, type=9, label=1)  # string
    monitoring = file.message_type.add(name="MonitoringConfig")
    monitoring.field.add(
        name="prometheus_config",
        number=1,
        type=11,  # message
        label=1,
        type_name=".tensorflow.serving.local.PrometheusConfig",
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("tensorflow.serving.local.MonitoringConfig")
    return message_factory.MessageFactory(pool).GetPrototype(descriptor)  # protobuf 3.20


def read_monitoring_config_file(path: str) -> Monitoring:
    """Prometheus on/off and its path; an empty path means TF Serving's default path."""
    message = _monitoring_message_class()()
    with open(path) as f:
        try:
            text_format.Parse(f.read(), message)
        except text_format.ParseError as exc:
            raise ValueError(f"Invalid MonitoringConfig in {path}: {exc}") from None
    prometheus = message.prometheus_config
    return Monitoring(prometheus.enable, prometheus.path or DEFAULT_METRICS_PATH)
