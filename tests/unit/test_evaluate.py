"""lm-eval result parsing, task resolution and backend arguments."""

import os

import pytest

from modelgate.errors import ConfigError, EvaluationError
from modelgate.evaluate import (
    EvalResult,
    build_model_args,
    evaluate_model,
    parse_lm_eval_results,
    resolve_tasks,
)

pytestmark = pytest.mark.unit

RAW = {
    "results": {
        "arc_easy": {
            "alias": "arc_easy",
            "acc,none": 0.61,
            "acc_stderr,none": 0.02,
            "acc_norm,none": 0.58,
            "acc_norm_stderr,none": "N/A",
        },
        "gsm8k": {"exact_match,strict-match": 0.3, "exact_match_stderr,strict-match": 0.01},
        "wikitext": {"word_perplexity,none": 12.5, "word_perplexity_stderr,none": float("nan")},
    },
    "higher_is_better": {
        "arc_easy": {"acc": True, "acc_norm": True},
        "gsm8k": {"exact_match": True},
        "wikitext": {"word_perplexity": False},
    },
    "n-samples": {"arc_easy": {"original": 2376, "effective": 100}},
}


def test_parse_keeps_value_stderr_and_direction():
    res = parse_lm_eval_results(RAW, model="m", backend="hf")
    acc = res.get("arc_easy", "acc")
    assert (acc.value, acc.stderr, acc.higher_is_better) == (0.61, 0.02, True)
    assert res.get("arc_easy", "acc,none") == acc
    assert res.get("arc_easy", "acc_norm").stderr is None
    assert res.get("gsm8k", "exact_match,strict-match").value == 0.3
    ppl = res.get("wikitext", "word_perplexity")
    assert ppl.higher_is_better is False and ppl.stderr is None
    assert res.n_samples == {"arc_easy": 100}
    assert res.flat()["arc_easy/acc"] == 0.61


def test_parse_rejects_empty_results():
    with pytest.raises(EvaluationError):
        parse_lm_eval_results({"results": {}}, model="m", backend="hf")


def test_result_round_trips_through_json(tmp_path):
    res = parse_lm_eval_results(RAW, model="m", backend="hf")
    res.save(tmp_path / "r.json")
    assert EvalResult.load(tmp_path / "r.json") == res
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(EvaluationError):
        EvalResult.load(tmp_path / "bad.json")


def test_unknown_task_suggests_close_names():
    with pytest.raises(ConfigError, match="did you mean.*arc_easy"):
        resolve_tasks(["arc_easi"])


def test_local_task_dir_must_exist(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_tasks(["x"], task_dir=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="no evaluation tasks"):
        resolve_tasks([])


def test_model_args_per_backend():
    args = build_model_args(
        "local-completions", model="tiny", base_url="http://h:8000", tokenizer="/m"
    )
    assert args["base_url"] == "http://h:8000/v1/completions"
    assert args["tokenizer_backend"] == "huggingface" and args["model"] == "tiny"
    assert build_model_args("hf", model="/m", dtype="float32") == {
        "pretrained": "/m",
        "dtype": "float32",
    }
    vllm = build_model_args("vllm", model="/m", max_length=512)
    assert vllm["max_model_len"] == 512 and vllm["tensor_parallel_size"] == 1
    assert build_model_args("vllm", model="/m", tensor_parallel_size=4)["tensor_parallel_size"] == 4
    with pytest.raises(ConfigError, match="base_url"):
        build_model_args("local-completions", model="tiny")


def test_bad_backend_and_missing_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="unknown eval backend"):
        evaluate_model(str(tmp_path), backend="openai", tasks=["arc_easy"])
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_model(str(tmp_path / "nope"), backend="hf", tasks=["arc_easy"])


def test_stored_task_folder_gets_its_data_paths_fixed(tmp_path):
    """A task folder written on another machine names its data by that machine's path."""
    import yaml

    from modelgate.evaluate import prepare_task_dir
    from modelgate.storage import FileStore, stage_input

    src = tmp_path / "tasks"
    src.mkdir()
    (src / "data.jsonl").write_text('{"q": 1}\n')
    (src / "extra.jsonl").write_text('{"q": 2}\n')
    task = {
        "task": "t",
        "dataset_path": "json",
        "dataset_kwargs": {
            "data_files": {
                "test": "/home/someone/tasks/data.jsonl",  # absent here: same name in the folder
                "train": "extra.jsonl",  # relative to the folder
                "validation": "hf://datasets/org/x/v.jsonl",  # remote: kept
            }
        },
    }
    (src / "t.yaml").write_text(yaml.safe_dump(task))
    uri = stage_input(FileStore(tmp_path / "store"), src, kind="tasks")
    folder = prepare_task_dir(uri)
    files = yaml.safe_load((folder / "t.yaml").read_text())["dataset_kwargs"]["data_files"]
    assert files == {
        "test": str(folder / "data.jsonl"),
        "train": str(folder / "extra.jsonl"),
        "validation": "hf://datasets/org/x/v.jsonl",
    }
    with pytest.raises(ConfigError, match="does not exist here"):
        prepare_task_dir(str(tmp_path / "elsewhere"))


def test_offline_is_asked_for_not_forced(tmp_path, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(ConfigError, match="does not exist here"):
        evaluate_model(str(tmp_path / "nope"), backend="hf", tasks=["x"], hf_endpoint="http://m")
    assert "HF_HUB_OFFLINE" not in os.environ and os.environ["HF_ENDPOINT"] == "http://m"
    with pytest.raises(ConfigError):
        evaluate_model(str(tmp_path / "nope"), backend="hf", tasks=["x"], offline=True)
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["HF_DATASETS_OFFLINE"] == "1"


# --- per-sample results and evaluation reuse -----------------------------------------------


def _stored_model(store, key: str, weights: bytes = b"w" * 64) -> str:
    with store.writer(key) as folder:
        (folder / "config.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(weights)
    return store.uri(key)


def _fake_run(calls: list[str], acc: float = 0.5):
    """Stands in for lm-eval: a result and a SampleSet as ``_evaluate`` returns them."""
    from modelgate.evaluate import MetricValue
    from modelgate.samples import Sample, SampleSet

    def run(model, *, settings, **_kw):
        calls.append(model)
        result = EvalResult(
            model=model,
            backend=settings.backend,
            tasks={"arc": {"acc": MetricValue(acc, 0.1, True)}},
            n_samples={"arc": 4},
            seconds=2.5,
            config={"limit": settings.limit, "seed": settings.seed, "task_hashes": {"arc": "t"}},
        )
        samples = [Sample("arc", i, f"h{i}", {"acc": float(i < 2)}) for i in range(4)]
        return result, SampleSet(samples=samples, meta={"limit": settings.limit})

    return run


def test_a_stored_evaluation_is_reused_with_its_samples(tmp_path, monkeypatch):
    from modelgate import evaluate
    from modelgate.samples import read_samples
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    model = _stored_model(store, "org--m/sha/base-1")
    calls: list[str] = []
    monkeypatch.setattr(evaluate, "_evaluate", _fake_run(calls))
    args = dict(tasks=["arc"], limit=4, model_store=store.root)
    first = evaluate_model(model, **args, samples_path=tmp_path / "first.jsonl")
    assert calls and not first.reused and first.model == model
    assert first.samples_uri.startswith(store.root + "/evals/eval-")
    assert [s.metrics["acc"] for s in read_samples(first.samples_uri).samples] == [1, 1, 0, 0]
    assert len(read_samples(tmp_path / "first.jsonl").samples) == 4

    again = evaluate_model(model, **args, samples_path=tmp_path / "again.jsonl")
    assert len(calls) == 1  # nothing evaluated the second time
    assert again.reused and again.samples_uri == first.samples_uri
    assert again.flat() == first.flat() and again.seconds == first.seconds
    assert read_samples(tmp_path / "again.jsonl").samples == read_samples(first.samples_uri).samples

    evaluate_model(model, **{**args, "limit": 8})  # another setting: evaluated again
    evaluate_model(model, **args, seed=7)
    assert len(calls) == 3
    evaluate_model(model, tasks=["arc"], limit=4)  # no store: no cache
    assert len(calls) == 4


def test_the_cache_key_follows_content_tasks_and_every_setting(tmp_path):
    from modelgate.evaluate import EvalSettings, eval_cache_key
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    model = _stored_model(store, "org--m/sha/base-1")
    other = _stored_model(store, "org--m/sha/fp8-2", weights=b"q" * 64)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "t.yaml").write_text("task: t\n")
    base = EvalSettings(
        backend="hf", tasks=["t"], limit=4, num_fewshot=None, seed=1, dtype=None, max_length=None
    )

    def key(uri=model, task_dir=str(tasks), **changes):
        return eval_cache_key(
            uri, settings=EvalSettings(**{**base.__dict__, **changes}), task_dir=task_dir
        )

    first = key()
    assert first == key() and first.startswith("evals/eval-")
    changed = [
        key(uri=other),
        key(task_dir=None),
        key(tasks=["t", "u"]),
        key(backend="vllm"),
        key(limit=5),
        key(num_fewshot=0),
        key(seed=2),
        key(dtype="float16"),
        key(max_length=512),
        key(model_args={"trust_remote_code": True}),
    ]
    assert first not in changed and len(set(changed)) == len(changed)
    (tasks / "t.yaml").write_text("task: t\nnum_fewshot: 3\n")
    assert key() != first  # the task definition changed
    # a stored task folder is known by the digest in its key (checked when it is fetched)
    assert key(task_dir="s3://b/p/inputs/tasks-00112233aabbccdd") != key(
        task_dir="s3://b/p/inputs/tasks-00112233aabbccde/0123456789abcdef0123456789abcdef"
    )


def test_a_stored_model_with_file_hashes_is_known_by_them_not_by_where_it_is(tmp_path):
    import json

    from modelgate.evaluate import model_digest
    from modelgate.storage import MARKER

    def folder(name: str, sha: str) -> str:
        path = tmp_path / name
        path.mkdir()
        (path / "w.bin").write_bytes(b"abc")
        files = [{"path": "w.bin", "size": 3, "sha256": sha}]
        (path / MARKER).write_text(json.dumps({"files": files, "bytes": 3, "source": name}))
        return path.as_uri()

    a, b, c = folder("a", "1" * 64), folder("b", "1" * 64), folder("c", "2" * 64)
    assert model_digest(a) == model_digest(b) != model_digest(c)


def test_a_cache_entry_modelgate_did_not_write_is_refused(tmp_path, monkeypatch):
    from modelgate import evaluate
    from modelgate.evaluate import EvalSettings, eval_cache_key
    from modelgate.storage import FileStore

    store = FileStore(tmp_path / "store")
    model = _stored_model(store, "org--m/sha/base-1")
    settings = EvalSettings(
        backend="hf",
        tasks=["arc"],
        limit=4,
        num_fewshot=None,
        seed=1234,
        dtype=None,
        max_length=None,
    )
    with store.writer(eval_cache_key(model, settings=settings, task_dir=None)) as entry:
        (entry / "results.json").write_text('{"not": "a result"}')
    monkeypatch.setattr(evaluate, "_evaluate", _fake_run([]))
    with pytest.raises(EvaluationError, match="remove it from the store"):
        evaluate_model(model, tasks=["arc"], limit=4, model_store=store.root)


def test_samples_uri_travels_through_registry_properties():
    from modelgate.evaluate import MetricValue

    res = EvalResult(model="m", backend="hf", tasks={"arc": {"acc": MetricValue(0.5)}})
    assert "eval.samples_uri" not in res.to_properties()
    res.samples_uri = "s3://b/evals/eval-1/samples.jsonl"
    props = res.to_properties()
    assert props["eval.samples_uri"] == res.samples_uri
    back = EvalResult.from_properties(props, model="m")
    assert back.samples_uri == res.samples_uri and back.get("arc", "acc").value == 0.5


def test_task_config_hashes_ignore_where_the_task_folder_was_fetched():
    from modelgate.evaluate import task_config_hashes

    def config(path: str, fewshot: int = 0) -> dict:
        # what lm-eval 0.4 records for a task of an include folder (TaskConfig.dump_config)
        return {
            "t": {
                "dataset_path": "json",
                "num_fewshot": fewshot,
                "doc_to_text": "{{a}}+{{b}}=",
                "dataset_kwargs": {"data_files": {"test": f"{path}/test.jsonl"}},
                "metadata": {"version": 1.0, "config_source": f"{path}/t.yaml"},
            }
        }

    here, there = config("/tmp/a/tasks"), config("/var/work/b/tasks")
    assert task_config_hashes(here) == task_config_hashes(there)
    assert task_config_hashes(here) != task_config_hashes(config("/tmp/a/tasks", fewshot=5))


def test_the_local_summary_says_which_evaluation_was_reused(capsys):
    from modelgate.pipelines.local import RunResult, StepResult

    from modelgate.cli.local import print_summary

    def step(label: str, reused: bool) -> StepResult:
        return StepResult(
            f"evaluate-{label}",
            f"evaluate {label}",
            "success",
            0.4,
            {"Output": "arc/acc=0.5000"},
            {"results": {"reused": reused, "samples_uri": "file:///s/evals/eval-1/samples.jsonl"}},
        )

    steps = [step("base", True), step("candidate", False)]
    print_summary(RunResult(run_dir=None, steps=steps, succeeded=True, seconds=1.0))
    rows = {
        ln.split("│")[1].strip(): ln
        for ln in capsys.readouterr().out.splitlines()
        if ln.count("│") >= 4
    }
    assert "reused arc/acc=0.5000" in rows["evaluate base"]
    assert "reused" not in rows["evaluate candidate"] and "arc/acc" in rows["evaluate candidate"]
