"""Extended-protocol parameters from real Python drivers: psycopg 3 (text and
binary), asyncpg (always binary, needs correct parameter types) and psycopg2
(client-side interpolation). Run by tests/clients.rs against a fresh server;
exits non-zero on the first wrong answer."""

import asyncio
import datetime
import decimal

import asyncpg
import psycopg
import psycopg2

from checks import DSN, HOST, PORT, check


TS = datetime.datetime(2024, 3, 1, 12, 30, 0)
TSTZ = datetime.datetime(2024, 3, 1, 13, 30, 0, tzinfo=datetime.timezone.utc)



def setup():
    with psycopg.connect(DSN, autocommit=True) as c:
        c.execute(
            "CREATE STREAM ev (k VARCHAR KEY, n INT, price DOUBLE, amount DECIMAL(10, 2), "
            "ok BOOLEAN, ts TIMESTAMP, day DATE) "
            "WITH (kafka_topic='ev', partitions=1, value_format='json')"
        )


def psycopg3():
    with psycopg.connect(DSN, autocommit=True) as c:
        # INSERT with every parameter type a driver sends.
        c.execute(
            "INSERT INTO ev (k, n, price, amount, ok, ts, day) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            ("a", 1, 2.5, decimal.Decimal("10.25"), True, TS, datetime.date(2024, 3, 1)),
        )
        c.execute(
            "INSERT INTO ev (k, n, price, amount, ok, ts, day) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            ("b", 2, 3.5, decimal.Decimal("0.50"), False, TSTZ, datetime.date(2024, 3, 2)),
        )
        for binary in (False, True):
            cur = c.cursor(binary=binary)
            mode = "binary" if binary else "text"
            check(
                f"psycopg3 {mode}: timestamp parameter in WHERE",
                cur.execute("SELECT k FROM ev WHERE ts > %s ORDER BY k", (TS,)).fetchall(),
                [("b",)],
            )
            check(
                f"psycopg3 {mode}: timestamptz parameter",
                cur.execute("SELECT k FROM ev WHERE ts >= %s ORDER BY k", (TSTZ,)).fetchall(),
                [("b",)],
            )
            check(
                f"psycopg3 {mode}: date parameter",
                cur.execute("SELECT k FROM ev WHERE day = %s", (datetime.date(2024, 3, 2),)).fetchall(),
                [("b",)],
            )
            check(
                f"psycopg3 {mode}: numeric and boolean parameters",
                cur.execute(
                    "SELECT k FROM ev WHERE amount > %s AND ok = %s", (decimal.Decimal("1.00"), True)
                ).fetchall(),
                [("a",)],
            )
            check(
                f"psycopg3 {mode}: values come back typed",
                cur.execute("SELECT n, price, amount, ok, ts, day FROM ev WHERE k = %s", ("a",)).fetchall(),
                [(1, 2.5, decimal.Decimal("10.25"), True, TS, datetime.date(2024, 3, 1))],
            )
            check(
                f"psycopg3 {mode}: array parameter",
                cur.execute("SELECT k FROM ev WHERE k = ANY(%s) ORDER BY k", (["a", "b", "z"],)).fetchall(),
                [("a",), ("b",)],
            )
            check(
                f"psycopg3 {mode}: arrays and structs come back as lists and dicts",
                cur.execute(
                    "SELECT make_array(1, 2, NULL) AS a, make_array('x', 'y z', '') AS b, "
                    "named_struct('n', 1, 's', 'v') AS c"
                ).fetchone(),
                ([1, 2, None], ["x", "y z", ""], {"n": 1, "s": "v"}),
            )
            check(
                f"psycopg3 {mode}: pg_type with a parameter",
                cur.execute("SELECT typname FROM pg_type WHERE oid = %s", (23,)).fetchall(),
                [("int4",)],
            )


async def asyncpg_checks():
    c = await asyncpg.connect(host=HOST, port=PORT, user="sluice", database="sluice")
    try:
        await c.execute(
            "INSERT INTO ev (k, n, price, amount, ok, ts, day) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            "c", 3, 4.5, decimal.Decimal("7.00"), True, TS, datetime.date(2024, 3, 3),
        )
        rows = await c.fetch("SELECT k FROM ev WHERE ts >= $1 AND n >= $2 ORDER BY k", TS, 2)
        check("asyncpg: timestamp and int parameters", [r["k"] for r in rows], ["b", "c"])
        rows = await c.fetch("SELECT k FROM ev WHERE amount >= $1 ORDER BY k", decimal.Decimal("7"))
        check("asyncpg: numeric parameter", [r["k"] for r in rows], ["a", "c"])
        rows = await c.fetch("SELECT k FROM ev WHERE k = ANY($1::text[]) ORDER BY k", ["c", "a"])
        check("asyncpg: array parameter", [r["k"] for r in rows], ["a", "c"])
        rows = await c.fetch("SELECT k FROM ev WHERE day < $1 ORDER BY k", datetime.date(2024, 3, 2))
        check("asyncpg: date parameter", [r["k"] for r in rows], ["a"])
        row = await c.fetchrow("SELECT typname FROM pg_type WHERE oid = $1", 25)
        check("asyncpg: pg_type with a parameter", row["typname"], "text")
        # Array results: asyncpg looks the array types up with its own
        # recursive catalog query (binding `$1::oid[]`), then decodes them.
        row = await c.fetchrow(
            "SELECT make_array(1, 2) AS ints, make_array('a', NULL) AS texts, "
            "make_array(1.5) AS floats"
        )
        check(
            "asyncpg: array results",
            (row["ints"], row["texts"], row["floats"]),
            ([1, 2], ["a", None], [1.5]),
        )
    finally:
        await c.close()


def psycopg2_checks():
    # psycopg2 interpolates parameters itself and sends simple queries.
    c = psycopg2.connect(DSN)
    c.autocommit = True
    cur = c.cursor()
    cur.execute("SELECT k, ts FROM ev WHERE ts = %s ORDER BY k", (TS,))
    check("psycopg2: timestamp parameter", cur.fetchall(), [("a", TS), ("c", TS)])
    c.close()


if __name__ == "__main__":
    setup()
    psycopg3()
    asyncio.run(asyncpg_checks())
    psycopg2_checks()
    print("all parameter checks passed")

print("done")
