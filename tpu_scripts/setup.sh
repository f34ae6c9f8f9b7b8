#!/usr/bin/env bash
# Install the project and its pinned dependencies on every worker
# (idempotent: the venv and checkout are created only if missing).
# Usage: tpu_scripts/setup.sh [--dry-run]
source "$(dirname "$0")/common.sh"
on_workers "set -e; [ -d $REMOTE_DIR/.git ] || git clone $REPO_URL $REMOTE_DIR; \
cd $REMOTE_DIR && git fetch --quiet origin && git checkout --quiet $COMMIT && \
{ [ -x .venv/bin/python ] || python3 -m venv .venv; } && \
.venv/bin/pip install --quiet --upgrade pip && \
.venv/bin/pip install --quiet -e '.[tpu,gcs]'"
