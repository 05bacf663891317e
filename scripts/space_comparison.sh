#!/usr/bin/env bash
# The README's comparison of merge spaces on the offline default (tiny zoo, seed 0): one run per space,
# the paper's W = 1 ablation, then one held-out table of sources, PS, DFS, PS+DFS and DFS with W = 1.
#   bash scripts/space_comparison.sh [OUT_DIR]
set -euo pipefail
out=${1:-runs/space-comparison}
plugin=${EVOSUITE_PLUGIN:-vlm}
for space in ps dfs ps+dfs; do
  [ -f "$out/$space/summary.json" ] || evosuite run --plugin "$plugin" --space "$space" --seed 0 \
    --run-dir "$out/$space" --plain --no-save-model
done
[ -f "$out/dfs-w1/summary.json" ] || evosuite run --plugin "$plugin" --space dfs --dfs-scales off --seed 0 \
  --run-dir "$out/dfs-w1" --plain --no-save-model
evosuite compare "$out/ps" "$out/dfs" "$out/ps+dfs" "$out/dfs-w1" | tee "$out/table.md"
