"""A client for TF Serving's REST API: importable, and `python -m serving.client predict`.

It speaks only the documented APIs, so it works the same against this project's server and
against a real TF Serving (`--url` of either). REST needs httpx, not TensorFlow; `--grpc
host:port` sends the same images through gRPC Predict with the official stubs (which import
TensorFlow's protos).

    python -m serving.client predict --url http://127.0.0.1:8501 --model image_classifier \\
        [--version N | --label L] [--batch-size 8] [--grpc 127.0.0.1:8500] photo.jpg photos/
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
DEFAULT_URL = "http://127.0.0.1:8501"


class ServingHTTPError(Exception):
    """A non-200 answer; `message` is the server's {"error": ...} text."""

    def __init__(self, status_code: int, message: str):
        super().__init__(f"HTTP {status_code}: {message}")
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class Classification:
    class_name: str
    probability: float
    probabilities: list[float]


def b64(data: bytes) -> dict[str, str]:
    """A binary value as TF Serving's JSON expects it."""
    return {"b64": base64.b64encode(data).decode("ascii")}


class ServingClient:
    """One model (optionally one version or label) on one TF Serving REST endpoint."""

    def __init__(
        self,
        url: str,
        model: str,
        version: int | None = None,
        label: str | None = None,
        timeout: float = 120.0,
        http: httpx.Client | None = None,
    ):
        if version is not None and label is not None:
            raise ValueError("give a version or a label, not both")
        self.url = url.rstrip("/")
        self.model = model
        self.version = version
        self.label = label
        self._http = http or httpx.Client(timeout=timeout)
        self._owns_http = http is None

    def __enter__(self) -> ServingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    @property
    def model_path(self) -> str:
        """/v1/models/<model>[/versions/<v> | /labels/<l>]"""
        path = f"/v1/models/{self.model}"
        if self.version is not None:
            path += f"/versions/{self.version}"
        elif self.label is not None:
            path += f"/labels/{self.label}"
        return path

    def send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A raw request to `url + path` (tests use it for malformed requests)."""
        return self._http.request(method, self.url + path, **kwargs)

    def _json(self, method: str, path: str, document: dict | None = None) -> dict:
        content = None if document is None else json.dumps(document).encode("utf-8")
        headers = {"Content-Type": "application/json"} if content is not None else None
        response = self.send(method, path, content=content, headers=headers)
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text}
        if response.status_code != 200:
            message = body.get("error", response.text) if isinstance(body, dict) else body
            raise ServingHTTPError(response.status_code, str(message))
        return body

    def status(self) -> dict:
        return self._json("GET", self.model_path)

    def metadata(self) -> dict:
        return self._json("GET", self.model_path + "/metadata")

    def predict(
        self,
        instances: list | None = None,
        inputs: Any = None,
        signature_name: str | None = None,
    ) -> dict:
        """The raw Predict answer ({"predictions": ...} or {"outputs": ...})."""
        document: dict[str, Any] = {}
        if signature_name is not None:
            document["signature_name"] = signature_name
        if instances is not None:
            document["instances"] = instances
        if inputs is not None:
            document["inputs"] = inputs
        return self._json("POST", self.model_path + ":predict", document)

    def classify(
        self,
        examples: list[dict],
        context: dict | None = None,
        signature_name: str | None = None,
    ) -> dict:
        """The raw Classify answer ({"results": [[[label, score], ...], ...]})."""
        document: dict[str, Any] = {"examples": examples}
        if context is not None:
            document["context"] = context
        if signature_name is not None:
            document["signature_name"] = signature_name
        return self._json("POST", self.model_path + ":classify", document)

    def classify_images(self, images: Sequence[bytes]) -> list[Classification]:
        """Encoded images through the default signature, one request for all of them."""
        predictions = self.predict(instances=[b64(image) for image in images])["predictions"]
        return [_classification(prediction) for prediction in predictions]


class GrpcClient:
    """classify_images() over TF Serving's gRPC Predict (official stubs), for the CLI."""

    def __init__(self, target: str, model: str, version=None, label=None, timeout=120.0):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self.model, self.version, self.label, self.timeout = model, version, label, timeout
        unlimited = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self._channel = grpc.insecure_channel(target, options=unlimited)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def __enter__(self) -> GrpcClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._channel.close()

    def classify_images(self, images: Sequence[bytes]) -> list[Classification]:
        import grpc
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest()
        request.model_spec.name = self.model
        if self.version is not None:
            request.model_spec.version.value = self.version
        elif self.label is not None:
            request.model_spec.version_label = self.label
        tensor = request.inputs["image_bytes"]
        tensor.dtype = 7  # DT_STRING
        tensor.tensor_shape.dim.add(size=len(images))
        tensor.string_val.extend(images)
        try:
            outputs = self._stub.Predict(request, timeout=self.timeout).outputs
        except grpc.RpcError as exc:
            # gRPC's INVALID_ARGUMENT and friends, told as the HTTP code TF Serving maps them to.
            from serving.errors import HTTP_STATUS, Code

            raise ServingHTTPError(HTTP_STATUS[Code[exc.code().name]], exc.details()) from None
        probabilities = _numbers(outputs["probabilities"], "float32", "float_val")
        classes = len(probabilities) // max(len(images), 1)
        from serving.tensors import to_ndarray  # string_val, or tensor_content with the flag

        names = [n.decode("utf-8", "replace") for n in to_ndarray(outputs["class_name"]).ravel()]
        indexes = [int(i) for i in _numbers(outputs["class_index"], "int64", "int64_val")]
        return [
            _classification(
                {
                    "probabilities": probabilities[i * classes : (i + 1) * classes],
                    "class_index": indexes[i],
                    "class_name": names[i],
                }
            )
            for i in range(len(images))
        ]


def _numbers(tensor, dtype: str, field: str) -> list:
    """A numeric TensorProto's values: servers send them packed in tensor_content (as
    tf.make_tensor_proto does) or in the typed repeated field."""
    if tensor.tensor_content:
        import numpy as np

        return np.frombuffer(tensor.tensor_content, dtype=dtype).tolist()
    return list(getattr(tensor, field))


def _classification(prediction: Any) -> Classification:
    """The project's outputs (class_name, class_index, probabilities); any model with a
    single probability vector output also works (then the class is its index)."""
    if isinstance(prediction, dict):
        probabilities = prediction.get("probabilities") or []
        index = prediction.get("class_index")
        if index is None:
            index = max(range(len(probabilities)), key=probabilities.__getitem__)
        name = prediction.get("class_name", str(index))
    else:
        probabilities = list(prediction)
        index = max(range(len(probabilities)), key=probabilities.__getitem__)
        name = str(index)
    probability = probabilities[index] if index < len(probabilities) else float("nan")
    return Classification(name, probability, probabilities)


def image_files(
    paths: Iterable[str], extensions: tuple[str, ...] = IMAGE_EXTENSIONS
) -> Iterator[str]:
    """Files as given; folders walked for image files (sorted): the one folder walker of the
    client and the benches."""
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    if name.lower().endswith(extensions):
                        yield os.path.join(root, name)
        else:
            yield path


def _batches(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def predict_files(
    client: ServingClient | GrpcClient | Any, paths: Sequence[str], batch_size: int, out=sys.stdout
) -> int:
    """Print `path<TAB>class<TAB>probability` per file; returns the number of failures.

    A batch that fails is retried file by file, so one unreadable file is reported alone.
    """
    failures = 0
    for batch in _batches(list(image_files(paths)), max(1, batch_size)):
        images = []
        for path in batch:
            with open(path, "rb") as f:
                images.append(f.read())
        try:
            results: list[Classification | Exception] = list(client.classify_images(images))
        except ServingHTTPError as exc:
            if len(batch) == 1 or exc.status_code >= 500:
                results = [exc] * len(batch)
            else:
                results = []
                for image in images:
                    try:
                        results.extend(client.classify_images([image]))
                    except ServingHTTPError as single:
                        results.append(single)
        for path, result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                failures += 1
                print(f"{path}\tERROR\t{result}", file=sys.stderr)
            else:
                print(f"{path}\t{result.class_name}\t{result.probability:.4f}", file=out)
    return failures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serving.client", description="Query a TF Serving REST endpoint."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (
        ("predict", "classify image files or folders, one line per file"),
        ("status", "print the model's version status"),
        ("metadata", "print the model's signature metadata"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("--url", default=os.environ.get("TF_SERVING_URL", DEFAULT_URL))
        command.add_argument("--model", required=True)
        which = command.add_mutually_exclusive_group()
        which.add_argument("--version", type=int)
        which.add_argument("--label")
        command.add_argument("--timeout", type=float, default=120.0)
        if name == "predict":
            command.add_argument("--batch-size", type=int, default=8)
            command.add_argument(
                "--grpc", metavar="HOST:PORT", help="send through gRPC Predict instead of REST"
            )
            command.add_argument(
                "--tflite", metavar="FILE", help="classify with this TFLite model, no server"
            )
            command.add_argument("paths", nargs="+", metavar="PATH")
    args = parser.parse_args(argv)
    if getattr(args, "tflite", None):
        from serving.tflite_client import TFLiteClient

        return 1 if predict_files(TFLiteClient(args.tflite), args.paths, args.batch_size) else 0
    if getattr(args, "grpc", None):
        with GrpcClient(args.grpc, args.model, args.version, args.label, args.timeout) as client:
            return 1 if predict_files(client, args.paths, args.batch_size) else 0
    with ServingClient(args.url, args.model, args.version, args.label, args.timeout) as client:
        try:
            if args.command == "predict":
                return 1 if predict_files(client, args.paths, args.batch_size) else 0
            answer = client.status() if args.command == "status" else client.metadata()
        except (ServingHTTPError, httpx.HTTPError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(json.dumps(answer, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
