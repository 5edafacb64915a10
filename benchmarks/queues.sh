#!/usr/bin/env bash
# The results-table cells as this session ran them on a 2-core machine: two sequential queues, each
# process on one thread (results reproduce for a seed and a thread count), each shared warm-up built by one
# queue only. Interrupted cells resume when this runs again; finished ones are skipped.
#   bash benchmarks/queues.sh            # then: python benchmarks/adaptation.py --table-only
set -uo pipefail
cd "$(dirname "$0")/.."
export TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1
CORE="cpsl_paper self_training equal_partition wo_cb cpsl_gt_marginal wo_st wo_init wo_aug wo_mom"
OFFICIAL="cpsl_official paper_cutmix paper_rce paper_fixed_r paper_official_prototypes paper_uniform_256"
mkdir -p benchmarks/runs
(python benchmarks/adaptation.py --seeds 0 --only $CORE
 python benchmarks/adaptation.py --seeds 2 --only $CORE
 python benchmarks/adaptation.py --seeds 2 --only $OFFICIAL) > benchmarks/runs/queue-a.log 2>&1 &
(python benchmarks/adaptation.py --seeds 1 --only $CORE
 python benchmarks/adaptation.py --seeds 0 1 --only $OFFICIAL) > benchmarks/runs/queue-b.log 2>&1 &
wait
