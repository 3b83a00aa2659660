"""Errors: what the server refused (with its gRPC status and message), and what this client
refuses before anything is sent."""

from __future__ import annotations

import grpc


class MyelinError(Exception):
    """The server refused a call or ended a stream: `code` is the gRPC status
    (``grpc.StatusCode.INVALID_ARGUMENT``, ...), `details` the server's message."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details

    @classmethod
    def from_rpc(cls, error: grpc.RpcError) -> MyelinError:
        code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
        details = error.details() if hasattr(error, "details") else str(error)
        return cls(code, details or "")


class InvalidSamples(ValueError):
    """Samples, timestamps or markers this client will not send (wrong shape, dtype, NaN under the
    reject policy, timestamps that go backwards): nothing was sent."""
