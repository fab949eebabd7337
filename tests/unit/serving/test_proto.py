"""The checked-in gRPC modules are what ``make proto`` makes of the checked-in .proto."""

from __future__ import annotations

from pathlib import Path

from google.protobuf import descriptor_pb2

SRC = Path(__file__).resolve().parents[3] / "src"
PROTO = "tuneserve/serving/proto/grpc_predict_v2.proto"


def test_generated_modules_match_the_proto(tmp_path):
    from grpc_tools import protoc

    from tuneserve.serving.proto import grpc_predict_v2_pb2 as pb

    out = tmp_path / "set.pb"
    assert protoc.main(["protoc", f"-I{SRC}", f"--descriptor_set_out={out}", PROTO]) == 0
    compiled = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    for message in _messages(compiled.message_type):  # the generated code leaves these out
        for field in message.field:
            field.ClearField("json_name")
    checked_in = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)
    assert compiled == checked_in, "the generated modules are stale: run `make proto`"


def _messages(messages):
    for message in messages:
        yield message
        yield from _messages(message.nested_type)


def test_the_messages_live_in_a_private_pool():
    """tritonclient's generated modules define the same inference.* messages in the default
    pool; ours must not clash with them in one process."""
    import tritonclient.grpc.service_pb2 as triton_pb

    from tuneserve.serving.proto import grpc_predict_v2_pb2 as pb

    assert pb.ModelInferRequest.DESCRIPTOR.full_name == "inference.ModelInferRequest"
    assert pb.DESCRIPTOR.pool is not triton_pb.DESCRIPTOR.pool
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert {m.name for m in service.methods} >= {
        "ServerLive",
        "ServerReady",
        "ModelReady",
        "ServerMetadata",
        "ModelMetadata",
        "ModelInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
    }
