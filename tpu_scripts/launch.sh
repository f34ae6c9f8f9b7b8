#!/usr/bin/env bash
# Launch train.py on all workers, each logging to ~/train-<host>.log.
# Extra arguments go to train.py, e.g. --config.epochs=2 or --config.optim.grad_accum=1
# (the config states the global batch; see docs in train.py). train.py exits 75
# when preempted (SIGTERM, e.g. stop.sh): rerun launch.sh to resume.
# Usage: tpu_scripts/launch.sh [--dry-run] [train.py flags...]
source "$(dirname "$0")/common.sh"
flags=""
for a in "${ARGS[@]+"${ARGS[@]}"}"; do flags+=" $(printf '%q' "$a")"; done
on_workers "cd $REMOTE_DIR && nohup .venv/bin/python train.py \
--config=$CONFIG --workdir=$WORKDIR --distributed$flags \
> ~/train-\$(hostname).log 2>&1 & echo \$! > ~/train.pid"
