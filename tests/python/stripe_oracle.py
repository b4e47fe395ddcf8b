#!/usr/bin/env python3
"""Stripe's official Python library as an oracle for paystate's signature verification.

Reads a JSON array of requests on stdin and writes a JSON array of answers on stdout, one per request:
  {"op": "sign", "secret": s, "timestamp": t, "body": text}         -> {"signature": hex, "header": value}
  {"op": "verify", "secret": s, "header": h|null, "body": text, "tolerance": n, "now": t}
                                                                    -> {"ok": bool, "error": str|null}
Signing uses stripe.WebhookSignature.generate_signature_header; verification is
stripe.Webhook.construct_event with time.time pinned to `now` (the library reads the clock itself).
Bodies travel as text: Stripe's library works on the decoded body.
"""
import json
import sys
import time

import stripe


def answer(req):
    if req["op"] == "sign":
        header = stripe.WebhookSignature.generate_signature_header(
            req["body"], req["secret"], timestamp=req["timestamp"]
        )
        sig = [item.split("=", 1)[1] for item in header.split(",") if item.startswith("v1=")][0]
        return {"signature": sig, "header": header}
    if req["op"] == "verify":
        real_time = time.time
        time.time = lambda: float(req["now"])
        try:
            stripe.Webhook.construct_event(req["body"], req["header"], req["secret"], tolerance=req["tolerance"])
            return {"ok": True, "error": None}
        except (stripe.SignatureVerificationError, ValueError) as e:
            return {"ok": False, "error": type(e).__name__ + ": " + str(e).splitlines()[0][:200]}
        finally:
            time.time = real_time
    raise SystemExit("unknown op " + repr(req["op"]))


def main():
    requests = json.load(sys.stdin)
    json.dump([answer(r) for r in requests], sys.stdout)
    sys.stdout.write("\n")
    print("stripe-python " + stripe.VERSION, file=sys.stderr)


if __name__ == "__main__":
    main()
