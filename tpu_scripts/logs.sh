#!/usr/bin/env bash
# Follow the training log of worker 0 (WORKER=n for another one).
# Usage: tpu_scripts/logs.sh [--dry-run]
source "$(dirname "$0")/common.sh"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" \
  --zone="$ZONE" --worker="${WORKER:-0}" --command="tail -n 100 -f ~/train-*.log"
