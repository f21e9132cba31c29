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
