"""Independent check of paystate's Kafka topics with another client (confluent-kafka).

Reads the raw topic, the compacted payments topic and the actions topic from the beginning to their
current ends, then prints one JSON object with what it found:
  payments_checked, mismatches   the latest state of every payment in the truth file vs. the truth
  payments_messages              messages read from the payments topic (fewer once compacted)
  actions, duplicate_action_ids  action ids seen more than once in the actions topic
  fulfill_errors                 payments whose number of fulfill_order actions is not 1 if paid else 0
  partition_errors               payment updates whose value names another partition than the message's
  acked, acked_missing           acknowledged event ids (--acked) absent from the raw topic
Exit status 0 when every list is empty, 1 otherwise.
"""

import argparse
import json
import sys
import uuid

from confluent_kafka import Consumer, KafkaError, TopicPartition


def read_all(brokers, topic):
    c = Consumer({
        "bootstrap.servers": brokers,
        "group.id": "kafka-check-" + uuid.uuid4().hex,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # What a downstream service sees: committed transactions only. The last offsets of a partition
        # written in transactions are commit markers, which no consumer is handed: the end of each
        # partition is told by an end-of-partition event.
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
    })
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions.keys())
    ends = {}
    assign = []
    for p in parts:
        low, high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high > low:
            ends[p] = high
            assign.append(TopicPartition(topic, p, low))
    out = []
    if assign:
        c.assign(assign)
        done = set()
        idle = 0
        while len(done) < len(ends) and idle < 100:
            m = c.poll(0.2)
            if m is None:
                idle += 1
                continue
            if m.error() and m.error().code() == KafkaError._PARTITION_EOF:
                if m.partition() in ends:
                    done.add(m.partition())
                continue
            if m.error():
                raise RuntimeError(str(m.error()))
            idle = 0
            out.append(m)
            if m.offset() + 1 >= ends[m.partition()]:
                done.add(m.partition())
        if len(done) < len(ends):
            raise RuntimeError(f"{topic}: did not reach the end of every partition")
    c.close()
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("--truth", required=True)
    ap.add_argument("--acked")
    ap.add_argument("--raw-topic", default="stripe.events")
    ap.add_argument("--payments-topic", default="paystate.payments")
    ap.add_argument("--actions-topic", default="paystate.actions")
    a = ap.parse_args()

    truths = [json.loads(l) for l in open(a.truth) if l.strip()]
    result = {}

    latest = {}
    partition_errors = []
    updates = read_all(a.brokers, a.payments_topic)
    result["payments_messages"] = len(updates)
    for m in updates:
        if m.value() is None:
            continue
        v = json.loads(m.value())
        if v["partition"] != m.partition():
            partition_errors.append(f"{v['key']}: value says {v['partition']}, message in {m.partition()}")
        if m.key().decode() != v["key"]:
            partition_errors.append(f"key {m.key()!r} != {v['key']}")
        prev = latest.get(v["key"])
        if prev is None or (m.partition(), m.offset()) > prev[0]:
            latest[v["key"]] = ((m.partition(), m.offset()), v["payment"])
    mismatches = []
    fields = ["lifecycle", "status", "amount", "amount_received", "amount_refunded", "disputed",
              "dispute_status", "failure_count"]
    for t in truths:
        key = f"{t['account']}/{t['id']}" if t.get("account") else t["id"]
        got = latest.get(key)
        if got is None:
            mismatches.append(f"{key}: missing")
            continue
        got = got[1]
        want = dict(t, events_applied=t["events"])
        for f in fields + ["events_applied"]:
            if got.get(f) != want.get(f):
                mismatches.append(f"{key} {f}: expected {want.get(f)!r}, got {got.get(f)!r}")
    result["payments_checked"] = len(truths)
    result["mismatches"] = mismatches[:50]
    result["partition_errors"] = partition_errors[:50]

    ids = {}
    fulfil = {}
    for m in read_all(a.brokers, a.actions_topic):
        v = json.loads(m.value())
        ids[v["id"]] = ids.get(v["id"], 0) + 1
        if v["kind"] == "fulfill_order":
            fulfil[v["key"]["payment"]] = fulfil.get(v["key"]["payment"], 0) + 1
    result["actions"] = len(ids)
    result["duplicate_action_ids"] = [i for i, n in ids.items() if n > 1][:50]
    errors = []
    for t in truths:
        paid = t["lifecycle"] in ("succeeded", "partially_refunded", "refunded")
        if fulfil.get(t["id"], 0) != (1 if paid else 0):
            errors.append(f"{t['id']}: {fulfil.get(t['id'], 0)} fulfill_order, lifecycle {t['lifecycle']}")
    result["fulfill_errors"] = errors[:50]

    if a.acked:
        acked = [l.strip() for l in open(a.acked) if l.strip()]
        raw_ids = set()
        for m in read_all(a.brokers, a.raw_topic):
            for k, val in (m.headers() or []):
                if k == "stripe-event-id":
                    raw_ids.add(val.decode())
        result["acked"] = len(acked)
        result["acked_missing"] = [i for i in acked if i not in raw_ids][:50]
    print(json.dumps(result))
    bad = any(result.get(k) for k in ("mismatches", "partition_errors", "duplicate_action_ids",
                                      "fulfill_errors", "acked_missing"))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
