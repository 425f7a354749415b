"""Transactions, savepoints and cursors as drivers use them (psycopg 3):
nested transaction blocks (SAVEPOINT / RELEASE / ROLLBACK TO), a named
(server-side) cursor over a pull query read in pieces, and a subscription
cursor over a push query. Run by tests/clients.rs; exits non-zero on the
first wrong answer."""

import psycopg

from checks import DSN, check




with psycopg.connect(DSN, autocommit=True) as c:
    c.execute("CREATE STREAM nums (n INT) WITH (kafka_topic='nums', partitions=1, value_format='json')")
    c.execute("INSERT INTO nums (n) VALUES " + ", ".join(f"({i})" for i in range(1, 11)))

# Transaction blocks and savepoints (what SQLAlchemy and Django send).
with psycopg.connect(DSN) as c:
    with c.transaction():
        with c.transaction():
            c.execute("SELECT 1")
        try:
            with c.transaction():
                c.execute("SELECT 2")
                raise psycopg.Rollback()
        except psycopg.Rollback:
            pass
        check(
            "still in the outer transaction after ROLLBACK TO SAVEPOINT",
            c.info.transaction_status,
            psycopg.pq.TransactionStatus.INTRANS,
        )
    check("idle after COMMIT", c.info.transaction_status, psycopg.pq.TransactionStatus.IDLE)

    # A named cursor: DECLARE, FETCH FORWARD n, CLOSE.
    with c.cursor(name="big") as cur:
        cur.execute("SELECT n FROM nums ORDER BY n")
        check("named cursor: columns", [d.name for d in cur.description], ["n"])
        check("named cursor: fetchmany", cur.fetchmany(3), [(1,), (2,), (3,)])
        check("named cursor: fetchone", cur.fetchone(), (4,))
        check("named cursor: the rest", cur.fetchall(), [(i,) for i in range(5, 11)])
    c.commit()

# A subscription: a cursor over a push query returns changes as they come.
with psycopg.connect(DSN, autocommit=True) as c:
    c.execute("SET 'auto.offset.reset' = 'earliest'")
    c.execute("DECLARE sub CURSOR FOR SELECT n FROM nums EMIT CHANGES")
    seen = []
    while len(seen) < 10:
        seen += [r[0] for r in c.execute("FETCH 100 FROM sub").fetchall()]
    check("subscription: the rows so far", sorted(seen), list(range(1, 11)))
    c.execute("INSERT INTO nums (n) VALUES (11), (12)")
    more = []
    while len(more) < 2:
        more += [r[0] for r in c.execute("FETCH 100 FROM sub").fetchall()]
    check("subscription: new rows", sorted(more), [11, 12])
    c.execute("CLOSE sub")
    try:
        c.execute("FETCH 1 FROM sub")
        check("FETCH after CLOSE fails", "no error", "an error")
    except psycopg.errors.InvalidCursorName as e:
        check("FETCH after CLOSE fails", e.sqlstate, "34000")

print("all cursor checks passed")

print("done")
