#!/usr/bin/env bash
# Run a world over several hosts of a SLURM cluster: one task per host, each task
# seeing that host's GPUs, all joined by JAX's multi-controller runtime.
#
#   sbatch --nodes=4 --ntasks-per-node=1 --gpus-per-node=8 scripts/slurm_launch.sh \
#       worlds/h100_pod.yaml 10000
#
# Every task runs the same worker as scripts/launch_local_hosts.py; the first node is
# the coordinator. Process 0 prints the ledger and the final state's digest.
#SBATCH --job-name=hca
#SBATCH --time=01:00:00
set -euo pipefail

WORLD=${1:?usage: slurm_launch.sh WORLD.yaml STEPS}
STEPS=${2:?usage: slurm_launch.sh WORLD.yaml STEPS}
PORT=${HCA_COORDINATOR_PORT:-12355}
COORDINATOR="$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1):${PORT}"

srun --ntasks="$SLURM_NTASKS" bash -c "
  python scripts/launch_local_hosts.py '$WORLD' --steps '$STEPS' \
    --hosts \"\$SLURM_NTASKS\" --process-id \"\$SLURM_PROCID\" --coordinator '$COORDINATOR'
"
