#!/usr/bin/env bash
# Runs the same `tts run` command on every host of a TPU pod slice or GPU cluster.
#
#   TPU pod slice (Cloud TPU VM):
#     scripts/launch_multihost.sh tpu  NAME ZONE  configs/demo.py --workdir /mnt/shared/runs/x
#   SLURM GPU cluster (one task per host):
#     scripts/launch_multihost.sh slurm NODES     configs/demo.py --workdir /shared/runs/x
#   Any hosts by hand (run once per host, process ids 0..N-1):
#     scripts/launch_multihost.sh manual HOST0:PORT N ID configs/demo.py --workdir /shared/runs/x
#
# The code: this script does not copy it. Every host needs the same checkout installed
# (`pip install -e .`) at the same path: on a TPU slice, copy it to every worker first, e.g.
#   gcloud compute tpus tpu-vm scp --recurse --worker=all . NAME:~/tts --zone ZONE
#   gcloud compute tpus tpu-vm ssh NAME --zone ZONE --worker=all --command 'pip install -e ~/tts'
# and the commands run in $TTS_REMOTE_DIR (default ~/tts) there; under SLURM and by hand
# they run in the current directory, which should be on the shared filesystem.
# The workdir must be a path every host sees (NFS, Filestore, a gcsfuse mount).
# `--distributed` makes each process call jax.distributed.initialize(), which finds its
# peers on TPU and under SLURM.
#
# Arguments reach the hosts unchanged: each is quoted (printf %q) into the remote command,
# so --config.revision_search.budgets='(1,2,4,8,16)' stays one argument.
# Logs: every host also writes its output to $TTS_LOG_DIR/<host>.log (default: logs/ under
# the directory it runs in); SLURM writes logs/<node>-<task>.log.
# LAUNCH_DRY_RUN=1 prints the command (one shell-quoted line) instead of running it.
set -euo pipefail
mode=${1:?usage: launch_multihost.sh tpu|slurm|manual ...}
shift
log_dir=${TTS_LOG_DIR:-logs}

# run LOG COMMAND...: runs COMMAND (its output also to the file LOG, unless LOG is empty).
run() {
  local log=$1; shift
  if [[ -n "${LAUNCH_DRY_RUN:-}" ]]; then
    printf '%q ' "$@"
    echo
  elif [[ -n "$log" ]]; then
    mkdir -p "$(dirname "$log")"
    "$@" 2>&1 | tee "$log"
  else
    "$@"
  fi
}

case "$mode" in
  tpu)
    name=${1:?TPU name}; zone=${2:?zone}; shift 2
    remote_dir=${TTS_REMOTE_DIR:-'~/tts'}  # left unquoted remotely, so ~ expands there
    args=$(printf '%q ' "$@")
    log=$(printf '%q' "$log_dir")
    run "" gcloud compute tpus tpu-vm ssh "$name" --zone "$zone" --worker=all --command \
      "set -o pipefail; cd $remote_dir && mkdir -p $log && tts run $args--distributed 2>&1 | tee $log/\$(hostname).log"
    ;;
  slurm)
    nodes=${1:?number of nodes}; shift
    [[ -n "${LAUNCH_DRY_RUN:-}" ]] || mkdir -p "$log_dir"
    run "" srun --nodes="$nodes" --ntasks-per-node=1 --output="$log_dir/%N-%t.log" \
      tts run "$@" --distributed
    ;;
  manual)
    coordinator=${1:?host:port of process 0}; count=${2:?number of processes}; id=${3:?process id}
    shift 3
    run "$log_dir/$(hostname).log" \
      tts run "$@" --coordinator "$coordinator" --num_processes "$count" --process_id "$id"
    ;;
  *)
    echo "unknown mode $mode: use tpu, slurm or manual" >&2
    exit 2
    ;;
esac
