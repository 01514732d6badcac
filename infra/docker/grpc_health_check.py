#!/usr/bin/env python3
"""grpc.health.v1 probe for container health checks (grpc_health_probe is not packaged for
PyPI or Debian; this is the same check in a few lines of grpcio, which the images have).

    grpc-health-check                    # exit 0 only if 127.0.0.1:$RECALL_PORT is SERVING
    grpc-health-check --any-answer       # exit 0 on any health answer (liveness: the server
                                         #   is up, even if it waits for its first index)
    grpc-health-check --addr HOST:PORT --service recall.v1.RecallService --timeout 3

Exit 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--addr", default=f"127.0.0.1:{os.environ.get('RECALL_PORT', '50051')}")
    parser.add_argument("--service", default="", help="health service name ('' = the server)")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds")
    parser.add_argument("--any-answer", action="store_true", help="NOT_SERVING passes too")
    args = parser.parse_args()
    with grpc.insecure_channel(args.addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            print(f"{args.addr}: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    if args.any_answer or reply.status == health_pb2.HealthCheckResponse.SERVING:
        return 0
    print(f"{args.addr}: {status}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
