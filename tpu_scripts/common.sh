# Sourced by the scripts: settings, --dry-run, and the gcloud wrapper.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[ -f "$here/env.local.sh" ] && source "$here/env.local.sh"
source "$here/env.sh"
DRY_RUN=0
ARGS=()
for a in "$@"; do
  case "$a" in
    --dry-run) DRY_RUN=1 ;;
    -h|--help) sed -n '2,/^$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) ARGS+=("$a") ;;
  esac
done

# run CMD...: print it (dry run) or run it.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '%q ' "$@"; echo
  else
    "$@"
  fi
}

# on_workers COMMAND: run a shell command on every worker of the slice.
on_workers() {
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --project="$PROJECT" \
    --zone="$ZONE" --worker=all --command="$1"
}
