#!/usr/bin/env python3
"""A Standard Webhooks receiver that trusts nothing carepay wrote.

It verifies every callback with independent code: `v1` with the `standardwebhooks` package
from PyPI, `v1a` with the Ed25519 of the `cryptography` package. For every request it also
checks that the same callback with a tampered body, or with an old timestamp, is refused.
It answers 204 when all of that holds and 400 otherwise, and prints one JSON line per request.

Usage: standardwebhooks_receiver.py KEYS_FILE
KEYS_FILE holds {"secrets": ["whsec_..."], "public_key": "whpk_..." or null} and is read on
every request, so a test can change keys (e.g. around a secret rotation) while it runs.
The first line printed is "listening <port>".
"""

import base64
import json
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

TOLERANCE_S = 300
KEYS_FILE = sys.argv[1]
# Requests are handled on threads; one line per verdict, never interleaved.
PRINT_LOCK = threading.Lock()


def verifies_v1(secrets, body, headers):
    for secret in secrets:
        try:
            Webhook(secret).verify(body, headers, json_parse=False)
            return True
        except WebhookVerificationError:
            pass
    return False


def verifies_v1a(public_key, body, headers):
    timestamp = int(headers["webhook-timestamp"])
    if abs(time.time() - timestamp) > TOLERANCE_S:
        return False
    key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key[len("whpk_"):]))
    message = f"{headers['webhook-id']}.{timestamp}.{body}".encode()
    for signature in headers["webhook-signature"].split(" "):
        version, _, value = signature.partition(",")
        if version != "v1a":
            continue
        try:
            key.verify(base64.b64decode(value), message)
            return True
        except InvalidSignature:
            pass
    return False


def verifies(keys, body, headers):
    ok = verifies_v1(keys["secrets"], body, headers)
    if keys.get("public_key"):
        ok = ok and verifies_v1a(keys["public_key"], body, headers)
    return ok


def check(body, headers):
    with open(KEYS_FILE, encoding="utf-8") as file:
        keys = json.load(file)
    result = {"id": headers.get("webhook-id"), "v1": verifies_v1(keys["secrets"], body, headers)}
    if keys.get("public_key"):
        result["v1a"] = verifies_v1a(keys["public_key"], body, headers)
    tampered = body.replace('"data":{', '"data":{"injected":1,', 1) if '"data":{' in body else body + " "
    result["tampered_refused"] = not verifies(keys, tampered, headers)
    old = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 2 * TOLERANCE_S)})
    result["old_timestamp_refused"] = not verifies(keys, body, old)
    # Even correctly signed, a callback signed long ago is refused (replay protection).
    stale_time = datetime.now(tz=timezone.utc) - timedelta(seconds=2 * TOLERANCE_S)
    resigned = dict(headers)
    resigned["webhook-timestamp"] = str(int(stale_time.timestamp()))
    if keys["secrets"]:
        resigned["webhook-signature"] = Webhook(keys["secrets"][0]).sign(headers["webhook-id"], stale_time, body)
    result["stale_refused"] = not verifies_v1(keys["secrets"], body, resigned)
    result["type"] = json.loads(body)["type"]
    result["ok"] = all(value for key, value in result.items() if key not in ("id", "type"))
    return result


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length).decode("utf-8")
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            result = check(body, headers)
        except Exception as error:  # a malformed callback is a failed check, reported
            result = {"id": headers.get("webhook-id"), "ok": False, "error": repr(error)}
        with PRINT_LOCK:
            print(json.dumps(result), flush=True)
        self.send_response(204 if result["ok"] else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"listening {server.server_address[1]}", flush=True)
server.serve_forever()
