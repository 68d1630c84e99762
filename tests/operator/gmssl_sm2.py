"""SM2 with SM3 by an independent implementation, PyPI `gmssl`, for carepay's interop test.

Reads a JSON list of tasks on stdin and writes a JSON list of results on stdout:
  {"op": "public_key", "private_key": hex}  -> {"public_key": hex of 04||X||Y}
  {"op": "sign", "private_key": hex, "message": base64}
      -> {"signature": base64 of DER SEQUENCE {r, s}}   (random k, default user id)
  {"op": "verify", "public_key": hex of 04||X||Y, "message": base64, "signature": base64 of DER}
      -> {"valid": bool}
  {"op": "sign_e_with_k", "private_key": hex, "e": hex, "k": hex} -> {"signature": hex of DER}

gmssl's quirks are handled here: keys and signatures are hex strings; `sign_with_sm3` and
`verify_with_sm3` compute Z_A with the default user id 1234567812345678; its constructor strips
a leading "04" from the public key with `lstrip("04")`, which also eats any 0 and 4 digits of X
after it, so the 128-digit X||Y is set on the object directly.
"""

import base64
import json
import secrets
import sys

from gmssl import sm2

N = int(sm2.default_ecc_table["n"], 16)


def crypt(private_key="", public_key_xy=""):
    # asn1=True: signatures are DER (pycryptodome's DerSequence), as the profile has them.
    c = sm2.CryptSM2(private_key=private_key, public_key="", asn1=True)
    c.public_key = public_key_xy
    return c


def public_key_of(private_key):
    c = crypt(private_key)
    return c._kg(int(private_key, 16), c.ecc_table["g"])


def run(task):
    op = task["op"]
    if op == "public_key":
        return {"public_key": "04" + public_key_of(task["private_key"])}
    if op == "sign":
        c = crypt(task["private_key"], public_key_of(task["private_key"]))
        message = base64.b64decode(task["message"])
        while True:
            k = "%064x" % (secrets.randbelow(N - 1) + 1)
            signature = c.sign_with_sm3(message, k)
            if signature is not None:
                return {"signature": base64.b64encode(bytes.fromhex(signature)).decode()}
    if op == "verify":
        public_key = task["public_key"]
        assert public_key[:2] == "04" and len(public_key) == 130, "uncompressed SEC1 point"
        c = crypt(public_key_xy=public_key[2:])
        signature = base64.b64decode(task["signature"]).hex()
        message = base64.b64decode(task["message"])
        return {"valid": bool(c.verify_with_sm3(signature, message))}
    if op == "sign_e_with_k":
        c = crypt(task["private_key"])
        return {"signature": c.sign(bytes.fromhex(task["e"]), task["k"])}
    raise ValueError("unknown op %r" % op)


def main():
    tasks = json.load(sys.stdin)
    json.dump([run(task) for task in tasks], sys.stdout)


if __name__ == "__main__":
    main()
