#!/usr/bin/env bash
# The results-table cells as they were run on a 2-core machine: two sequential queues, each process on one
# thread (results reproduce for a seed and a thread count). Each shared warm-up is built by one queue only
# (seeds 0 and 2 by queue a, seed 1 by queue b; queue b reaches seed 2 only long after queue a built it).
# Interrupted cells resume when this runs again; finished ones are skipped.
#   bash benchmarks/queues.sh            # then: python benchmarks/adaptation.py --table-only
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
# The class-balance lever first (the cells that test issue 13's question), then the other ablations, then
# the official preset's components.
CORE="cpsl_paper self_training equal_partition wo_cb cpsl_gt_marginal wo_st"
REST="wo_init wo_aug wo_mom"
OFFICIAL="cpsl_official paper_cutmix paper_rce paper_fixed_r paper_official_prototypes paper_uniform_256"
mkdir -p benchmarks/runs
(python benchmarks/adaptation.py --seeds 0 --only $CORE
 python benchmarks/adaptation.py --seeds 2 --only $CORE $REST) > benchmarks/runs/queue-a.log 2>&1 &
(python benchmarks/adaptation.py --seeds 1 --only $CORE
 python benchmarks/adaptation.py --seeds 0 1 --only $REST
 python benchmarks/adaptation.py --seeds 0 1 --only $OFFICIAL
 python benchmarks/adaptation.py --seeds 2 --only $OFFICIAL) > benchmarks/runs/queue-b.log 2>&1 &
wait
