#!/usr/bin/env bash
# Put every worker on the same commit ($COMMIT, default: local HEAD).
# Usage: tpu_scripts/sync.sh [--dry-run]
source "$(dirname "$0")/common.sh"
on_workers "set -e; cd $REMOTE_DIR && git fetch --quiet origin && \
git checkout --quiet $COMMIT && git rev-parse HEAD"
