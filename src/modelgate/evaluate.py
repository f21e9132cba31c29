"""Evaluate step: lm-evaluation-harness on a model directory or a served endpoint.

Backends:

* ``hf`` - transformers in-process (CPU or GPU).
* ``vllm`` - vLLM in-process (GPU nodes).
* ``local-completions`` - an OpenAI-compatible ``/v1/completions`` endpoint (e.g. a vLLM server);
  log-likelihood tasks need ``echo`` + ``logprobs`` support, which vLLM has.

Results are parsed into :class:`EvalResult`: per task, each metric with its stderr and its
direction (``higher_is_better``), which the gates use.

Per-sample results: lm-eval runs with ``log_samples``; each scored document's metrics are kept
as a compact samples file (:mod:`modelgate.samples`) beside the results, so gates can pair the
candidate with the base model and with production document by document. What makes two
evaluations pairable is recorded in the results' ``config`` (:data:`PAIRING_KEYS`): lm-eval's
``task_hashes`` (over every document, prompt and target) and a hash of each task's config, the
lm-eval version, backend, dtype, limit, few-shot count, seed and max length.

Evaluation reuse: with a model store, the results and samples of a stored model are cached in
the store under ``evals/eval-<digest>`` (:func:`eval_cache_key`: the folder's content, the
tasks and their definition, and every setting that changes scores). An evaluation whose key is
complete is not run again: its results come back with ``reused`` set. The cache folder is
written with the store's first-writer-wins writer.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from modelgate.constants import HF_DEFAULT_ENDPOINT, HF_ENDPOINT_ENV, HF_TOKEN_ENV
from modelgate.credentials import insecure_allowed, is_secure_transport, token_for
from modelgate.errors import ConfigError, EvaluationError, StorageError
from modelgate.signing import check_stored, verified
from modelgate.storage import (
    MARKER,
    ModelStore,
    digest_path,
    fetch_input,
    open_store,
    read_file,
    scheme_of,
    work_dir,
)

logger = logging.getLogger(__name__)

Backend = Literal["hf", "vllm", "local-completions"]
BACKENDS: tuple[str, ...] = get_args(Backend)
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
#: Stops huggingface_hub from sending its stored login when no token is given.
NO_IMPLICIT_TOKEN_ENV = {"HF_HUB_DISABLE_IMPLICIT_TOKEN": "1"}


@dataclass
class MetricValue:
    """One metric of one task: value, standard error, and direction (None: lm-eval gives none,
    or not one boolean, e.g. a group mixing metrics)."""

    value: float
    stderr: float | None = None
    higher_is_better: bool | None = True


@dataclass
class EvalResult:
    """Per-task metrics of one evaluation run."""

    model: str
    backend: str
    tasks: dict[str, dict[str, MetricValue]] = field(default_factory=dict)
    n_samples: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)
    #: Where this evaluation's per-sample results are (a compact samples file, see
    #: :mod:`modelgate.samples`): a store URI or local path; None when none were kept.
    samples_uri: str | None = None
    #: True when these results came from the evaluation cache (:func:`eval_cache_key`), not a
    #: new lm-eval run.
    reused: bool = False

    def get(self, task: str, metric: str) -> MetricValue | None:
        """The metric named ``metric`` (``acc`` or ``acc,none``) of ``task``, if present."""
        metrics = self.tasks.get(task, {})
        if metric in metrics:
            return metrics[metric]
        return metrics.get(metric.split(",")[0])

    def samples(self, task: str) -> int | None:
        """How many samples lm-eval scored for ``task`` (its effective ``n-samples``)."""
        return self.n_samples.get(task)

    def to_properties(self, prefix: str = "eval.") -> dict[str, float | int | str]:
        """Flat registry properties: ``<prefix><task>/<metric>`` = value, with ``.stderr`` and
        ``.direction`` beside it, ``<prefix><task>.n`` = samples, and
        ``<prefix>samples_uri`` = :attr:`samples_uri` when set."""
        props: dict[str, float | int | str] = {}
        if self.samples_uri:
            props[f"{prefix}{SAMPLES_URI_KEY}"] = self.samples_uri
        for task, metrics in self.tasks.items():
            for name, m in metrics.items():
                key = f"{prefix}{task}/{name}"
                props[key] = m.value
                if m.stderr is not None:
                    props[f"{key}.stderr"] = m.stderr
                if m.higher_is_better is not None:
                    props[f"{key}.direction"] = "higher" if m.higher_is_better else "lower"
        for task, n in self.n_samples.items():
            props[f"{prefix}{task}.n"] = int(n)
        return props

    @classmethod
    def from_properties(
        cls, props: dict[str, Any], *, model: str, prefix: str = "eval."
    ) -> EvalResult | None:
        """Inverse of :meth:`to_properties` (None when no metric is there)."""
        out = cls(model=model, backend="registry")
        extras: dict[tuple[str, str], dict[str, Any]] = {}
        for key, value in props.items():
            if not key.startswith(prefix):
                continue
            rest = key[len(prefix) :]
            if rest == SAMPLES_URI_KEY:
                out.samples_uri = str(value) or None
                continue
            if "/" not in rest:
                if rest.endswith(".n"):
                    out.n_samples[rest[:-2]] = int(float(value))
                continue
            task, _, metric = rest.partition("/")
            for suffix in (".stderr", ".direction"):
                if metric.endswith(suffix):
                    extras.setdefault((task, metric[: -len(suffix)]), {})[suffix] = value
                    break
            else:
                metric_value = MetricValue(value=float(value), higher_is_better=None)
                out.tasks.setdefault(task, {})[metric] = metric_value
        for (task, metric), extra in extras.items():
            m = out.tasks.get(task, {}).get(metric)
            if m is None:
                continue
            if ".stderr" in extra:
                m.stderr = float(extra[".stderr"])
            direction = extra.get(".direction")
            m.higher_is_better = None if direction is None else direction == "higher"
        return out if out.tasks else None

    def flat(self) -> dict[str, float]:
        """``{"task/metric": value}`` for logging as KFP metrics or registry properties."""
        return {f"{t}/{m}": v.value for t, ms in self.tasks.items() for m, v in ms.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResult:
        """Inverse of :meth:`to_dict`."""
        tasks = {
            t: {m: MetricValue(**v) for m, v in ms.items()}
            for t, ms in data.get("tasks", {}).items()
        }
        return cls(**{**data, "tasks": tasks})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write as JSON."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EvalResult:
        """Read what :meth:`save` wrote, or lm-eval's own results JSON (``--output_path``).

        A folder is searched for lm-eval's newest ``results_*.json``.

        Raises:
            EvaluationError: The file is missing or not an evaluation result.
        """
        file = Path(path)
        if file.is_dir():
            found = sorted(file.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
            if not found:
                raise EvaluationError(f"{path} holds no lm-eval results_*.json")
            file = found[-1]
        try:
            data = json.loads(file.read_text())
        except (OSError, ValueError) as e:
            raise EvaluationError(f"{path} is not a readable results file: {e}") from e
        try:
            if isinstance(data, dict) and "results" in data and "tasks" not in data:
                config = data.get("config") or {}
                return parse_lm_eval_results(
                    data,
                    model=str(data.get("model_name") or config.get("model_args") or file.stem),
                    backend=str(config.get("model") or "lm-eval"),
                )
            return cls.from_dict(data)
        except (ValueError, TypeError, AttributeError, KeyError) as e:
            raise EvaluationError(f"{path} is not a modelgate or lm-eval result: {e}") from e


SAMPLES_URI_KEY = "samples_uri"
"""Registry property (after the ``eval.`` prefix) holding :attr:`EvalResult.samples_uri`."""


def parse_lm_eval_results(raw: dict[str, Any], *, model: str, backend: str) -> EvalResult:
    """Turn ``simple_evaluate``'s output into an :class:`EvalResult`.

    Metric keys such as ``acc,none`` become ``acc`` when the filter is ``none`` and keep their
    filter otherwise (``exact_match,strict-match``). ``*_stderr`` keys become the stderr of their
    metric; an ``N/A`` stderr becomes None.

    Raises:
        EvaluationError: No results in ``raw``.
    """
    results = raw.get("results") or {}
    if not results:
        raise EvaluationError(f"lm-eval returned no results for {model}")
    direction = raw.get("higher_is_better") or {}
    out = EvalResult(model=model, backend=backend)
    for task, metrics in results.items():
        parsed: dict[str, MetricValue] = {}
        for key, value in metrics.items():
            if "," not in key or "_stderr" in key or not isinstance(value, int | float):
                continue
            name, _, filt = key.partition(",")
            label = name if filt == "none" else key
            stderr = metrics.get(f"{name}_stderr,{filt}")
            stderr = float(stderr) if isinstance(stderr, int | float) else None
            if stderr is not None and math.isnan(stderr):
                stderr = None
            hib = (direction.get(task) or {}).get(name)
            parsed[label] = MetricValue(
                value=float(value),
                stderr=stderr,
                higher_is_better=hib if isinstance(hib, bool) else None,
            )
        out.tasks[task] = parsed
    out.n_samples = {
        t: int(v.get("effective", v.get("original", 0)))
        for t, v in (raw.get("n-samples") or {}).items()
    }
    return out


CACHE_DIR_ENV = "MODELGATE_CACHE_DIR"


def cache_dir() -> Path:
    """modelgate's cache: ``$MODELGATE_CACHE_DIR`` or ``~/.cache/modelgate``."""
    path = Path(os.environ.get(CACHE_DIR_ENV) or Path.home() / ".cache" / "modelgate")
    path.mkdir(parents=True, exist_ok=True)
    return path


def registered_task_names() -> set[str]:
    """Every task, group and tag name in lm-eval's registry, cached per lm-eval release.

    Indexing lm-eval's task YAMLs takes seconds; the cache makes a preflight check of task names
    take milliseconds after the first one.
    """
    from importlib.metadata import version

    index = cache_dir() / f"lm-eval-tasks-{version('lm_eval')}.json"
    if index.is_file():
        try:
            return set(json.loads(index.read_text()))
        except ValueError:
            pass  # rebuilt below
    from lm_eval.tasks import TaskManager

    names = sorted(TaskManager().all_tasks)
    partial = index.with_suffix(f".{os.getpid()}.tmp")
    partial.write_text(json.dumps(names))
    os.replace(partial, index)
    return set(names)


def folder_task_names(task_dir: str | os.PathLike[str]) -> set[str]:
    """Task, group and tag names declared by the YAMLs of a local task folder.

    Raises:
        ConfigError: The folder does not exist.
    """
    import yaml

    folder = Path(task_dir)
    if not folder.is_dir():
        raise ConfigError(f"task folder {str(task_dir)!r} does not exist")

    class _Lenient(yaml.SafeLoader):
        """Reads lm-eval task files, ignoring their ``!function`` tags."""

    _Lenient.add_multi_constructor("!", lambda loader, suffix, node: None)
    names: set[str] = set()
    for path in list(folder.rglob("*.yaml")) + list(folder.rglob("*.yml")):
        try:
            doc = yaml.load(path.read_text(), Loader=_Lenient)  # noqa: S506 - safe subclass
        except yaml.YAMLError as e:
            raise ConfigError(f"task file {path} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            continue
        for key in ("task", "group", "tag"):
            value = doc.get(key)
            values = value if isinstance(value, list) else [value]
            names.update(v for v in values if isinstance(v, str))
    return names


def check_task_names(tasks: list[str], *, task_dir: str | None = None) -> None:
    """Check task names against lm-eval's registry and a local folder, quickly (no loading).

    Raises:
        ConfigError: Empty task list, missing folder, or unknown tasks (with suggestions).
    """
    if not tasks:
        raise ConfigError("no evaluation tasks given; pass e.g. tasks=['arc_easy']")
    local = folder_task_names(task_dir) if task_dir else set()
    known = local | (registered_task_names() if set(tasks) - local else set())
    _raise_unknown(tasks, known, task_dir=task_dir)


def _raise_unknown(tasks: list[str], known: set[str], *, task_dir: str | None) -> None:
    unknown = [t for t in tasks if t not in known]
    if unknown:
        hints = []
        for t in unknown:
            close = difflib.get_close_matches(t, known, n=3)
            hints.append(f"{t!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        where = f" or in {task_dir}" if task_dir else "; pass task_dir for local task YAMLs"
        raise ConfigError(f"unknown lm-eval task(s) {', '.join(hints)}: not in lm-eval{where}")


def resolve_tasks(tasks: list[str], *, task_dir: str | None = None) -> Any:
    """Check task names against lm-eval's registry (plus ``task_dir``) and return the manager.

    Raises:
        ConfigError: Empty task list, missing task folder, or an unknown task (with suggestions).
    """
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise ConfigError("no evaluation tasks given; pass e.g. tasks=['arc_easy']")
    if task_dir and not Path(task_dir).is_dir():
        raise ConfigError(f"task folder {task_dir!r} does not exist")
    manager = TaskManager(include_path=task_dir) if task_dir else TaskManager()
    _raise_unknown(tasks, set(manager.all_tasks), task_dir=task_dir)
    return manager


def prepare_task_dir(task_dir: str) -> Path:
    """A usable task folder: fetched if stored, with ``data_files`` made to point inside it.

    A stored folder is a private copy checked against the content digest in its key
    (``inputs/tasks-<digest>``) before lm-eval reads it, since lm-eval runs the ``!function``
    code of task files.

    Task YAMLs often name their data with a path of the machine that wrote them (or a path
    relative to it); once the folder has travelled through the model store those paths are
    wrong. A ``dataset_kwargs.data_files`` entry whose file is not there but whose relative
    path or file name is in the folder is rewritten to that file; other entries are kept.

    Raises:
        ConfigError: The folder does not exist.
        StorageError: A stored folder could not be fetched, or its content does not match the
            digest in its key.
    """
    import yaml

    if scheme_of(task_dir) in ("s3", "file"):
        folder = fetch_input(task_dir, kind="tasks")
    else:
        folder = Path(task_dir)
        if not folder.is_dir():
            raise ConfigError(
                f"task folder {task_dir!r} does not exist here; in a cluster pass a stored "
                "folder URI (modelgate run/submit upload a local folder to the model store)"
            )

    def local(value: Any) -> Any:
        if isinstance(value, list):
            return [local(v) for v in value]
        if not isinstance(value, str) or "://" in value or Path(value).is_file():
            return value
        for candidate in (folder / value, folder / Path(value).name):
            if candidate.is_file():
                return str(candidate)
        return value

    for path in list(folder.rglob("*.yaml")) + list(folder.rglob("*.yml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue  # lm-eval reports broken task files itself
        files = (
            (doc.get("dataset_kwargs") or {}).get("data_files") if isinstance(doc, dict) else None
        )
        if not files:
            continue
        fixed = {k: local(v) for k, v in files.items()} if isinstance(files, dict) else local(files)
        if fixed != files:
            doc["dataset_kwargs"]["data_files"] = fixed
            if not os.access(path, os.W_OK):
                raise ConfigError(f"task file {path} needs its data paths fixed but is read-only")
            path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def build_model_args(
    backend: Backend,
    *,
    model: str,
    base_url: str | None = None,
    tokenizer: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    tensor_parallel_size: int = 1,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """lm-eval ``model_args`` for ``backend``.

    ``vllm`` spreads the model over ``tensor_parallel_size`` GPUs (the GPUs of the pod).

    Raises:
        ConfigError: ``local-completions`` without ``base_url``.
    """
    if backend == "local-completions":
        if not base_url:
            raise ConfigError("backend local-completions needs base_url (the OpenAI server URL)")
        url = base_url.rstrip("/")
        url = url if url.endswith("/v1/completions") else f"{url}/v1/completions"
        args: dict[str, Any] = {
            "model": model,
            "base_url": url,
            "num_concurrent": 1,
            "max_retries": 3,
            "tokenized_requests": False,
        }
        if tokenizer:
            args |= {"tokenizer": tokenizer, "tokenizer_backend": "huggingface"}
        if max_length:
            args["max_length"] = max_length
    else:
        args = {"pretrained": model}
        if dtype:
            args["dtype"] = dtype
        if backend == "vllm":
            args |= {"gpu_memory_utilization": 0.8, "tensor_parallel_size": tensor_parallel_size}
            if max_length:
                args["max_model_len"] = max_length
        elif max_length:
            args["max_length"] = max_length
    return args | (extra or {})


def guard_hub_token(*, allow_insecure: bool | None = None) -> bool:
    """Keep ``$HF_TOKEN`` (and huggingface_hub's stored login) away from an insecure endpoint.

    lm-eval, datasets and huggingface_hub read the token from the environment. When
    ``$HF_ENDPOINT`` is plain ``http://`` to a host other than this machine and insecure sending
    is not allowed (``allow_insecure`` or ``$MODELGATE_ALLOW_INSECURE_TOKEN=1``), ``HF_TOKEN`` is
    removed from this process's environment with a warning and the implicit token is turned off.

    Returns:
        True when a token was dropped.
    """
    endpoint = os.environ.get(HF_ENDPOINT_ENV) or HF_DEFAULT_ENDPOINT
    if is_secure_transport(endpoint) or insecure_allowed(allow_insecure):
        return False
    os.environ.update(NO_IMPLICIT_TOKEN_ENV)
    token = os.environ.get(HF_TOKEN_ENV)
    if token_for(endpoint, token, allow_insecure=False, what=HF_TOKEN_ENV) is None:
        os.environ.pop(HF_TOKEN_ENV, None)
    return bool(token)


def evaluate_model(
    model: str,
    *,
    backend: str = "hf",
    tasks: list[str],
    task_dir: str | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int | str = 8,
    device: str | None = None,
    base_url: str | None = None,
    tokenizer: str | None = None,
    dtype: str | None = None,
    max_length: int | None = None,
    tensor_parallel_size: int = 1,
    offline: bool = False,
    hf_endpoint: str | None = None,
    model_args: dict[str, Any] | None = None,
    seed: int = 1234,
    allow_insecure_token: bool | None = None,
    model_store: str | None = None,
    samples_path: str | os.PathLike[str] | None = None,
) -> EvalResult:
    """Run lm-eval and return parsed metrics, with the per-sample results kept.

    Datasets come from the Hub (or the mirror at ``hf_endpoint``, with ``$HF_TOKEN``) unless
    ``offline`` is set, which only works when every dataset is cached or local. ``$HF_TOKEN``
    goes only to an ``https://`` endpoint or a loopback ``http://`` mirror (see
    :func:`guard_hub_token`).

    With ``model_store``, a model folder's evaluation is cached there (see the module
    docstring): when :func:`eval_cache_key` finds a complete entry nothing runs and the stored
    results come back with ``reused`` set; otherwise the results and the samples file are
    stored under that key. ``samples_uri`` of the result names the stored samples file.

    Args:
        model: Model directory or stored model URI (``s3://``, ``file://``) for ``hf``/``vllm``;
            the served model name for ``local-completions``.
        backend: ``hf``, ``vllm`` or ``local-completions``.
        tasks: lm-eval task names.
        task_dir: Folder (or stored folder URI) of extra task YAMLs; relative ``data_files`` in
            them are resolved against the folder.
        limit: Examples per task (int) or fraction (float); None for all.
        num_fewshot: Few-shot examples; None for the task default.
        batch_size: Batch size (or ``"auto"``).
        device: ``cpu``/``cuda``; None lets lm-eval choose.
        base_url: OpenAI server URL for ``local-completions``.
        tokenizer: Tokenizer path for ``local-completions`` (defaults to the server's).
        dtype: Model dtype for ``hf``/``vllm``.
        max_length: Context length cap.
        tensor_parallel_size: GPUs the ``vllm`` backend splits the model over.
        offline: Never contact the Hub (sets ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``).
        hf_endpoint: Hub mirror for datasets and tokenizers (sets ``HF_ENDPOINT``).
        model_args: Extra lm-eval model arguments, merged last.
        seed: Random seed for lm-eval (also the few-shot sampling seed).
        allow_insecure_token: Let ``$HF_TOKEN`` go over plain ``http://`` to another host; None
            reads ``$MODELGATE_ALLOW_INSECURE_TOKEN``.
        model_store: Model store URI (``s3://``, ``file://``) for the evaluation cache and the
            samples file; None: no cache, and samples only at ``samples_path``.
        samples_path: Also write the samples file here (e.g. a pipeline artifact).

    Returns:
        Parsed per-task metrics.

    Raises:
        ConfigError: Unknown backend or task, missing model directory, or a bad store URI.
        EvaluationError: lm-eval failed, or a cached entry is not a readable result.
        SignatureError: A verify key is configured and the stored model did not verify.
        StorageError: A stored model or task folder could not be fetched, or the cache could
            not be read or written.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown eval backend {backend!r}; choose one of {list(BACKENDS)}")
    settings = EvalSettings(
        backend=backend,
        tasks=list(tasks),
        limit=limit,
        num_fewshot=num_fewshot,
        seed=seed,
        dtype=dtype,
        max_length=max_length,
        model_args=dict(model_args or {}),
    )
    store = open_store(model_store) if model_store else None
    key = None
    if store is not None and backend != "local-completions":
        key = eval_cache_key(model, settings=settings, task_dir=task_dir)
        cached = load_cached(store, key)
        if cached is not None:
            check_stored(model)  # results of a model that no longer verifies are not reused
            logger.info("reusing the stored evaluation %s of %s", store.uri(key), model)
            cached.model = model  # the same content, perhaps stored under another key
            if samples_path is not None and cached.samples_uri:
                _copy_samples(cached.samples_uri, Path(samples_path))
            return cached
    # before lm-eval (and datasets/huggingface_hub with it) reads these at import
    if offline:
        os.environ.update(OFFLINE_ENV)
    if hf_endpoint:
        os.environ[HF_ENDPOINT_ENV] = hf_endpoint
    guard_hub_token(allow_insecure=allow_insecure_token)
    work_dir()  # puts the Hub caches on the pipeline's work volume when one is mounted
    with contextlib.ExitStack() as stack:
        if backend != "local-completions" and scheme_of(model) in ("s3", "file"):
            # signature checked first when a verify key is set; a downloaded copy goes afterwards
            local_model = str(stack.enter_context(verified(model)))
        else:
            local_model = model
        result, samples = _evaluate(
            local_model,
            settings=settings,
            task_dir=task_dir,
            batch_size=batch_size,
            device=device,
            base_url=base_url,
            tokenizer=tokenizer,
            tensor_parallel_size=tensor_parallel_size,
            offline=offline,
        )
    if scheme_of(model) in ("s3", "file"):
        result.model = model  # the stored model, not the scratch copy it was read from
    if samples_path is not None:
        _write_samples(samples, Path(samples_path), result=result)
    if store is not None and key is not None:
        result = store_evaluation(store, key, result=result, samples=samples)
    return result


@dataclass(frozen=True)
class EvalSettings:
    """Everything of an evaluation that changes its scores, but the model and the tasks'
    definition (task folder, lm-eval release)."""

    backend: str
    tasks: list[str]
    limit: int | float | None
    num_fewshot: int | None
    seed: int
    dtype: str | None
    max_length: int | None
    model_args: dict[str, Any] = field(default_factory=dict)


EVAL_CACHE_PREFIX = "evals/eval-"
"""Store keys of cached evaluations: ``evals/eval-<digest>``."""
RESULTS_NAME = "results.json"
"""The results file of a cached evaluation (:meth:`EvalResult.save`)."""
MAX_RESULTS_BYTES = 16 * 1024**2
"""A cached results file larger than this is not read (it is not one modelgate wrote)."""
CACHE_KEY_VERSION = 1
"""Bumped when what a cached entry holds changes, so older entries are not reused."""
#: What :func:`_evaluate` records in ``EvalResult.config`` to check that two evaluations scored
#: the same documents the same way (``task_hashes``, ``task_config_hashes``: per task).
PAIRING_KEYS = (
    "task_hashes",
    "task_config_hashes",
    "lm_eval_version",
    "backend",
    "dtype",
    "limit",
    "num_fewshot",
    "seed",
    "max_length",
)


def _lm_eval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("lm_eval")
    except PackageNotFoundError:
        return ""


def model_digest(model: str) -> str:
    """A digest of a model folder's content, for :func:`eval_cache_key`.

    A stored folder (``s3://``, ``file://``) is described by its marker: each file's path and
    sha256 when the marker lists them, else its path and size together with the folder's URI
    (store keys name the commit and the quantization fingerprint, so a URI plus sizes pins the
    content). A plain local folder is hashed file by file.

    Raises:
        ConfigError: ``model`` is neither a stored URI nor a local folder.
        StorageError: The stored folder is incomplete or its marker unreadable.
    """
    digest = hashlib.sha256()
    if scheme_of(model) in ("s3", "file"):
        try:
            doc = json.loads(read_file(model, MARKER))
            files = sorted(doc["files"], key=lambda f: str(f["path"]))
            entries = [(str(f["path"]), int(f["size"]), f.get("sha256")) for f in files]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StorageError(f"{model}: {MARKER} is not a modelgate store marker: {e}") from e
        hashed = all(isinstance(sha, str) and sha for _, _, sha in entries)
        if not hashed:
            digest.update(f"uri\0{model.rstrip('/')}\0".encode())
        for path, size, sha in entries:
            digest.update(f"{path}\0{size}\0{sha if hashed else ''}\0".encode())
        return digest.hexdigest()
    folder = Path(model)
    if not folder.is_dir():
        raise ConfigError(f"model directory {model!r} does not exist here")
    return digest_path(folder)


def task_dir_digest(task_dir: str | None) -> str:
    """The content digest of a task folder: the one in a staged folder's key
    (``inputs/tasks-<digest>``, checked when it is fetched), or of a local folder's files;
    ``""`` for none.

    Raises:
        ConfigError: A local folder that does not exist.
        StorageError: A stored folder URI that is not a staged task folder.
    """
    if not task_dir:
        return ""
    if scheme_of(task_dir) in ("s3", "file"):
        parts = task_dir.rstrip("/").split("/")
        for part in reversed(parts[-2:]):  # on S3 the writer folder may follow the key
            if part.startswith("tasks-") and len(part) > len("tasks-"):
                return part[len("tasks-") :]
        raise StorageError(
            f"{task_dir} is not a staged task folder (.../inputs/tasks-<digest>); pass the "
            "local folder and let modelgate stage it"
        )
    folder = Path(task_dir)
    if not folder.is_dir():
        raise ConfigError(f"task folder {task_dir!r} does not exist")
    return digest_path(folder)


def eval_cache_key(model: str, *, settings: EvalSettings, task_dir: str | None) -> str:
    """The store key of an evaluation: ``evals/eval-<digest>`` over the model folder's
    content (:func:`model_digest`), the task names, the task folder's content, the lm-eval
    release (which fixes its own task definitions), and the backend, dtype, limit, few-shot
    count, seed, max length and extra model arguments.

    Raises:
        ConfigError: A local model or task folder does not exist.
        StorageError: A stored folder cannot be described.
    """
    doc = {
        "v": CACHE_KEY_VERSION,
        "model": model_digest(model),
        "tasks": sorted(settings.tasks),
        "task_dir": task_dir_digest(task_dir),
        "lm_eval": _lm_eval_version(),
        "backend": settings.backend,
        "dtype": settings.dtype,
        "limit": settings.limit,
        "num_fewshot": settings.num_fewshot,
        "seed": settings.seed,
        "max_length": settings.max_length,
        "model_args": settings.model_args,
    }
    text = json.dumps(doc, sort_keys=True, default=str)
    return EVAL_CACHE_PREFIX + hashlib.sha256(text.encode()).hexdigest()[:32]


def load_cached(store: ModelStore, key: str) -> EvalResult | None:
    """The cached evaluation under ``key``, or None when there is none (yet).

    Raises:
        EvaluationError: The entry's results file is too large or not a modelgate result.
        StorageError: The store cannot be read.
    """
    if not store.is_complete(key):
        return None
    uri = store.uri(key)
    files = {str(f["path"]): int(f["size"]) for f in json.loads(read_file(uri, MARKER))["files"]}
    size = files.get(RESULTS_NAME)
    if size is None or size > MAX_RESULTS_BYTES:
        raise EvaluationError(
            f"cached evaluation {uri} has no {RESULTS_NAME} of at most {MAX_RESULTS_BYTES} "
            "bytes; it was not written by modelgate: remove it from the store"
        )
    try:
        result = EvalResult.from_dict(json.loads(read_file(uri, RESULTS_NAME)))
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        raise EvaluationError(
            f"cached evaluation {uri} holds no modelgate result ({e}); remove it from the store"
        ) from e
    from modelgate.samples import SAMPLES_NAME

    result.samples_uri = f"{uri}/{SAMPLES_NAME}" if SAMPLES_NAME in files else None
    result.reused = True
    return result


def store_evaluation(
    store: ModelStore, key: str, *, result: EvalResult, samples: Any
) -> EvalResult:
    """Store ``result`` and its ``samples`` (a :class:`~modelgate.samples.SampleSet`) under
    ``key`` (first writer wins: if another run stored it meanwhile, its copy is kept and
    returned).

    Returns:
        The stored result, ``samples_uri`` naming the stored samples file.

    Raises:
        StorageError: The store cannot be written.
        EvaluationError: What the winner stored is not readable.
    """
    from modelgate.samples import write_samples

    with store.writer(key, source=f"lm-eval {result.backend} of {result.model}") as staging:
        result.save(staging / RESULTS_NAME)
        write_samples(samples, staging / _samples_name())
    stored = load_cached(store, key)
    if stored is None:  # the writer returned without error, so the key is complete
        raise EvaluationError(f"the evaluation stored as {store.uri(key)} is not there")
    stored.reused = False
    logger.info("stored the evaluation of %s as %s", result.model, store.uri(key))
    return stored


def _samples_name() -> str:
    from modelgate.samples import SAMPLES_NAME

    return SAMPLES_NAME


def _write_samples(samples: Any, path: Path, *, result: EvalResult | None) -> None:
    """Write ``samples`` to ``path`` (a file, or a folder that gets the samples file); a
    ``result`` without a ``samples_uri`` gets this file's path."""
    from modelgate.samples import write_samples

    target = path / _samples_name() if path.is_dir() else path
    write_samples(samples, target)
    if result is not None and result.samples_uri is None:
        result.samples_uri = str(target)


def _copy_samples(uri: str, path: Path) -> None:
    """Copy the stored samples file ``uri`` to ``path`` (read and checked on the way)."""
    from modelgate.samples import read_samples

    _write_samples(read_samples(uri), path, result=None)


def _hash_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def task_config_hashes(configs: dict[str, Any]) -> dict[str, str]:
    """Per task, a hash of lm-eval's resolved task config (``results["configs"]``), with every
    absolute path in it reduced to its file name: a task folder is fetched to another place in
    every pod, and lm-eval records where (``dataset_kwargs.data_files``,
    ``metadata.config_source``)."""

    def portable(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: portable(v) for k, v in value.items()}
        if isinstance(value, list):
            return [portable(v) for v in value]
        if isinstance(value, str) and _ABSOLUTE_PATH.match(value):
            return Path(value).name
        return value

    return {
        task: _hash_text(json.dumps(portable(config), sort_keys=True, default=str))
        for task, config in (configs or {}).items()
        if isinstance(config, dict)
    }


_ABSOLUTE_PATH = re.compile(r"^/[^\s{}]+$")
"""A one-line absolute POSIX path (no spaces, no template braces)."""


def _evaluate(
    model: str,
    *,
    settings: EvalSettings,
    task_dir: str | None,
    batch_size: int | str,
    device: str | None,
    base_url: str | None,
    tokenizer: str | None,
    tensor_parallel_size: int,
    offline: bool,
) -> tuple[EvalResult, Any]:
    """:func:`evaluate_model` on a local model folder (or a served model): the result and its
    :class:`~modelgate.samples.SampleSet`."""
    backend = settings.backend
    if backend != "local-completions":
        if not Path(model).is_dir():
            raise ConfigError(
                f"model directory {model!r} does not exist here; pass a stored model URI "
                "(s3://, file://) from the download or quantize step"
            )
    if task_dir:
        task_dir = str(prepare_task_dir(task_dir))

    import lm_eval

    from modelgate.samples import from_lm_eval

    manager = resolve_tasks(settings.tasks, task_dir=task_dir)
    args = build_model_args(
        backend,  # type: ignore[arg-type]
        model=model,
        base_url=base_url,
        tokenizer=tokenizer,
        dtype=settings.dtype,
        max_length=settings.max_length,
        tensor_parallel_size=tensor_parallel_size,
        extra=settings.model_args,
    )
    started = time.monotonic()
    seed = settings.seed
    logger.info(
        "lm-eval %s on %s: tasks=%s limit=%s", backend, model, settings.tasks, settings.limit
    )
    try:
        raw = lm_eval.simple_evaluate(
            model=backend,
            model_args=args,
            tasks=list(settings.tasks),
            num_fewshot=settings.num_fewshot,
            batch_size=batch_size,
            device=device,
            limit=settings.limit,
            task_manager=manager,
            log_samples=True,  # per-document metrics, kept as the samples file
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
    except (ConfigError, EvaluationError):
        raise
    except Exception as e:  # lm-eval and its backends raise broadly; keep the cause
        raise EvaluationError(f"lm-eval ({backend}) failed on {model}: {e}") from e
    if raw is None:
        raise EvaluationError("lm-eval returned nothing (non-zero rank?)")
    result = parse_lm_eval_results(raw, model=model, backend=backend)
    result.seconds = round(time.monotonic() - started, 3)
    logged = raw.get("samples") or {}
    result.config = {
        "tasks": list(settings.tasks),
        "limit": settings.limit,
        "num_fewshot": settings.num_fewshot,
        "batch_size": batch_size,
        "model_args": {k: v for k, v in args.items() if "token" not in k.lower()},
        "offline": offline,
        "lm_eval_version": getattr(lm_eval, "__version__", "") or _lm_eval_version(),
        "backend": backend,
        "dtype": settings.dtype,
        "seed": seed,
        "max_length": settings.max_length,
        "task_config_hashes": task_config_hashes(raw.get("configs") or {}),
    }
    # lm-eval's task hashes over each task's documents, prompts and targets (what its
    # EvaluationTracker writes as "task_hashes"), completed by from_lm_eval
    samples = from_lm_eval(logged, meta={k: result.config.get(k) for k in PAIRING_KEYS})
    result.config["task_hashes"] = dict(samples.meta.get("task_hashes") or {})
    logger.info("lm-eval finished in %.1fs: %s", result.seconds, result.flat())
    return result, samples
