# weft in minimal images: a static binary alone, run as a non-root user.
#
#   docker build --build-arg VERSION=v0.1.0 -t weft .                           # the whole mesh (default)
#   docker build --build-arg VERSION=v0.1.0 --target weft-proxy -t weft-proxy .  # the sidecar alone
#   docker run -p 9080:9080 -v weft-data:/data weft server --api-addr 0.0.0.0:9080
#
# Not built or run in CI: our CI machines have no container engine.

# Build stages: static binaries with release.sh's flags (grpcnotrace: see
# release.sh), one stage each so that a --target builds only its own.
FROM golang:1.26-bookworm AS source
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
ENV CGO_ENABLED=0 LDFLAGS_STAMP="-X main.releaseVersion=${VERSION} -X main.releaseCommit=${COMMIT}"

FROM source AS build-weft
RUN go build -trimpath -buildvcs=false -tags grpcnotrace -ldflags "-s -w -buildid= ${LDFLAGS_STAMP}" -o /out/weft ./cmd/weft \
 && mkdir -p /out/data

FROM source AS build-weft-proxy
RUN go build -trimpath -buildvcs=false -tags grpcnotrace -ldflags "-s -w -buildid= ${LDFLAGS_STAMP}" -o /out/weft-proxy ./cmd/weft-proxy

# weft-proxy: the data plane alone (weft-proxy proxy, weft-proxy intercept),
# for sidecars and gateways. CA roots for TLS to remote endpoints.
FROM scratch AS weft-proxy
COPY --from=build-weft-proxy /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build-weft-proxy /out/weft-proxy /usr/local/bin/weft-proxy
# UID 1337: see below.
USER 1337:1337
# 15000/15001 listeners and 9901 admin (weft proxy's defaults).
EXPOSE 15000 15001 9901
ENTRYPOINT ["/usr/local/bin/weft-proxy"]
CMD ["proxy"]

# weft (the default target): the binary, CA roots (TLS to remote
# endpoints) and an empty, writable data directory; nothing else.
FROM scratch AS weft
COPY --from=build-weft /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build-weft /out/weft /usr/local/bin/weft
COPY --from=build-weft --chown=1337:1337 /out/data /data
# UID 1337 is the App Mesh Envoy image's: an ECS APPMESH proxyConfiguration
# (IgnoredUID 1337) lets this user's traffic out uninterrupted, so the
# image can replace that sidecar as it is.
USER 1337:1337
ENV WEFT_DATA_DIR=/data
WORKDIR /data
# 9080 API, 5353 DNS, 15010 xDS (weft server); 15000/15001 and 9901 (weft proxy).
EXPOSE 9080 5353/udp 5353/tcp 15010 15000 15001 9901
ENTRYPOINT ["/usr/local/bin/weft"]
CMD ["server"]
