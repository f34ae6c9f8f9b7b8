#!/usr/bin/env bash
# Create the queued resource for the pod slice and wait until it is ACTIVE.
# Usage: tpu_scripts/create.sh [--dry-run]
source "$(dirname "$0")/common.sh"
extra=()
[ "$SPOT" = 1 ] && extra+=(--spot)
run gcloud compute tpus queued-resources create "$QR_ID" \
  --project="$PROJECT" --zone="$ZONE" --node-id="$TPU_NAME" \
  --accelerator-type="$ACCELERATOR" --runtime-version="$RUNTIME" "${extra[@]}"
if [ "$DRY_RUN" = 1 ]; then
  run gcloud compute tpus queued-resources describe "$QR_ID" \
    --project="$PROJECT" --zone="$ZONE" --format="value(state.state)"
  exit 0
fi
while :; do
  state=$(gcloud compute tpus queued-resources describe "$QR_ID" \
    --project="$PROJECT" --zone="$ZONE" --format="value(state.state)")
  echo "$(date +%T) $QR_ID: $state"
  case "$state" in
    ACTIVE) break ;;
    FAILED|SUSPENDED) echo "queued resource $state" >&2; exit 1 ;;
  esac
  sleep 30
done
