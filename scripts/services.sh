#!/usr/bin/env bash
# services.sh: make this machine ready for gantry. Idempotent: each step is skipped
# when its result is already there.
#   1. Debian packages: docker.io (engine 20.10), docker-registry, debootstrap,
#      chromium (for the dashboard test), ca-certificates (for gantryd's image)
#   2. dockerd, when no engine answers on the local socket
#   3. a local registry on 127.0.0.1:$GANTRY_REGISTRY_PORT (default 5000), no auth
#   4. the base image (Python with scikit-learn, pandas, joblib) made from Debian packages
# Everything it starts is recorded in $GANTRY_STATE (default /run/gantry-dev) so
# scripts/services.sh stop ends exactly what it started.
set -euo pipefail

STATE=${GANTRY_STATE:-/run/gantry-dev}
PORT=${GANTRY_REGISTRY_PORT:-5000}
BASE_IMAGE=${GANTRY_BASE_IMAGE:-gantry/python-ml:bookworm}
mkdir -p "$STATE"

log() { printf '==> %s\n' "$*" >&2; }

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "services.sh: $1 needs root (run it with sudo)" >&2
		exit 1
	fi
}

packages() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v docker-registry >/dev/null || missing+=(docker-registry)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v curl >/dev/null || missing+=(curl)
	# gantryd's own image (make image) carries the CA bundle.
	[ -f /etc/ssl/certs/ca-certificates.crt ] || missing+=(ca-certificates)
	# The dashboard test drives a headless browser.
	command -v chromium >/dev/null || missing+=(chromium)
	# The swarm lab (internal/lab): network namespaces and veths (ip),
	# nsenter, and buildkitd's runc; the builder's tests base an image on
	# Debian's static busybox.
	command -v ip >/dev/null || missing+=(iproute2)
	command -v nsenter >/dev/null || missing+=(util-linux)
	command -v runc >/dev/null || missing+=(runc)
	dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
	[ ${#missing[@]} -eq 0 ] && return 0
	need_root "installing ${missing[*]}"
	log "installing ${missing[*]}"
	apt-get update -q
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
}

engine_up() { timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

engine() {
	engine_up && return 0
	need_root "starting dockerd"
	log "starting dockerd (log: $STATE/dockerd.log)"
	/usr/sbin/dockerd >"$STATE/dockerd.log" 2>&1 &
	echo $! >"$STATE/dockerd.pid"
	for _ in $(seq 1 60); do
		engine_up && return 0
		sleep 0.5
	done
	echo "services.sh: dockerd did not come up; its log:" >&2
	tail -20 "$STATE/dockerd.log" >&2
	exit 1
}

registry_up() { curl -fsS "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1; }

registry() {
	registry_up && return 0
	log "starting docker-registry on 127.0.0.1:$PORT (log: $STATE/registry.log)"
	mkdir -p "$STATE/registry"
	cat >"$STATE/registry.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
CONF
	docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 &
	echo $! >"$STATE/registry.pid"
	for _ in $(seq 1 40); do
		registry_up && return 0
		sleep 0.25
	done
	echo "services.sh: the registry did not come up; its log:" >&2
	tail -20 "$STATE/registry.log" >&2
	exit 1
}

# mirror prints the Debian archive that this machine's own apt sources name.
mirror() {
	local m
	m=$(grep -hoE '^URIs: *[^ ]+' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		awk '{print $2}' | grep -v security | head -n1 || true)
	[ -n "$m" ] || m=$(grep -hoE '^deb +[^ ]+' /etc/apt/sources.list 2>/dev/null |
		awk '{print $2}' | grep -v security | head -n1 || true)
	echo "${m:-http://deb.debian.org/debian}"
}

base() {
	if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
		return 0
	fi
	need_root "debootstrap"
	local dir
	dir=$(mktemp -d /var/tmp/gantry-base.XXXXXX)
	trap 'rm -rf "$dir"' RETURN
	log "building $BASE_IMAGE from Debian packages (about 90 s)"
	debootstrap --variant=minbase \
		--include=python3-sklearn,python3-pandas,python3-joblib \
		bookworm "$dir" "$(mirror)" >"$STATE/debootstrap.log" 2>&1 || {
		echo "services.sh: debootstrap failed; its log:" >&2
		tail -20 "$STATE/debootstrap.log" >&2
		exit 1
	}
	rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/*
	tar -C "$dir" -c . | docker import \
		-c 'ENV PYTHONUNBUFFERED=1' -c 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
	log "built $BASE_IMAGE"
}

stop() {
	for name in registry dockerd; do
		if [ -f "$STATE/$name.pid" ]; then
			pid=$(cat "$STATE/$name.pid")
			# Only the process this script started: a stale pid file may
			# name a pid that now belongs to something else.
			comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
			case "$comm" in dockerd | docker-registry) ;; *)
				rm -f "$STATE/$name.pid"
				continue
				;;
			esac
			kill "$pid" 2>/dev/null || true
			for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
			rm -f "$STATE/$name.pid"
		fi
	done
}

case "${1:-up}" in
up)
	packages
	engine
	registry
	base
	;;
stop) stop ;;
*)
	echo "usage: services.sh [up|stop]" >&2
	exit 2
	;;
esac
