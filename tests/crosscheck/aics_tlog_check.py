"""Cross-checks Stele's cosignatures and add-checkpoint bodies against an
independent implementation: the `aics-tlog` and `aics-witness` packages
(PyPI, Apache-2.0; requirements.txt pins them).

Run by tests/witness.rs (crosscheck::cosignatures_against_aics_tlog) with
one argument, a JSON file written by the Rust test. Prints one JSON object
on stdout: what aics-tlog computed for the same inputs. Exits non-zero,
saying which check failed, on any disagreement it can see by itself.
"""

import base64
import json
import sys

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aics_tlog import parse_checkpoint, parse_note, parse_vkey, verify_checkpoint
from aics_tlog.cosign import cosignature_vkey, sign_cosignature, verify_cosignature
from aics_tlog.note import format_vkey
from aics_witness.protocol import format_add_checkpoint_request, parse_add_checkpoint_request


def fail(msg):
    print(f"aics-tlog cross-check failed: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        v = json.load(f)

    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(v["seed_hex"]))
    cp = parse_checkpoint(v["checkpoint_text"])
    extensions = list(cp.extension_lines)

    # 1. The same seed, time and checkpoint give aics-tlog's cosignature.
    _, line = sign_cosignature(
        key, v["name"], v["timestamp"], cp.origin, cp.size, cp.root, extensions
    )
    aics_line = f"\u2014 {line.name} {base64.b64encode(line.key_id + line.signature).decode()}\n"
    aics_vkey = format_vkey(cosignature_vkey(v["name"], key.public_key()))

    # 2. aics-tlog verifies Stele's line (parsed from Stele's vkey).
    stele_vkey = parse_vkey(v["stele_vkey"])
    note = parse_note(v["checkpoint_text"] + "\n" + v["stele_line"])
    sig = note.signatures[0]
    if sig.key_id != stele_vkey.key_id:
        fail("key id of Stele's line differs from its vkey's")
    if not verify_cosignature(sig.signature, v["name"], stele_vkey.public_key, cp.origin, cp.size, cp.root, extensions):
        fail("aics-tlog rejects Stele's cosignature")

    # 3. A whole witnessed checkpoint served by `stele witness`: log
    #    signature and a quorum of 1 cosignature.
    result = verify_checkpoint(
        parse_note(v["witnessed_note"]),
        parse_vkey(v["log_vkey"]),
        [parse_vkey(v["witness_vkey"])],
        quorum=1,
    )
    if not result.ok:
        fail(f"aics-tlog rejects the witnessed checkpoint: {result.error}")

    # 4. Stele's add-checkpoint body, parsed and re-encoded by aics-witness.
    body = base64.b64decode(v["request_body_b64"])
    req = parse_add_checkpoint_request(body)
    if req.old_size != v["request_old"]:
        fail(f"old size {req.old_size} != {v['request_old']}")
    if [base64.b64encode(h).decode() for h in req.proof] != v["request_proof"]:
        fail("proof lines differ")
    if req.checkpoint != v["request_checkpoint"].encode():
        fail("checkpoint differs")
    again = format_add_checkpoint_request(req.old_size, req.proof, req.checkpoint)
    if again != body:
        fail("aics-witness encodes the request differently")

    print(json.dumps({"aics_line": aics_line, "aics_vkey": aics_vkey}))


if __name__ == "__main__":
    main()
