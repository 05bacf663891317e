"""JA-VLM-Bench-In-the-Wild: 50 open Japanese questions over 42 photos of Japan, Japanese ROUGE-L.

Data: ``SakanaAI/JA-VLM-Bench-In-the-Wild`` on the Hugging Face Hub (split ``test``, 50 rows of
``page_url``, ``image_url``, ``image``, ``question``, ``answer``), asked like the paper's evaluation code
(evomerge/eval/ja_vlm_wild.py). It has no other split, so a search on it scores the test questions: a run
on it is contaminated (its held-out table is not held out), and says so.
"""

from __future__ import annotations

from evosuite import hookimpl

from .ja_vqa_common import JapaneseVQABenchmark


class JaVLMBenchInTheWild(JapaneseVQABenchmark):
    name = "ja-vlm-bench-in-the-wild"
    description = "JA-VLM-Bench-In-the-Wild (SakanaAI/JA-VLM-Bench-In-the-Wild): 50 questions, Japanese ROUGE-L"
    dataset_id = "SakanaAI/JA-VLM-Bench-In-the-Wild"
    splits = ("test",)
    search_split = "test"
    test_split = "test"
    columns = ("question", "answer", "image")

    def to_item(self, index, row):
        return {"id": index, "question": row["question"], "answer": row["answer"], "image": row["image"],
                "image_url": row.get("image_url")}


@hookimpl
def register_benchmarks(register):
    register(JaVLMBenchInTheWild)
