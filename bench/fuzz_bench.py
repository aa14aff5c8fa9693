"""Fuzz the server's front ends with hypothesis: REST (handler and JSON codec) and gRPC.

One set of strategies and one driver per front end, used twice: bounded by
tests/serving/test_fuzz_*.py in `make test` (a few hundred inputs each, under a minute), and
at length by `make bench` (this module's main(), thousands, bench/results/fuzz.json + .md).

What is generated:
- REST: TF Serving's URL grammar and its near misses (unknown models, huge, negative and
  non-numeric versions, labels, path traversal, odd verbs and methods), JSON bodies of random
  shape (instances / inputs / examples / signature_name with any JSON inside: b64 objects,
  huge numbers, deep nesting, nulls), and byte mutations of a valid body (truncation,
  flipped bytes, inserted junk);
- gRPC: PredictRequest / ClassificationRequest / RegressionRequest / GetModelMetadataRequest /
  GetModelStatusRequest with random model specs (names, versions, labels, signatures) and
  random TensorProtos (every dtype, shapes with huge and negative dims or unknown rank,
  values of the wrong kind, empty and missing inputs), and byte mutations of valid requests
  sent raw.

The properties, checked on every input:
- no HTTP 5xx except TF Serving's own 501 (UNIMPLEMENTED); no gRPC INTERNAL / UNKNOWN /
  DATA_LOSS / UNAVAILABLE, except INTERNAL for bytes that are not the request message at all
  (gRPC's own answer when deserialization fails, in TF Serving's C++ server too);
- every REST error is TF Serving's JSON `{"error": ...}` (no exception escapes as a bare 500);
- after the run: the server's RSS grew by less than RSS_LIMIT_MB and a good request answers.

    python -m bench.fuzz_bench [--rest N] [--grpc N]
"""

from __future__ import annotations

import argparse
import base64
import collections
import json
import os
import platform
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import quote

import grpc
import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.results import RESULTS, write_results

RSS_LIMIT_MB = 200
ALLOWED_HTTP_5XX = {501}  # UNIMPLEMENTED: TF Serving's own answer (e.g. no such API)
BAD_GRPC_CODES = {"INTERNAL", "UNKNOWN", "DATA_LOSS", "UNAVAILABLE"}
INPUT_KEYS = ("image_bytes", "examples", "inputs", "x", "")
SIGNATURES = (
    "",
    "serving_default",
    "classify",
    "serving_tf_example",
    "nope",
    "__saved_model_init_op",
)
VERBS = (":predict", ":classify", ":regress", "/metadata", "", ":PREDICT", ":explain", "/")
METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD")


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Tally:
    """What a fuzz run tried and what broke a property."""

    inputs: int = 0
    statuses: collections.Counter = field(default_factory=collections.Counter)
    violations: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "inputs": self.inputs,
            "statuses": dict(sorted(self.statuses.items())),
            "violations": self.violations[:20],
        }


# ---- REST --------------------------------------------------------------------------------


def _b64(data: bytes) -> dict:
    return {"b64": base64.b64encode(data).decode()}


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.binary(max_size=64).map(_b64),
    st.fixed_dictionaries({"b64": st.text(max_size=12)}),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(INPUT_KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=24,
)
request_document = st.fixed_dictionaries(
    {},
    optional={
        "instances": json_value,
        "inputs": json_value,
        "examples": json_value,
        "context": json_value,
        "signature_name": st.sampled_from(SIGNATURES) | st.text(max_size=8) | json_leaf,
    },
)


def rest_paths(model: str) -> st.SearchStrategy[str]:
    name = st.sampled_from([model, "nope", "..", "%2e%2e", "a%2Fb", "", " ", "ü"]) | st.text(
        alphabet=st.characters(blacklist_categories=("Cs",)), max_size=8
    )
    selector = st.one_of(
        st.just(""),
        st.integers(min_value=-1, max_value=2**70).map(lambda v: f"/versions/{v}"),
        st.sampled_from(["/versions/", "/versions/x", "/labels/", "/labels/stable"]),
        st.text(max_size=8).map(lambda label: f"/labels/{quote(label, safe='%')}"),
    )
    return st.builds(
        lambda n, s, v: f"/v1/models/{quote(n, safe='%')}{s}{v}",
        name,
        selector,
        st.sampled_from(VERBS),
    ) | st.sampled_from(["/", "/v1", "/v1/models", "/v2/models/x:predict", "/v1/models/:predict"])


def mutate(data: bytes, operations: list[tuple[int, int, int]]) -> bytes:
    """Apply (kind, position, value) edits: 0 truncate, 1 replace a byte, 2 insert a byte."""
    out = bytearray(data)
    for kind, position, value in operations:
        if not out:
            break
        index = position % len(out)
        if kind == 0:
            del out[index:]
        elif kind == 1:
            out[index] = value
        else:
            out.insert(index, value)
    return bytes(out)


edits = st.lists(  # no edit at all sometimes: the valid request must keep answering 200
    st.tuples(st.integers(0, 2), st.integers(0, 2**16), st.integers(0, 255)), max_size=6
)


def good_rest_body(image: bytes) -> bytes:
    return json.dumps({"instances": [_b64(image)]}).encode()


def check_rest_answer(tally: Tally, method: str, path: str, response: httpx.Response) -> None:
    tally.inputs += 1
    tally.statuses[str(response.status_code)] += 1
    where = f"{method} {path} -> {response.status_code}"
    if response.status_code >= 500 and response.status_code not in ALLOWED_HTTP_5XX:
        tally.violations.append(f"{where}: {response.text[:300]}")
    if response.status_code != 200 and method != "HEAD":
        try:
            document = response.json()
        except ValueError:
            tally.violations.append(f"{where}: not JSON: {response.text[:200]!r}")
            return
        if not isinstance(document, dict) or not isinstance(document.get("error"), str):
            tally.violations.append(f"{where}: not TF Serving's error form: {response.text[:200]}")


def fuzz_rest(url: str, model: str, image: bytes, examples: int, seed: int = 0) -> Tally:
    """Send `examples` generated REST requests per strategy; tally statuses and violations."""
    tally = Tally()
    client = httpx.Client(base_url=url, timeout=60)
    good = good_rest_body(image)
    options = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed == 0,
        suppress_health_check=list(HealthCheck),
    )

    @options
    @given(method=st.sampled_from(METHODS), path=rest_paths(model), document=request_document)
    def documents(method, path, document):
        body = json.dumps(document).encode()
        response = client.request(method, path, content=body if method != "GET" else None)
        check_rest_answer(tally, method, path, response)

    @options
    @given(
        verb=st.sampled_from([":predict", ":classify", ":regress"]),
        operations=edits,
        gzip=st.booleans(),
    )
    def mutated(verb, operations, gzip):
        path = f"/v1/models/{model}{verb}"
        body = mutate(good, operations)
        headers = {"content-encoding": "gzip"} if gzip else {}
        response = client.post(path, content=body, headers=headers)
        check_rest_answer(tally, "POST", path, response)

    try:
        documents()
        mutated()
    finally:
        client.close()
    return tally


# ---- gRPC --------------------------------------------------------------------------------


def _tensor_protos():
    from tensorflow.core.framework import tensor_pb2, types_pb2

    dims = st.lists(
        st.sampled_from([-1, 0, 1, 2, 3, 2**31, 2**40, 2**62]) | st.integers(-3, 5), max_size=4
    )

    def build(dtype, shape, unknown_rank, floats, ints, strings, content):
        proto = tensor_pb2.TensorProto(dtype=dtype)
        if unknown_rank:
            proto.tensor_shape.unknown_rank = True
        for size in shape:
            proto.tensor_shape.dim.add(size=size)
        proto.float_val.extend(floats)
        proto.int_val.extend(ints)
        proto.string_val.extend(strings)
        if content is not None:
            proto.tensor_content = content
        return proto

    return st.builds(
        build,
        st.sampled_from(sorted(types_pb2.DataType.values())) | st.integers(-2, 400),
        dims,
        st.booleans(),
        st.lists(st.floats(width=32), max_size=4),
        st.lists(st.integers(-(2**31), 2**31 - 1), max_size=4),
        st.lists(st.binary(max_size=32), max_size=4),
        st.none() | st.binary(max_size=64),
    )


def _model_spec(model: str):
    from tensorflow_serving.apis import model_pb2

    def build(name, choice, version, label, signature):
        spec = model_pb2.ModelSpec(name=name, signature_name=signature)
        if choice == 1:
            spec.version.value = version
        elif choice == 2:
            spec.version_label = label
        return spec

    return st.builds(
        build,
        st.sampled_from([model, model, "nope", "", ".."]) | st.text(max_size=6),
        st.integers(0, 2),
        st.integers(-(2**63), 2**63 - 1) | st.sampled_from([0, 1, 2]),
        st.sampled_from(["stable", "", "nope"]) | st.text(max_size=6),
        st.sampled_from(SIGNATURES) | st.text(max_size=6),
    )


def _examples():
    from tensorflow.core.example import example_pb2, feature_pb2

    def build(values):
        example = example_pb2.Example()
        for key, (kind, payload) in values.items():
            feature = example.features.feature[key]
            if kind == 0:
                feature.bytes_list.value.extend(payload)
            elif kind == 1:
                feature.float_list.value.extend(float(len(p)) for p in payload)
            elif kind == 2:
                feature.int64_list.value.extend(len(p) for p in payload)
        return example

    del feature_pb2
    keys = st.sampled_from(["image_raw", "label", "image_format", "x"]) | st.text(max_size=4)
    return st.builds(
        build,
        st.dictionaries(
            keys, st.tuples(st.integers(0, 3), st.lists(st.binary(max_size=48), max_size=3)),
            max_size=3,
        ),
    )  # fmt: skip


def grpc_requests(model: str):
    """(method, request) pairs of every PredictionService / ModelService method."""
    from tensorflow_serving.apis import (
        classification_pb2,
        get_model_metadata_pb2,
        get_model_status_pb2,
        predict_pb2,
        regression_pb2,
    )

    spec = _model_spec(model)
    tensors = st.dictionaries(st.sampled_from(INPUT_KEYS), _tensor_protos(), max_size=3)

    def predict(s, inputs, output_filter, has_spec):
        request = predict_pb2.PredictRequest(output_filter=output_filter)
        if has_spec:
            request.model_spec.CopyFrom(s)
        for key, tensor in inputs.items():
            request.inputs[key].CopyFrom(tensor)
        return ("Predict", request)

    def on_examples(kind, s, examples, context, with_context):
        request = (
            classification_pb2.ClassificationRequest()
            if kind == "Classify"
            else regression_pb2.RegressionRequest()
        )
        request.model_spec.CopyFrom(s)
        if with_context is None:
            pass  # no input at all
        elif with_context:
            request.input.example_list_with_context.context.CopyFrom(context)
            request.input.example_list_with_context.examples.extend(examples)
        else:
            request.input.example_list.examples.extend(examples)
        return (kind, request)

    def metadata(s, fields):
        return (
            "GetModelMetadata",
            get_model_metadata_pb2.GetModelMetadataRequest(model_spec=s, metadata_field=fields),
        )

    def status(s):
        return ("GetModelStatus", get_model_status_pb2.GetModelStatusRequest(model_spec=s))

    output_filter = st.lists(
        st.sampled_from(["probabilities", "classes", "scores", "x"]), max_size=3
    )
    return st.one_of(
        st.builds(predict, spec, tensors, output_filter, st.booleans()),
        st.builds(
            on_examples,
            st.sampled_from(["Classify", "Regress"]),
            spec,
            st.lists(_examples(), max_size=4),
            _examples(),
            st.none() | st.booleans(),
        ),
        st.builds(
            metadata, spec, st.lists(st.sampled_from(["signature_def", "", "x"]), max_size=2)
        ),
        st.builds(status, spec),
    )


SERVICES = {
    "Predict": "tensorflow.serving.PredictionService",
    "Classify": "tensorflow.serving.PredictionService",
    "Regress": "tensorflow.serving.PredictionService",
    "GetModelMetadata": "tensorflow.serving.PredictionService",
    "GetModelStatus": "tensorflow.serving.ModelService",
}


def good_predict_request(model: str, image: bytes):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["image_bytes"].CopyFrom(tf.make_tensor_proto([image]))
    return request


def check_grpc_answer(tally: Tally, method: str, code: str, details: str, parses: bool) -> None:
    tally.inputs += 1
    tally.statuses[code] += 1
    if code in BAD_GRPC_CODES and not (code == "INTERNAL" and not parses):
        tally.violations.append(f"{method} -> {code}: {details[:300]}")


def fuzz_grpc(target: str, model: str, image: bytes, examples: int, seed: int = 0) -> Tally:
    """Send `examples` generated requests and `examples` mutated ones over one channel."""
    from tensorflow_serving.apis import predict_pb2

    tally = Tally()
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", -1)])
    raw = {
        method: channel.unary_unary(f"/{service}/{method}")  # bytes in, bytes out
        for method, service in SERVICES.items()
    }
    good = good_predict_request(model, image).SerializeToString()
    options = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=seed == 0,
        suppress_health_check=list(HealthCheck),
    )

    def call(method: str, payload: bytes, parses: bool) -> None:
        try:
            raw[method](payload, timeout=60)
            code, details = "OK", ""
        except grpc.RpcError as exc:
            code, details = exc.code().name, exc.details() or ""
        check_grpc_answer(tally, method, code, details, parses)

    @options
    @given(pair=grpc_requests(model))
    def generated(pair):
        method, request = pair
        call(method, request.SerializeToString(), True)

    @options
    @given(operations=edits)
    def mutated(operations):
        payload = mutate(good, operations)
        try:
            predict_pb2.PredictRequest.FromString(payload)
            parses = True
        except Exception:
            parses = False
        call("Predict", payload, parses)

    try:
        generated()
        mutated()
    finally:
        channel.close()
    return tally


# ---- the bench ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_bench")
    parser.add_argument("--rest", type=int, default=3000, help="REST inputs per strategy")
    parser.add_argument("--grpc", type=int, default=3000, help="gRPC inputs per strategy")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from serving import process
    from tools import samples

    scratch = tempfile.mkdtemp(prefix="fuzz-bench-")
    export = samples.export_untrained_model(os.path.join(scratch, "export"), image_size=32)
    model = "image_classifier"
    os.makedirs(os.path.join(scratch, "serving", model))
    os.rename(export, os.path.join(scratch, "serving", model, "1"))
    server = process.ServerProcess(
        os.path.join(scratch, "serving"), os.path.join(scratch, "server.log")
    )
    image = samples.image_bytes(40, 40)
    try:
        server.wait_available(model)
        rss_before = rss_mb(server.process.pid)
        started = time.perf_counter()
        rest = fuzz_rest(server.url, model, image, args.rest, seed=1)
        grpc_tally = fuzz_grpc(server.grpc_target, model, image, args.grpc, seed=1)
        seconds = time.perf_counter() - started
        rss_after = rss_mb(server.process.pid)
        good = httpx.post(
            f"{server.url}/v1/models/{model}:predict",
            content=good_rest_body(image),
            timeout=60,
        )
        alive = server.process.poll() is None and good.status_code == 200
    finally:
        server.stop()
    data = {
        "rest": rest.as_dict(),
        "grpc": grpc_tally.as_dict(),
        "seconds": round(seconds, 1),
        "rss_mb_before": round(rss_before),
        "rss_mb_after": round(rss_after),
        "good_request_after": alive,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared; other sessions ran)",
    }
    markdown = (
        "## Fuzz (python -m bench.fuzz_bench)\n\n"
        "| front end | inputs | statuses | property violations |\n|---|---|---|---|\n"
        f"| REST | {rest.inputs} | {data['rest']['statuses']} | {len(rest.violations)} |\n"
        f"| gRPC | {grpc_tally.inputs} | {data['grpc']['statuses']} | "
        f"{len(grpc_tally.violations)} |\n\n"
        f"{seconds:.0f} s; server RSS {rss_before:.0f} -> {rss_after:.0f} MB "
        f"(limit +{RSS_LIMIT_MB} MB); a good request answered afterwards: {alive}. "
        f"{data['machine']}.\n"
    )
    write_results(RESULTS, "fuzz", data, markdown)
    return data


if __name__ == "__main__":
    main()
