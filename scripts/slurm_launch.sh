#!/usr/bin/env bash
# Run a world over several hosts of a SLURM cluster with `hca run`: one task per host,
# each task seeing that host's GPUs, all joined by JAX's multi-controller runtime.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 scripts/slurm_launch.sh \
#       worlds/h100_pod.yaml 10000 runs/pod
#
# The first node is the coordinator. Task 0 writes RUN_DIR (world.yaml, metrics.jsonl,
# the phylogeny) and prints what `hca run` prints; every task writes its part of each
# checkpoint, so RUN_DIR must be on a filesystem all hosts share. Resume with the same
# script and `--resume RUN_DIR` in place of the world (on any number of hosts):
#
#   sbatch ... scripts/slurm_launch.sh --resume runs/pod 5000
#SBATCH --job-name=hca
#SBATCH --time=01:00:00
set -euo pipefail

usage="usage: slurm_launch.sh WORLD.yaml STEPS RUN_DIR | slurm_launch.sh --resume RUN_DIR STEPS"
if [ "${1:-}" = "--resume" ]; then
    RUN_DIR=${2:?$usage}
    STEPS=${3:?$usage}
    COMMAND="run --resume '$RUN_DIR' --steps '$STEPS'"
else
    WORLD=${1:?$usage}
    STEPS=${2:?$usage}
    RUN_DIR=${3:?$usage}
    COMMAND="run '$WORLD' --steps '$STEPS' --out '$RUN_DIR'"
fi
PORT=${HCA_COORDINATOR_PORT:-12355}
COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):${PORT}"

srun --ntasks="$SLURM_NTASKS" bash -c "
  python -m hca $COMMAND --coordinator '$COORDINATOR' --processes \"\$SLURM_NTASKS\" \
    --process-id \"\$SLURM_PROCID\"
"
