#!/usr/bin/env bash
# Build a .mar for one benchmark model and run TorchServe in the foreground on 127.0.0.1 only
# (adapted from shared/peers/serving/torchserve/build_and_run.sh).
# Usage: build_and_run.sh VENV WORKDIR KIND STATE PORT [BATCH_SIZE] [MAX_BATCH_DELAY_MS]
#   inference on http://127.0.0.1:PORT/predictions/KIND; management PORT+1, metrics PORT+2,
#   gRPC PORT+3 and PORT+4. Needs Java 17 on PATH.
set -eu
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV=$1; WD=$2; KIND=$3; STATE=$4; PORT=$5; BS=${6:-1}; DELAY=${7:-5}
mkdir -p "$WD/store" "$WD/logs" "$WD/tmp" "$WD/src"
cp "$STATE" "$WD/src/state.pt"; echo "$KIND" > "$WD/src/kind.txt"
"$VENV/bin/torch-model-archiver" --model-name "$KIND" --version 1.0 --handler "$HERE/handler.py" \
  --serialized-file "$WD/src/state.pt" --extra-files "$HERE/../model.py,$WD/src/kind.txt" \
  --export-path "$WD/store" --force
cat > "$WD/config.properties" <<CFG
vmargs=-XX:-UsePerfData -Djava.io.tmpdir=$WD/tmp
inference_address=http://127.0.0.1:$PORT
management_address=http://127.0.0.1:$((PORT+1))
metrics_address=http://127.0.0.1:$((PORT+2))
grpc_inference_address=127.0.0.1
grpc_management_address=127.0.0.1
grpc_inference_port=$((PORT+3))
grpc_management_port=$((PORT+4))
disable_token_authorization=true
enable_model_api=false
model_store=$WD/store
load_models=$KIND.mar
default_workers_per_model=1
async_logging=true
models={"$KIND": {"1.0": {"defaultVersion": true, "marName": "$KIND.mar", "minWorkers": 1, "maxWorkers": 1, "batchSize": $BS, "maxBatchDelay": $DELAY, "responseTimeout": 60}}}
CFG
cd "$WD"
export LOG_LOCATION="$WD/logs" METRICS_LOCATION="$WD/logs" PATH="$VENV/bin:$PATH" TMPDIR="$WD/tmp"
exec "$VENV/bin/torchserve" --start --foreground --ncs --ts-config "$WD/config.properties" --disable-token-auth
