"""The trainer's gRPC server: loopback only, one exchange at a time, handed over by queues."""

from __future__ import annotations

import queue
import warnings
from concurrent.futures import ThreadPoolExecutor

import grpc

from rlrunner.unity.fast_path import RawOutput, decode_unity_message, encode_python_message
from rlrunner.unity.ports import LOOPBACK, port_is_free

with warnings.catch_warnings():
    # mlagents-envs 0.28's generated code uses protobuf 3's deprecated descriptor factories.
    warnings.filterwarnings("ignore", message="Call to deprecated create function", category=DeprecationWarning)
    from mlagents_envs.communicator import PollCallback
    from mlagents_envs.communicator_objects.unity_input_pb2 import UnityInputProto
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
    from mlagents_envs.exception import UnityTimeOutException, UnityWorkerInUseException
    from mlagents_envs.rpc_communicator import RpcCommunicator

PROCESS_POLL_S = 1.0
"""How often a waiting exchange checks that the player process is still alive."""

EXCHANGE_SERVICE = "communicator_objects.UnityToExternalProto"
"""The one gRPC service of the protocol; only ``Exchange`` is on the wire (reference §2.1)."""


class _QueueServicer:
    """Hands each Unity request, still encoded, to the trainer thread and waits for its reply.

    mlagents' servicer uses a ``multiprocessing.Pipe``, which pickles every message (a full
    serialise + parse with pure-Python protobuf) and polls; two ``SimpleQueue`` objects pass the
    bytes by reference. The handler is registered without (de)serialisers: the trainer thread
    decodes what it needs (see ``decode_unity_message``), so the gRPC threads do no protobuf work.
    """

    def __init__(self) -> None:
        self.to_trainer: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self.to_unity: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def Exchange(self, request: bytes, context: grpc.ServicerContext) -> bytes:  # noqa: N802
        self.to_trainer.put(request)
        while True:
            try:
                reply = self.to_unity.get(timeout=PROCESS_POLL_S)
            except queue.Empty:
                if not context.is_active():  # the player vanished while the trainer thought
                    context.abort(grpc.StatusCode.CANCELLED, "player disconnected")
                continue
            if reply is None:  # close(): release this handler thread
                context.abort(grpc.StatusCode.UNAVAILABLE, "trainer closed")
                raise RuntimeError("trainer closed")  # abort() raises; this is for the type checker
            return reply

    def handlers(self) -> grpc.GenericRpcHandler:
        """The bytes-in, bytes-out ``Exchange`` handler."""
        exchange = grpc.unary_unary_rpc_method_handler(self.Exchange)
        return grpc.method_handlers_generic_handler(EXCHANGE_SERVICE, {"Exchange": exchange})


class LoopbackCommunicator(RpcCommunicator):  # type: ignore[misc]
    """``RpcCommunicator`` bound to 127.0.0.1 only, without SO_REUSEPORT, with a queue hand-off.

    ``exchange`` takes a ``UnityInputProto`` or its encoding (``bytes``, built by
    ``ManagedUnityEnvironment._generate_step_input``). It returns a ``UnityOutputProto``, or, when
    ``raw_outputs`` is set and the message carries no initialization output, a ``RawOutput``
    that ``ManagedUnityEnvironment`` decodes without the pure-Python protobuf classes.
    """

    raw_outputs = False

    def create_server(self) -> None:
        """Start the gRPC server; a taken port raises ``UnityWorkerInUseException``."""
        self.check_port(self.port)
        servicer = _QueueServicer()
        # SO_REUSEPORT (grpc's default on Linux, and mlagents' setting) would let two servers share
        # a port silently; without it a taken port fails here and the launcher moves on.
        server = grpc.server(ThreadPoolExecutor(max_workers=2), options=(("grpc.so_reuseport", 0),))
        server.add_generic_rpc_handlers((servicer.handlers(),))
        try:
            bound = server.add_insecure_port(f"{LOOPBACK}:{self.port}")
        except RuntimeError as error:
            raise UnityWorkerInUseException(self.worker_id) from error
        if bound != self.port:
            raise UnityWorkerInUseException(self.worker_id)
        server.start()
        self.server = server
        self.unity_to_external = servicer
        self.is_open = True

    def check_port(self, port: int) -> None:
        """Fail fast when something already listens on the loopback port."""
        if not port_is_free(port):
            raise UnityWorkerInUseException(self.worker_id)

    def _receive(self, poll_callback: PollCallback | None) -> bytes:
        servicer: _QueueServicer = self.unity_to_external
        waited = 0.0
        while waited < self.timeout_wait:
            try:
                return servicer.to_trainer.get(timeout=PROCESS_POLL_S)
            except queue.Empty:
                waited += PROCESS_POLL_S
            if poll_callback is not None:
                poll_callback()  # raises when the player process has exited
        raise UnityTimeOutException(f"{LOOPBACK}:{self.port}: the Unity player sent nothing for {self.timeout_wait} s")

    def initialize(self, inputs: UnityInputProto, poll_callback: PollCallback | None = None) -> UnityOutputProto:
        """Run the two-message handshake; return Unity's initialization output."""
        first = UnityMessageProto.FromString(self._receive(poll_callback))
        self.unity_to_external.to_unity.put(encode_python_message(inputs))
        self._receive(poll_callback)
        return first.unity_output

    def exchange(
        self, inputs: UnityInputProto | bytes, poll_callback: PollCallback | None = None
    ) -> UnityOutputProto | RawOutput | None:
        """Send one input, wait for Unity's next output (None when Unity closed)."""
        self.send(inputs)
        return self.receive(poll_callback)

    def send(self, inputs: UnityInputProto | bytes) -> None:
        """Hand one input to the waiting handler thread, which returns it to Unity; do not wait."""
        self.unity_to_external.to_unity.put(encode_python_message(inputs))

    def receive(self, poll_callback: PollCallback | None = None) -> UnityOutputProto | RawOutput | None:
        """Wait for Unity's next output after ``send`` (None when Unity closed)."""
        status, output = decode_unity_message(self._receive(poll_callback))
        if status != 200:
            return None
        if self.raw_outputs:
            raw = RawOutput.decode(output)
            if raw is not None:
                return raw
        return UnityOutputProto.FromString(output)

    def close(self) -> None:
        """Tell Unity to quit (status 400), release a waiting handler and stop the server."""
        if not self.is_open:
            return
        self.is_open = False
        farewell = UnityMessageProto()
        farewell.header.status = 400
        self.unity_to_external.to_unity.put(farewell.SerializeToString())
        self.unity_to_external.to_unity.put(None)
        self.server.stop(grace=0.5).wait(2.0)  # the port is free when close() returns


__all__ = ["EXCHANGE_SERVICE", "PROCESS_POLL_S", "LoopbackCommunicator"]
