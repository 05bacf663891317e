"""The paper's three benchmarks (JA-VG-VQA-500, JA-VLM-Bench-In-the-Wild, MGSM-JA) on the shipped fixtures.

The fixtures are a few rows we wrote, in exactly the hub datasets' schemas and file layouts, loaded through
the same ``datasets`` code path as the real data (``--data-dir``). ``evosuite eval`` runs end to end with
tiny random models; ``evosuite score`` must reproduce its scores from the written predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evosuite.commands  # noqa: F401  (attaches eval and score to the cli)
from evosuite.errors import ConfigError, DataError
from evosuite.plugin_manager import get_host
from tests.conftest import run_cli
from tests.factories import write_llm, write_vlm

FIXTURES = Path(__file__).resolve().parent.parent / "benchmarks" / "fixtures"
DATA = {
    "ja-vg-vqa-500": FIXTURES / "ja-vg-vqa-500",
    "ja-vlm-bench-in-the-wild": FIXTURES / "ja-vlm-bench-in-the-wild",
    "mgsm-ja": FIXTURES / "mgsm-ja",  # two datasets, one copy per hub id: juletxara/mgsm, SakanaAI/gsm8k-ja-...
}
SIZES = {"ja-vg-vqa-500": 4, "ja-vlm-bench-in-the-wild": 3, "mgsm-ja": 4}

# The paper's prompts (SakanaAI/evolutionary-model-merge, evomerge/models/prompt_templates.py and
# evomerge/models/llava.py), written out in full so that any drift in the templates shows here.
PAPER_VQA_PROMPT = (
    "[INST] <<SYS>>\n"
    "あなたは役立つ、偏見がなく、検閲されていないアシスタントです。与えられた画像を下に、質問に答えてください。\n"
    "<</SYS>>\n\n"
    "<image>\n空はどんな様子ですか? [/INST]"
)
PAPER_MGSM_PROMPT = (
    "以下に、あるタスクを説明する指示があります。リクエストを適切に完了するための回答を日本語で記述してください。"
    "一歩一歩考えましょう。\n\n### 指示:\n"
    "太郎くんは毎日5ページずつ本を読みます。1週間で何ページ読みますか?\n\n### 応答:"
)


def bench(name, **options):
    return get_host().registry("benchmarks").get(name)(data_dir=str(DATA[name]), **options)


def cli_in_process(capsys, *args):
    from evosuite.cli import main

    main(list(args))
    return capsys.readouterr()


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return write_vlm(root / "tiny-vlm"), write_llm(root / "tiny-llm")


# -- end to end ---------------------------------------------------------------------------------------
def test_eval_runs_every_benchmark_and_score_reproduces_it(tiny_models, tmp_path, capsys):
    vlm, llm = tiny_models
    out, table = tmp_path / "eval.json", tmp_path / "table.md"
    args = ["eval", "--model", str(vlm), "--model", str(llm)]
    for name, path in DATA.items():
        args += ["--benchmark", name, "--data-dir", f"{name}={path}"]
    # Short generation for speed; 2 beams keep the beam-search path of the paper's settings exercised.
    args += ["-O", "max_new_tokens=6", "-O", "num_beams=2", "--output", str(out), "--table", str(table)]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ja-vg-vqa-500" in proc.stdout and "mgsm-ja" in proc.stdout  # the rich table

    report = json.loads(out.read_text(encoding="utf-8"))
    results = {(r["model"], r["benchmark"]): r for r in report["results"]}
    # The VLM takes all three (MGSM as text only); the text-only model skips the two image benchmarks.
    assert set(results) == {(str(vlm), n) for n in DATA} | {(str(llm), "mgsm-ja")}
    assert {(s["model"], s["benchmark"]) for s in report["skipped"]} == {
        (str(llm), "ja-vg-vqa-500"), (str(llm), "ja-vlm-bench-in-the-wild")}
    for (_, name), result in results.items():
        assert result["n_items"] == SIZES[name] and len(result["items"]) == SIZES[name]
        assert result["metric"] == ("acc" if name == "mgsm-ja" else "rougeL_ja")
        assert 0.0 <= result["score"] <= 1.0 and result["score"] == result["metrics"][result["metric"]]
        assert result["interval"] is not None and result["options"]["max_new_tokens"] == 6
        for item in result["items"]:
            assert {"id", "prompt", "prediction", "reference"} <= set(item)
    vg = results[(str(vlm), "ja-vg-vqa-500")]
    assert [item["id"] for item in vg["items"]] == [0, 1, 2, 3]
    assert vg["items"][2]["prompt"] == PAPER_VQA_PROMPT  # first QA pair of row 2, the paper's template
    assert vg["items"][2]["reference"] == "晴れています。"
    mgsm = results[(str(llm), "mgsm-ja")]
    assert mgsm["items"][2]["prompt"] == PAPER_MGSM_PROMPT and mgsm["items"][2]["reference"] == 35
    markdown = table.read_text(encoding="utf-8")
    assert markdown.startswith("| model | ja-vg-vqa-500 (rougeL_ja) |") and f"| {llm} | - | - |" in markdown

    # `score` on the eval's own predictions gives the same numbers (in-process, to keep the file fast).
    for n, ((model, name), result) in enumerate(sorted(results.items())):
        predictions = tmp_path / f"pred{n}.jsonl"
        predictions.write_text("".join(json.dumps({"id": item["id"], "prediction": item["prediction"]},
                                                  ensure_ascii=False) + "\n" for item in result["items"]),
                               encoding="utf-8")
        scored_path = tmp_path / f"scored{n}.json"
        args = ["score", "--benchmark", name, "--predictions", str(predictions), "--data-dir", str(DATA[name]),
                "--output", str(scored_path)]
        cli_in_process(capsys, *args)
        scored = json.loads(scored_path.read_text(encoding="utf-8"))["results"][0]
        assert scored["score"] == result["score"] and scored["metrics"] == result["metrics"], (model, name)
        assert [i["prediction"] for i in scored["items"]] == [i["prediction"] for i in result["items"]]


def test_score_known_answers(tmp_path, capsys):
    predictions = tmp_path / "mgsm.jsonl"
    lines = [
        {"id": 3, "prediction": "わかりません"},  # no number
        {"id": 0, "prediction": "16から3と4を引くと9個です。9×2=18なので、答えは18ドルです。"},
        {"id": 1, "prediction": "The answer is 3."},  # correct but not Japanese
        {"id": 2, "prediction": "1週間は7日なので、5×7=35ページです。答えは35です。"},
    ]
    predictions.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    out = tmp_path / "scored.json"
    shown = cli_in_process(capsys, "score", "--benchmark", "mgsm-ja", "--predictions", str(predictions),
                           "--data-dir", str(DATA["mgsm-ja"]), "--output", str(out), "--table", str(tmp_path / "t.csv"))
    result = json.loads(out.read_text(encoding="utf-8"))["results"][0]
    assert result["metrics"]["acc"] == 0.75 and result["metrics"]["acc_ja"] == 0.5 and result["score"] == 0.75
    assert [i["id"] for i in result["items"]] == [0, 1, 2, 3]
    assert [i["extracted"] for i in result["items"]] == [18.0, 3.0, 35.0, None]
    assert "75.0" in shown.out
    assert (tmp_path / "t.csv").read_text().splitlines() == ["model,mgsm-ja (acc)", "mgsm.jsonl,75.0"]

    vqa = tmp_path / "vqa.jsonl"
    vqa.write_text('{"id": 0, "prediction": "赤色です。"}\n{"id": 1, "prediction": "It is a dog."}\n',
                   encoding="utf-8")
    cli_in_process(capsys, "score", "--benchmark", "ja-vg-vqa-500", "--predictions", str(vqa),
                   "--data-dir", str(DATA["ja-vg-vqa-500"]), "--output", str(out))
    result = json.loads(out.read_text(encoding="utf-8"))["results"][0]
    assert [i["rougeL_ja"] for i in result["items"]] == [1.0, 0.0]  # an English answer counts as empty
    assert result["score"] == pytest.approx(0.5)


def test_score_rejects_bad_predictions(tmp_path):
    bad = tmp_path / "bad.jsonl"
    for text, message in [('{"id": 0}\n', "lacks 'id' or 'prediction'"), ("nope\n", "is not JSON"),
                          ('{"id": 9, "prediction": "x"}\n', "outside mgsm-ja/test"),
                          ('{"id": 0, "prediction": "a"}\n{"id": 0, "prediction": "b"}\n', "appears twice")]:
        bad.write_text(text)
        with pytest.raises((DataError, ConfigError), match=message):
            from evosuite.cli import cli

            cli.main(["score", "--benchmark", "mgsm-ja", "--predictions", str(bad), "--data-dir",
                      str(DATA["mgsm-ja"])], standalone_mode=False)


def test_unreachable_hub_is_one_line_naming_data_dir(tiny_models):
    _, llm = tiny_models
    proc = run_cli("eval", "--model", str(llm), "--benchmark", "mgsm-ja", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "juletxara/mgsm" in errors[0] and "--data-dir" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# -- data ---------------------------------------------------------------------------------------------
def test_fixtures_have_the_hub_schemas():
    from datasets import Image, List, Value

    vg = bench("ja-vg-vqa-500").dataset("test")
    assert list(vg.features) == ["image_id", "url", "width", "height", "coco_id", "flickr_id", "qas", "image"]
    assert vg.features["coco_id"] == Value("float64") and vg.features["flickr_id"] == Value("float64")
    assert isinstance(vg.features["image"], Image) and vg.features["image_id"] == Value("int64")
    qa = vg.features["qas"].feature
    assert set(qa) == {"qa_id", "question", "answer", "q_objects", "a_objects"} and qa["qa_id"] == Value("int64")
    assert qa["q_objects"] == List(Value("null"))
    assert len(bench("ja-vg-vqa-500").dataset("train")) == 3
    wild = bench("ja-vlm-bench-in-the-wild").dataset("test")
    assert list(wild.features) == ["page_url", "image_url", "image", "question", "answer"]
    mgsm = bench("mgsm-ja")
    assert list(mgsm.dataset("test").features) == ["question", "answer", "answer_number", "equation_solution"]
    assert mgsm.dataset("test")[0]["answer"] is None and len(mgsm.dataset("train")) == 2


def test_first_qa_pair_and_seeded_subsets():
    vg = bench("ja-vg-vqa-500")
    items = vg.items("test")
    assert [(i["id"], i["qa_id"]) for i in items] == [(0, 50001), (1, 50011), (2, 50021), (3, 50031)]
    assert items[0]["question"] == "このりんごは何色ですか?" and items[0]["answer"] == "赤色です。"
    assert items[0]["image"].size == (16, 16)
    assert [i["id"] for i in vg.items("test", limit=2)] == [0, 1]
    subsets = {tuple(i["id"] for i in vg.items("test", limit=2, seed=s)) for s in range(6)}
    assert len(subsets) > 1 and all(list(s) == sorted(s) for s in subsets)
    assert vg.items("test", limit=2, seed=4) == vg.items("test", limit=2, seed=4)
    assert vg.search_split == "train" and vg.test_split == "test"


def test_local_copies_save_to_disk_and_parquet_export_layout(tmp_path):
    import datasets

    source = bench("ja-vg-vqa-500")
    expected = [(i["id"], i["question"], i["answer"]) for i in source.items("test")]
    saved = tmp_path / "saved"
    datasets.DatasetDict({"test": source.dataset("test"), "train": source.dataset("train")}).save_to_disk(str(saved))
    export = tmp_path / "export" / "default" / "test"
    export.mkdir(parents=True)
    source.dataset("test").to_parquet(str(export / "0000.parquet"))
    for copy in (saved, tmp_path / "export"):
        other = get_host().registry("benchmarks").get("ja-vg-vqa-500")(data_dir=str(copy))
        assert [(i["id"], i["question"], i["answer"]) for i in other.items("test")] == expected
    with pytest.raises(DataError, match="no 'train' split"):
        get_host().registry("benchmarks").get("ja-vg-vqa-500")(data_dir=str(tmp_path / "export")).items("train")


# -- prompts and settings -----------------------------------------------------------------------------
def test_paper_prompts_and_generation_defaults():
    vg, wild, mgsm = bench("ja-vg-vqa-500"), bench("ja-vlm-bench-in-the-wild"), bench("mgsm-ja")
    assert vg.prompt(vg.items("test")[2], "vlm") == PAPER_VQA_PROMPT
    assert mgsm.prompt(mgsm.items("test")[2], "llm") == PAPER_MGSM_PROMPT
    for b in (vg, wild):  # configs/vlm/*.yaml: no sampling, 5 beams, repetition penalty 1.5, 512 tokens
        assert b.generation_options() == {"max_new_tokens": 512, "num_beams": 5, "repetition_penalty": 1.5,
                                          "batch_size": 4}
    # evomerge/models/causallm.py: greedy, 1024 tokens, no penalty, cut at Instruction/Response.
    assert mgsm.generation_options() == {"max_new_tokens": 1024, "num_beams": 1, "repetition_penalty": 1.0,
                                         "batch_size": 8,
                                         "stop": ["Instruction:", "Instruction", "Response:", "Response"]}
    assert mgsm.settings["robust_numbers"] is False


def test_every_setting_can_be_overridden():
    vg = bench("ja-vg-vqa-500", num_beams=1, max_new_tokens=64, repetition_penalty=1.0, batch_size=2,
               system_message="画像について答えてください。")
    item = vg.items("test")[0]
    assert vg.generation_options() == {"max_new_tokens": 64, "num_beams": 1, "repetition_penalty": 1.0, "batch_size": 2}
    assert vg.prompt(item, "vlm").startswith("[INST] <<SYS>>\n画像について答えてください。\n<</SYS>>")
    assert bench("ja-vg-vqa-500", template="llava-mistral").prompt(item) == \
        "<s>[INST] <image>\nこのりんごは何色ですか? [/INST]"
    assert bench("ja-vg-vqa-500", template="Q: {input}\nA:", image_token="<img>").prompt(item) == \
        "Q: <img>\nこのりんごは何色ですか?\nA:"
    mgsm = bench("mgsm-ja", template="問題: {input}\n答え:", robust_numbers=True)
    assert mgsm.prompt({"question": "1+1は?"}) == "問題: 1+1は?\n答え:"
    assert mgsm.score([{"id": 0, "question": "q", "answer_number": 1000}], ["合計は1,000円です。"],
                      split="test").score == 1.0
    assert bench("mgsm-ja").score([{"id": 0, "question": "q", "answer_number": 1000}], ["合計は1,000円です。"],
                                  split="test").score == 0.0  # the paper's rule reads "000"
    with pytest.raises(ConfigError, match="unknown option 'beams'"):
        bench("mgsm-ja", beams=3)
    with pytest.raises(ConfigError, match="neither a known template"):
        bench("mgsm-ja", template="no field").prompt({"question": "x"})


def test_benchmarks_are_listed(capsys):
    assert {"ja-vg-vqa-500", "ja-vlm-bench-in-the-wild", "mgsm-ja"} <= set(get_host().registry("benchmarks").names())
    rows = json.loads(cli_in_process(capsys, "plugins", "--all", "--json").out)
    registered = {name for row in rows for name in row["registers"].get("benchmarks", [])}
    assert {"ja-vg-vqa-500", "ja-vlm-bench-in-the-wild", "mgsm-ja"} <= registered
    with pytest.raises(SystemExit):
        from evosuite.cli import cli

        cli.main(["eval", "--help"], prog_name="evosuite")
    help_text = capsys.readouterr().out
    assert "Benchmarks:" in help_text and "ja-vlm-bench-in-the-wild" in help_text and "mgsm-ja" in help_text


# -- optional lm-evaluation-harness bridge ------------------------------------------------------------
def test_lm_eval_bridge_adds_nothing_without_lm_eval():
    import importlib.util

    if importlib.util.find_spec("lm_eval") is not None:
        pytest.skip("lm-eval is installed")
    host = get_host()
    assert "lm-eval" not in host.registry("benchmarks").names()
    assert not [w for w in host.warnings if "lm_eval" in w]


LM_EVAL_TASK = """\
task: {name}
dataset_path: parquet
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: {output_type}
doc_to_text: "{{{{question}}}}"
doc_to_target: "{target}"
{extra}
metric_list:
  - metric: {metric}
"""


def test_lm_eval_bridge_runs_a_task(tiny_models, tmp_path):
    pytest.importorskip("lm_eval")
    from datasets import Dataset

    from evosuite.models import load_model

    data = tmp_path / "toy.parquet"
    Dataset.from_list([{"question": f"{a}+{b}=", "choices": [str(a + b), str(a + b + 1)], "label": 0,
                        "answer": str(a + b)} for a, b in [(1, 2), (2, 3), (3, 3)]]).to_parquet(str(data))
    (tmp_path / "mc.yaml").write_text(LM_EVAL_TASK.format(
        name="evosuite_toy_mc", data=data, output_type="multiple_choice", target="{{label}}",
        extra='doc_to_choice: "{{choices}}"', metric="acc"))
    (tmp_path / "gen.yaml").write_text(LM_EVAL_TASK.format(
        name="evosuite_toy_gen", data=data, output_type="generate_until", target="{{answer}}",
        extra="generation_kwargs:\n  until: [\"\\n\"]\n  max_gen_toks: 4", metric="exact_match"))
    model = load_model(str(tiny_models[1]))
    registry = get_host().registry("benchmarks")
    for task, metric in (("evosuite_toy_mc", "acc"), ("evosuite_toy_gen", "exact_match")):
        benchmark = registry.get("lm-eval")(task=task, include_path=str(tmp_path), include_defaults=False)
        result = benchmark.evaluate(model, "test")
        assert benchmark.metric == metric and len(result.items) == 3 and 0.0 <= result.score <= 1.0
    items = benchmark.items_by_id("test", [0, 1])
    rescored = registry.get("lm-eval")(task="evosuite_toy_gen", include_path=str(tmp_path), include_defaults=False)
    assert rescored.score(items, ["3", "6"], split="test").score == 0.5  # generation tasks score plain text
