#!/bin/bash
# The floors of a `tb` and a `pis` iteration beside our step and the reference's, interleaved in one sitting.
#
# Each round times, per cell: our step and the reference's `train_step` (scripts/compare_reference.py, one
# round), the bare operations (benchmarks/floor_tb.py) and, for `tb`, the sampling loop compiled
# (benchmarks/floor_native.py: needs a C++ compiler and ninja). Run it on a quiet machine.
#
#     benchmarks/floor_vs_reference.sh <gfn-diffusion>/energy_sampling [ROUNDS] | tee floor.log
#     python benchmarks/floor_table.py floor.log      # the table: ratios to the reference per cell
set -euo pipefail
ref_dir=${1:?usage: floor_vs_reference.sh REF_DIR [ROUNDS]}
rounds=${2:-3}
cd "$(dirname "$0")/.."
for r in $(seq "$rounds"); do
  for cell in tb:manywell32:32 tb:25gmm:2 pis:25gmm:2 pis:manywell8:8 pis:funnel:10 pis:manywell32:32; do
    IFS=: read -r preset target dim <<<"$cell"
    echo "== round $r $preset $target (d = $dim)"
    python scripts/compare_reference.py --ref-dir "$ref_dir" --cells "$preset:$target" --rounds 1 | grep "^| $preset "
    python benchmarks/floor_tb.py --dim "$dim" --threads 2 | tail -4
    if [ "$preset" = tb ]; then python benchmarks/floor_native.py --dim "$dim" --rounds 1 | tail -3; fi
  done
done
