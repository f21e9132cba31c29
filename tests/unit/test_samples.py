"""Per-sample results: lm-eval's records in, the compact file out and back, bounded reads, and
the statistics the paired gate uses (checked against hand computations and tables)."""

import json
import math
from fractions import Fraction
from pathlib import Path

import pytest

from modelgate import samples
from modelgate.errors import ConfigError, EvaluationError, StorageError
from modelgate.samples import (
    SAMPLES_NAME,
    NoPairs,
    Sample,
    SampleSet,
    from_lm_eval,
    load_samples,
    mcnemar_exact_p,
    pair,
    read_lm_eval_samples,
    read_samples,
    samples_beside,
    t_cdf,
    t_quantile,
    write_samples,
)
from modelgate.storage import open_store

pytestmark = pytest.mark.unit


def record(doc_id: int, *, filt: str = "none", doc_hash: str | None = None, **metrics) -> dict:
    """A record shaped like lm-eval 0.4's ``evaluate`` builds with log_samples
    (lm_eval/evaluator.py: doc_id, doc, target, arguments, resps, filtered_resps, filter,
    metrics, doc_hash, prompt_hash, target_hash, then each metric's value under its name)."""
    return {
        "doc_id": doc_id,
        "doc": {"question": f"q{doc_id}"},
        "target": "4",
        "arguments": {"gen_args_0": {"arg_0": "2+2=", "arg_1": " 4"}},
        "resps": [[["-1.0", "True"]]],
        "filtered_resps": [["-1.0", "True"]],
        "filter": filt,
        "metrics": list(metrics),
        "doc_hash": doc_hash or f"h{doc_id}",
        "prompt_hash": f"p{doc_id}",
        "target_hash": f"t{doc_id}",
        **metrics,
    }


def test_from_lm_eval_keeps_doc_ids_hashes_and_per_document_numbers():
    sset = from_lm_eval(
        {
            "arith": [
                record(0, acc=True, word_perplexity=[-3.2, 4]),
                record(1, acc=0.0, word_perplexity=[-1.0, 2]),
                record(0, filt="strict", exact_match=1),
            ]
        },
        meta={"limit": 2, "seed": 0},
    )
    assert sset.samples == [
        Sample("arith", 0, "h0", {"acc": 1.0, "exact_match,strict": 1.0}),
        Sample("arith", 1, "h1", {"acc": 0.0}),
    ]
    assert sset.meta["limit"] == 2
    # lm-eval's task hash (loggers/evaluation_tracker.py): sha256 of the joined record hashes
    import hashlib

    joined = "h0p0t0" + "h1p1t1" + "h0p0t0"
    assert sset.meta["task_hashes"] == {"arith": hashlib.sha256(joined.encode()).hexdigest()}
    assert sset.samples[0].get("acc,none") == 1.0 and sset.samples[0].get("acc,strict") is None


def test_numpy_metric_values_are_numbers():
    np = pytest.importorskip("numpy", reason="lm-eval's metrics may return numpy scalars")
    sset = from_lm_eval(
        {"a": [record(0, acc=np.bool_(True), f1=np.float32(0.5), em=np.int64(0))]}, meta={}
    )
    assert sset.samples[0].metrics == {"acc": 1.0, "f1": 0.5, "em": 0.0}


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([{"doc_id": "0", "doc_hash": "h", "metrics": []}], "doc_id must be"),
        ([{"doc_id": True, "doc_hash": "h", "metrics": []}], "doc_id must be"),
        ([{"doc_id": 0, "metrics": []}], "doc_hash must be"),
        ([{"doc_id": 0, "doc_hash": "h", "metrics": "acc"}], "list of the record"),
        ([record(0, acc=1), record(0, doc_hash="other", acc=1)], "two different doc_hash"),
        ([record(0, acc=1), record(0, acc=0)], "scores acc twice"),
        (["not a record"], "not a JSON object"),
    ],
)
def test_malformed_lm_eval_records_are_refused(records, match):
    with pytest.raises(EvaluationError, match=match):
        from_lm_eval({"arith": records}, meta={})


def test_the_compact_file_round_trips_and_starts_with_a_header(tmp_path):
    sset = SampleSet(
        samples=[Sample("a", 3, "x", {"acc": 1.0}), Sample("b", 0, "y", {"f1": 0.25})],
        meta={"model": "m", "task_hashes": {"a": "ha"}, "limit": None},
    )
    path = tmp_path / SAMPLES_NAME
    write_samples(sset, path)
    header = json.loads(path.read_text().splitlines()[0])
    assert header["format"] == "modelgate-samples" and header["count"] == 2
    assert read_samples(path) == sset
    assert read_samples(tmp_path) == sset  # a folder holding samples.jsonl
    assert not list(tmp_path.glob(".*partial"))


def bad_file(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / SAMPLES_NAME
    path.write_text("\n".join(lines) + "\n")
    return path


HEADER = json.dumps({"format": "modelgate-samples", "version": 1, "count": 1, "meta": {}})


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        ([], "empty"),
        (['{"format": "other"}'], "header"),
        ([HEADER.replace('"version": 1', '"version": 9')], "version 9"),
        ([HEADER, "{not json"], "not JSON"),
        ([HEADER, '{"task": "a", "doc_id": 0, "doc_hash": "x", "metrics": {"acc": "1"}}'], "acc"),
        ([HEADER, '{"task": "a", "doc_id": -1, "doc_hash": "x", "metrics": {}}'], "doc_id"),
        ([HEADER], "counts 1, found 0"),
        (
            [HEADER.replace('"count": 1', '"count": 2')]
            + ['{"task": "a", "doc_id": 0, "doc_hash": "x", "metrics": {}}'] * 2,
            "appears twice",
        ),
    ],
)
def test_malformed_compact_files_are_refused_naming_the_file(tmp_path, lines, match):
    path = bad_file(tmp_path, lines)
    with pytest.raises(EvaluationError, match=match) as info:
        read_samples(path)
    assert str(path) in str(info.value)


def test_reads_are_bounded(tmp_path, monkeypatch):
    path = bad_file(
        tmp_path, [HEADER, '{"task": "a", "doc_id": 0, "doc_hash": "x", "metrics": {}}']
    )
    monkeypatch.setattr(samples, "MAX_LINE_BYTES", 40)
    with pytest.raises(EvaluationError, match="longer than 40 bytes"):
        read_samples(path)
    monkeypatch.setattr(samples, "MAX_LINE_BYTES", 10_000)
    monkeypatch.setattr(samples, "MAX_SAMPLES_BYTES", 100)
    with pytest.raises(EvaluationError, match="more than 100 bytes"):
        read_samples(path)


def test_missing_paths_say_so(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_samples(tmp_path / "nope.jsonl")
    with pytest.raises(ConfigError, match="no lm-eval samples"):
        read_lm_eval_samples(tmp_path)
    with pytest.raises(ConfigError, match="not an lm-eval samples file"):
        read_lm_eval_samples(bad_file(tmp_path, [HEADER]))


def write_lm_eval_run(folder: Path, date: str, task: str, records: list[dict], **results) -> None:
    """What ``lm_eval --log_samples --output_path`` writes (EvaluationTracker: results_<date>.json
    and samples_<task>_<date>.jsonl in the model's folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"samples_{task}_{date}.jsonl").open("w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    (folder / f"results_{date}.json").write_text(json.dumps({"results": {task: {}}, **results}))


def test_lm_eval_files_newest_run_per_task_and_meta_from_results(tmp_path):
    old, new = "2026-01-01T10-00-00.000001", "2026-02-01T10-00-00.000001"
    write_lm_eval_run(tmp_path / "m", old, "arith", [record(0, acc=0)])
    write_lm_eval_run(
        tmp_path / "m",
        new,
        "arith",
        [record(0, acc=1), record(1, acc=0)],
        task_hashes={"arith": "abc"},
        config={"limit": 2.0, "random_seed": 0, "model": "hf"},
        **{"n-shot": {"arith": 0}},
    )
    sset = read_lm_eval_samples(tmp_path)
    assert [(s.doc_id, s.metrics["acc"]) for s in sset.samples] == [(0, 1.0), (1, 0.0)]
    assert sset.meta["task_hashes"] == {"arith": "abc"}
    assert sset.meta["limit"] == 2.0 and sset.meta["seed"] == 0
    assert sset.meta["num_fewshot"] == {"arith": 0}
    older = read_lm_eval_samples(tmp_path, date=old)
    assert [s.metrics["acc"] for s in older.samples] == [0.0]
    # beside its results file, and in either format through load_samples
    assert samples_beside(tmp_path / "m" / f"results_{old}.json") == older
    assert samples_beside(tmp_path / "nothing.json") is None
    assert load_samples(tmp_path / "m" / f"samples_arith_{new}.jsonl").samples == sset.samples


def test_a_stored_samples_file_is_read_through_the_store(tmp_path):
    sset = SampleSet(samples=[Sample("a", 0, "x", {"acc": 1.0})], meta={"model": "m"})
    store = open_store((tmp_path / "store").as_uri())
    with store.writer("evals/run1") as folder:
        write_samples(sset, folder / SAMPLES_NAME)
    uri = store.uri("evals/run1")
    assert read_samples(uri) == sset
    assert read_samples(f"{uri}/{SAMPLES_NAME}") == sset
    with store.writer("evals/run2") as folder:
        (folder / "other.txt").write_text("x")
    with pytest.raises(StorageError, match="holds no samples.jsonl"):
        read_samples(store.uri("evals/run2"))


# --- pairing ---------------------------------------------------------------------------------


def sset(values: dict[int, float], **meta) -> SampleSet:
    return SampleSet([Sample("arc", d, f"h{d}", {"acc": v}) for d, v in values.items()], meta)


def test_pairs_match_doc_ids_and_count_one_sided_documents():
    pairs = pair(sset({0: 1, 1: 0, 2: 1}), sset({1: 1, 2: 1, 3: 0}), task="arc", metric="acc")
    assert not isinstance(pairs, NoPairs)
    assert pairs.doc_ids == [1, 2] and pairs.candidate == [0, 1] and pairs.reference == [1, 1]
    assert (pairs.only_candidate, pairs.only_reference) == (1, 1) and pairs.binary


@pytest.mark.parametrize(
    ("cand", "ref", "reason"),
    [
        (sset({0: 1}, limit=10), sset({0: 1}, limit=20), "limit differs"),
        (sset({0: 1}, num_fewshot={"arc": 0}), sset({0: 1}, num_fewshot={"arc": 5}), "num_fewshot"),
        (sset({0: 1}, seed=1), sset({0: 1}, seed=2), "seed differs"),
        (
            sset({0: 1}, task_config_hashes={"arc": "a", "b": "x"}),
            sset({0: 1}, task_config_hashes={"arc": "c", "b": "x"}),
            "task_config_hashes differs",
        ),
        (
            sset({0: 1}, task_hashes={"arc": "a"}),
            sset({0: 1}, task_hashes={"arc": "b"}),
            "task hashes differ",
        ),
        (sset({0: 1}), SampleSet([Sample("arc", 0, "changed", {"acc": 1.0})]), "doc_hash"),
        (sset({0: 1}), SampleSet([Sample("other", 0, "h0", {"acc": 1.0})]), "no per-sample"),
        (sset({0: 1}), SampleSet([Sample("arc", 0, "h0", {"f1": 1.0})]), "no per-document"),
    ],
)
def test_pairing_is_refused_with_the_reason(cand, ref, reason):
    got = pair(cand, ref, task="arc", metric="acc", label="base")
    assert isinstance(got, NoPairs) and reason in got.reason


def test_meta_known_on_one_side_only_does_not_block_pairing():
    other_task = sset({0: 1}, task_config_hashes={"arc": "a", "b": "x"})
    assert not isinstance(
        pair(
            other_task,
            sset({0: 1}, task_config_hashes={"arc": "a", "b": "y"}),
            task="arc",
            metric="acc",
        ),
        NoPairs,
    )
    got = pair(
        sset({0: 1}, limit=10, num_fewshot={"arc": 0}), sset({0: 1}), task="arc", metric="acc"
    )
    assert not isinstance(got, NoPairs) and got.n == 1


# --- statistics ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "df", "expected"),  # Student's t table (e.g. NIST/SEMATECH e-Handbook, 1.3.6.7.2)
    [
        (0.95, 1, 6.314),
        (0.95, 10, 1.812),
        (0.975, 5, 2.571),
        (0.99, 20, 2.528),
        (0.95, 100, 1.660),
        (0.90, 30, 1.310),
    ],
)
def test_t_quantile_matches_the_table(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=5e-4)
    assert t_quantile(1 - p, df) == pytest.approx(-expected, abs=5e-4)
    assert t_cdf(t_quantile(p, df), df) == pytest.approx(p, abs=1e-10)


def test_t_quantile_matches_scipy_closely():
    stats = pytest.importorskip("scipy.stats", reason="scipy (dev only) gives reference values")
    for p in (0.8, 0.9, 0.95, 0.975, 0.99, 0.999):
        for df in (1, 2, 3, 7, 30, 499, 10_000):
            assert t_quantile(p, df) == pytest.approx(float(stats.t.ppf(p, df)), rel=1e-9)


def test_t_quantile_tends_to_the_normal_one():
    from statistics import NormalDist

    assert t_quantile(0.95, 1e7) == pytest.approx(NormalDist().inv_cdf(0.95), abs=1e-6)
    with pytest.raises(ValueError, match="p must be"):
        t_quantile(1.0, 5)


@pytest.mark.parametrize(("losses", "gains"), [(1, 7), (7, 1), (2, 12), (5, 5), (0, 3), (0, 0)])
def test_mcnemar_exact_p_is_the_two_sided_binomial_tail(losses, gains):
    # by hand: each discordant pair goes either way with probability 1/2
    n, k = losses + gains, min(losses, gains)
    tail = sum(Fraction(math.comb(n, i), 2**n) for i in range(k + 1))
    expected = min(Fraction(1), 2 * tail)
    assert mcnemar_exact_p(losses, gains) == pytest.approx(float(expected), rel=1e-12)


def test_mcnemar_known_values():
    assert mcnemar_exact_p(1, 7) == pytest.approx(18 / 256)  # 2 * (1 + 8) / 2**8
    assert mcnemar_exact_p(2, 12) == pytest.approx(212 / 16384)  # 2 * (1 + 14 + 91) / 2**14
    assert mcnemar_exact_p(5, 5) == 1.0
    # large n stays finite and sane (no 0.5**n underflow)
    assert 0 < mcnemar_exact_p(4000, 4300) < 0.02
