"""SQLAlchemy 2 (over psycopg 3 and psycopg2) and pandas against Sluice:
connect, inspect (tables, views, columns, primary keys), Table(autoload_with=...)
and Core selects, pandas read_sql_query / read_sql / read_sql_table. Run by
tests/clients.rs; exits non-zero on the first wrong answer."""

import time

import pandas as pd
import psycopg
import sqlalchemy as sa

from checks import DSN, HOST, PORT, check

with psycopg.connect(DSN, autocommit=True) as c:
    c.execute(
        "CREATE STREAM orders (id BIGINT KEY, customer VARCHAR, amount DOUBLE) "
        "WITH (kafka_topic='orders', partitions=1, value_format='json')"
    )
    c.execute(
        "CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total "
        "FROM orders GROUP BY customer"
    )
    c.execute("CREATE VIEW big_orders AS SELECT id, customer, amount FROM orders WHERE amount > 5")
    c.execute("INSERT INTO orders (id, customer, amount) VALUES (1, 'ann', 10.5), (2, 'bob', 3.0), (3, 'ann', 1.5)")
    # The table is materialized by a running query: wait for its rows.
    for _ in range(200):
        if c.execute("SELECT COALESCE(SUM(n), 0) FROM per_customer").fetchone()[0] == 3:
            break
        time.sleep(0.05)

EXPECTED = [
    {"customer": "ann", "n": 2, "total": 12.0},
    {"customer": "bob", "n": 1, "total": 3.0},
]

for driver in ("psycopg", "psycopg2"):
    engine = sa.create_engine(f"postgresql+{driver}://sluice@{HOST}:{PORT}/sluice")
    with engine.connect() as conn:
        check(f"{driver}: connect", conn.execute(sa.text("SELECT 1")).scalar(), 1)
    inspector = sa.inspect(engine)
    check(f"{driver}: tables", inspector.get_table_names(), ["per_customer"])
    check(f"{driver}: views", sorted(inspector.get_view_names()), ["big_orders", "orders"])
    check(f"{driver}: has_table", (inspector.has_table("per_customer"), inspector.has_table("nope")), (True, False))
    columns = inspector.get_columns("per_customer")
    check(
        f"{driver}: columns and types",
        [(c["name"], str(c["type"])) for c in columns],
        [("customer", "TEXT"), ("n", "BIGINT"), ("total", "DOUBLE PRECISION")],
    )
    check(
        f"{driver}: primary key",
        inspector.get_pk_constraint("per_customer"),
        {"constrained_columns": ["customer"], "name": "per_customer_pkey", "comment": None},
    )
    check(f"{driver}: foreign keys", inspector.get_foreign_keys("per_customer"), [])
    check(f"{driver}: table comment", inspector.get_table_comment("per_customer"), {"text": None})
    check(
        f"{driver}: view columns",
        [c["name"] for c in inspector.get_columns("big_orders")],
        ["id", "customer", "amount"],
    )

    table = sa.Table("per_customer", sa.MetaData(), autoload_with=engine)
    check(f"{driver}: autoload columns", [c.name for c in table.columns], ["customer", "n", "total"])
    check(f"{driver}: autoload primary key", [c.name for c in table.primary_key.columns], ["customer"])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table).where(table.c.n >= 1).order_by(table.c.customer)).fetchall()
        check(f"{driver}: Core select", [tuple(r) for r in rows], [("ann", 2, 12.0), ("bob", 1, 3.0)])
        rows = conn.execute(
            sa.text("SELECT customer, amount FROM big_orders WHERE amount > :low ORDER BY id"), {"low": 1}
        ).fetchall()
        check(f"{driver}: a view with a bound parameter", [tuple(r) for r in rows], [("ann", 10.5)])

    check(
        f"{driver}: pandas read_sql_query",
        pd.read_sql_query("SELECT * FROM per_customer ORDER BY customer", engine).to_dict("records"),
        EXPECTED,
    )
    check(
        f"{driver}: pandas read_sql",
        pd.read_sql("SELECT customer, n FROM per_customer ORDER BY customer", engine).values.tolist(),
        [["ann", 2], ["bob", 1]],
    )
    frame = pd.read_sql_table("per_customer", engine)
    check(
        f"{driver}: pandas read_sql_table",
        frame.sort_values("customer").to_dict("records"),
        EXPECTED,
    )
    engine.dispose()

print("done")
