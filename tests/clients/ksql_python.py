"""ksql-python (PyPI `ksql`), unchanged, against Sluice's ksqlDB REST API:
statements and typed entities on /ksql, inserts on /inserts-stream, v1
/query rows (raw and as objects), /query-stream and /close-query. Run by
tests/clients.rs; exits non-zero on the first wrong answer."""

import collections
import collections.abc
import json
import os
import sys

# ksql-python's HTTP/2 dependency (hyper 0.7) imports ABCs from `collections`,
# which Python 3.10 removed: the shim every user of ksql-python on a current
# Python needs. The client library itself is unchanged.
for name in ("Iterable", "Mapping", "MutableMapping", "MutableSet", "Sequence", "Callable"):
    setattr(collections, name, getattr(collections.abc, name))

from ksql import KSQLAPI  # noqa: E402
from ksql.errors import KSQLError  # noqa: E402

from checks import check  # noqa: E402

URL = f"http://127.0.0.1:{os.environ['SLUICE_HTTP_PORT']}"
EARLIEST = {"auto.offset.reset": "earliest"}

# The constructor reads the server version from GET /info.
client = KSQLAPI(URL)

created = client.ksql(
    "CREATE STREAM trades (sym VARCHAR KEY, qty INT, px DOUBLE) "
    "WITH (kafka_topic='trades', partitions=1, value_format='json');"
)
check("CREATE STREAM: entity type", created[0]["@type"], "currentStatus")
check("CREATE STREAM: status", created[0]["commandStatus"]["status"], "SUCCESS")
check("CREATE STREAM: command id", created[0]["commandId"], "stream/TRADES/create")

streams = client.ksql("SHOW STREAMS;")
check("SHOW STREAMS: entity type", streams[0]["@type"], "streams")
check(
    "SHOW STREAMS: the stream",
    [(s["type"], s["name"], s["topic"], s["valueFormat"]) for s in streams[0]["streams"]],
    [("STREAM", "trades", "trades", "JSON")],
)

described = client.ksql("DESCRIBE trades;")
check("DESCRIBE: entity type", described[0]["@type"], "sourceDescription")
fields = described[0]["sourceDescription"]["fields"]
check(
    "DESCRIBE: fields, key marked",
    [(f["name"], f["schema"]["type"], f.get("type")) for f in fields],
    [("sym", "STRING", "KEY"), ("qty", "INTEGER", None), ("px", "DOUBLE", None)],
)

# Inserts: ksqlDB's upper-case field names match Sluice's folded columns.
rows = [
    {"SYM": "ACME", "QTY": 10, "PX": 1.5},
    {"sym": "INIT", "qty": 20, "px": 2.25},
    {"SYM": "ACME", "QTY": 30, "PX": 3.0},
]
acks = client.inserts_stream("trades", rows)
check("inserts_stream: one ack per row", acks, [{"status": "ok", "seq": i} for i in range(3)])

# A bad row ends the stream with an error for exactly that row.
acks = client.inserts_stream("trades", [{"SYM": "X", "QTY": 1, "PX": 1.0}, {"SYM": "Y", "QTY": "many"}])
check("inserts_stream: the good row stored", acks[0], {"status": "ok", "seq": 0})
check("inserts_stream: the bad row refused", (acks[1]["status"], acks[1]["seq"]), ("error", 1))



def raw_lines(results):
    """Every line of a raw (not return_objects) query. ksql-python 0.10.2 ends
    every finite raw query with `RuntimeError: generator raised
    StopIteration` (its generator reads a header after the rows): the end."""
    lines = []
    try:
        for line in results:
            lines.append(line)
    except RuntimeError as e:
        if "StopIteration" not in str(e):
            raise
    return lines


# v1 /query, raw lines: header, rows, final message.
lines = raw_lines(client.query("SELECT sym, qty FROM trades WHERE qty >= 10;"))
header = json.loads(lines[0].rstrip().rstrip(",").lstrip("["))
check("v1 header schema", header["header"]["schema"], "`sym` STRING, `qty` INTEGER")
got = sorted(tuple(json.loads(l.rstrip().rstrip(",").rstrip("]"))["row"]["columns"]) for l in lines[1:-1])
check("v1 rows", got, [("ACME", 10), ("ACME", 30), ("INIT", 20)])
check("v1 final message", json.loads(lines[-1].rstrip().rstrip("]"))["finalMessage"], "Query Completed")

# v1 rows as objects: ksql-python reads ksqlDB's upper-case names, which
# quoted aliases give.
objects = list(
    client.query(
        'SELECT sym AS "SYM", qty AS "QTY" FROM trades EMIT CHANGES LIMIT 4;',
        stream_properties=EARLIEST,
        return_objects=True,
    )
)
check(
    "v1 push rows as objects",
    sorted((o["SYM"], o["QTY"]) for o in objects),
    [("ACME", 10), ("ACME", 30), ("INIT", 20), ("X", 1)],
)

# /query-stream (the client's "HTTP/2" mode sends HTTP/1.1 with an h2c
# upgrade offer) and /close-query ending the push query.
chunks = client.query(
    "SELECT sym, qty FROM trades EMIT CHANGES;", stream_properties=EARLIEST, use_http2=True
)
first = json.loads(next(chunks).splitlines()[0])
check("query-stream header columns", first["columnNames"], ["sym", "qty"])
query_id = first["queryId"]
received = []
for chunk in chunks:
    received += [json.loads(line) for line in chunk.splitlines() if line.strip()]
    if len(received) >= 4:
        check("close_query: a running query", client.close_query(query_id), True)
check("query-stream rows before the close", sorted(map(tuple, received)), [("ACME", 10), ("ACME", 30), ("INIT", 20), ("X", 1)])
check("close_query: an unknown id", client.close_query(query_id), False)

props = client.get_properties()
check("get_properties: a list of properties", isinstance(props, list) and len(props) > 0, True)

try:
    client.ksql("DESCRIBE nothing_here;")
    print("DESCRIBE of an unknown stream did not fail", file=sys.stderr)
    sys.exit(1)
except KSQLError as e:
    check("errors: ksqlDB's statement error code", e.error_code, 40001)

print("done")
