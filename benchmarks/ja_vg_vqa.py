"""JA-VG-VQA-500: Japanese questions about Visual Genome images, scored with Japanese ROUGE-L.

Data: ``SakanaAI/JA-VG-VQA-500`` on the Hugging Face Hub (split ``test``, 500 rows; ``train``, 1000 rows).
Each row is an image with a list of question/answer pairs (``qas``); like the paper's evaluation code
(evomerge/eval/ja_vg_vqa.py, ``extract_qa``), only the first pair of each row is asked.
The evolver's fitness uses the ``train`` split, so the ``test`` split stays held out.
"""

from __future__ import annotations

from evosuite import hookimpl
from evosuite.errors import DataError

from .ja_vqa_common import JapaneseVQABenchmark


class JaVGVQA500(JapaneseVQABenchmark):
    name = "ja-vg-vqa-500"
    description = "JA-VG-VQA-500 (SakanaAI/JA-VG-VQA-500): first Japanese QA pair per image, Japanese ROUGE-L"
    dataset_id = "SakanaAI/JA-VG-VQA-500"
    splits = ("test", "train")
    search_split = "train"
    test_split = "test"
    columns = ("image_id", "qas", "image")

    def to_item(self, index, row):
        qas = row["qas"] or []
        if not qas:
            raise DataError(f"row {index} of {self.dataset_id} has no question/answer pair", "check the data copy")
        first = qas[0]  # the paper scores the first pair of each row
        return {"id": index, "image_id": row["image_id"], "qa_id": first["qa_id"], "question": first["question"],
                "answer": first["answer"], "image": row["image"]}


@hookimpl
def register_benchmarks(register):
    register(JaVGVQA500)
