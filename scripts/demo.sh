#!/usr/bin/env bash
# demo.sh: the tutorial's workflow as one gantry job. Starts gantryd (unless
# one already serves on GANTRY_HOST), writes the Iris trainer, submits it
# with a gate and a push, and prints the outcome, the accuracy and the digest.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${GANTRY_BASE_IMAGE:-gantry/python-ml:bookworm}
REGISTRY=${GANTRY_REGISTRY:-127.0.0.1:5000}
DEMO=${GANTRY_DEMO_DIR:-$PWD/.demo}
mkdir -p "$DEMO"
export GANTRY_HOST=${GANTRY_HOST:-unix://$DEMO/gantry.sock}

started=""
if ! bin/gantry version >/dev/null 2>&1; then
	echo "==> starting gantryd (log: $DEMO/gantryd.log)"
	bin/gantryd --socket "${GANTRY_HOST#unix://}" --data-dir "$DEMO/data" >"$DEMO/gantryd.log" 2>&1 &
	started=$!
	trap 'kill $started 2>/dev/null; wait $started 2>/dev/null || true' EXIT
	for _ in $(seq 1 100); do
		bin/gantry version >/dev/null 2>&1 && break
		kill -0 "$started" 2>/dev/null || { cat "$DEMO/gantryd.log"; exit 1; }
		sleep 0.1
	done
fi
bin/gantry version

rm -rf "$DEMO/ml-docker-app"
bin/gantry init --base "$BASE_IMAGE" "$DEMO/ml-docker-app"
echo "==> gantry submit ml-docker-app --push $REGISTRY/ml-docker-app:latest --min-accuracy 0.9 --wait"
bin/gantry submit "$DEMO/ml-docker-app" --push "$REGISTRY/ml-docker-app:latest" --min-accuracy 0.9 --wait
echo "==> gantry ls"
bin/gantry ls -n 5
