#!/usr/bin/env bash
# Installs what weft's tests need on a fresh Debian machine of this kind
# (Debian packages, Go modules, npm packages) and runs every test.
# Root is needed for the network-namespace tests and for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# A non-login shell (CI) may not have the toolchains on PATH yet. The Go
# in /usr/local/go goes first: a distribution's older go must not win.
[ -d /usr/local/go/bin ] && PATH="/usr/local/go/bin:$PATH"
for d in "$HOME/go/bin" "$HOME/.pyenv/shims"; do
  case ":$PATH:" in *":$d:"*) ;; *) [ -d "$d" ] && PATH="$PATH:$d" ;; esac
done
export PATH
command -v go >/dev/null 2>&1 || { echo "test.sh: Go 1.26 or later is required (https://go.dev/dl, in /usr/local/go)" >&2; exit 1; }
# Go 1.21 and later fetch the toolchain go.mod asks for (1.26); older ones cannot.
go_minor=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9]*\).*/\1/p')
if [ "${go_minor:-0}" -lt 21 ]; then
  echo "test.sh: $(go version) is too old: Go 1.26 or later is required" >&2
  exit 1
fi

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
# Debian's AWS CLI v2 always (the tutorial tests run with it); pip's v1,
# where the machine has it (pyenv), as well.
[ -x /usr/bin/aws ] || need_pkgs+=(awscli)
have iptables || need_pkgs+=(iptables)
have dig || need_pkgs+=(dnsutils)
have curl || need_pkgs+=(curl)
have ip || need_pkgs+=(iproute2)
have setpriv || need_pkgs+=(util-linux)   # runs the proxy as UID 1337 in test/e2e and weft demo
have nslookup || need_pkgs+=(dnsutils)
# gRPC C-core's xDS client, the second independent client of the xDS tests.
/usr/bin/python3 -c 'import grpc' >/dev/null 2>&1 || need_pkgs+=(python3-grpcio)
have npm || need_pkgs+=(nodejs npm)
[ -x /usr/bin/etcd ] || need_pkgs+=(etcd-server)   # the etcd store's tests start real members
have chromium || need_pkgs+=(chromium)   # test/console drives it with chromedp
have prometheus || need_pkgs+=(prometheus)   # scrapes weft proxy in internal/proxy's Prometheus test
have nghttp || need_pkgs+=(nghttp2-client)   # nghttp2's HTTP/2 client against the loops' h2c (internal/proxy)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "test.sh: installing ${need_pkgs[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get update -qq >/dev/null
    timeout 600 apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  else
    echo "test.sh: missing ${need_pkgs[*]}; run as root to install them" >&2
  fi
fi
have aws || { echo "test.sh: the AWS CLI (aws) is required" >&2; exit 1; }
# The tutorial tests run with every AWS CLI found, one per version: each
# `aws` on PATH and Debian's. They differ (DiscoverInstances' host prefix).
# WEFT_AWS_CLIS, when set, names them instead (paths separated by ":").
if [ -z "${WEFT_AWS_CLIS:-}" ]; then
  aws_clis=() aws_versions=()
  IFS=: read -r -a path_dirs <<<"$PATH"
  for p in "${path_dirs[@]/%//aws}" /usr/bin/aws; do
    [ -x "$p" ] || continue
    v=$("$p" --version 2>/dev/null | awk '{print $1}') || continue
    case "$v" in aws-cli/*) ;; *) continue ;; esac
    case " ${aws_versions[*]-} " in *" $v "*) continue ;; esac
    aws_clis+=("$p") aws_versions+=("$v")
  done
  echo "test.sh: AWS CLIs for the tutorial tests: ${aws_versions[*]} (${aws_clis[*]})" >&2
  # Debian's v2 is installed above; v1 comes with the machine (pip's, under
  # ~/.pyenv) and cannot be installed here (no PyPI): say so when absent.
  case " ${aws_versions[*]} " in *" aws-cli/2."*) ;;
    *) echo "test.sh: no AWS CLI v2 found (Debian's awscli): ${aws_versions[*]}" >&2; exit 1 ;;
  esac
  case " ${aws_versions[*]} " in *" aws-cli/1."*) ;;
    *) echo "test.sh: warning: no AWS CLI v1 on this machine; the tutorial tests run with v2 only" >&2 ;;
  esac
  WEFT_AWS_CLIS=$(IFS=:; echo "${aws_clis[*]}")
  export WEFT_AWS_CLIS
fi
# grpc-js-xds, the third independent xDS client of the xDS tests, outside
# the repository (internal/xds/server finds it through WEFT_NPM_DIR).
export WEFT_NPM_DIR="${WEFT_NPM_DIR:-$HOME/.cache/weft-npm}"
if [ ! -f "$WEFT_NPM_DIR/node_modules/@grpc/grpc-js-xds/package.json" ] || [ ! -f "$WEFT_NPM_DIR/node_modules/@grpc/grpc-js/package.json" ]; then
  echo "test.sh: installing @grpc/grpc-js-xds into $WEFT_NPM_DIR" >&2
  mkdir -p "$WEFT_NPM_DIR"
  (cd "$WEFT_NPM_DIR" && timeout 600 npm install --no-audit --no-fund --loglevel=error --fetch-timeout=60000 --fetch-retries=2 \
    @grpc/grpc-js@1.14.7 @grpc/grpc-js-xds@1.14.1 >/dev/null)
fi

timeout 600 go mod download
go vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "test.sh: gofmt needed: $unformatted" >&2
  exit 1
fi
# weft server and weft proxy's portable parts (and weft-proxy) must keep building where
# developers run them (macOS); namespaces and interception stay Linux-only.
GOOS=darwin GOARCH=arm64 go build -o /dev/null ./cmd/weft
GOOS=darwin GOARCH=arm64 go build -o /dev/null ./cmd/weft-proxy
go test -count=1 -timeout 15m ./... "$@"
# weft proxy's tests again with --evloop=false: every listener on the
# goroutine path, which serves what the event loops (the default) hand
# off and is the only path on other systems (about 35 s on 2 cores).
WEFT_PROXY_TEST_EVLOOP=0 go test -count=1 -timeout 10m ./internal/proxy "$@"
# And with --h2loops=false: the loops on, but every h2c connection on the
# goroutine path, which serves the HTTP/2 connections the loops hand off
# (listeners with a route the loops do not forward) and what an operator
# falls back to (about 40 s on 2 cores). The default run above has h2c on the loops; the
# harness logs how many streams went to HTTP/2 upstreams.
WEFT_PROXY_TEST_H2LOOPS=0 go test -count=1 -timeout 10m ./internal/proxy "$@"
# The packages where streams and connections share state across goroutines
# run again under the race detector: a shared-response race in the xDS
# server was visible only there (about a minute on 2 cores).
go test -count=1 -race -timeout 10m ./internal/xds/server ./internal/proxy/httpconn ./internal/proxy/cluster "$@"
# Every benchmark once: the figures in docs/bench/ come from them, and a
# benchmark nothing runs can rot unnoticed (one of the loops' did, a nil
# pointer, for several rounds). One iteration each, no timing asserted
# (about two minutes on 2 cores).
go test -count=1 -run '^$' -bench . -benchtime 1x -timeout 10m ./... "$@"
