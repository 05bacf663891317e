"""The performance suite in its smoke mode: every script runs (``--quick``) and writes well-formed figures.

These are not timed tests: the figures of a quick run on tiny models mean nothing; CI only checks that
the scripts work. P5's Ray run is left out here (Ray's start-up alone takes longer than this test may);
tests/test_parallel.py runs Ray end to end when it is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_perf_script_runs_in_quick_mode_and_writes_figures(tmp_path):
    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, str(ROOT / "perf" / "run_all.py"), "--quick", "--args", "P5:--no-ray",
                           "--args", "P1:--repeats 1 --methods linear,ties --dtype bfloat16",
                           "--args", "P4:--repeats 3",
                           "--json", str(out)], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert {f["suite"] for f in figures} == {"P1", "P2", "P3", "P4", "P5", "P6"}
    for figure in figures:
        assert set(figure) == {"suite", "name", "value", "target", "met"}, figure
        assert isinstance(figure["met"], bool) and isinstance(figure["name"], str)
    names = {f["name"] for f in figures}
    assert {"p2_candidates_per_hour_ratio_in_memory_vs_disk_quick", "p3_batched_vs_single_speedup",
            "p5_ray_worker_utilization", "p5_ps_dare_ties_peak_memory_models_mini",
            "p6_toy_heldout_at_budget_current_minus_previous"} <= names
    same = {f["name"]: f["value"] for f in figures}
    assert same["p2_same_predictions"] is True and same["p3_identical_outputs"] is True  # correctness, not speed
    assert same["p6_toy_last_checkpoint_is_the_run_best"] is True  # the replayed best is the evolver's
    assert "evosuite performance suite" in proc.stdout and "targets met" in proc.stdout
