#!/usr/bin/env bash
# Builds the Kafka image of this folder where no image can be pulled, and prints its tag.
#
#   deploy/kafka/image/build.sh JARS KAFKATOOLS
#
# JARS is a folder of Kafka's jars (make kafka's .kafka/<version>/libs, or a distribution's
# libs/); KAFKATOOLS is e2e/cmd/kafkatools built static (CGO_ENABLED=0), installed as the
# image's kafka-topics.sh and kafka-broker-api-versions.sh. The tag is
# sluice-kafka:<version>-<hash of every input>, so an image whose inputs are unchanged is
# reused, not built again. The Debian base (debootstrap, Debian's openjdk-17-jre-headless,
# docker import) is made once per machine: it needs root and Debian's package mirror
# (DEBIAN_MIRROR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
jars=${1:?usage: build.sh JARS KAFKATOOLS}
tools=${2:?usage: build.sh JARS KAFKATOOLS}
suite=bookworm
base=sluice-debian-jre17:$suite
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

kafka_jar=$(cd "$jars" && ls kafka_2.13-*.jar 2>/dev/null | head -1)
[ -n "$kafka_jar" ] || { echo "build.sh: no kafka_2.13-*.jar in $jars" >&2; exit 1; }
version=${kafka_jar#kafka_2.13-}
version=${version%.jar}

log() { echo "kafka image: $*" >&2; }

if ! docker image inspect "$base" >/dev/null 2>&1; then
	command -v debootstrap >/dev/null || { echo "build.sh: the base image needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	log "making the base $base with debootstrap (once per machine)"
	debootstrap --variant=minbase --include=openjdk-17-jre-headless "$suite" "$root" "$mirror" >&2
	rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
	tar -C "$root" -c . | docker import \
		-c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		-c 'ENV LANG=C.UTF-8' \
		-c 'CMD ["/bin/bash"]' - "$base" >&2
	rm -rf "$root"
	trap - EXIT
fi
base_id=$(docker image inspect --format '{{.Id}}' "$base")

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
mkdir -p "$ctx/libs" "$ctx/bin"
cp "$jars"/*.jar "$ctx/libs/"
cp "$here/Dockerfile" "$here/run" "$ctx/"
cp "$tools" "$ctx/bin/kafka-topics.sh"
cp "$tools" "$ctx/bin/kafka-broker-api-versions.sh"
chmod 0755 "$ctx/run" "$ctx/bin/"*
chmod 0644 "$ctx/libs/"*
hash=$( (echo "$base_id"; cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum) | sha256sum | cut -c1-12)
tag=sluice-kafka:$version-$hash
if docker image inspect "$tag" >/dev/null 2>&1; then
	log "$tag is up to date"
else
	log "building $tag"
	docker build -q --build-arg BASE="$base" --label dev.sluice.kafka-image=1 -t "$tag" "$ctx" >/dev/null
	log "built $tag"
	# Images of earlier inputs are of no more use: remove those no container uses.
	docker image ls --filter label=dev.sluice.kafka-image=1 --format '{{.Repository}}:{{.Tag}}' |
		grep -vx "$tag" | xargs -r docker image rm >/dev/null 2>&1 || true
fi
echo "$tag"
