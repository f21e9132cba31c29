"""Per-sample evaluation results: which documents a model got right, kept compact for gates.

lm-eval scores each document of a task and, with ``log_samples``, keeps one record per document
(and filter) holding the document, the prompts, the model's answers and each metric's per-document
value. A paired gate (:mod:`modelgate.gates`) needs only a few fields of each record: the task,
the document's ``doc_id`` and ``doc_hash`` (to pair the same document across two models) and each
metric's per-document number. This module keeps those, in a compact JSON Lines file:

* line 1, the header: ``{"format": "modelgate-samples", "version": 1, "count": N, "meta": {...}}``
  (``meta``: ``lm_eval_version``, ``task_hashes`` ``{task: hash}``, ``backend``, ``dtype``,
  ``limit``, ``num_fewshot``, ``seed``, ``model``);
* then one line per document: ``{"task": ..., "doc_id": 3, "doc_hash": ..., "metrics": {"acc":
  1.0}}``.

Metric names follow :func:`modelgate.evaluate.parse_lm_eval_results`: ``acc`` for lm-eval's
``acc,none`` and ``exact_match,strict-match`` for another filter. Only per-document numbers are
kept; metrics whose per-document value is not a number (perplexities and other corpus-level
metrics carry tuples) have no per-sample entry and are gated unpaired.

Every file read here is untrusted: reads are bounded (:data:`MAX_SAMPLES_BYTES`,
:data:`MAX_LINE_BYTES`, :data:`MAX_SAMPLES`) and a malformed record is an
:class:`~modelgate.errors.EvaluationError` naming the file and line.
"""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from modelgate.errors import ConfigError, EvaluationError, StorageError

logger = logging.getLogger(__name__)

#: The compact samples file's name, in a results folder or a stored folder.
SAMPLES_NAME = "samples.jsonl"
FORMAT = "modelgate-samples"
VERSION = 1
#: Most bytes read from one samples file (compact, or one of lm-eval's).
MAX_SAMPLES_BYTES = 1024**3
#: Longest line accepted (an lm-eval record holds the document and the model's answers).
MAX_LINE_BYTES = 32 * 1024**2
#: Most per-document records kept over all tasks.
MAX_SAMPLES = 2_000_000
#: Most lm-eval ``samples_*.jsonl`` files read from one folder.
MAX_FILES = 2_000
#: Longest task name, ``doc_hash`` and metric name accepted.
MAX_NAME = 256
#: ``meta`` key of a sample set that stands for results that could not be read (the reason).
UNREADABLE = "unreadable"
#: The fields of ``meta`` that must agree for two sample sets to be paired (a per-task mapping
#: is compared on the gated task; a field known on one side only does not block pairing).
PAIRING_META = ("limit", "num_fewshot", "seed", "task_config_hashes")

# lm-eval's EvaluationTracker.save_results_samples writes samples_<task>_<date_id>.jsonl with
# date_id = datetime.now().isoformat().replace(":", "-") (lm_eval/loggers/evaluation_tracker.py).
_LM_EVAL_FILE = re.compile(
    r"^samples_(?P<task>.+)_(?P<date>\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)\.jsonl$"
)


@dataclass(frozen=True)
class Sample:
    """One scored document: its task, ``doc_id`` and ``doc_hash``, and each metric's value."""

    task: str
    doc_id: int
    doc_hash: str
    metrics: dict[str, float]

    def get(self, metric: str) -> float | None:
        """The value of ``metric`` (``acc`` or ``acc,none``) on this document, if scored."""
        if metric in self.metrics:
            return self.metrics[metric]
        name, _, filt = metric.partition(",")
        return self.metrics.get(name) if filt in ("", "none") else None


@dataclass
class SampleSet:
    """The per-document results of one evaluation, with what it was run with (``meta``)."""

    samples: list[Sample]
    meta: dict[str, Any] = field(default_factory=dict)

    def tasks(self) -> list[str]:
        """The tasks with samples, in first-seen order."""
        return list(dict.fromkeys(s.task for s in self.samples))

    def by_doc(self, task: str) -> dict[int, Sample]:
        """The samples of ``task`` keyed by ``doc_id``."""
        return {s.doc_id: s for s in self.samples if s.task == task}

    def task_hash(self, task: str) -> str | None:
        """lm-eval's hash of the task's documents, prompts and targets, if known."""
        hashes = self.meta.get("task_hashes")
        value = hashes.get(task) if isinstance(hashes, dict) else None
        return value if isinstance(value, str) else None


def _bad(where: str, why: str) -> EvaluationError:
    return EvaluationError(
        f"{where}: {why}; expected lm-eval --log_samples records or a modelgate {SAMPLES_NAME}"
    )


def _name(value: object, *, what: str, where: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME:
        raise _bad(where, f"{what} must be a non-empty string of at most {MAX_NAME} characters")
    return value


def _doc_id(value: object, *, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _bad(where, f"doc_id must be a non-negative integer, got {value!r:.40}")
    return value


def _number(value: object) -> float | None:
    """A per-document metric value as a float; None for what is not one number."""
    item = getattr(value, "item", None)
    if type(value).__module__ == "numpy" and callable(item):
        value = item()  # numpy scalars (np.bool_, np.float32) from lm-eval's metrics
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
        return number if math.isfinite(number) else None
    return None


def metric_label(name: str, filt: str) -> str:
    """``acc`` for lm-eval's ``acc`` under filter ``none``, else ``name,filter``."""
    return name if filt == "none" else f"{name},{filt}"


class _Collector:
    """Merges lm-eval records (one per document and filter) into one :class:`Sample` each."""

    def __init__(self) -> None:
        self.order: list[tuple[str, int]] = []
        self.hashes: dict[tuple[str, int], str] = {}
        self.metrics: dict[tuple[str, int], dict[str, float]] = {}
        self.task_hash_parts: dict[str, list[str] | None] = {}

    def add(self, task: str, record: object, *, where: str) -> None:
        if not isinstance(record, dict):
            raise _bad(where, "a sample record is not a JSON object")
        doc_id = _doc_id(record.get("doc_id"), where=where)
        doc_hash = _name(record.get("doc_hash"), what="doc_hash", where=where)
        filt = record.get("filter", "none")
        filt = _name(filt, what="filter", where=where)
        names = record.get("metrics")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _bad(where, "metrics must be the list of the record's metric names")
        key = (task, doc_id)
        if key not in self.hashes:
            if len(self.order) >= MAX_SAMPLES:
                raise _bad(where, f"more than {MAX_SAMPLES} samples")
            self.order.append(key)
            self.hashes[key] = doc_hash
            self.metrics[key] = {}
        elif self.hashes[key] != doc_hash:
            raise _bad(where, f"{task} doc_id {doc_id} appears with two different doc_hash")
        values = self.metrics[key]
        for name in names:
            label = metric_label(_name(name, what="metric name", where=where), filt)
            number = _number(record.get(name))
            if number is None:
                continue  # a corpus-level metric (tuple) or a missing/non-finite value
            if label in values:
                raise _bad(where, f"{task} doc_id {doc_id} scores {label} twice")
            values[label] = number
        # lm-eval's task hash: EvaluationTracker.save_results_aggregated hashes
        # "".join(doc_hash + prompt_hash + target_hash) over the task's records in order.
        parts = self.task_hash_parts.setdefault(task, [])
        prompt, target = record.get("prompt_hash"), record.get("target_hash")
        if parts is not None and isinstance(prompt, str) and isinstance(target, str):
            parts.append(doc_hash + prompt + target)
        else:
            self.task_hash_parts[task] = None

    def result(self, meta: dict[str, Any]) -> SampleSet:
        samples = [
            Sample(task=t, doc_id=d, doc_hash=self.hashes[(t, d)], metrics=self.metrics[(t, d)])
            for t, d in self.order
        ]
        meta = dict(meta)
        given = meta.get("task_hashes")
        hashes = dict(given) if isinstance(given, dict) else {}
        for task, parts in self.task_hash_parts.items():
            if task not in hashes and parts:
                hashes[task] = hashlib.sha256("".join(parts).encode("utf-8")).hexdigest()
        meta["task_hashes"] = hashes
        return SampleSet(samples=samples, meta=meta)


def from_lm_eval(
    samples_by_task: dict[str, list[dict[str, Any]]], *, meta: dict[str, Any]
) -> SampleSet:
    """The compact form of lm-eval's in-memory ``results["samples"]`` (``log_samples=True``).

    Each record is one document under one filter, as built in ``lm_eval/evaluator.py``
    (``evaluate``: ``doc_id``, ``doc_hash``, ``prompt_hash``, ``target_hash``, ``filter``,
    ``metrics`` naming the metrics, and each metric's value under its name). Records of one
    document under several filters are merged; ``meta["task_hashes"]`` is completed with lm-eval's
    own task hash where the records allow it.

    Args:
        samples_by_task: ``{task: [record, ...]}``.
        meta: What the evaluation ran with (see the module docstring); copied.

    Returns:
        The sample set, in lm-eval's order.

    Raises:
        EvaluationError: A record is malformed (no integer ``doc_id``, no ``doc_hash``, two
            hashes for one document, more than :data:`MAX_SAMPLES` documents).
    """
    if not isinstance(samples_by_task, dict):
        raise _bad("lm-eval samples", "expected a mapping of task name to records")
    collector = _Collector()
    for task, records in samples_by_task.items():
        where = f"lm-eval samples of {task!r:.80}"
        _name(task, what="task name", where=where)
        if not isinstance(records, list):
            raise _bad(where, "expected a list of records")
        for i, record in enumerate(records):
            collector.add(task, record, where=f"{where}, record {i}")
    return collector.result(meta)


def _lines(stream: IO[bytes], *, where: str) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines of ``stream``, bounded by :data:`MAX_LINE_BYTES` and
    :data:`MAX_SAMPLES_BYTES`."""
    total = 0
    number = 0
    while True:
        line = stream.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        number += 1
        total += len(line)
        if len(line) > MAX_LINE_BYTES:
            raise _bad(f"{where}:{number}", f"line longer than {MAX_LINE_BYTES} bytes")
        if total > MAX_SAMPLES_BYTES:
            raise _bad(where, f"more than {MAX_SAMPLES_BYTES} bytes")
        if line.strip():
            yield number, line


def _json(line: bytes, *, where: str) -> Any:
    try:
        return json.loads(line)
    except ValueError as e:
        raise _bad(where, f"not JSON: {e}") from e


def _open(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except OSError as e:
        raise EvaluationError(f"cannot read samples file {path}: {e}") from e


def _lm_eval_files(path: Path, *, date: str | None = None) -> list[tuple[str, Path]]:
    """``(task, file)`` of lm-eval's samples files at ``path``: the newest per task."""
    if path.is_file():
        found = _LM_EVAL_FILE.match(path.name)
        if not found:
            raise ConfigError(
                f"{path} is not an lm-eval samples file: expected samples_<task>_<date>.jsonl "
                "as written by lm_eval --log_samples --output_path"
            )
        return [(found["task"], path)]
    if not path.is_dir():
        raise ConfigError(f"{path} does not exist: give lm-eval's --output_path folder or file")
    newest: dict[str, tuple[str, Path]] = {}
    seen = 0
    for file in sorted(path.rglob("samples_*.jsonl")):
        seen += 1
        if seen > MAX_FILES:
            raise ConfigError(f"{path} holds more than {MAX_FILES} samples files; name one folder")
        found = _LM_EVAL_FILE.match(file.name)
        if not found or not file.is_file():
            continue
        task, stamp = found["task"], found["date"]
        if date is not None and stamp != date:
            continue
        if task not in newest or stamp > newest[task][0]:
            newest[task] = (stamp, file)
    if not newest:
        raise ConfigError(
            f"{path} holds no lm-eval samples_<task>_<date>.jsonl; run lm_eval with --log_samples"
        )
    return [(task, file) for task, (_, file) in sorted(newest.items())]


def _results_meta(files: Iterable[Path]) -> dict[str, Any]:
    """``meta`` from lm-eval's ``results_<date>.json`` written beside the samples files."""
    meta: dict[str, Any] = {}
    for file in files:
        found = _LM_EVAL_FILE.match(file.name)
        results = file.with_name(f"results_{found['date']}.json") if found else None
        if results is None or not results.is_file():
            continue
        try:
            if results.stat().st_size > MAX_LINE_BYTES:
                continue
            data = json.loads(results.read_bytes())
        except (OSError, ValueError) as e:
            logger.warning("ignoring %s beside the samples: %s", results, e)
            continue
        if not isinstance(data, dict):
            continue
        raw_config = data.get("config")
        config: dict[str, Any] = raw_config if isinstance(raw_config, dict) else {}
        hashes = data.get("task_hashes")
        if isinstance(hashes, dict):
            meta.setdefault("task_hashes", {}).update(
                {k: v for k, v in hashes.items() if isinstance(k, str) and isinstance(v, str)}
            )
        nshot = data.get("n-shot")
        if isinstance(nshot, dict):
            meta.setdefault("num_fewshot", {}).update(nshot)
        for key, source in (("limit", "limit"), ("seed", "random_seed"), ("backend", "model")):
            if key not in meta and source in config:
                meta[key] = config[source]
        for key, value in (
            ("model", data.get("model_name") or config.get("model_args")),
            ("lm_eval_version", data.get("lm_eval_version")),
        ):
            if key not in meta and value is not None:
                meta[key] = value
    return meta


def read_lm_eval_samples(path: str | os.PathLike[str], *, date: str | None = None) -> SampleSet:
    """Read lm-eval's ``samples_<task>_<date>.jsonl`` (``lm_eval --log_samples --output_path``).

    ``path`` is one such file or a folder searched recursively; in a folder the newest file of
    each task is read. ``meta`` comes from lm-eval's ``results_<date>.json`` beside each file
    (task hashes, ``n-shot``, ``limit``, seed) when it is there.

    Args:
        path: A samples file or a folder.
        date: Only files of this run (the ``<date>`` of its ``results_<date>.json``).

    Raises:
        ConfigError: ``path`` is neither a samples file nor a folder holding some.
        EvaluationError: A file cannot be read, is too large, or holds a malformed record.
    """
    files = _lm_eval_files(Path(path), date=date)
    collector = _Collector()
    for task, file in files:
        with _open(file) as stream:
            for number, line in _lines(stream, where=str(file)):
                where = f"{file}:{number}"
                collector.add(task, _json(line, where=where), where=where)
    sset = collector.result(_results_meta(f for _, f in files))
    logger.info("read %d samples of %s from %s", len(sset.samples), sset.tasks(), path)
    return sset


def samples_beside(results: str | os.PathLike[str]) -> SampleSet | None:
    """lm-eval's samples written by the same run as the results file ``results`` (its
    ``samples_<task>_<date>.jsonl`` beside ``results_<date>.json``), or None when there are none.

    A folder is searched, like :meth:`modelgate.evaluate.EvalResult.load`, for its newest
    ``results_*.json``.

    Raises:
        EvaluationError: A samples file is there but cannot be read or is malformed.
    """
    file = Path(results)
    if file.is_dir():
        found = sorted(file.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
        if not found:
            return None
        file = found[-1]
    stamp = re.match(r"^results_(.+)\.json$", file.name)
    if not stamp or not any(file.parent.glob(f"samples_*_{glob.escape(stamp[1])}.jsonl")):
        return None
    return read_lm_eval_samples(file.parent, date=stamp[1])


def load_samples(path_or_uri: str | os.PathLike[str]) -> SampleSet:
    """Read per-sample results in either format: a compact file (:func:`read_samples`: a file,
    a folder holding :data:`SAMPLES_NAME`, or a stored URI) or lm-eval's ``samples_*.jsonl``
    (:func:`read_lm_eval_samples`: a file or a folder).

    Raises:
        ConfigError: Nothing readable at ``path_or_uri``.
        StorageError: A stored folder cannot be read.
        EvaluationError: A file is too large or malformed.
    """
    text = str(path_or_uri)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        return read_samples(text)
    path = Path(text)
    if path.is_file() and _LM_EVAL_FILE.match(path.name):
        return read_lm_eval_samples(path)
    if path.is_dir() and not (path / SAMPLES_NAME).is_file():
        return read_lm_eval_samples(path)
    return read_samples(path)


def write_samples(sset: SampleSet, path: str | os.PathLike[str]) -> None:
    """Write ``sset`` as a compact samples file (header line, then one line per document).

    The file is written beside ``path`` and renamed into place, so a reader never sees half.

    Raises:
        EvaluationError: ``meta`` is not JSON-serialisable, or the file cannot be written.
    """
    target = Path(path)
    header = {"format": FORMAT, "version": VERSION, "count": len(sset.samples), "meta": sset.meta}
    partial = target.with_name(f".{target.name}.partial")
    try:
        with partial.open("w", encoding="utf-8") as f:
            f.write(json.dumps(header, sort_keys=True) + "\n")
            for s in sset.samples:
                record = {
                    "task": s.task,
                    "doc_id": s.doc_id,
                    "doc_hash": s.doc_hash,
                    "metrics": s.metrics,
                }
                f.write(json.dumps(record, separators=(",", ":")) + "\n")
        partial.replace(target)
    except (OSError, TypeError, ValueError) as e:
        partial.unlink(missing_ok=True)
        raise EvaluationError(f"cannot write samples file {target}: {e}") from e


def _parse_compact(lines: Iterator[tuple[int, bytes]], *, where: str) -> SampleSet:
    first = next(lines, None)
    if first is None:
        raise _bad(where, "the file is empty")
    header = _json(first[1], where=f"{where}:{first[0]}")
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise _bad(where, f"line 1 is not a {FORMAT} header")
    if header.get("version") != VERSION:
        raise _bad(where, f"{FORMAT} version {header.get('version')!r:.20} is not {VERSION}")
    meta = header.get("meta")
    if not isinstance(meta, dict):
        raise _bad(where, "the header has no meta mapping")
    samples: list[Sample] = []
    seen: set[tuple[str, int]] = set()
    for number, line in lines:
        at = f"{where}:{number}"
        record = _json(line, where=at)
        if not isinstance(record, dict):
            raise _bad(at, "a sample is not a JSON object")
        task = _name(record.get("task"), what="task", where=at)
        doc_id = _doc_id(record.get("doc_id"), where=at)
        doc_hash = _name(record.get("doc_hash"), what="doc_hash", where=at)
        raw = record.get("metrics")
        if not isinstance(raw, dict):
            raise _bad(at, "metrics must be a mapping of metric name to number")
        metrics: dict[str, float] = {}
        for name, value in raw.items():
            number_value = _number(value)
            if number_value is None:
                raise _bad(at, f"metric {name!r:.60} is not a finite number")
            metrics[_name(name, what="metric name", where=at)] = number_value
        if (task, doc_id) in seen:
            raise _bad(at, f"{task} doc_id {doc_id} appears twice")
        if len(samples) >= MAX_SAMPLES:
            raise _bad(where, f"more than {MAX_SAMPLES} samples")
        seen.add((task, doc_id))
        samples.append(Sample(task=task, doc_id=doc_id, doc_hash=doc_hash, metrics=metrics))
    if header.get("count") != len(samples):
        raise _bad(where, f"the header counts {header.get('count')!r:.20}, found {len(samples)}")
    return SampleSet(samples=samples, meta=meta)


def _stored_text(uri: str) -> bytes:
    """The samples file of a stored folder (``s3://``/``file://``), size-checked on its marker."""
    from modelgate.storage import MARKER, read_file, read_marker

    folder, name = uri.rstrip("/"), SAMPLES_NAME
    if folder.endswith(".jsonl"):
        folder, _, name = folder.rpartition("/")
    listed = {f.path: f.size for f in read_marker(read_file(folder, MARKER), uri=folder)}
    if name not in listed:
        raise StorageError(f"{folder} holds no {name}; was the evaluation run with samples kept?")
    if listed[name] > MAX_SAMPLES_BYTES:
        raise EvaluationError(f"{uri}: {listed[name]} bytes, more than {MAX_SAMPLES_BYTES}")
    return read_file(folder, name).encode("utf-8")


def read_samples(path_or_uri: str | os.PathLike[str]) -> SampleSet:
    """Read a compact samples file written by :func:`write_samples`.

    Args:
        path_or_uri: A local file, a local folder holding :data:`SAMPLES_NAME`, or a stored folder
            (``s3://``/``file://`` URI, or that URI followed by ``/samples.jsonl``).

    Raises:
        ConfigError: The path does not exist.
        StorageError: The stored folder cannot be read or holds no samples file.
        EvaluationError: The file is too large or malformed.
    """
    text = str(path_or_uri)
    if re.match(r"^[a-z][a-z0-9+.-]*://", text):
        import io

        data = _stored_text(text)
        return _parse_compact(_lines(io.BytesIO(data), where=text), where=text)
    file = Path(text)
    if file.is_dir():
        file = file / SAMPLES_NAME
    if not file.is_file():
        raise ConfigError(f"samples file {file} does not exist")
    with _open(file) as stream:
        return _parse_compact(_lines(stream, where=str(file)), where=str(file))


# --- pairing ------------------------------------------------------------------------------------


@dataclass
class Pairs:
    """One metric's per-document values of the candidate and a reference, on the documents both
    scored (same ``doc_id`` and ``doc_hash``), in ``doc_id`` order."""

    task: str
    metric: str
    doc_ids: list[int]
    candidate: list[float]
    reference: list[float]
    #: Documents scored on one side only (not paired).
    only_candidate: int = 0
    only_reference: int = 0

    @property
    def n(self) -> int:
        """Number of pairs."""
        return len(self.doc_ids)

    @property
    def binary(self) -> bool:
        """True when every value on both sides is 0 or 1 (accuracy-like metrics)."""
        return all(v in (0.0, 1.0) for v in (*self.candidate, *self.reference))


@dataclass(frozen=True)
class NoPairs:
    """Why two sample sets cannot be paired on a metric (the gate falls back to unpaired)."""

    reason: str


def _agree(a: object, b: object, task: str) -> bool:
    """Two meta values agree: equal, or either unknown; per-task mappings compare ``task``'s."""
    if isinstance(a, dict) and isinstance(b, dict):
        a, b = a.get(task), b.get(task)
    return a is None or b is None or a == b


def _values(sset: SampleSet, task: str, metric: str) -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    for s in sset.samples:
        if s.task == task and (value := s.get(metric)) is not None:
            out[s.doc_id] = (s.doc_hash, value)
    return out


def pair(
    candidate: SampleSet,
    reference: SampleSet,
    *,
    task: str,
    metric: str,
    label: str = "reference",
) -> Pairs | NoPairs:
    """Pair the candidate's and the reference's per-document values of ``task``/``metric``.

    Pairing is refused (:class:`NoPairs` with the reason) when either side has no per-document
    values of the metric, when lm-eval's task hashes (documents, prompts and targets) or the
    ``limit``, ``num_fewshot``, ``seed`` or task config hash in ``meta`` differ, or when one
    ``doc_id`` has two different ``doc_hash`` (the documents changed). Documents on one side
    only are counted, not paired.

    Args:
        candidate: The candidate's samples.
        reference: The base model's or production's samples.
        task: lm-eval task name.
        metric: Metric name (``acc`` or ``acc,none``).
        label: What the reference is, for the reasons (``base``, ``production``).
    """
    for side, sset in (("candidate", candidate), (label, reference)):
        if UNREADABLE in sset.meta:
            return NoPairs(f"{side}'s per-sample results are unreadable: {sset.meta[UNREADABLE]}")
        if task not in sset.tasks():
            return NoPairs(f"{side} has no per-sample results of {task}")
    cand, ref = _values(candidate, task, metric), _values(reference, task, metric)
    for side, values in (("candidate", cand), (label, ref)):
        if not values:
            return NoPairs(f"{side} has no per-document values of {metric}")
    ch, rh = candidate.task_hash(task), reference.task_hash(task)
    if ch and rh and ch != rh:
        return NoPairs(f"lm-eval task hashes differ (documents, prompts or targets of {task})")
    for key in PAIRING_META:
        a, b = candidate.meta.get(key), reference.meta.get(key)
        if not _agree(a, b, task):
            return NoPairs(f"{key} differs: candidate {a!r:.40} vs {label} {b!r:.40}")
    common = sorted(cand.keys() & ref.keys())
    for doc_id in common:
        if cand[doc_id][0] != ref[doc_id][0]:
            return NoPairs(f"doc_id {doc_id} of {task} has a different doc_hash on each side")
    return Pairs(
        task=task,
        metric=metric,
        doc_ids=common,
        candidate=[cand[d][1] for d in common],
        reference=[ref[d][1] for d in common],
        only_candidate=len(cand) - len(common),
        only_reference=len(ref) - len(common),
    )


def mean_of(sset: SampleSet, *, task: str, metric: str) -> float | None:
    """Mean of the per-document values of ``task``/``metric`` (None when there are none)."""
    values = [v for _, v in _values(sset, task, metric).values()]
    return math.fsum(values) / len(values) if values else None


# --- statistics (no scipy: it is not a runtime dependency) ---------------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz; Numerical Recipes
    in C, 2nd ed., section 6.4, ``betacf``)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def _betai(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """Student's t distribution function with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    tail = 0.5 * _betai(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on
    :func:`t_cdf`, to about 1e-12)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
        if hi > 1e12:
            return hi
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2.0


def mcnemar_exact_p(losses: int, gains: int) -> float:
    """Two-sided exact McNemar p-value on the discordant pairs: under no difference each of the
    ``losses + gains`` discordant documents goes either way with probability 1/2, so
    ``p = min(1, 2 * P[Binomial(n, 1/2) <= min(losses, gains)])``."""
    if losses < 0 or gains < 0:
        raise ValueError("discordant counts must be non-negative")
    n, k = losses + gains, min(losses, gains)
    if n == 0:
        return 1.0
    log_half = n * math.log(2.0)
    terms = [
        math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - log_half)
        for i in range(k + 1)
    ]
    return min(1.0, 2.0 * math.fsum(terms))
