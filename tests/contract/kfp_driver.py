"""A small model of what the KFP v2 backend does with a compiled pipeline before a pod runs.

``kfp.local`` skips the API server's parameter checks and the driver that turns each task into a
pod spec patch, so a pipeline can pass every local test and still be refused, or silently lose
its GPU, tolerations or node selector, on a cluster. This module replays those rules on the
compiled YAML. Each rule cites kubeflow/pipelines master 7b70c7b95f6832772efd6fd0029a4024491a0f44;
paths are relative to ``backend/src/`` (driver files to ``backend/src/v2/driver/``).

Usage::

    plans = resolve_file("pipelines/release.yaml", {"model_id": "org/model"})
    plan = plans["condition-branches-1/condition-2/deploy-model"]  # path of task keys
    assert not plan.errors and plan.limits["nvidia.com/gpu"] == "1"

Besides parameters, a plan carries the emptyDir mounts (``k8s.go``) and the Argo retry strategy
a ``retryPolicy`` compiles to (``v2/compiler/argocompiler/container.go``); platform settings the
model does not replay are reported as warnings, so a new kind cannot pass unexamined.

Every branch is resolved as if its condition held. Task outputs, loop items that are only known
at run time and CEL ``parameterExpressionSelector`` results become typed placeholders
(``_placeholder``). Not modelled: ``Literal[...]`` checks and what the Kubernetes API validates
after the driver. ``PodPlan.errors[0]`` is what the driver would fail the task with; later entries
are what it would report once the earlier ones are fixed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import json_format, struct_pb2

Value = struct_pb2.Value


class DriverError(Exception):
    """What the API server or the driver would answer instead of running the run or task."""


class _NullParameter(DriverError):
    """resolve.go L35 ErrResolvedParameterNull: each caller decides whether null is allowed."""


@dataclass
class PodPlan:
    """What the driver derives from parameters for one container task's pod."""

    path: str  # task keys from the root, e.g. "condition-branches-1/condition-2/deploy-model"
    executor: str  # executorLabel, e.g. "exec-deploy-model"
    display_name: str  # taskInfo.name (set_display_name)
    requests: dict[str, str] = field(default_factory=dict)  # "cpu", "memory"
    limits: dict[str, str] = field(default_factory=dict)  # and GPUs under their resource name
    tolerations: list[dict[str, Any]] = field(default_factory=list)  # k8s Toleration JSON
    node_selector: dict[str, str] = field(default_factory=dict)
    secret_env: list[dict[str, Any]] = field(default_factory=list)  # env, secret, key, optional
    secret_volumes: list[dict[str, Any]] = field(default_factory=list)  # secret, mount_path, ...
    pvc_mounts: list[dict[str, str]] = field(default_factory=list)  # pvc, mount_path
    ephemeral_volumes: list[dict[str, Any]] = field(default_factory=list)  # name, size, mount_path
    empty_dirs: list[dict[str, Any]] = field(default_factory=list)  # name, medium, size_limit, path
    retry: dict[str, Any] | None = None  # the executor's Argo retryStrategy, see _Walk.retry
    cache_enabled: bool = False
    inputs: dict[str, Value] = field(default_factory=dict)  # ExecutorInput parameter values
    errors: list[str] = field(default_factory=list)  # the driver fails the task
    warnings: list[str] = field(default_factory=list)  # the driver silently drops something


def to_value(obj: Any) -> Value:
    """A JSON-like Python object (or a Value) as the protobuf Value the API server stores."""
    return obj if isinstance(obj, Value) else json_format.ParseDict(obj, Value())


def from_value(v: Value) -> Any:
    """The inverse of :func:`to_value` (numbers come back as floats)."""
    return json_format.MessageToDict(v)


def kind_of(v: Value) -> str:
    """``string_value``, ``number_value``, ``bool_value``, ``list_value``, ``struct_value`` or
    ``null_value``."""
    return v.WhichOneof("kind") or "null_value"


def _json_kind(obj: Any) -> str:
    """The JSON type name Go's encoding/json puts in its "cannot unmarshal X" errors."""
    return {bool: "bool", str: "string", float: "number", list: "array"}.get(type(obj), "object")


# k8s.io/apimachinery/pkg/api/resource ParseQuantity: ErrFormatWrong quotes this expression.
_QUANTITY_RE = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$"
_QUANTITY = re.compile(r"[+-]?[0-9]*(\.[0-9]*)?(?P<suffix>[eEinumkKMGTP]*[-+]?[0-9]*)")
_SUFFIXES = {"", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"}


def parse_quantity(text: str) -> str:
    """Return ``text`` if ``k8sres.ParseQuantity`` accepts it, else raise its error."""
    match = _QUANTITY.fullmatch(text)
    if not text or not match:
        raise DriverError(f"quantities must match the regular expression '{_QUANTITY_RE}'")
    if match["suffix"] not in _SUFFIXES and not re.fullmatch(r"[eE][-+]?[0-9]+", match["suffix"]):
        raise DriverError("unable to parse quantity's suffix")
    return text


def _go_float(x: float, verb: str) -> str:
    """Go's ``fmt %v`` (verb "v": shortest %g) or ``strconv.FormatFloat(x, 'f', -1, 64)``."""
    d = Decimal(repr(float(x))).normalize()
    sign, digits, exp = d.as_tuple()
    e10 = len(digits) + int(exp) - 1
    if verb == "f" or d == 0 or -4 <= e10 < 6:
        return format(d, "f")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"


def _text(v: Value) -> str:
    """v2/metadata/converter.go PbValueToText: how a STRING input receives another kind."""
    kind = kind_of(v)
    if kind == "number_value":
        return _go_float(v.number_value, "f")
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind in ("list_value", "struct_value"):
        return json.dumps(from_value(v), separators=(",", ":"))
    return v.string_value


# apiserver/template/v2_template.go validatePipelineJobInputs (~L484-511)
_ROOT_TYPES = {
    "NUMBER_DOUBLE": ("number_value", "double or integer", "parameter value", "number"),
    "NUMBER_INTEGER": ("number_value", "double or integer", "parameter value", "number"),
    "STRING": ("string_value", "string", "input parameter", "string"),
    "BOOLEAN": ("bool_value", "bool", "input parameter", "bool"),
    "LIST": ("list_value", "list", "input parameter", "list"),
    "STRUCT": ("struct_value", "struct", "input parameter", "struct"),
}


def root_values(pipeline_spec: dict, arguments: dict[str, Any]) -> dict[str, Value]:
    """The root DAG's parameters of a run created with ``arguments`` (API server / SDK client).

    Raises :class:`DriverError` with the API server's message when it would refuse the run.
    Checks: apiserver/template/v2_template.go validatePipelineJobInputs (~L449-538); defaults,
    and null for an optional parameter without one: v2/compiler/argocompiler/argo.go ~L102-112.
    """
    defs = pipeline_spec.get("root", {}).get("inputDefinitions", {}).get("parameters", {})
    extra = sorted(set(arguments) - set(defs))
    if extra:
        raise DriverError(f"parameter(s) provided are not required by pipeline: {', '.join(extra)}")
    values: dict[str, Value] = {}
    for name, spec in sorted(defs.items()):
        if name in arguments:
            values[name] = to_value(arguments[name])
            kind, label, what, vtype = _ROOT_TYPES.get(spec.get("parameterType"), ("?",) * 4)
            if kind_of(values[name]) != kind:
                raise DriverError(
                    f"input parameter {name} requires type {label}, but the {what} "
                    f"is not of {vtype} value type"
                )
        elif "defaultValue" in spec:
            values[name] = to_value(spec["defaultValue"])
        elif spec.get("isOptional"):
            values[name] = to_value(None)
        else:
            raise DriverError(
                f"parameter {name} is not optional, yet has neither default value "
                "nor user provided value"
            )
    return values


def load(path: str | Path) -> list[dict]:
    """The YAML documents of a compiled pipeline: the spec, then the platform spec if any."""
    return [doc for doc in yaml.safe_load_all(Path(path).read_text()) if doc]


def resolve_file(path: str | Path, arguments: dict[str, Any]) -> dict[str, PodPlan]:
    """:func:`resolve_pipeline` on a compiled pipeline YAML file."""
    return resolve_pipeline(load(path), arguments)


def resolve_pipeline(docs: list[dict], arguments: dict[str, Any]) -> dict[str, PodPlan]:
    """Every container task's :class:`PodPlan`, keyed by the path of task keys from the root.

    Raises :class:`DriverError` when the API server would refuse to create the run.
    """
    spec = next(doc for doc in docs if "root" in doc)
    platform = next((doc for doc in docs if "platforms" in doc), {})
    walk = _Walk(spec, platform.get("platforms", {}).get("kubernetes", {}))
    walk.dag(spec["root"], "", root_values(spec, arguments), [])
    return walk.plans


def _spec_text(spec: dict) -> str:
    """A short stand-in for Go's ``%s`` of an InputParameterSpec in error messages."""
    if "componentInputParameter" in spec:
        return f'component_input_parameter:"{spec["componentInputParameter"]}"'
    return json.dumps(spec, sort_keys=True)


def _placeholder(parameter_type: str, what: str) -> Value:
    """A value only known at run time: typed, and a non-empty string for STRING."""
    samples = {"NUMBER_INTEGER": 0, "NUMBER_DOUBLE": 0, "BOOLEAN": True, "LIST": [], "STRUCT": {}}
    return to_value(samples.get(parameter_type, f"<{what}>"))


def _param_type(comp: dict, name: str) -> str:
    return (
        comp.get("inputDefinitions", {})
        .get("parameters", {})
        .get(name, {})
        .get("parameterType", "STRING")
    )


# resolve.go ~L219-249: the declared types each Value kind may be given to.
_ACCEPTS = {
    "number_value": ("NUMBER_DOUBLE", "NUMBER_INTEGER"),
    "bool_value": ("BOOLEAN",),
    "list_value": ("LIST",),
    "struct_value": ("STRUCT", "TASK_FINAL_STATUS"),
}
#: KubernetesExecutorConfig fields this model replays; any other is reported as a warning.
_MODELLED = frozenset(
    {
        "pvcMount",
        "nodeSelector",
        "tolerations",
        "secretAsVolume",
        "secretAsEnv",
        "genericEphemeralVolume",
        "emptyDirMounts",
    }
)
# k8s.io/api core/v1 Toleration JSON fields, by their lower-cased spelling (encoding/json
# matches keys case-insensitively and ignores unknown ones).
_TOLERATION = {k.lower(): k for k in ("key", "operator", "value", "effect", "tolerationSeconds")}


class _Walk:
    """Walks the DAGs like the root, DAG and container drivers, collecting PodPlans."""

    def __init__(self, spec: dict, k8s: dict) -> None:
        self.components: dict[str, dict] = spec.get("components", {})
        self.executors: dict[str, dict] = spec.get("deploymentSpec", {}).get("executors", {})
        self.k8s: dict[str, dict] = k8s.get("deploymentSpec", {}).get("executors", {})
        self.plans: dict[str, PodPlan] = {}

    def dag(self, comp: dict, prefix: str, params: dict[str, Value], errors: list[str]) -> None:
        tasks: dict[str, dict] = comp["dag"].get("tasks", {})
        for key, task in tasks.items():
            child = self.components[task["componentRef"]["name"]]
            if "dag" in child:  # dag.go: the DAG driver resolves the sub-DAG's own inputs
                inputs, errs = self.inputs(task, child, params, tasks, is_dag=True)
                if loop := task.get("parameterIterator"):  # the first iteration stands for all
                    items = loop["items"]
                    raw = (
                        json.loads(items["raw"])
                        if "raw" in items
                        else from_value(inputs.get(items.get("inputParameter", ""), Value()))
                    )
                    inputs[loop["itemInput"]] = (
                        to_value(raw[0])
                        if isinstance(raw, list) and raw
                        else _placeholder(_param_type(child, loop["itemInput"]), "loop item")
                    )
                errs = [f"DAG {prefix}{key}: {e}" for e in errs]
                self.dag(child, f"{prefix}{key}/", inputs, errors + errs)
            elif "container" in self.executors.get(child.get("executorLabel", ""), {}):
                self.container(f"{prefix}{key}", task, child, params, tasks, errors)

    def param(self, spec: dict, params: dict[str, Value], tasks: dict[str, dict]) -> Value:
        """resolve.go resolveInputParameter (~L375-498) against the enclosing DAG's values."""
        if "componentInputParameter" in spec:
            name = spec["componentInputParameter"]
            if name not in params:
                raise DriverError(
                    f"resolving input parameter with spec {_spec_text(spec)}: "
                    f"parent DAG does not have input parameter {name}"
                )
            if kind_of(params[name]) == "null_value":
                raise _NullParameter(f"the resolved input parameter is null: {name}")
            return params[name]
        if "taskOutputParameter" in spec:
            out = spec["taskOutputParameter"]
            producer = self.components[tasks[out["producerTask"]]["componentRef"]["name"]]
            ptype = (
                producer.get("outputDefinitions", {})
                .get("parameters", {})
                .get(out["outputParameterKey"], {})
                .get("parameterType", "STRING")
            )
            return _placeholder(ptype, f"{out['producerTask']}.{out['outputParameterKey']}")
        if "runtimeValue" in spec:
            return to_value(spec["runtimeValue"].get("constant"))
        return _placeholder("STRUCT", "task final status")

    def str_param(self, spec: dict, params: dict[str, Value], tasks: dict[str, dict]) -> str:
        """resolve.go resolveInputParameterStr (~L501-525): a non-empty string, else an error."""
        v = self.param(spec, params, tasks)
        head = f"resolving input parameter with spec {_spec_text(spec)}."
        if kind_of(v) != "string_value":
            go_kind = kind_of(v).split("_")[0].capitalize()
            raise DriverError(f"{head} Expected a string but got: *structpb.Value_{go_kind}Value")
        if not v.string_value:
            raise DriverError(f"{head} Expected a non-empty string")
        return v.string_value

    def inputs(
        self, task: dict, comp: dict, params: dict[str, Value], tasks: dict[str, dict], is_dag: bool
    ) -> tuple[dict[str, Value], list[str]]:
        """resolve.go resolveInputs (~L102-372): the task's parameter values, and errors.

        Only inputs the component declares are checked or converted: the ``pipelinechannel--x``
        inputs the compiler adds to container tasks keep whatever kind they resolved to.
        """
        defs: dict[str, dict] = comp.get("inputDefinitions", {}).get("parameters", {})
        bindings: dict[str, dict] = task.get("inputs", {}).get("parameters", {})
        values: dict[str, Value] = {}
        errors: list[str] = []
        set_nil: set[str] = set()
        failed: set[str] = set()
        if is_dag:  # ~L306-323: omitted optional inputs of a nested DAG get their default or null
            for name, d in defs.items():
                if name not in bindings and d.get("isOptional"):
                    values[name] = to_value(d.get("defaultValue"))
                    set_nil.update([] if "defaultValue" in d else [name])
        for name, binding in bindings.items():
            try:
                values[name] = self.param(binding, params, tasks)
            except DriverError as e:  # ~L336-347: null is fine only for an optional declared input
                if not isinstance(e, _NullParameter) or not defs.get(name, {}).get("isOptional"):
                    errors.append(f"failed to resolve inputs: {e}")
                    failed.add(name)
                    if is_dag:  # reported once here; the tasks inside resolve without it
                        values[name] = _placeholder(_param_type(comp, name), f"unresolved {name}")
                continue
            if "parameterExpressionSelector" in binding:
                values[name] = _placeholder(_param_type(comp, name), "CEL selection")
        iterator = task.get("parameterIterator", {})
        for name, d in defs.items():  # ~L169-250 handleParamTypeValidationAndConversion
            ptype = d.get("parameterType", "")
            if name in failed or name == iterator.get("itemInput") or ptype == "TASK_CONFIG":
                continue
            if name not in values:
                if not d.get("isOptional") and "defaultValue" not in d:
                    errors.append(
                        "failed to resolve inputs: neither value nor default value "
                        f'provided for non-optional parameter "{name}"'
                    )
                continue
            kind = kind_of(values[name])
            if name in set_nil and kind == "null_value":
                continue
            if ptype == "STRING":
                values[name] = to_value(_text(values[name]))
            elif kind == "null_value":
                errors.append(f'failed to resolve inputs: got null for input parameter "{name}"')
            elif ptype not in _ACCEPTS.get(kind, ()):
                errors.append(
                    f'failed to resolve inputs: input parameter "{name}" type mismatch: '
                    f"expect {ptype}, got {kind.split('_')[0]}"
                )
        return values, errors

    def container(
        self,
        path: str,
        task: dict,
        comp: dict,
        params: dict[str, Value],
        tasks: dict[str, dict],
        inherited: list[str],
    ) -> None:
        """container.go Container: inputs, then initPodSpecPatch, then extendPodSpecPatch."""
        label = comp["executorLabel"]
        name = task.get("taskInfo", {}).get("name", path.rsplit("/", 1)[-1])
        plan = PodPlan(path=path, executor=label, display_name=name, errors=list(inherited))
        plan.inputs, errors = self.inputs(task, comp, params, tasks, is_dag=False)
        plan.errors += errors
        # cache.go getFingerPrintsAndID (~L132-147); set_caching_options(False) compiles to {}
        plan.cache_enabled = task.get("cachingOptions", {}).get("enableCache") is True
        self.retry(plan, task.get("retryPolicy"))
        self.resources(plan, self.executors[label]["container"].get("resources", {}))
        self.platform(plan, self.k8s.get(label, {}), params, tasks)
        self.plans[path] = plan

    def retry(self, plan: PodPlan, policy: dict | None) -> None:
        """A task's ``retryPolicy`` as Argo runs it.

        v2/compiler/argocompiler/container.go: ``getTaskRetryParametersWithValues``
        (~L618-653) passes ``maxRetryCount``, the Duration seconds (``.Seconds``: fractions
        dropped) and ``backoffFactor`` through ``AnyStringPtr`` (``fmt %v``), unset durations
        default to "0" (``addParameterDefault``, ~L423); ``getTaskRetryStrategyFromInput``
        (~L671-690) makes them the executor's ``retryStrategy`` (~L586-591). Argo then reads
        limit and factor with ``intstr.Int32`` (argo-workflows util/intstr/parametrizable.go:
        ``strconv.Atoi``, else "value '%s' cannot be resolved to an int") and waits
        ``duration * factor**n``, giving up once a wait would end after ``maxDuration`` from
        the first attempt (workflow/controller/operator.go ``processNodeRetries``).
        """
        if policy is None:
            return

        def seconds(key: str) -> int:
            text = str(policy.get(key, "0s"))  # protobuf Duration JSON, e.g. "30s", "1.5s"
            return int(Decimal(text.removesuffix("s") or "0"))

        raw = {
            "limit": str(int(policy.get("maxRetryCount", 0))),
            "factor": _go_float(float(policy.get("backoffFactor", 0.0)), "v"),
        }
        values: dict[str, int] = {}
        for name, text in raw.items():
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                plan.errors.append(
                    f"retryStrategy.{name}: value '{text}' cannot be resolved to an int "
                    "(Argo fails the step when it would retry it)"
                )
                return
            values[name] = int(text)
        duration, max_duration = seconds("backoffDuration"), seconds("backoffMaxDuration")
        waits, total = [], 0
        for n in range(values["limit"]):
            wait = duration * values["factor"] ** n if values["factor"] > 0 else duration
            total += wait
            if max_duration and total > max_duration:
                break
            waits.append(wait)
        plan.retry = {**values, "duration_s": duration, "max_duration_s": max_duration}
        plan.retry["waits_s"] = waits  # the retries Argo makes (run times not counted)

    def pod_param(self, plan: PodPlan, raw: str) -> str:
        """resolve.go resolvePodSpecInputRuntimeParameter (~L818-831): GetStringValue() only."""
        match = re.search(r"\$.inputs.parameters\['(.+?)'\]", raw)  # util.go L43, searched
        if not match:
            return raw
        if match[1] not in plan.inputs:
            raise DriverError("executorInput did not contain container Image input parameter")
        v = plan.inputs[match[1]]
        if kind_of(v) != "string_value":
            plan.warnings.append(
                f"{raw} resolved to '': input {match[1]} is a {kind_of(v)} and "
                "the driver reads only string_value"
            )
        return v.string_value

    def resources(self, plan: PodPlan, res: dict) -> None:
        """driver.go initPodSpecPatch (~L355-439) and getPodResource (~L175-200)."""
        for new, old, unit, target, resource in (
            ("resourceMemoryLimit", "memoryLimit", "G", plan.limits, "memory"),
            ("resourceMemoryRequest", "memoryRequest", "G", plan.requests, "memory"),
            ("resourceCpuLimit", "cpuLimit", "", plan.limits, "cpu"),
            ("resourceCpuRequest", "cpuRequest", "", plan.requests, "cpu"),
        ):
            try:
                if res.get(new):
                    target[resource] = parse_quantity(self.pod_param(plan, res[new]))
                elif res.get(old):  # the deprecated float, formatted with "%vG" / "%v"
                    target[resource] = parse_quantity(_go_float(res[old], "v") + unit)
            except DriverError as e:
                plan.errors.append(f"failed to init podSpecPatch: {new}: {e}")
        if not (acc := res.get("accelerator")):
            return
        try:
            rtype = (
                self.pod_param(plan, acc["resourceType"])
                if acc.get("resourceType")
                else acc.get("type", "")
            )
            count = (
                self.pod_param(plan, acc["resourceCount"])
                if acc.get("resourceCount")
                else str(int(acc["count"]))
                if int(acc.get("count", 0)) > 0
                else ""
            )
            if rtype and count:  # only ever a limit, and only if both resolved non-empty
                plan.limits[rtype] = parse_quantity(count)
            else:
                plan.warnings.append(
                    f"accelerator skipped: type {rtype!r}, count {count!r} "
                    "(the driver needs both non-empty): no GPU limit"
                )
        except DriverError as e:
            plan.errors.append(f"failed to init podSpecPatch: accelerator: {e}")

    def platform(
        self, plan: PodPlan, cfg: dict, params: dict[str, Value], tasks: dict[str, dict]
    ) -> None:
        """k8s.go extendPodSpecPatch (~L133-920). Its parameter specs name the ENCLOSING DAG's
        parameters: container.go (~L140-145) passes dag.Execution.GetParameters()."""
        for mount in cfg.get("pvcMount", []):  # makeVolumeMountPatch ~L1233: null is an error
            spec = mount.get("pvcNameParameter") or (
                {"runtimeValue": {"constant": mount["constant"]}}
                if "constant" in mount
                else {
                    k: mount[k]
                    for k in ("taskOutputParameter", "componentInputParameter")
                    if k in mount
                }
            )
            try:
                pvc = self.str_param(spec, params, tasks)
                plan.pvc_mounts.append({"pvc": pvc, "mount_path": mount.get("mountPath", "")})
            except DriverError as e:
                plan.errors.append(
                    f"failed to extract volume mount info: failed to resolve pvc name: {e}"
                )
        selector = cfg.get("nodeSelector", {})
        if "nodeSelectorJson" in selector:  # ~L201 -> resolve.go resolveK8sJsonParameter ~L840
            try:
                v = self.param(selector["nodeSelectorJson"], params, tasks)
                if kind_of(v) != "struct_value":  # GetStructValue() is nil and marshals as {}
                    plan.warnings.append(
                        f"nodeSelectorJson resolved to a {kind_of(v)} "
                        f"({from_value(v)!r}): node selector dropped"
                    )
                for key, item in from_value(v.struct_value).items():
                    if not isinstance(item, str | None):
                        raise DriverError(
                            f"json: cannot unmarshal {_json_kind(item)} into Go "
                            "value of type string"
                        )
                    plan.node_selector[key] = item or ""
            except _NullParameter as e:
                plan.warnings.append(f"nodeSelectorJson skipped: {e}")
            except DriverError as e:
                plan.errors.append(f"failed to resolve node selector: {e}")
        else:
            plan.node_selector.update(selector.get("labels", {}))
        for entry in cfg.get("tolerations", []):  # ~L225-291
            if "tolerationJson" not in entry:
                plan.tolerations.append({k: entry[k] for k in _TOLERATION.values() if k in entry})
                continue
            try:
                v = self.param(entry["tolerationJson"], params, tasks)
            except _NullParameter as e:
                plan.warnings.append(f"tolerationJson skipped: {e}")
                continue
            except DriverError as e:
                plan.errors.append(f"failed to resolve toleration: {e}")
                continue
            obj = from_value(v)
            if kind_of(v) not in ("struct_value", "list_value"):
                plan.errors.append(
                    "encountered unexpected toleration proto value, must be "
                    f"either struct or list type (got {kind_of(v)} {obj!r})"
                )
            for item in (
                [obj] if isinstance(obj, dict) and obj else obj if isinstance(obj, list) else []
            ):
                self.toleration(plan, item)
        self.secrets(plan, cfg, params, tasks)
        for key in sorted(set(cfg) - _MODELLED):
            plan.warnings.append(f"platform setting {key!r} is not modelled: check it by hand")
        for vol in cfg.get("emptyDirMounts", []):  # ~L595-623: sizeLimit parsed, if any
            size = vol.get("sizeLimit", "")
            try:
                plan.empty_dirs.append(
                    {
                        "name": vol.get("volumeName"),
                        "medium": vol.get("medium", ""),
                        "size_limit": parse_quantity(size) if size else None,
                        "mount_path": vol.get("mountPath"),
                    }
                )
            except DriverError as e:
                plan.errors.append(
                    f"failed to parse size limit {size!r} for emptyDir volume "
                    f"{vol.get('volumeName')!r}: {e}"
                )
        for vol in cfg.get("genericEphemeralVolume", []):  # ~L548: a plain string, no parameter
            size = vol.get("size", "")
            try:
                plan.ephemeral_volumes.append(
                    {
                        "name": vol.get("volumeName"),
                        "size": parse_quantity(size),
                        "mount_path": vol.get("mountPath"),
                    }
                )
            except DriverError as e:
                plan.errors.append(
                    f"failed to parse generic ephemeral volume size {size!r} "
                    f"for volume {vol.get('volumeName')!r}: {e}"
                )

    def toleration(self, plan: PodPlan, obj: Any) -> None:
        """json.Unmarshal of one item into a k8s Toleration (k8s.go ~L246-276)."""
        if not isinstance(obj, dict | None):
            plan.errors.append(
                f"failed to marshal list toleration to json: json: cannot "
                f"unmarshal {_json_kind(obj)} into Go value of type v1.Toleration"
            )
            return
        toleration: dict[str, Any] = {}
        for key, raw in (obj or {}).items():
            name = _TOLERATION.get(key.lower())
            valid = (
                isinstance(raw, float) and raw.is_integer()
                if name == "tolerationSeconds"
                else isinstance(raw, str)
            )
            if name is None:
                plan.warnings.append(
                    f"toleration field {key!r} is not a k8s Toleration field: ignored"
                )
            elif raw is not None and not valid:
                plan.errors.append(
                    f"failed to marshal toleration to json: json: cannot unmarshal "
                    f"{_json_kind(raw)} into Go struct field Toleration.{name}"
                )
            elif raw is not None:
                toleration[name] = int(raw) if name == "tolerationSeconds" else raw
        plan.tolerations.append(toleration)

    def secrets(
        self, plan: PodPlan, cfg: dict, params: dict[str, Value], tasks: dict[str, dict]
    ) -> None:
        """k8s.go secretAsVolume / secretAsEnv (~L304-392): null skips the entry, "" fails."""
        entries = [(e, None) for e in cfg.get("secretAsVolume", [])] + [
            (e, k) for e in cfg.get("secretAsEnv", []) for k in e.get("keyToEnv", [])
        ]
        for entry, key_to_env in entries:
            try:
                if "secretNameParameter" in entry:
                    secret = self.str_param(entry["secretNameParameter"], params, tasks)
                elif not (secret := entry.get("secretName", "")):
                    raise DriverError("missing either SecretName or SecretNameParameter")
            except _NullParameter as e:
                plan.warnings.append(f"secret skipped: {e}")
                continue
            except DriverError as e:
                plan.errors.append(f"failed to resolve secret name: {e}")
                continue
            optional = bool(entry.get("optional", False))
            if key_to_env is None:
                plan.secret_volumes.append(
                    {
                        "secret": secret,
                        "optional": optional,
                        "mount_path": entry.get("mountPath", ""),
                    }
                )
            else:
                plan.secret_env.append(
                    {
                        "env": key_to_env.get("envVar"),
                        "secret": secret,
                        "key": key_to_env.get("secretKey"),
                        "optional": optional,
                    }
                )
