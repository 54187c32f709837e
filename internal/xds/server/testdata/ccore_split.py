"""Counts which backend answers N calls of grpc.health.v1.Health/Check
through gRPC C-core's xds resolver (Debian's python3-grpcio), for
grpc_test.go. Usage: ccore_split.py TARGET N [KEY VALUE]..., with
GRPC_XDS_BOOTSTRAP set; each call carries the KEY VALUE metadata pairs.
Prints {"backend": count, ...} as JSON."""

import json
import sys

import grpc


def main():
    target, n = sys.argv[1], int(sys.argv[2])
    pairs = sys.argv[3:]
    metadata = tuple(zip(pairs[0::2], pairs[1::2]))
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=20)
        # An empty HealthCheckRequest is zero bytes; the response is not
        # decoded, only the x-backend header is read.
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )
        counts = {}
        for _ in range(n):
            _, call = check.with_call(b"", timeout=20, metadata=metadata)
            backend = dict(call.initial_metadata()).get("x-backend", "")
            counts[backend] = counts.get(backend, 0) + 1
    json.dump(counts, sys.stdout)


if __name__ == "__main__":
    main()
