#!/usr/bin/env bash
# Delete the queued resource and its TPU slice.
# Usage: tpu_scripts/delete.sh [--dry-run]
source "$(dirname "$0")/common.sh"
run gcloud compute tpus queued-resources delete "$QR_ID" --project="$PROJECT" \
  --zone="$ZONE" --force --quiet
