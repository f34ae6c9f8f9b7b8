#!/usr/bin/env bash
# Stop training on all workers with SIGTERM (the run checkpoints and exits).
# Usage: tpu_scripts/stop.sh [--dry-run]
source "$(dirname "$0")/common.sh"
on_workers "[ -f ~/train.pid ] && kill -TERM \$(cat ~/train.pid) || true"
