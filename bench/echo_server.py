"""The echo ceiling: a do-nothing ``grpc.aio`` server implementing ``recall.v1.RecallService``
that answers every Recall with one canned response of the size a real server would send.

Nothing a recall server does can be faster than this with the same proto, response size,
Python gRPC stack and machine, so `recall bench serve` reports the real server as a ratio
of it. Run as its own process, like the real server:

    .venv/bin/python -m bench.echo_server --port 50071 --response canned.bin
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

import grpc

from serving.api.recall.v1 import recall_pb2, recall_pb2_grpc


def canned_response(
    item_ids: list[str], k: int, model_version: str, index_version: str
) -> recall_pb2.RecallResponse:
    """``k`` candidates with real item ids and decreasing scores, as a real answer holds."""
    return recall_pb2.RecallResponse(
        candidates=[
            recall_pb2.Candidate(item_id=item, score=1.0 - i / (k + 1))
            for i, item in enumerate(item_ids[:k])
        ],
        model_version=model_version,
        index_version=index_version,
        source=recall_pb2.SOURCE_USER_VECTOR,
    )


class EchoRecallService(recall_pb2_grpc.RecallServiceServicer):
    def __init__(self, response: recall_pb2.RecallResponse) -> None:
        self.response = response

    async def Recall(
        self, request: recall_pb2.RecallRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.RecallResponse:
        return self.response

    async def BatchRecall(
        self, request: recall_pb2.BatchRecallRequest, context: grpc.aio.ServicerContext
    ) -> recall_pb2.BatchRecallResponse:
        return recall_pb2.BatchRecallResponse(responses=[self.response] * len(request.requests))


async def serve(port: int, response: recall_pb2.RecallResponse) -> None:
    server = grpc.aio.server()
    recall_pb2_grpc.add_RecallServiceServicer_to_server(EchoRecallService(response), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(1)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--response", type=Path, required=True, help="a serialised RecallResponse")
    args = ap.parse_args(argv)
    response = recall_pb2.RecallResponse.FromString(args.response.read_bytes())
    asyncio.run(serve(args.port, response))


if __name__ == "__main__":
    main()
