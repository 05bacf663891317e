"""The paper's data splits: which split each benchmark searches on and which it holds out, mgsm-ja over two
datasets (its search on GSM8K-JA, its held-out table on MGSM-JA), contamination in a run's log and summary,
and ``evosuite run --data-dir``.

The expected items are the fixtures' rows, written by hand in benchmarks/fixtures/make_fixtures.py; the
expected split layout is the hub's (SakanaAI/gsm8k-ja-test_250-1319: one JSON-lines file at the top of the
repository's main branch, split ``test``; juletxara/mgsm: the parquet export ``ja/<split>/0000.parquet``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

import evosuite.commands  # noqa: F401  (attaches eval and run to the cli)
from evosuite.benchmarks.hub_data import SplitSource
from evosuite.config import parse_config
from evosuite.errors import DataError
from evosuite.plugin_manager import get_host
from evosuite.tui import QuietReporter
from tests.conftest import run_cli
from tests.factories import write_llm, write_vlm

FIXTURES = Path(__file__).resolve().parent.parent / "benchmarks" / "fixtures"
MGSM_JA = FIXTURES / "mgsm-ja"  # one copy per hub id: <data_dir>/<owner>/<name>
GSM8K_JA = MGSM_JA / "SakanaAI" / "gsm8k-ja-test_250-1319"


def mgsm_ja(**options):
    return get_host().registry("benchmarks").get("mgsm-ja")(**options)


# -- mgsm-ja: search on GSM8K-JA, held out on MGSM-JA ---------------------------------------------------
def test_mgsm_ja_searches_on_gsm8k_ja_and_holds_out_mgsm():
    bench = mgsm_ja(data_dir=str(MGSM_JA))
    assert bench.search_split == "gsm8k-ja" and bench.test_split == "test"
    assert bench.split_source("gsm8k-ja") == SplitSource("SakanaAI/gsm8k-ja-test_250-1319", "test")
    assert bench.split_source("test") == SplitSource("juletxara/mgsm", "test", "ja")
    assert bench.contaminated is False

    # The search items are the GSM8K-JA fixture's rows, in file order (answers worked by hand:
    # 3 x 800 = 2400 yen from 3000 leaves 600; 12 hens x 2 + 5 cows x 4 = 44 legs; 4 l x 45 min = 180 l).
    search = bench.items("gsm8k-ja")
    assert [(item["id"], item["answer_number"]) for item in search] == [(0, 600), (1, 44), (2, 180)]
    assert search[1]["question"] == "農場に鶏が12羽と牛が5頭います。足は全部で何本ありますか?"
    # The held-out items are MGSM's: row 2 of the fixture is the 5 pages x 7 days = 35 problem.
    held_out = bench.items("test")
    assert len(held_out) == 4 and held_out[2]["answer_number"] == 35
    assert held_out[2]["question"] == "太郎くんは毎日5ページずつ本を読みます。1週間で何ページ読みますか?"
    assert bench.items("train")[0]["answer_number"] == 5  # MGSM's exemplars stay reachable


def test_gsm8k_ja_fixture_is_laid_out_as_the_hub_repository():
    import datasets

    # main branch: one JSON-lines file at the top, nothing else holding data.
    assert sorted(p.name for p in GSM8K_JA.iterdir()) == ["gsm8k-ja-test_250-1319.jsonl"]
    lines = (GSM8K_JA / "gsm8k-ja-test_250-1319.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    assert all(list(row) == ["question", "answer_number"] for row in rows)
    assert all(isinstance(row["question"], str) and type(row["answer_number"]) is int for row in rows)
    # `datasets` itself, reading the folder as it reads the hub repository, finds one split named "test".
    loaded = datasets.load_dataset(str(GSM8K_JA))
    assert list(loaded) == ["test"] and len(loaded["test"]) == 3
    assert loaded["test"].features == datasets.Features({"question": datasets.Value("string"),
                                                         "answer_number": datasets.Value("int64")})
    assert mgsm_ja(data_dir=str(MGSM_JA)).dataset("gsm8k-ja").features == loaded["test"].features


def test_a_data_dir_without_one_of_the_two_datasets_is_one_line(tmp_path):
    only_mgsm = tmp_path / "data"
    shutil.copytree(MGSM_JA / "juletxara", only_mgsm / "juletxara")
    bench = mgsm_ja(data_dir=str(only_mgsm))
    assert len(bench.items("test")) == 4  # the dataset that is there still loads
    with pytest.raises(DataError, match="has no copy of SakanaAI/gsm8k-ja-test_250-1319") as caught:
        bench.items("gsm8k-ja")
    assert str(only_mgsm / "SakanaAI" / "gsm8k-ja-test_250-1319") in caught.value.what
    assert "<data_dir>/<owner>/<name>" in caught.value.fix

    proc = run_cli("eval", "--model", str(tmp_path / "never-loaded"), "--benchmark", "mgsm-ja", "--split",
                   "gsm8k-ja", "--data-dir", str(only_mgsm))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "SakanaAI/gsm8k-ja-test_250-1319" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_direct_copy_of_mgsm_still_serves_its_test_split(tmp_path):
    # what `huggingface-cli download juletxara/mgsm --local-dir mgsm` gives: the copy itself, not a folder of copies
    copy = tmp_path / "mgsm"
    shutil.copytree(MGSM_JA / "juletxara" / "mgsm", copy)
    bench = mgsm_ja(data_dir=str(copy))
    assert len(bench.items("test")) == 4
    with pytest.raises(DataError, match="has no copy of SakanaAI/gsm8k-ja-test_250-1319"):
        bench.items("gsm8k-ja")


def test_one_data_dir_serves_every_benchmark(tmp_path):
    # A folder of copies at <owner>/<name> serves single-dataset benchmarks too.
    shared = tmp_path / "hub"
    shutil.copytree(MGSM_JA, shared)
    shutil.copytree(FIXTURES / "ja-vg-vqa-500", shared / "SakanaAI" / "JA-VG-VQA-500")
    vg = get_host().registry("benchmarks").get("ja-vg-vqa-500")(data_dir=str(shared))
    assert [item["answer"] for item in vg.items("train")] == ["本があります。", "はい、濡れています。", "満開です。"]
    assert [item["answer_number"] for item in mgsm_ja(data_dir=str(shared)).items("gsm8k-ja")] == [600, 44, 180]


def test_a_third_party_benchmark_declares_splits_from_two_datasets(tmp_path):
    from evosuite import hookimpl
    from evosuite.benchmarks.hub_data import HubBenchmark
    from evosuite.testing import check_plugin_registrations

    class TwoSources(HubBenchmark):
        name = "two-sources"
        description = "search on one dataset, hold out another"
        metric = "acc"
        dataset_id, dataset_config = "juletxara/mgsm", "ja"
        splits = ("search", "test")
        split_sources = {"search": SplitSource("SakanaAI/gsm8k-ja-test_250-1319", "test")}
        search_split, test_split = "search", "test"
        columns = ("question", "answer_number")

        def to_item(self, index, row):
            return {"id": index, "answer_number": row["answer_number"]}

        def predict(self, model, items, *, progress=None):
            return []

        def score(self, items, predictions, *, split):
            raise NotImplementedError

    bench = TwoSources(data_dir=str(MGSM_JA))
    assert bench.dataset_ids() == ["SakanaAI/gsm8k-ja-test_250-1319", "juletxara/mgsm"]
    assert [i["answer_number"] for i in bench.items("search")] == [600, 44, 180]
    assert [i["answer_number"] for i in bench.items("test")] == [18, 3, 35, 4]  # the MGSM fixture's answers
    assert bench.contaminated is False

    class Plugin:
        def __init__(self, cls):
            self.cls = cls

        @hookimpl
        def register_benchmarks(self, register):
            register(self.cls)

    assert check_plugin_registrations(Plugin(TwoSources)).registers == {"benchmarks": ["two-sources"]}
    typo = type("Typo", (TwoSources,), {"name": "typo", "split_sources": {"serach": SplitSource("x/y", "test")}})
    with pytest.raises(AssertionError, match="split_sources names 'serach', which is not one of its splits"):
        check_plugin_registrations(Plugin(typo))


# -- contamination in a run ------------------------------------------------------------------------------
class Recorder(QuietReporter):
    def __init__(self):
        super().__init__()
        self.messages: list[str] = []

    def message(self, text):
        self.messages.append(text)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"base": str(write_llm(root / "base", seed=0)), "llm": str(write_llm(root / "llm", seed=1)),
            "llm2": str(write_llm(root / "llm2", seed=2)), "vlm": str(write_vlm(root / "vlm", seed=3))}


def test_a_run_on_a_single_split_benchmark_says_it_is_contaminated(tiny, tmp_path):
    from evosuite.runner import run_experiment

    # JA-VLM-Bench-In-the-Wild has only its 50-question test split: the search scores the held-out items.
    config = parse_config({
        "sources": [{"name": "vlm", "model": tiny["vlm"]}, {"name": "llm", "model": tiny["llm"]}],
        "base_model": tiny["base"], "carrier": "vlm", "budget": 2, "seed": 0,
        "benchmark": {"name": "ja-vlm-bench-in-the-wild",
                      "options": {"data_dir": str(FIXTURES / "ja-vlm-bench-in-the-wild"), "num_beams": 1,
                                  "max_new_tokens": 3}},
    })
    reporter = Recorder()
    summary = run_experiment(config, tmp_path / "run", reporter, save_model=False)
    assert summary["contaminated"] is True and summary["search_split"] == summary["split"] == "test"
    said = [m for m in reporter.messages if "contaminated" in m]
    assert len(said) == 1 and "ja-vlm-bench-in-the-wild" in said[0], reporter.messages
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["contaminated"] is True
    # The model card does not call those scores held out.
    from evosuite.model_card import model_card

    intro = model_card(summary, config).split("## Source models")[0]
    assert "not held out" in intro and "held-out" not in intro


def test_run_data_dir_reaches_the_benchmark_and_mgsm_ja_is_not_contaminated(tiny, tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({
        "sources": [{"name": "a", "model": tiny["llm"]}, {"name": "b", "model": tiny["llm2"]}],
        "base_model": tiny["base"], "budget": 2, "seed": 0,
        "benchmark": {"name": "mgsm-ja", "options": {"max_new_tokens": 3}},
    }))
    run = tmp_path / "run"
    proc = run_cli("run", "--config", str(config), "--data-dir", f"mgsm-ja={MGSM_JA}", "--run-dir", str(run),
                   "--plain", "--no-save-model", env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 3 search items: the GSM8K-JA fixture's rows (MGSM's test fixture has 4).
    assert "search on mgsm-ja/gsm8k-ja (3 items" in proc.stdout
    assert "contaminated" not in proc.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["contaminated"] is False and summary["search_split"] == "gsm8k-ja" and summary["split"] == "test"
    stored = yaml.safe_load((run / "config.yaml").read_text())
    assert stored["benchmark"]["options"] == {"max_new_tokens": 3, "data_dir": str(MGSM_JA)}


def test_run_data_dir_naming_another_benchmark_is_one_line(tmp_path):
    config = tmp_path / "exp.yaml"
    config.write_text(yaml.safe_dump({"sources": ["a", "b"], "benchmark": "mgsm-ja"}))
    proc = run_cli("run", "--config", str(config), "--data-dir", "ja-vg-vqa-500=/nowhere", "--run-dir",
                   str(tmp_path / "run"))
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert proc.returncode == 2 and len(errors) == 1 and "'ja-vg-vqa-500'" in errors[0], proc.stderr
