"""Bulk loads with COPY ... FROM STDIN from psycopg 3 (text rows from
write_row, CSV text from write) and what a load gets wrong. Run by
tests/clients.rs; exits non-zero on the first wrong answer."""

import datetime
import psycopg

from checks import DSN, check




with psycopg.connect(DSN, autocommit=True) as c:
    c.execute(
        "CREATE STREAM loads (k VARCHAR, n BIGINT, ts TIMESTAMP, note VARCHAR) "
        "WITH (kafka_topic='loads', partitions=1, value_format='json')"
    )
    cur = c.cursor()
    # Text format from Python values: escapes, NULLs, a timestamp; more rows
    # than one write batch.
    rows = [(f"k{i}", i, datetime.datetime(2024, 1, 1) + datetime.timedelta(seconds=i), None) for i in range(25_000)]
    rows[7] = ("tab\there", 7, datetime.datetime(2024, 1, 1, 0, 0, 7), "line\nbreak \\ slash")
    with cur.copy("COPY loads (k, n, ts, note) FROM STDIN") as copy:
        for r in rows:
            copy.write_row(r)
    check("COPY FROM STDIN text: the row count", cur.rowcount, 25_000)
    check(
        "text rows read back exactly",
        c.execute("SELECT COUNT(*), SUM(n), COUNT(note) FROM loads").fetchone(),
        (25_000, sum(range(25_000)), 1),
    )
    check(
        "escapes survive",
        c.execute("SELECT k, note, ts FROM loads WHERE n = 7").fetchone(),
        ("tab\there", "line\nbreak \\ slash", datetime.datetime(2024, 1, 1, 0, 0, 7)),
    )
    # CSV with a header, quotes and an embedded newline, written in pieces.
    with cur.copy("COPY loads (n, k, note) FROM STDIN WITH (FORMAT csv, HEADER)") as copy:
        copy.write("n,k,note\n-1,csv,\"a, \"\"quoted\"\"")
        copy.write(" value\nover two lines\"\n-2,,\n")
    check("COPY FROM STDIN csv: the row count", cur.rowcount, 2)
    check(
        "csv rows read back exactly",
        c.execute("SELECT n, k, note FROM loads WHERE n < 0 ORDER BY n").fetchall(),
        [(-2, None, None), (-1, "csv", 'a, "quoted" value\nover two lines')],
    )
    # A bad value fails the COPY with the row and column named.
    try:
        with cur.copy("COPY loads (k, n) FROM STDIN") as copy:
            copy.write("ok\t1\nbad\tnot-a-number\n")
        check("a bad value fails the COPY", "no error", "an error")
    except psycopg.Error as e:
        check("a bad value fails the COPY", "'n'" in str(e) and e.sqlstate is not None, True)
    check("the connection works after a failed COPY", c.execute("SELECT 1").fetchone(), (1,))
    # The bad row's batch (both rows) was not written; the earlier loads stay.
    check(
        "a failed COPY writes nothing of the batch it failed in",
        c.execute("SELECT COUNT(*) FROM loads WHERE k IN ('ok', 'bad')").fetchone(),
        (0,),
    )
    check("earlier loads stay", c.execute("SELECT COUNT(*) FROM loads").fetchone(), (25_002,))
    try:
        c.execute("COPY loads FROM '/etc/passwd'")
        check("COPY FROM a server file is refused", "no error", "an error")
    except psycopg.Error as e:
        check("COPY FROM a server file is refused", e.sqlstate, "0A000")

print("all COPY checks passed")

print("done")
