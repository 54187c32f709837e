#!/usr/bin/env bash
# Builds weft's release binaries, reproducibly: the same commit and Go
# toolchain give the same bytes on any machine.
#
#   scripts/release.sh [VERSION]     # default: git describe --tags --always --dirty
#
# Environment: OUT (default dist), TARGETS (default "linux/amd64 linux/arm64
# darwin/arm64"), BINARIES (default "weft weft-proxy": the whole mesh, and
# the data plane alone for sidecars). Writes $OUT/BINARY-VERSION-OS-ARCH
# for each and $OUT/SHA256SUMS.
#
# Static (CGO_ENABLED=0), no local paths (-trimpath), no build id
# (-buildid=), the date from the commit (SOURCE_DATE_EPOCH), the VCS stamp
# left out (-buildvcs=false) and written with -X instead, so that a tree's
# state outside its files (a worktree, a dirty index) changes nothing.
#
# -tags grpcnotrace leaves out grpc's request tracing (golang.org/x/net/trace,
# which weft does not use) and with it text/template, whose calls of methods
# by name make the linker keep every exported method of every type: without
# them weft-proxy is 25 MB instead of 38, and a sidecar maps about 1 MB less
# of its executable (docs/bench/proxy.md). weft links text/template anyway,
# through the console's html/template (68 MB with the tag; round 32 there).
set -euo pipefail
cd "$(dirname "$0")/.."

[ -d /usr/local/go/bin ] && PATH="/usr/local/go/bin:$PATH"
command -v go >/dev/null 2>&1 || { echo "release.sh: Go is required" >&2; exit 1; }
command -v git >/dev/null 2>&1 || { echo "release.sh: git is required" >&2; exit 1; }

version=${1:-$(git describe --tags --always --dirty)}
commit=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  commit="$commit-dirty"
fi
# The commit's time, unless the caller fixed one.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct HEAD)}
export SOURCE_DATE_EPOCH
date=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
out=${OUT:-dist}
targets=${TARGETS:-linux/amd64 linux/arm64 darwin/arm64}
binaries=${BINARIES:-weft weft-proxy}
for bin in $binaries; do
  case $bin in
    weft|weft-proxy) ;;
    *) echo "release.sh: BINARIES: unknown binary \"$bin\" (weft, weft-proxy)" >&2; exit 1 ;;
  esac
done

mkdir -p "$out"
rm -f "$out/SHA256SUMS"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
files=()
for bin in $binaries; do
  for target in $targets; do
    goos=${target%/*} goarch=${target#*/}
    name="$bin-$version-$goos-$goarch"
    GOOS=$goos GOARCH=$goarch go build -trimpath -buildvcs=false -tags grpcnotrace \
      -ldflags "-s -w -buildid= -X main.releaseVersion=$version -X main.releaseCommit=$commit -X main.releaseDate=$date" \
      -o "$out/$name" "./cmd/$bin"
    touch -d "@$SOURCE_DATE_EPOCH" "$out/$name"
    files+=("$name")
    echo "release.sh: $out/$name" >&2
  done
done
(cd "$out" && sha256sum "${files[@]}" > SHA256SUMS)
echo "release.sh: $out/SHA256SUMS" >&2
