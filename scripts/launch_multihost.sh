#!/usr/bin/env bash
# Runs the same `tts` command on every host of a TPU pod slice or GPU cluster.
#
#   TPU pod slice (Cloud TPU VM):
#     scripts/launch_multihost.sh tpu  NAME ZONE  configs/demo.py --workdir /mnt/shared/runs/x
#   SLURM GPU cluster (one task per host):
#     scripts/launch_multihost.sh slurm NODES     configs/demo.py --workdir /shared/runs/x
#   Any hosts by hand (run once per host, process ids 0..N-1):
#     scripts/launch_multihost.sh manual HOST0:PORT N ID configs/demo.py --workdir /shared/runs/x
#
# The workdir must be a filesystem path every host sees (NFS, Filestore, a gcsfuse mount). `--distributed` makes each
# process call jax.distributed.initialize(), which finds its peers on TPU and under SLURM.
set -euo pipefail
mode=${1:?usage: launch_multihost.sh tpu|slurm|manual ...}
shift
case "$mode" in
  tpu)
    name=${1:?TPU name}; zone=${2:?zone}; shift 2
    gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all \
      --command "cd ~/tts && tts run $* --distributed"
    ;;
  slurm)
    nodes=${1:?number of nodes}; shift
    srun --nodes="$nodes" --ntasks-per-node=1 tts run "$@" --distributed
    ;;
  manual)
    coordinator=${1:?host:port of process 0}; count=${2:?number of processes}; id=${3:?process id}
    shift 3
    tts run "$@" --coordinator "$coordinator" --num_processes "$count" --process_id "$id"
    ;;
  *)
    echo "unknown mode $mode: use tpu, slurm or manual" >&2
    exit 2
    ;;
esac
