"""Fuzzing TF Serving's REST front end: the JSON codec in-process, the HTTP handler over HTTP.

Bounded here (a few hundred inputs, seconds); `make bench` runs the same strategies at length
(bench/fuzz_bench.py, bench/results/fuzz.*). Properties: the codec raises only ServingError
(a status with a canonical code, never a stray exception); the server answers every request
with TF Serving's JSON error form and no 5xx but TF Serving's own 501, its RSS grows by less
than 200 MB, and a good request answers afterwards.
"""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import fuzz_bench
from serving import codec, errors
from serving.savedmodel import TensorSpec
from tests.serving.helpers import Target, image

pytest_plugins = ["tests.serving.helpers"]

REST_EXAMPLES = 100  # per strategy: 200 requests
CODEC_EXAMPLES = 300
SIGNATURE_INPUTS = (
    {"image_bytes": TensorSpec("DT_STRING", (-1,))},
    {"x": TensorSpec("DT_FLOAT", (-1, 3)), "n": TensorSpec("DT_INT64", (-1,))},
    {"s": TensorSpec("DT_INT8", None), "b": TensorSpec("DT_BOOL", (2, -1))},
)
codec_tries = {"inputs": 0, "accepted": 0}


@settings(
    max_examples=CODEC_EXAMPLES, deadline=None, database=None, derandomize=True,
    suppress_health_check=list(HealthCheck),
)  # fmt: skip
@given(
    document=fuzz_bench.request_document,
    specs=st.sampled_from(SIGNATURE_INPUTS),
    raw=st.booleans(),
    operations=fuzz_bench.edits,
)
def test_codec_raises_only_serving_errors(document, specs, raw, operations):
    body = json.dumps(document).encode()
    if raw:
        body = fuzz_bench.mutate(body, operations)
    codec_tries["inputs"] += 1
    try:
        parsed = codec.parse_json(body)
        codec.signature_name(parsed)
        codec.parse_predict(parsed, specs)  # the instance limit is prediction.check_batch's
        codec_tries["accepted"] += 1
    except errors.ServingError as exc:
        assert exc.code in (errors.Code.INVALID_ARGUMENT, errors.Code.NOT_FOUND), exc.message
    try:
        codec.parse_classify(codec.parse_json(body))
    except errors.ServingError as exc:
        assert exc.code is errors.Code.INVALID_ARGUMENT, exc.message


@pytest.fixture(scope="module")
def local_target(serving_target: Target) -> Target:
    if not serving_target.local:
        pytest.skip("needs this server's process (RSS) and files")
    return serving_target


def test_rest_fuzz_keeps_the_server_answering(local_target: Target):
    pid = local_target.server.process.pid
    before = fuzz_bench.rss_mb(pid)
    tally = fuzz_bench.fuzz_rest(local_target.url, local_target.model, image(), REST_EXAMPLES)
    assert tally.violations == [], tally.violations[:5]
    assert tally.inputs == 2 * REST_EXAMPLES
    assert len(tally.statuses) >= 3, tally.statuses  # the inputs reached several answers
    assert local_target.server.process.poll() is None
    assert fuzz_bench.rss_mb(pid) - before < fuzz_bench.RSS_LIMIT_MB
    answer = httpx.post(
        f"{local_target.url}/v1/models/{local_target.model}:predict",
        content=fuzz_bench.good_rest_body(image()),
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    assert len(answer.json()["predictions"]) == 1
    print(f"REST fuzz: {tally.as_dict()}; codec: {codec_tries}")
