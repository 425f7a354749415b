"""The catalog queries of Grafana's PostgreSQL query builder and Metabase's
PostgreSQL sync, verbatim from their sources (Grafana: the table and column
lists of its query builder; Metabase: get-tables, describe-fields,
describe-indexes), sent over the extended protocol as both tools do (pgx,
pgJDBC). Neither tool can be installed here, so their SQL stands in for them.
Run by tests/clients.rs; exits non-zero on the first wrong answer."""


import psycopg

from checks import DSN, check

SEARCH_PATH_SCHEMAS = """
          SELECT
            CASE WHEN trim(s[i]) = '"$user"' THEN user ELSE trim(s[i]) END
          FROM
            generate_series(
              array_lower(string_to_array(current_setting('search_path'),','),1),
              array_upper(string_to_array(current_setting('search_path'),','),1)
            ) as i,
            string_to_array(current_setting('search_path'),',') s
"""

GRAFANA_TABLES = f"""
SELECT
    CASE WHEN quote_ident(table_schema) IN ({SEARCH_PATH_SCHEMAS})
      THEN quote_ident(table_name)
      ELSE quote_ident(table_schema) || '.' || quote_ident(table_name)
    END AS "table"
    FROM information_schema.tables
    WHERE quote_ident(table_schema) NOT IN ('information_schema', 'pg_catalog',
        '_timescaledb_cache', '_timescaledb_catalog', '_timescaledb_internal',
        '_timescaledb_config', 'timescaledb_information', 'timescaledb_experimental')
    ORDER BY CASE WHEN quote_ident(table_schema) IN ({SEARCH_PATH_SCHEMAS}) THEN 0 ELSE 1 END, 1
"""

GRAFANA_COLUMNS = f"""
SELECT quote_ident(column_name) AS "column", data_type AS "type"
    FROM information_schema.columns
    WHERE
      CASE WHEN array_length(parse_ident('per_customer'),1) = 2
        THEN quote_ident(table_schema) = (parse_ident('per_customer'))[1]
          AND quote_ident(table_name) = (parse_ident('per_customer'))[2]
        ELSE quote_ident(table_name) = 'per_customer'
          AND quote_ident(table_schema) IN ({SEARCH_PATH_SCHEMAS})
      END
"""

METABASE_TABLES = """SELECT "n"."nspname" AS "schema", "c"."relname" AS "name", CASE "c"."relkind" WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'PARTITIONED TABLE' WHEN 'v' THEN 'VIEW' WHEN 'f' THEN 'FOREIGN TABLE' WHEN 'm' THEN 'MATERIALIZED VIEW' ELSE NULL END AS "type", "d"."description" AS "description", "stat"."n_live_tup" AS "estimated_row_count" FROM "pg_catalog"."pg_class" AS "c" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "c"."relnamespace" = "n"."oid" LEFT JOIN "pg_catalog"."pg_description" AS "d" ON ("c"."oid" = "d"."objoid") AND ("d"."objsubid" = 0) AND ("d"."classoid" = 'pg_class'::regclass) LEFT JOIN "pg_stat_user_tables" AS "stat" ON ("n"."nspname" = "stat"."schemaname") AND ("c"."relname" = "stat"."relname") WHERE ("c"."relnamespace" = "n"."oid") AND ("n"."nspname" !~ '^pg_') AND ("n"."nspname" <> 'information_schema') AND c.relkind in ('r', 'p', 'v', 'f', 'm') AND ("n"."nspname" IN ('public')) ORDER BY "type" ASC, "schema" ASC, "name" ASC"""

METABASE_FIELDS = """SELECT "c"."column_name" AS "name", CASE WHEN "c"."udt_schema" IN ('public', 'pg_catalog') THEN FORMAT('%s', "c"."udt_name") ELSE FORMAT('"%s"."%s"', "c"."udt_schema", "c"."udt_name") END AS "database-type", "c"."ordinal_position" - 1 AS "database-position", "c"."table_schema" AS "table-schema", "c"."table_name" AS "table-name", "pk"."column_name" IS NOT NULL AS "pk?", COL_DESCRIPTION(CAST(CAST(FORMAT('%I.%I', CAST("c"."table_schema" AS TEXT), CAST("c"."table_name" AS TEXT)) AS REGCLASS) AS OID), "c"."ordinal_position") AS "field-comment", (("column_default" IS NULL) OR (LOWER("column_default") = 'null')) AND ("is_nullable" = 'NO') AND NOT ((("column_default" IS NOT NULL) AND ("column_default" LIKE '%nextval(%')) OR ("is_identity" <> 'NO')) AS "database-required", (("column_default" IS NOT NULL) AND ("column_default" LIKE '%nextval(%')) OR ("is_identity" <> 'NO') AS "database-is-auto-increment" FROM "information_schema"."columns" AS "c" LEFT JOIN (SELECT "tc"."table_schema", "tc"."table_name", "kc"."column_name" FROM "information_schema"."table_constraints" AS "tc" INNER JOIN "information_schema"."key_column_usage" AS "kc" ON ("tc"."constraint_name" = "kc"."constraint_name") AND ("tc"."table_schema" = "kc"."table_schema") AND ("tc"."table_name" = "kc"."table_name") WHERE "tc"."constraint_type" = 'PRIMARY KEY') AS "pk" ON ("c"."table_schema" = "pk"."table_schema") AND ("c"."table_name" = "pk"."table_name") AND ("c"."column_name" = "pk"."column_name") WHERE c.table_schema !~ '^information_schema|catalog_history|pg_' AND ("c"."table_schema" IN ('public')) AND ("c"."table_name" IN ('per_customer')) UNION ALL SELECT "pa"."attname" AS "name", CASE WHEN "ptn"."nspname" IN ('public', 'pg_catalog') THEN FORMAT('%s', "pt"."typname") ELSE FORMAT('"%s"."%s"', "ptn"."nspname", "pt"."typname") END AS "database-type", "pa"."attnum" - 1 AS "database-position", "pn"."nspname" AS "table-schema", "pc"."relname" AS "table-name", FALSE AS "pk?", NULL AS "field-comment", FALSE AS "database-required", FALSE AS "database-is-auto-increment" FROM "pg_catalog"."pg_class" AS "pc" INNER JOIN "pg_catalog"."pg_namespace" AS "pn" ON "pn"."oid" = "pc"."relnamespace" INNER JOIN "pg_catalog"."pg_attribute" AS "pa" ON "pa"."attrelid" = "pc"."oid" INNER JOIN "pg_catalog"."pg_type" AS "pt" ON "pt"."oid" = "pa"."atttypid" INNER JOIN "pg_catalog"."pg_namespace" AS "ptn" ON "ptn"."oid" = "pt"."typnamespace" WHERE ("pc"."relkind" = 'm') AND ("pa"."attnum" >= 1) AND ("pn"."nspname" IN ('public')) AND ("pc"."relname" IN ('per_customer')) ORDER BY "table-schema" ASC, "table-name" ASC, "database-position" ASC"""

METABASE_INDEXES = """SELECT "tmp"."table-schema", "tmp"."table-name", TRIM(BOTH '"' FROM PG_CATALOG.PG_GET_INDEXDEF("tmp"."ci_oid", "tmp"."pos", FALSE)) AS "field-name" FROM (SELECT "n"."nspname" AS "table-schema", "ct"."relname" AS "table-name", "ci"."oid" AS "ci_oid", (INFORMATION_SCHEMA._PG_EXPANDARRAY("i"."indkey")).n AS "pos" FROM "pg_catalog"."pg_class" AS "ct" INNER JOIN "pg_catalog"."pg_namespace" AS "n" ON "ct"."relnamespace" = "n"."oid" INNER JOIN "pg_catalog"."pg_index" AS "i" ON "ct"."oid" = "i"."indrelid" INNER JOIN "pg_catalog"."pg_class" AS "ci" ON "ci"."oid" = "i"."indexrelid" WHERE (PG_CATALOG.PG_GET_EXPR("i"."indpred", "i"."indrelid") IS NULL) AND n.nspname !~ '^information_schema|catalog_history|pg_' AND ("n"."nspname" IN ('public')) AND ("ct"."relname" IN ('per_customer'))) AS "tmp" WHERE "tmp"."pos" = 1"""

with psycopg.connect(DSN, autocommit=True) as c:
    c.execute(
        "CREATE STREAM orders (id BIGINT KEY, customer VARCHAR, amount DOUBLE) "
        "WITH (kafka_topic='orders', partitions=1, value_format='json')"
    )
    c.execute(
        "CREATE TABLE per_customer AS SELECT customer, COUNT(*) AS n, SUM(amount) AS total "
        "FROM orders GROUP BY customer"
    )
    c.execute("CREATE VIEW big_orders AS SELECT id, amount FROM orders WHERE amount > 5")

    # Grafana
    check(
        "Grafana: server version",
        c.execute("SELECT current_setting('server_version_num')::int/100 as version").fetchall(),
        [(1500,)],
    )
    check(
        "Grafana: no TimescaleDB",
        c.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchall(),
        [],
    )
    check(
        "Grafana: the table list (search-path schemas first)",
        c.execute(GRAFANA_TABLES).fetchall(),
        [("big_orders",), ("orders",), ("per_customer",)],
    )
    check(
        "Grafana: a table's columns",
        c.execute(GRAFANA_COLUMNS).fetchall(),
        [("customer", "text"), ("n", "bigint"), ("total", "double precision")],
    )

    # Metabase
    check(
        "Metabase: tables",
        c.execute(METABASE_TABLES).fetchall(),
        [
            ("public", "per_customer", "TABLE", None, 0),
            ("public", "big_orders", "VIEW", None, None),
            ("public", "orders", "VIEW", None, None),
        ],
    )
    check(
        "Metabase: fields, the key marked",
        c.execute(METABASE_FIELDS).fetchall(),
        [
            ("customer", "text", 0, "public", "per_customer", True, None, False, False),
            ("n", "int8", 1, "public", "per_customer", False, None, False, False),
            ("total", "float8", 2, "public", "per_customer", False, None, False, False),
        ],
    )
    check(
        "Metabase: indexes",
        c.execute(METABASE_INDEXES).fetchall(),
        [("public", "per_customer", "customer")],
    )
    check("Metabase: time zone", c.execute("show timezone").fetchall(), [("UTC",)])

print("done")
