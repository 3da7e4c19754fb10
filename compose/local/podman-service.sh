#!/usr/bin/env bash
# Starts Podman's Docker-compatible API on a private socket, configured for
# machines like this project's CI (as root: runc, cgroupfs, no systemd, and
# ulimits the machine allows), and prints `export …` lines to source:
#
#   eval "$(compose/local/podman-service.sh DIR)"   # DIR: a fresh directory
#
# The service's pid is in DIR/podman.pid; kill it and remove DIR when done.
set -euo pipefail
dir=${1:?usage: podman-service.sh DIR}
mkdir -p "$dir"
# Podman's compat API swaps soft and hard limits it sets by default, and this
# kind of machine refuses raising NPROC: equal soft and hard values it allows.
cat > "$dir/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$(ulimit -Hn):$(ulimit -Hn)", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
export CONTAINERS_CONF=$dir/containers.conf
podman system service --time=0 "unix://$dir/podman.sock" >"$dir/service.log" 2>&1 &
echo $! >"$dir/podman.pid"
for _ in $(seq 50); do
    [ -S "$dir/podman.sock" ] && break
    sleep 0.1
done
[ -S "$dir/podman.sock" ] || { cat "$dir/service.log" >&2; exit 1; }
echo "export CONTAINERS_CONF=$dir/containers.conf DOCKER_HOST=unix://$dir/podman.sock"
