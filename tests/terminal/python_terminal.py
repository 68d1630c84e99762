"""A terminal written only from proto/carepay/terminal/v1/terminal.proto: Python stubs that
grpcio-tools generated with its own protoc, the signature scheme the proto file describes
(Ed25519 from `cryptography`), and grpcio as the transport.

    python3 python_terminal.py STUBS_DIR HOST:PORT TERMINAL_ID SEED_BASE64

Runs one session at the counter and prints one JSON object with what carepay answered to
each step (messages as JSON with proto field names and enum names, refusals as their gRPC
code and message). The test that runs it checks the answers and carepay's books.
"""

import base64
import json
import secrets
import sys
import time

sys.path.insert(0, sys.argv[1])

import grpc  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from google.protobuf import json_format  # noqa: E402

from carepay.terminal.v1 import terminal_pb2 as pb  # noqa: E402
from carepay.terminal.v1 import terminal_pb2_grpc as pb_grpc  # noqa: E402

ADDRESS, TERMINAL_ID, SEED = sys.argv[2], sys.argv[3], base64.b64decode(sys.argv[4])
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
SERVICE = "/" + pb.DESCRIPTOR.services_by_name["TerminalService"].full_name + "/"


def signature_metadata(method, request, nonce=None):
    """The four entries of the proto's "Request signing" section."""
    timestamp = str(int(time.time()))
    nonce = nonce or secrets.token_hex(16)
    message = "".join(part + "\n" for part in (SERVICE + method, TERMINAL_ID, timestamp, nonce)).encode()
    signature = KEY.sign(message + request.SerializeToString())
    return [
        ("x-carepay-terminal-id", TERMINAL_ID),
        ("x-carepay-timestamp", timestamp),
        ("x-carepay-nonce", nonce),
        ("x-carepay-signature", base64.b64encode(signature).decode()),
    ]


def call(stub, method, request, metadata=None):
    try:
        reply = getattr(stub, method)(request, metadata=metadata or signature_metadata(method, request), timeout=20)
    except grpc.RpcError as error:
        return {"error": error.code().name, "message": error.details()}
    return json_format.MessageToDict(reply, preserving_proto_field_name=True)


def main():
    with grpc.insecure_channel(ADDRESS) as channel:
        stub = pb_grpc.TerminalServiceStub(channel)
        out = {}
        lunch = pb.PayRequest(request_id="py-lunch", amount="12.50", payer_code="013412345678900000", description="午餐")
        out["pay"] = call(stub, "Pay", lunch)
        out["pay_again"] = call(stub, "Pay", lunch)
        out["pay_other_body"] = call(
            stub, "Pay", pb.PayRequest(request_id="py-lunch", amount="99.00", payer_code="013412345678900000")
        )
        payment_id = out["pay"].get("payment_id", "")
        out["get_payment"] = call(stub, "GetPayment", pb.GetPaymentRequest(payment_id=payment_id))
        out["get_payment_by_request"] = call(stub, "GetPayment", pb.GetPaymentRequest(request_id="py-lunch"))
        out["refund"] = call(
            stub, "Refund", pb.RefundRequest(request_id="py-refund", payment_id=payment_id, amount="2.50", reason="退餐")
        )
        out["get_refund"] = call(stub, "GetRefund", pb.GetRefundRequest(refund_id=out["refund"].get("refund_id", "")))
        qr = pb.CreateQrOrderRequest(request_id="py-qr", amount="35.00", description="护理费", expires_in_s=300)
        out["create_qr_order"] = call(stub, "CreateQrOrder", qr)
        out["reverse_qr_order"] = call(
            stub,
            "Reverse",
            pb.ReverseRequest(request_id="py-undo-qr", payment_id=out["create_qr_order"].get("payment_id", "")),
        )
        out["bad_amount"] = call(
            stub, "Pay", pb.PayRequest(request_id="py-bad", amount="1.005", payer_code="013412345678900000")
        )
        lookup = pb.GetPaymentRequest(payment_id=payment_id)
        replayed = signature_metadata("GetPayment", lookup)
        out["signed_once"] = call(stub, "GetPayment", lookup, replayed)
        out["replayed"] = call(stub, "GetPayment", lookup, replayed)
    print(json.dumps(out, ensure_ascii=False))


if __name__ == "__main__":
    main()
