#!/usr/bin/env bash
# Installs the Compose v2 CLI plugin (`docker compose`) when it is missing,
# built with Go from its module on the Go module proxy (machines without a
# download site for its release binaries). Takes about 2 minutes cold.
set -euo pipefail
version=v2.40.3
dest=${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose
if docker compose version >/dev/null 2>&1; then
    exit 0
fi
command -v go >/dev/null || { echo "install-compose: go is missing" >&2; exit 2; }
dir=$(go mod download -json "github.com/docker/compose/v2@$version" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Built inside a writable copy: the module's go.mod has exclude directives,
# which `go install module@version` refuses.
cp -r "$dir/." "$work"
chmod -R u+w "$work"
mkdir -p "$(dirname "$dest")"
(cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "$dest" ./cmd)
echo "install-compose: docker compose $version installed in $dest"
