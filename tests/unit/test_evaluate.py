"""lm-eval result parsing, task resolution and backend arguments."""

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
    assert vllm["max_model_len"] == 512
    with pytest.raises(ConfigError, match="base_url"):
        build_model_args("local-completions", model="tiny")


def test_bad_backend_and_missing_model_dir(tmp_path):
    with pytest.raises(ConfigError, match="unknown eval backend"):
        evaluate_model(str(tmp_path), backend="openai", tasks=["arc_easy"])
    with pytest.raises(ConfigError, match="does not exist"):
        evaluate_model(str(tmp_path / "nope"), backend="hf", tasks=["arc_easy"])
