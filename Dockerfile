# weft in a minimal image: the static binary alone, run as a non-root user.
#
#   docker build --build-arg VERSION=v0.1.0 -t weft .
#   docker run -p 9080:9080 -v weft-data:/data weft server --api-addr 0.0.0.0:9080
#
# Not built or run in CI: our CI machines have no container engine.

# Stage 1: build a static binary, with release.sh's flags.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ARG COMMIT=unknown
RUN CGO_ENABLED=0 go build -trimpath -buildvcs=false \
      -ldflags "-s -w -buildid= -X main.releaseVersion=${VERSION} -X main.releaseCommit=${COMMIT}" \
      -o /out/weft ./cmd/weft \
 && mkdir -p /out/data

# Stage 2: the binary, CA roots (TLS to remote endpoints) and an empty,
# writable data directory; nothing else.
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/weft /usr/local/bin/weft
COPY --from=build --chown=1337:1337 /out/data /data
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
