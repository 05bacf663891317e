"""Runs a list of merge recipes through mergekit in one process (what ``mergekit-yaml`` does for each, without
paying a Python start per recipe). Run by mergekit's own interpreter from ``mergekit_parity.py``; imports no
evosuite code.

    python mergekit_parity_driver.py JOBS.json RESULTS.json

JOBS.json: a list of ``{"id", "recipe", "out", "seed"}``. RESULTS.json: per id, ``rc`` (0 merged, 1 raised, as
``mergekit-yaml``'s exit status), ``error`` (the exception's last line) and ``seconds``.
"""

from __future__ import annotations

import json
import sys
import time
import traceback


def run_one(job: dict) -> dict:
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    start = time.perf_counter()
    try:
        options = MergeOptions(random_seed=job["seed"], quiet=True, copy_tokenizer=True, lazy_unpickle=False)
        options.apply_global_options()
        config = MergeConfiguration.model_validate(job["recipe"])
        run_merge(config, job["out"], options=options)
        return {"rc": 0, "error": "", "seconds": time.perf_counter() - start}
    except BaseException as exc:  # noqa: BLE001 - a refusal of any kind is a result here
        if isinstance(exc, KeyboardInterrupt):
            raise
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return {"rc": 1, "error": last[:300], "seconds": time.perf_counter() - start}


def main(jobs_path: str, results_path: str) -> None:
    import logging
    import warnings

    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    jobs = json.loads(open(jobs_path, encoding="utf-8").read())
    results = {}
    for job in jobs:
        results[job["id"]] = run_one(job)
        with open(results_path, "w", encoding="utf-8") as f:  # written as it goes: a crash keeps what ran
            json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
