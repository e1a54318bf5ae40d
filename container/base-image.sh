#!/bin/sh
# A python:3.11-slim-bookworm stand-in made from Debian's own packages, for machines that reach Debian's
# mirror but no container registry:
#
#   sudo container/base-image.sh [TAG]           (default rlrunner-base:bookworm; needs debootstrap and docker)
#   rlrunner image build --python-image rlrunner-base:bookworm
#
# debootstrap lays out a minimal bookworm with Debian's python3.11 and venv; `docker import` turns it into an
# image whose `python` is python3.11 (python-is-python3), as the Dockerfile's build stage expects.
set -eu
TAG="${1:-rlrunner-base:bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
ROOT="$(mktemp -d /var/tmp/rlrunner-base.XXXXXX)"
trap 'rm -rf "$ROOT"' EXIT
debootstrap --variant=minbase \
    --include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,python3-venv,python3-pip-whl,python3-setuptools-whl,python-is-python3,ca-certificates \
    bookworm "$ROOT" "$MIRROR" >&2
# the image needs no package cache or apt lists (the Dockerfile runs apt-get update itself)
rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/* "$ROOT"/debootstrap
tar -C "$ROOT" -c . | docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    - "$TAG"
