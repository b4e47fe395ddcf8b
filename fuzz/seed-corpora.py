#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/) from the repository's test fixtures:
the golden events of tests/golden (two API versions, every scenario). Run from anywhere; the output is
committed, so fuzzing needs nothing but the checkout."""
import hashlib, hmac, json, os, struct, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "fuzz", "corpus")
VERSIONS = ["2025-10-29.clover", "2020-08-27"]
SECRET = b"whsec_fuzz_secret"  # as in fuzz_targets/signature.rs
NOW = 1_764_000_000


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def short(b):
    return struct.pack(">H", len(b)) + b


def record(ev, body, origin=None):
    obj = ev["data"]["object"]
    key = obj.get("payment_intent") or obj.get("id") or ""
    if isinstance(key, dict):
        key = key.get("id", "")
    if ev.get("account"):
        key = f"{ev['account']}/{key}"
    head = bytes([1]) if origin is None else bytes([2, origin])
    sig = f"t={NOW},v1=" + hmac.new(SECRET, f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
    return (head + struct.pack(">q", NOW * 1000) + short(ev["id"].encode()) + short(ev["type"].encode())
            + short(key.encode()) + short(sig.encode()) + struct.pack(">I", len(body)) + body)


def main():
    for version in VERSIONS:
        d = os.path.join(ROOT, "tests", "golden", version)
        for file in sorted(os.listdir(d)):
            if not file.endswith(".json"):
                continue
            scenario = file[:-5]
            events = json.load(open(os.path.join(d, file)))["events"]
            bodies = [json.dumps(e, indent=2).encode() for e in events]
            tag = f"{version}-{scenario}"
            for i, body in enumerate(bodies):
                write("envelope", f"{tag}-{i}", body)
            write("mapping", tag, b"\xff".join(bodies))
            body = bodies[-1]
            sig = f"t={NOW},v1=" + hmac.new(SECRET, f"{NOW}.".encode() + body, hashlib.sha256).hexdigest()
            header = sig.encode()
            write("signature", tag, bytes([len(header)]) + header + body)
            recs = [record(e, b) for e, b in zip(events, bodies)]
            write("record", f"{tag}-record", recs[0])
            write("record", f"{tag}-fetched", record(events[-1], bodies[-1], origin=1))
            frames = b"".join(struct.pack(">QI", i, len(r)) + r for i, r in enumerate(recs))
            write("record", f"{tag}-frames", frames)
    # The fold's inputs: a scenario, a seed, a delivery order (see fuzz_targets/fold.rs).
    for scenario in range(26):
        for seed in (1, 0xdead_beef):
            order = bytes(range(12, -1, -1)) + bytes([0, 0, 5, 5])
            write("fold", f"scenario-{scenario}-seed-{seed}", bytes([scenario]) + struct.pack("<Q", seed) + order)
    write("signature", "padded", b"\x20t=1,v1=00,v0=11,t=2,,v1=" + b"{}")


if __name__ == "__main__":
    sys.exit(main())
