"""The one implementation of TF Serving's APIs: request protos in, response protos out.

TF Serving answers gRPC and REST from the same code: PredictionServiceImpl / ModelServiceImpl
call predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc,
get_model_metadata_impl.cc and get_model_status_impl.cc, and its REST handler
(http_rest_api_handler.cc) only turns JSON into those request protos and the response protos
back into JSON. This module is that shared implementation; `grpc_api` serves it over gRPC and
`app` over HTTP/JSON, so every check, limit, status and message is written once, here.
Failures are `errors.ServingError`s with TF Serving's canonical code and message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    regression_pb2,
)

from serving import codec, config, confine, errors, tensor_guard, tensors
from serving.models import ModelRegistry
from serving.runner import Runner
from serving.savedmodel import Servable, Signature

SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadataImpl::kSignatureDef
CLASSIFY_METHOD = tf.saved_model.CLASSIFY_METHOD_NAME
REGRESS_METHOD = tf.saved_model.REGRESS_METHOD_NAME
DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY


def check_batch(size: int, max_instances: int | None) -> None:
    """The server's one limit on instances (Predict) or examples (Classify, Regress,
    MultiInference) per request; TF Serving has none, --max-instances sets ours."""
    if max_instances is not None and size > max_instances:
        raise errors.invalid_argument(
            f"Request has {size} instances; this server accepts at most {max_instances} per "
            "request (--max-instances). Send them in smaller batches."
        )


def examples(request_input) -> np.ndarray:
    """InputToSerializedExampleTensor: the serialized tf.Examples of an Input, the context
    merged into each (concatenated serialized protos parse as their merge)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        serialized = [e.SerializeToString() for e in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        serialized = [context + e.SerializeToString() for e in listed.examples]
    else:
        serialized = []
    if not serialized:
        raise errors.invalid_argument("Input is empty.")
    return codec.bytes_array(serialized)


def predict_inputs(
    servable: Servable, request, max_instances: int | None = None
) -> tuple[Signature, dict]:
    """The signature and numpy inputs of a PredictRequest, checked as RunPredict does."""
    signature = servable.signature(request.model_spec.signature_name)
    sent, wanted = set(request.inputs), set(signature.inputs)
    if sent != wanted:
        raise errors.invalid_argument(
            f"input size does not match signature: {len(sent)}!={len(wanted)} "
            f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(wanted))}}}). "
            f"Sent extra: {{{','.join(sorted(sent - wanted))}}}. "
            f"Missing but required: {{{','.join(sorted(wanted - sent))}}}."
        )
    inputs = {}
    for index, (key, spec) in enumerate(sorted(signature.inputs.items())):
        proto = request.inputs[key]
        want = tf.dtypes.as_dtype(types_pb2.DataType.Value(spec.dtype))
        got = _dtype_or_none(proto.dtype)
        if got != want:
            raise errors.invalid_argument(
                f"Expects arg[{index}] to be {want.name} but "
                f"{got.name if got else 'invalid'} is provided"
            )
        tensor_guard.check_tensor(key, proto)  # before the array is filled out to a huge shape
        try:
            inputs[key] = tensors.to_ndarray(proto)
        except Exception as exc:
            raise errors.invalid_argument(f"Input {key}: {exc}") from None
        if inputs[key].ndim:
            check_batch(inputs[key].shape[0], max_instances)
    seen: set[str] = set()
    for alias in request.output_filter:
        if alias not in signature.outputs:
            raise errors.invalid_argument(
                f"output tensor alias not found in signature: {alias} Outputs expected to "
                f"be in the set {{{','.join(sorted(signature.outputs))}}}."
            )
        if alias in seen:
            raise errors.invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return signature, inputs


def _shape_string(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def _dtype_or_none(value: int):
    """The DataType of a TensorProto, None for 0 and for numbers TF does not know (a
    TypeError from as_dtype escaped as INTERNAL before)."""
    try:
        return tf.dtypes.as_dtype(value) if value else None
    except TypeError:
        return None


def _dtype_name(array: np.ndarray) -> str:
    if array.dtype.kind in "OSU":
        return "DT_STRING"
    return types_pb2.DataType.Name(tf.dtypes.as_dtype(array.dtype).as_datatype_enum)


def classification_result(
    outputs: dict, count: int, result: classification_pb2.ClassificationResult
) -> None:
    """PostProcessClassificationResult (classifier.cc), check for check."""
    classes = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(tf.saved_model.CLASSIFY_OUTPUT_SCORES)
    for name, tensor, want in (("classes", classes, "DT_STRING"), ("scores", scores, "DT_FLOAT")):
        if tensor is None:
            continue
        if tensor.ndim != 2:
            raise errors.invalid_argument(
                "Expected Tensor shape: [batch_size num_classes] but got "
                f"{_shape_string(tensor.shape)}"
            )
        if _dtype_name(tensor) != want:
            raise errors.invalid_argument(
                f"Expected {name} Tensor of {want}. Got: {_dtype_name(tensor)}"
            )
        if tensor.shape[0] != count:
            raise errors.invalid_argument(
                f"Expected {name} output batch size of {count}. Got: {tensor.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise errors.invalid_argument(
            "Tensors class and score should match in dim_size(1). Got "
            f"{classes.shape[1]} vs. {scores.shape[1]}"
        )
    reference = classes if classes is not None else scores
    columns = 0 if reference is None else reference.shape[1]
    for row in range(count):
        classification = result.classifications.add()
        for column in range(columns):
            entry = classification.classes.add()
            if classes is not None:
                label = classes[row, column]
                raw = label if isinstance(label, bytes) else str(label).encode()
                entry.label = raw.decode("utf-8", errors="replace")
            if scores is not None:
                entry.score = float(scores[row, column])


def regression_result(outputs: dict, count: int, result: regression_pb2.RegressionResult) -> None:
    """PostProcessRegressionResult (regressor.cc), check for check."""
    values = outputs.get(tf.saved_model.REGRESS_OUTPUTS)
    if values is None:
        raise errors.invalid_argument(
            f"Could not find output tensor '{tf.saved_model.REGRESS_OUTPUTS}'"
        )
    if not (values.ndim == 1 or (values.ndim == 2 and values.shape[1] == 1)):
        raise errors.invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
            f"{_shape_string(values.shape)}"
        )
    if values.shape[0] != count:
        raise errors.invalid_argument(
            f"Input batch size did not match output batch size: {count} vs. {values.shape[0]}"
        )
    if _dtype_name(values) != "DT_FLOAT":
        raise errors.invalid_argument(
            f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(values)}"
        )
    for value in values.reshape(-1):
        result.regressions.add(value=float(value))


def _set_spec(target, servable: Servable, signature_name: str | None = None) -> None:
    """MakeModelSpec (util.cc): name, version, the signature name ('' as serving_default)."""
    target.name = servable.name
    target.version.value = servable.version
    if signature_name is not None:
        target.signature_name = signature_name or DEFAULT_SIGNATURE


def _require_spec(request) -> None:
    if not request.HasField("model_spec"):
        raise errors.invalid_argument("Missing ModelSpec")


class Prediction:
    """PredictionService and ModelService on one registry, runner and set of limits."""

    def __init__(
        self,
        models: ModelRegistry,
        runner: Runner,
        max_instances: int | None = None,
        tensor_content: bool = False,
    ):
        self.models = models
        self.runner = runner
        self.max_instances = max_instances
        self.encode = tensors.encoder(tensor_content)

    def resolve(self, spec) -> Servable:
        """ServerCore::ServableRequestFromModelSpec, then the registry lookup."""
        if not spec.name:
            raise errors.invalid_argument("ModelSpec has no name specified.")
        choice = spec.WhichOneof("version_choice")
        if choice == "version":
            return self.models.resolve(spec.name, spec.version.value)
        if choice == "version_label":
            return self.models.resolve(spec.name, label=spec.version_label)
        return self.models.resolve(spec.name)

    # ---- Predict (predict_util.cc) ----

    async def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        _require_spec(request)
        servable = self.resolve(request.model_spec)
        signature, inputs = predict_inputs(servable, request, self.max_instances)
        outputs = await self.runner.run(servable, signature.name, inputs)
        response = predict_pb2.PredictResponse()
        _set_spec(response.model_spec, servable, signature.name)
        for key in request.output_filter or sorted(outputs):
            response.outputs[key].CopyFrom(self.encode(outputs[key]))
        return response

    # ---- Classify, Regress (classifier.cc, regressor.cc) ----

    async def _run_on_examples(
        self, request, checked_signature: Callable[[Servable, str], Signature], input_key: str
    ) -> tuple[Servable, Signature, dict, int]:
        """Find the model, check the signature can answer this API, run it on the examples."""
        _require_spec(request)
        servable = self.resolve(request.model_spec)
        signature = checked_signature(servable, request.model_spec.signature_name)
        serialized = examples(request.input)
        check_batch(len(serialized), self.max_instances)
        outputs = await self.runner.run(servable, signature.name, {input_key: serialized})
        return servable, signature, outputs, len(serialized)

    async def classify(
        self, request: classification_pb2.ClassificationRequest
    ) -> classification_pb2.ClassificationResponse:
        servable, signature, outputs, count = await self._run_on_examples(
            request, Servable.classify_signature, tf.saved_model.CLASSIFY_INPUTS
        )
        response = classification_pb2.ClassificationResponse()
        _set_spec(response.model_spec, servable, signature.name)
        classification_result(outputs, count, response.result)
        return response

    async def regress(
        self, request: regression_pb2.RegressionRequest
    ) -> regression_pb2.RegressionResponse:
        servable, signature, outputs, count = await self._run_on_examples(
            request, Servable.regress_signature, tf.saved_model.REGRESS_INPUTS
        )
        response = regression_pb2.RegressionResponse()
        _set_spec(response.model_spec, servable, signature.name)
        regression_result(outputs, count, response.result)
        return response

    # ---- MultiInference (multi_inference.cc, multi_inference_helper.cc) ----

    async def multi_inference(
        self, request: inference_pb2.MultiInferenceRequest
    ) -> inference_pb2.MultiInferenceResponse:
        """TensorFlowMultiInferenceRunner::Infer: every task checked first (one model, no
        signature twice, classify or regress only), then the examples, then one run per
        signature on the same examples, results in task order."""
        # GetModelSpecFromRequest: the first task's model, the model for every task.
        spec = request.tasks[0].model_spec if request.tasks else model_pb2.ModelSpec()
        servable = self.resolve(spec)
        model_name, seen, checked = "", set(), []
        for task in request.tasks:
            if not task.model_spec.name:
                raise errors.invalid_argument("Found ModelSpec with an empty model name.")
            if not model_name:
                model_name = task.model_spec.name
            elif model_name != task.model_spec.name:
                raise errors.invalid_argument(
                    "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                )
            name = task.model_spec.signature_name or DEFAULT_SIGNATURE
            if name in seen:
                raise errors.invalid_argument(f"Duplicate evaluation of signature: {name}")
            seen.add(name)
            if name not in servable.signatures:
                raise errors.invalid_argument(
                    f"Requested signature not found in model graph: {name}"
                )
            if task.method_name == CLASSIFY_METHOD:
                signature = servable.classify_signature(name)
                input_key = tf.saved_model.CLASSIFY_INPUTS
            elif task.method_name == REGRESS_METHOD:
                signature = servable.regress_signature(name)
                input_key = tf.saved_model.REGRESS_INPUTS
            else:
                raise errors.ServingError(
                    errors.Code.UNIMPLEMENTED,
                    f"Unsupported signature method_name: {task.method_name}",
                )
            checked.append((task, signature, input_key))
        serialized = examples(request.input)
        check_batch(len(serialized), self.max_instances)
        runs = await asyncio.gather(
            *(
                self.runner.run(servable, signature.name, {input_key: serialized})
                for _, signature, input_key in checked
            )
        )
        response = inference_pb2.MultiInferenceResponse()
        for (task, signature, _), outputs in zip(checked, runs, strict=True):
            result = response.results.add()
            if task.method_name == CLASSIFY_METHOD:
                classification_result(outputs, len(serialized), result.classification_result)
            else:
                regression_result(outputs, len(serialized), result.regression_result)
            result.model_spec.name = task.model_spec.name
            result.model_spec.signature_name = signature.name
            result.model_spec.version.value = servable.version
        return response

    # ---- GetModelMetadata (get_model_metadata_impl.cc) ----

    def metadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        _require_spec(request)
        if not request.metadata_field:
            raise errors.invalid_argument(
                "GetModelMetadataRequest must specify at least one metadata_field"
            )
        for field in request.metadata_field:
            if field != SIGNATURE_DEF_FIELD:
                raise errors.invalid_argument(f"Metadata field {field} is not supported")
        servable = self.resolve(request.model_spec)
        # The MetaGraphDef's signature_def map whole, `__saved_model_init_op` included.
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        for key, signature in servable.meta_graph.signature_def.items():
            signature_map.signature_def[key].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        _set_spec(response.model_spec, servable)
        response.metadata[SIGNATURE_DEF_FIELD].Pack(signature_map)
        return response

    # ---- ModelService (get_model_status_impl.cc, model_service_impl.cc) ----

    def status(
        self, request: get_model_status_pb2.GetModelStatusRequest
    ) -> get_model_status_pb2.GetModelStatusResponse:
        """Every version of the model, or the one asked for; a version label is ignored, as
        get_model_status_impl.cc reads only `version`."""
        _require_spec(request)
        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        response = get_model_status_pb2.GetModelStatusResponse()
        for status in self.models.status(spec.name, version):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(status.state.value)
            entry.status.error_code = int(status.error_code)
            entry.status.error_message = status.error_message
        return response

    async def reload_config(
        self, request: model_management_pb2.ReloadConfigRequest
    ) -> model_management_pb2.ReloadConfigResponse:
        """Only a model_config_list; a failure is the RPC's status."""
        sources = config.model_sources(request.config)
        confine.check_sources(sources, self.models.model_roots)  # a client names no other dir
        await asyncio.to_thread(self.models.reconfigure, sources)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        return response
