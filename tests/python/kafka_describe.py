"""Prints the partitions of Kafka topics as another client (confluent-kafka) sees them, for the fault tests:
one JSON object {topic: {partition: {"leader": id, "replicas": [ids], "isr": [ids]}}}. A leader of -1
means the partition has none at the moment.

  kafka_describe.py --brokers HOST:PORT,... TOPIC [TOPIC ...]
"""

import argparse
import json

from confluent_kafka.admin import AdminClient


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--brokers", required=True)
    ap.add_argument("topics", nargs="+")
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.brokers})
    out = {}
    for t in a.topics:
        md = admin.list_topics(t, timeout=10).topics[t]
        if md.error is not None:
            raise SystemExit(f"{t}: {md.error}")
        out[t] = {
            str(p): {"leader": pm.leader, "replicas": list(pm.replicas), "isr": list(pm.isrs)}
            for p, pm in sorted(md.partitions.items())
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
