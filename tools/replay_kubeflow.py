"""Replay a compiled Vertex AI PipelineJob spec here, task by task, as Vertex's launcher would.

`make compile-kubeflow` writes a spec that has never run anywhere until it reaches Vertex.
This tool runs it on this machine, without Docker and without Vertex:

- the "image" is built the way the Dockerfile builds it: its COPY lines copy the checkout's
  files into an image folder (standing for the image's WORKDIR, /pipeline), its `uv sync`
  lines build that folder's .venv from uv.lock, its ENV lines are each task's environment
  (with /pipeline read as the image folder). Each task's working directory is that folder,
  outside the checkout, and its HOME a fresh empty folder, so what runs is what the image and
  the spec ship (TFX's module wheels staged under the pipeline root at compile time);
- the tasks run in dependency order, one at a time; each task's container command and
  arguments run with `{{$}}` replaced by the executor input JSON filled from the spec:
  parameters (constants and the run's parameters, in both the `parameterValues` and the
  legacy `parameters` form, as TFX's own test data has them), input artifacts (the upstream
  tasks' outputs as their executors reported them in `outputs.outputFile`), output artifacts
  (URIs under the pipeline root: `<root>/replay/<job>/<task>_<n>/<key>`, as Vertex's
  `<root>/<project>/<job>/<task>_<id>/<key>`) and the output file;
- a task's `lifecycle.preCacheCheck` hook (ImageExampleGen's driver: the input fingerprint)
  runs before its executor, with the same executor input, as Vertex does;
- resolver tasks (the latest blessed model) are answered from this tool's own record of the
  artifacts that earlier replays produced (`record.json`, the stand-in for Vertex ML
  Metadata): each `outputArtifactQueries` filter is evaluated over it, newest match first.

What it is not: no container image is built or run (the image folder's .venv is hardlinked
from uv's cache and compiles no bytecode ahead, unlike the Dockerfile's UV_LINK_MODE=copy and
UV_COMPILE_BYTECODE=1), no task is cached or retried, independent tasks do not run in
parallel, and the record is not ML Metadata (docs/vertex.md says how far this is from Vertex).

    make replay-kubeflow OUTPUT=<the compile's OUTPUT> [IMAGES=<another snapshot>]
    python -m tools.replay_kubeflow [SPEC] [--state DIR] [--images DIR] [--parameter k=v]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping

from pipeline.configs import REPO_ROOT

DOCKERFILE = os.path.join(REPO_ROOT, "Dockerfile")
EXECUTOR_INPUT_PLACEHOLDER = "{{$}}"
RECORD_FILE = "record.json"
STATE_DIR = "replay"  # under OUTPUT
ARTIFACT_NAME_PREFIX = "replay/metadataStores/default/artifacts/"
# The environment a container starts with before the image's ENV lines.
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host variables a task keeps (none of them selects code: no PYTHONPATH, no VIRTUAL_ENV).
PASSED_ENV = ("TZ", "LANG", "LC_ALL", "TMPDIR", "PYTHONWARNINGS")


class ReplayError(RuntimeError):
    """The spec cannot be replayed, or one of its tasks failed; the message says which."""


# --- the image -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Image:
    """The Dockerfile's final stage, as far as a replay needs it."""

    workdir: str  # the image's WORKDIR (/pipeline)
    # In the Dockerfile's order: ("copy", sources relative to the checkout) and
    # ("sync", the `uv sync ...` words of a RUN line).
    steps: list[tuple[str, list[str]]]
    env: list[tuple[str, str]]  # ENV, in order

    @classmethod
    def read(cls, dockerfile: str = DOCKERFILE) -> Image:
        with open(dockerfile) as f:
            lines = f.read().replace("\\\n", " ").splitlines()
        stages = [i for i, line in enumerate(lines) if line.strip().upper().startswith("FROM ")]
        workdir, steps, env = "/", [], []
        for line in lines[stages[-1] + 1 :] if stages else lines:
            words = shlex.split(line, comments=True)
            if not words:
                continue
            op, rest = words[0].upper(), words[1:]
            if op == "WORKDIR":
                workdir = rest[0]
            elif op == "COPY" and not any(w.startswith("--from") for w in rest):
                if rest[-1] not in (".", "./") and not rest[-1].startswith("./"):
                    raise ReplayError(f"{dockerfile}: COPY to {rest[-1]} (not WORKDIR)")
                steps.append(("copy", rest[:-1]))
            elif op == "ENV":
                env.extend(tuple(pair.split("=", 1)) for pair in rest)
            elif op == "RUN" and rest[:2] == ["uv", "sync"]:
                steps.append(("sync", rest))
        if not any(kind == "sync" for kind, _ in steps):
            raise ReplayError(f"{dockerfile}: no `uv sync` line in its last stage")
        return cls(workdir, steps, env)


def host_uv() -> list[str]:
    """uv as `make setup` finds it: on PATH, else the module of the interpreter that
    built .venv (tools/setup_venv.sh installs it there)."""
    found = shutil.which("uv")
    if found:
        return [found]
    base = getattr(sys, "_base_executable", sys.executable)
    for python in (base, os.path.realpath(base)):
        if subprocess.run([python, "-m", "uv", "--version"], capture_output=True).returncode == 0:
            return [python, "-m", "uv"]
    raise ReplayError("uv not found: run `make setup` (it installs uv), or put uv on PATH")


def build_image(image_dir: str, image: Image | None = None, python: str | None = None) -> str:
    """The image folder (the image's WORKDIR) with its .venv, as the Dockerfile builds them:
    its COPY and `uv sync` lines in order. The checkout's files are copied afresh every time
    (the replay runs the checkout as it is now); `uv sync` is quick when nothing changed."""
    image = image or Image.read()
    python = python or os.path.realpath(getattr(sys, "_base_executable", sys.executable))
    os.makedirs(image_dir, exist_ok=True)
    env = {
        **os.environ,
        "UV_PROJECT_ENVIRONMENT": os.path.join(image_dir, ".venv"),
        # Not the Dockerfile's copy + bytecode: hardlinks from uv's cache take seconds.
        "UV_LINK_MODE": "hardlink",
        "UV_COMPILE_BYTECODE": "0",
    }
    env.pop("VIRTUAL_ENV", None)
    for kind, words in image.steps:
        if kind == "copy":
            for source in words:
                _copy(os.path.join(REPO_ROOT, source), os.path.join(image_dir, source))
            continue
        command = host_uv() + [_host_python(w, python) for w in words[1:]]
        result = subprocess.run(command, cwd=image_dir, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise ReplayError(
                f"building the image's venv: {shlex.join(command)} failed:\n"
                + result.stderr[-3000:]
            )
    return image_dir


def _copy(source: str, target: str) -> None:
    if os.path.isdir(target):
        shutil.rmtree(target)
    if os.path.isdir(source):
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    else:
        shutil.copy2(source, target)


def _host_python(word: str, python: str) -> str:
    """The Dockerfile's interpreter path (/usr/local/bin/python3.10) -> this machine's."""
    return python if re.fullmatch(r"/usr/local/bin/python3(\.\d+)?", word) else word


def task_environment(image: Image, image_dir: str, home: str) -> dict[str, str]:
    """A container's environment: the image's ENV lines, /pipeline read as the image folder."""
    env = {key: os.environ[key] for key in PASSED_ENV if key in os.environ}
    env.update({"PATH": BASE_PATH, "HOME": home})
    for key, value in image.env:
        value = value.replace(image.workdir, image_dir)
        env[key] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
    return env


# --- the record (the stand-in for Vertex ML Metadata) ---------------------------------


class Record:
    """Every artifact the replays produced, newest last, in `<state>/record.json`."""

    def __init__(self, state_dir: str):
        self.path = os.path.join(state_dir, RECORD_FILE)
        self.data = {"artifacts": [], "next_id": 1, "replays": []}
        if os.path.exists(self.path):
            with open(self.path) as f:
                self.data = json.load(f)

    def new_name(self) -> str:
        name = f"{ARTIFACT_NAME_PREFIX}{self.data['next_id']}"
        self.data["next_id"] += 1
        return name

    def add(self, artifact: dict) -> None:
        self.data["artifacts"].append({**artifact, "state": "LIVE", "create_time": time.time()})
        self.save()

    def save(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.data, f, indent=1)
        os.replace(tmp, self.path)

    def query(self, query_filter: str) -> list[dict]:
        """The newest artifact matching an outputArtifactQueries filter ([] = none)."""
        clauses = [_clause(part) for part in query_filter.split(" AND ")]
        matches = [a for a in self.data["artifacts"] if all(c(a) for c in clauses)]
        return sorted(matches, key=lambda a: a["create_time"])[-1:]


def _clause(text: str):
    """One `lhs=rhs` clause of a Vertex ML Metadata filter, as the TFX compiler writes them."""
    lhs, sep, rhs = (part.strip() for part in text.partition("="))
    if not sep:
        raise ReplayError(f"resolver filter clause {text!r}: only `=` clauses are understood")
    value = rhs[1:-1] if rhs.startswith('"') and rhs.endswith('"') else rhs
    if lhs == "schema_title":
        return lambda a: a["schema_title"] == value
    if lhs == "state":
        return lambda a: a["state"] == value
    if lhs == "name":
        return lambda a: a["name"] == value
    match = re.fullmatch(r"metadata\.(\w+)\.(number|string)_value", lhs)
    if match:
        key, kind = match.groups()
        if kind == "number":
            return lambda a: (
                _is_number(a["metadata"].get(key)) and float(a["metadata"][key]) == float(value)
            )
        return lambda a: a["metadata"].get(key) == value
    raise ReplayError(f"resolver filter clause {text!r}: {lhs!r} is not understood")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def schema_title(artifact_type: Mapping) -> str:
    if "schemaTitle" in artifact_type:
        return artifact_type["schemaTitle"]
    match = re.search(r"^title:\s*(\S+)", artifact_type.get("instanceSchema", ""), re.MULTILINE)
    return match.group(1) if match else "system.Artifact"


# --- the spec ---------------------------------------------------------------------------


def task_order(tasks: Mapping[str, dict]) -> list[str]:
    """Tasks in dependency order (dependentTasks and artifact producers), ties by name."""
    needs = {}
    for name, task in tasks.items():
        upstream = set(task.get("dependentTasks", []))
        for spec in task.get("inputs", {}).get("artifacts", {}).values():
            if "taskOutputArtifact" in spec:
                upstream.add(spec["taskOutputArtifact"]["producerTask"])
        needs[name] = upstream
    order, done = [], set()
    while len(order) < len(tasks):
        ready = sorted(n for n in tasks if n not in done and needs[n] <= done)
        if not ready:
            raise ReplayError(f"the spec's tasks have a cycle: {sorted(set(tasks) - done)}")
        order.append(ready[0])
        done.add(ready[0])
    return order


def _parameter_value(spec: Mapping, run_parameters: Mapping) -> object:
    if "componentInputParameter" in spec:
        return run_parameters[spec["componentInputParameter"]]
    constant = spec.get("runtimeValue", {}).get("constantValue", {})
    if "stringValue" in constant:
        return constant["stringValue"]
    if "intValue" in constant:
        return int(constant["intValue"])
    if "doubleValue" in constant:
        return float(constant["doubleValue"])
    raise ReplayError(f"parameter spec {spec} is not understood")


def _legacy_value(value: object) -> dict:
    """The deprecated `parameters` form (pipeline_spec's Value) the TFX entrypoint reads
    when the spec has no inputs spec (schemaVersion 2.0.0)."""
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    return {"stringValue": str(value)}


def run_parameters(spec: Mapping, overrides: Mapping[str, str]) -> dict:
    runtime = spec.get("runtimeConfig", {})
    values = dict(runtime.get("parameterValues", {}))
    for key, value in runtime.get("parameters", {}).items():
        values[key] = next(iter(value.values()))
    values.update(overrides)
    declared = spec["pipelineSpec"]["root"].get("inputDefinitions", {}).get("parameters", {})
    missing = sorted(set(declared) - set(values))
    if missing:
        raise ReplayError(f"run parameters without a value: {missing} (pass --parameter k=v)")
    return values


# --- one replay -------------------------------------------------------------------------


@dataclasses.dataclass
class TaskResult:
    name: str
    kind: str  # container | resolver
    seconds: float
    executor_input: dict | None
    outputs: dict  # key -> [artifact dicts]


class Replay:
    def __init__(self, spec_path: str, state_dir: str, parameters: Mapping[str, str] = ()):
        with open(spec_path) as f:
            self.spec = json.load(f)
        self.state_dir = os.path.abspath(state_dir)
        os.makedirs(self.state_dir, exist_ok=True)
        self.pipeline = self.spec["pipelineSpec"]
        self.root = self.spec["runtimeConfig"]["gcsOutputDirectory"]
        if "://" in self.root:
            raise ReplayError(
                f"pipeline root {self.root}: the replay runs on this machine's file system; "
                "compile with PIPELINE_ROOT=<a local folder> to replay"
            )
        self.parameters = run_parameters(self.spec, dict(parameters))
        self.record = Record(self.state_dir)
        self.job = f"replay-{len(self.record.data['replays']) + 1}"
        self.image = Image.read()
        self.image_dir = os.path.join(self.state_dir, "image")
        self.logs = os.path.join(self.state_dir, "logs", self.job)
        self.results: dict[str, TaskResult] = {}

    def run(self, log=print) -> list[TaskResult]:
        start = time.monotonic()
        build_image(self.image_dir, self.image)
        log(f"[{self.job}] image folder {self.image_dir}: {time.monotonic() - start:.1f} s")
        os.makedirs(self.logs, exist_ok=True)
        tasks = self.pipeline["root"]["dag"]["tasks"]
        for number, name in enumerate(task_order(tasks), start=1):
            result = self._run_task(number, name, tasks[name])
            self.results[name] = result
            log(f"[{self.job}] {name}: {result.kind}, {result.seconds:.1f} s")
        summary = {
            "job": self.job,
            "tasks": [
                {"name": r.name, "kind": r.kind, "seconds": round(r.seconds, 1)}
                for r in self.results.values()
            ],
            "seconds": round(time.monotonic() - start, 1),
        }
        self.record.data["replays"].append(summary)
        self.record.save()
        with open(os.path.join(self.state_dir, f"{self.job}.json"), "w") as f:
            json.dump(
                {**summary, "results": [dataclasses.asdict(r) for r in self.results.values()]},
                f,
                indent=1,
            )
        return list(self.results.values())

    def _component(self, task: Mapping) -> dict:
        return self.pipeline["components"][task["componentRef"]["name"]]

    def _inputs(self, task: Mapping, component: Mapping) -> dict[str, list[dict]]:
        """Input artifacts: what the producing tasks' executors reported, typed as declared."""
        result = {}
        definitions = component.get("inputDefinitions", {}).get("artifacts", {})
        for key, spec in task.get("inputs", {}).get("artifacts", {}).items():
            source = spec["taskOutputArtifact"]
            produced = self.results[source["producerTask"]].outputs.get(
                source["outputArtifactKey"], []
            )
            artifact_type = definitions[key]["artifactType"]
            result[key] = [
                {
                    "name": a["name"],
                    "uri": a["uri"],
                    "metadata": a["metadata"],
                    "type": artifact_type,
                }
                for a in produced
            ]
        return result

    def _run_task(self, number: int, name: str, task: Mapping) -> TaskResult:
        component = self._component(task)
        executor = self.pipeline["deploymentSpec"]["executors"][component["executorLabel"]]
        start = time.monotonic()
        if "resolver" in executor:
            outputs = self._resolve(task, component, executor["resolver"])
            return TaskResult(name, "resolver", time.monotonic() - start, None, outputs)
        if "container" not in executor:
            raise ReplayError(f"task {name}: executor {list(executor)} cannot be replayed")
        container = executor["container"]
        task_dir = os.path.join(self.root, "replay", self.job, f"{name}_{number}")
        output_file = os.path.join(task_dir, "executor_output.json")
        outputs = {}
        for key, definition in component.get("outputDefinitions", {}).get("artifacts", {}).items():
            uri = os.path.join(task_dir, key)
            # A bucket needs no folder; executors writing `<uri>/<file>` here need one.
            os.makedirs(uri, exist_ok=True)
            outputs[key] = {
                "artifacts": [
                    {"name": self.record.new_name(), "uri": uri, "type": definition["artifactType"]}
                ]
            }
        parameters = {
            key: _parameter_value(spec, self.parameters)
            for key, spec in task.get("inputs", {}).get("parameters", {}).items()
        }
        parameters = {key: self._in_image(value) for key, value in parameters.items()}
        executor_input = {
            "inputs": {
                "parameterValues": parameters,
                "parameters": {key: _legacy_value(v) for key, v in parameters.items()},
                "artifacts": {
                    key: {"artifacts": artifacts}
                    for key, artifacts in self._inputs(task, component).items()
                },
            },
            "outputs": {"artifacts": outputs, "outputFile": output_file},
        }
        home = tempfile.mkdtemp(prefix=f"{name}-home-", dir=self.state_dir)
        env = task_environment(self.image, self.image_dir, home)
        try:
            hook = container.get("lifecycle", {}).get("preCacheCheck")
            if hook:
                self._exec(f"{name}.driver", hook["command"], hook["args"], executor_input, env)
            self._exec(name, container["command"], container["args"], executor_input, env)
        finally:
            shutil.rmtree(home, ignore_errors=True)
        with open(output_file) as f:
            reported = json.load(f).get("artifacts", {})
        produced = {}
        for key, declared in outputs.items():
            [mine] = declared["artifacts"]
            theirs = (reported.get(key, {}).get("artifacts") or [{}])[0]
            artifact = {
                "name": mine["name"],
                "uri": theirs.get("uri", mine["uri"]),
                "metadata": theirs.get("metadata", {}),
                "schema_title": schema_title(mine["type"]),
                "job": self.job,
                "task": name,
            }
            self.record.add(artifact)
            produced[key] = [artifact]
        return TaskResult(name, "container", time.monotonic() - start, executor_input, produced)

    def _in_image(self, value: object) -> object:
        """A path inside the image (/pipeline/...) is the image folder's here."""
        prefix = self.image.workdir.rstrip("/") + "/"
        if isinstance(value, str) and value.startswith(prefix):
            return os.path.join(self.image_dir, value[len(prefix) :])
        return value

    def _exec(self, label: str, command: list, args: list, executor_input: dict, env: dict) -> None:
        filled = [
            json.dumps(executor_input) if arg == EXECUTOR_INPUT_PLACEHOLDER else arg
            for arg in [*command, *args]
        ]
        left = [arg for arg in filled if "{{$" in arg]
        if left:
            raise ReplayError(f"task {label}: placeholders this replay does not fill: {left}")
        # `python` on the image's PATH: the image folder's .venv.
        executable = shutil.which(filled[0], path=env["PATH"])
        if executable is None:
            raise ReplayError(f"task {label}: {filled[0]} is not on the image's PATH")
        log_path = os.path.join(self.logs, f"{label}.log")
        with open(log_path, "w") as log:
            code = subprocess.run(
                [executable, *filled[1:]], cwd=self.image_dir, env=env, stdout=log, stderr=log
            ).returncode
        if code != 0:
            with open(log_path) as f:
                tail = f.read()[-4000:]
            raise ReplayError(f"task {label} exited with {code} (log: {log_path}):\n{tail}")

    def _resolve(self, task: Mapping, component: Mapping, resolver: Mapping) -> dict:
        """Each output's query over the record; placeholders filled from the input artifacts."""
        inputs = self._inputs(task, component)
        outputs = {}
        for key, query in resolver["outputArtifactQueries"].items():
            text, resolvable = query["filter"], True

            def fill(match, inputs=inputs):
                nonlocal resolvable
                artifacts = inputs.get(match.group(1), [])
                if not artifacts or match.group(2) not in artifacts[0]["metadata"]:
                    resolvable = False
                    return ""
                return str(artifacts[0]["metadata"][match.group(2)])

            text = re.sub(
                r"\{\{\$\.inputs\.artifacts\['(\w+)'\]\.metadata\['(\w+)'\]\}\}", fill, text
            )
            if "{{$" in text:
                raise ReplayError(f"resolver {task['taskInfo']['name']}: filter {text!r}")
            outputs[key] = self.record.query(text) if resolvable else []
        return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "spec", nargs="?", help="the PipelineJob JSON (default: make compile-kubeflow's, OUTPUT's)"
    )
    parser.add_argument("--state", help="image folder, logs and record (default: OUTPUT/replay)")
    parser.add_argument("--images", help="the run's photo folder (the spec's `images` parameter)")
    parser.add_argument("--parameter", action="append", default=[], help="run parameter k=v")
    args = parser.parse_args(argv)
    from pipeline import kubeflow_v2_runner  # imports TFX: only when run
    from pipeline.configs import PipelineConfig

    config = PipelineConfig.from_env()
    overrides = dict(p.split("=", 1) for p in args.parameter)
    if args.images:
        overrides[kubeflow_v2_runner.IMAGES_PARAMETER] = os.path.abspath(args.images)
    try:
        replay = Replay(
            args.spec or kubeflow_v2_runner.spec_path(config),
            args.state or os.path.join(config.output, STATE_DIR),
            overrides,
        )
        results = replay.run(log=lambda line: print(line, flush=True))
    except (ReplayError, OSError) as exc:
        print(f"\nERROR: {exc}", file=sys.stderr)
        return 1
    total = sum(r.seconds for r in results)
    print(
        f"REPLAYED {replay.job}: {len(results)} tasks, {total:.1f} s; state in {replay.state_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
