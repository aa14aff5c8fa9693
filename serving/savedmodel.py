"""One loaded SavedModel version: its signatures as TF Serving sees them, and a way to run them.

The signature metadata (dtypes, shapes, method names) comes from the MetaGraphDef in
saved_model.pb, the same record TF Serving reads: the loaded object does not keep method names,
and `classify` is only a classification signature because of its method name. Execution goes
through `tf.saved_model.load(...).signatures`, so nothing of the training code is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2

from serving import errors


@dataclass(frozen=True)
class TensorSpec:
    """A signature's input or output: dtype name as TF Serving prints it, shape with -1 for
    unknown dimensions, None for unknown rank."""

    dtype: str
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]


def _spec(info: meta_graph_pb2.TensorInfo) -> TensorSpec:
    shape = None
    if not info.tensor_shape.unknown_rank:
        shape = tuple(int(d.size) for d in info.tensor_shape.dim)
    return TensorSpec(types_pb2.DataType.Name(info.dtype), shape)


def read_meta_graph(export_dir: str) -> meta_graph_pb2.MetaGraphDef:
    """The MetaGraphDef tagged 'serve' from saved_model.pb (or .pbtxt), as TF Serving picks it."""
    names = (tf.saved_model.SAVED_MODEL_FILENAME_PB, tf.saved_model.SAVED_MODEL_FILENAME_PBTXT)
    if not any(os.path.isfile(os.path.join(export_dir, name)) for name in names):
        raise errors.not_found(f"SavedModel not found in export directory: {export_dir}")
    # TF's own reader (the one tf.saved_model.load uses): .pb first, else .pbtxt.
    saved_model = tf.__internal__.saved_model.parse_saved_model(export_dir)
    for meta_graph in saved_model.meta_graphs:
        if tf.saved_model.SERVING in meta_graph.meta_info_def.tags:
            return meta_graph
    raise errors.not_found(f"No MetaGraphDef tagged '{tf.saved_model.SERVING}' in {export_dir}")


class Servable:
    """A loaded version. Thread-safe: signature functions may run concurrently."""

    def __init__(self, name: str, version: int, export_dir: str):
        self.name = name
        self.version = version
        self.export_dir = export_dir
        self.meta_graph = read_meta_graph(export_dir)
        self.signatures = {
            key: Signature(
                key,
                sig.method_name,
                {k: _spec(v) for k, v in sig.inputs.items()},
                {k: _spec(v) for k, v in sig.outputs.items()},
            )
            for key, sig in self.meta_graph.signature_def.items()
        }
        self._loaded = tf.saved_model.load(export_dir, tags=[tf.saved_model.SERVING])
        self._functions = dict(self._loaded.signatures)

    def __repr__(self) -> str:
        return f"Servable({self.name!r}, {self.version})"

    def signature(self, name: str) -> Signature:
        """The signature for Predict; TF Serving's message when it is missing."""
        name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        if name not in self.signatures:
            raise errors.invalid_argument(
                f'Serving signature name: "{name}" not found in signature def'
            )
        return self.signatures[name]

    def _named_signature(self, name: str) -> tuple[Signature, str]:
        name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
        signature = self.signatures.get(name)
        if signature is None:
            raise errors.invalid_argument(f"No signature was found with the name: {name}")
        return signature, _debug_string(self.meta_graph.signature_def[name])

    def classify_signature(self, name: str) -> Signature:
        """The signature for Classify, checked as TF Serving's PreProcessClassification does
        with its default --enable_signature_method_name_check=false: by shape, not method."""
        signature, debug = self._named_signature(name)
        if len(signature.inputs) != 1:
            raise errors.invalid_argument("Expected one input Tensor.")
        if len(signature.outputs) not in (1, 2):
            raise errors.invalid_argument(
                f"Expected one or two output Tensors, found {len(signature.outputs)}"
            )
        if tf.saved_model.CLASSIFY_INPUTS not in signature.inputs:
            raise errors.invalid_argument(
                f"No classification inputs found in SignatureDef: {debug}"
            )
        classes, scores = (
            tf.saved_model.CLASSIFY_OUTPUT_CLASSES,
            tf.saved_model.CLASSIFY_OUTPUT_SCORES,
        )
        if not {classes, scores} & set(signature.outputs):
            raise errors.invalid_argument(
                "Expected classification signature outputs to contain at least one of "
                f'"{classes}" or "{scores}". Signature was: {debug}'
            )
        return signature

    def regress_signature(self, name: str) -> Signature:
        """The signature for Regress, checked as TF Serving's PreProcessRegression does."""
        signature, debug = self._named_signature(name)
        if len(signature.inputs) != 1:
            raise errors.invalid_argument("Expected one input Tensor.")
        if len(signature.outputs) != 1:
            raise errors.invalid_argument("Expected one output Tensor.")
        if tf.saved_model.REGRESS_INPUTS not in signature.inputs:
            raise errors.invalid_argument(f"No regression inputs found in SignatureDef: {debug}")
        if tf.saved_model.REGRESS_OUTPUTS not in signature.outputs:
            raise errors.invalid_argument(f"No regression outputs found in SignatureDef: {debug}")
        return signature

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one signature on numpy inputs (blocking; TensorFlow releases the GIL)."""
        signature = self.signature(signature_name)
        function = self._functions.get(signature.name)
        if function is None:
            raise errors.invalid_argument(f"Signature {signature.name} cannot be run")
        tensors = {}
        for key, spec in signature.inputs.items():
            if key not in inputs:
                raise errors.invalid_argument(f"Missing input {key} for signature {signature.name}")
            _check_shape(key, inputs[key].shape, spec)
            tensors[key] = tf.convert_to_tensor(inputs[key], dtype=tf.as_dtype(_dtype(spec)))
        try:
            outputs = function(**tensors)
        except Exception as exc:  # tf.errors.* keep their code (a bad JPEG is INVALID_ARGUMENT)
            raise errors.from_exception(exc) from exc
        return {key: value.numpy() for key, value in outputs.items()}


def _debug_string(message) -> str:
    return text_format.MessageToString(message)


def _dtype(spec: TensorSpec) -> int:
    return types_pb2.DataType.Value(spec.dtype)


def _check_shape(key: str, shape: tuple[int, ...], spec: TensorSpec) -> None:
    # A tf.function rejects a mismatched shape with a Python TypeError; say it as TF Serving
    # does, as an invalid argument naming the input.
    if spec.shape is None:
        return
    compatible = len(shape) == len(spec.shape) and all(
        want < 0 or want == got for want, got in zip(spec.shape, shape, strict=True)
    )
    if not compatible:
        raise errors.invalid_argument(
            f"Input {key} has shape [{','.join(map(str, shape))}] but the signature expects "
            f"[{','.join(map(str, spec.shape))}] (-1: any size)"
        )
