# Settings shared by every tpu_scripts/*.sh. Copy to env.local.sh (ignored by
# git) or export the variables before running to override any of them.
: "${PROJECT:=my-gcp-project}"
: "${ZONE:=us-central2-b}"
: "${ACCELERATOR:=v4-32}"                 # pod slice type
: "${RUNTIME:=tpu-ubuntu2204-base}"       # TPU VM software version
: "${TPU_NAME:=vselect}"                  # node name
: "${QR_ID:=${TPU_NAME}-qr}"              # queued resource id
: "${BUCKET:=gs://my-bucket}"             # checkpoints, data, converted model
: "${WORKDIR:=${BUCKET}/runs/${TPU_NAME}}"
: "${CONFIG:=configs/qwen25vl_7b.py}"
: "${REPO_URL:=https://github.com/ORG/vselect-jax.git}"
: "${COMMIT:=$(git -C "$(dirname "${BASH_SOURCE[0]}")/.." rev-parse HEAD 2>/dev/null || echo main)}"
: "${REMOTE_DIR:=vselect-jax}"            # checkout dir on each worker
: "${SPOT:=0}"                            # 1: --spot queued resource
