CREATE STREAM nums (k VARCHAR KEY, a BIGINT, b BIGINT, code VARCHAR)
  WITH (kafka_topic='nums', value_format='json');

-- Division by zero and a failed cast make that value NULL; the rows around it,
-- and the rest of the row, go on.
CREATE STREAM ratios AS SELECT k, a / b AS x, CAST(code AS INT) AS c, a FROM nums;

--- input nums
r1 | {"a": 10, "b": 2, "code": "7"}
r2 | {"a": 10, "b": 0, "code": "8"}
r3 | {"a": 9, "b": 3, "code": "x"}
r4 | {"a": 8, "b": 4, "code": "9"}

--- expect SELECT k, x, c, a FROM ratios ORDER BY k
r1 | 5 | 7 | 10
r2 | NULL | 8 | 10
r3 | 3 | NULL | 9
r4 | 2 | 9 | 8

--- metric sluice_query_expression_errors_total{query="CSAS_RATIOS_1"}
2

-- A failing WHERE drops only its row.
CREATE STREAM big AS SELECT k, a FROM nums WHERE a / b > 2;

--- expect SELECT k, a FROM big ORDER BY k
r1 | 10
r3 | 9

-- Records that cannot become a valid row are skipped and counted; the good
-- records of the same batch go through. A fraction into a BIGINT is not
-- truncated: the record is bad.
CREATE STREAM strict (id BIGINT NOT NULL, v INT)
  WITH (kafka_topic='strict', value_format='json');
CREATE STREAM strict_copy AS SELECT id, v FROM strict;

--- input strict
{"id": 1, "v": 1}
{"v": 2}
{"id": 3, "v": 3}
{"id": 4.5, "v": 4}
{"id": 5, "v": 3000000000}
{"id": 6.0, "v": 6}
{"id": "7", "v": 7}

--- expect SELECT id, v FROM strict_copy ORDER BY id
1 | 1
3 | 3
6 | 6
7 | 7

--- metric sluice_query_errors_total{query="CSAS_STRICT_COPY_3"}
3

-- on_error='fail' keeps stopping the query at the first failing value.
CREATE STREAM strict_ratios WITH (on_error='fail') AS SELECT k, a / b AS x FROM nums;

--- metric sluice_query_status{query="CSAS_STRICT_RATIOS_4",status="ERROR"}
1

--- error CREATE STREAM s9 WITH (on_error='sometimes') AS SELECT k FROM nums
on_error 'sometimes' is neither 'continue' nor 'fail'

-- Global aggregates are one-row tables, windowed and not, across a restart.
CREATE TABLE total AS SELECT COUNT(*) AS n, SUM(a) AS s FROM nums;
CREATE TABLE per_minute AS SELECT COUNT(*) AS n FROM nums
  WINDOW TUMBLING (SIZE 1 MINUTE) EMIT CHANGES;

--- expect SELECT n, s FROM total
4 | 37

--- expect SELECT n FROM per_minute
4

--- restart

--- input nums
r5 | {"a": 1, "b": 1, "code": "1"}

--- expect SELECT n, s FROM total
5 | 38

--- expect SELECT n FROM per_minute
5

--- expect SELECT k, x FROM ratios WHERE k = 'r5'
r5 | 1

-- A cast that overflows is an expression error (NULL, counted); a record
-- whose event time is missing or unreadable is a bad record, and a table
-- record without its PRIMARY KEY too.
CREATE STREAM timed (id BIGINT, n BIGINT, ts BIGINT)
  WITH (kafka_topic='timed', value_format='json', timestamp='ts');
CREATE STREAM timed_copy AS SELECT id, CAST(n AS INT) AS n FROM timed;

--- input timed
{"id": 1, "n": 1, "ts": 1000}
{"id": 2, "n": 2}
{"id": 3, "n": 3000000000, "ts": 3000}
{"id": 4, "n": 4, "ts": "soon"}
{"id": 5, "n": 5, "ts": 5000}

--- expect SELECT id, n FROM timed_copy ORDER BY id
1 | 1
3 | NULL
5 | 5

--- metric sluice_query_errors_total{query="CSAS_TIMED_COPY_7"}
2

--- metric sluice_query_expression_errors_total{query="CSAS_TIMED_COPY_7"}
1

CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR)
  WITH (kafka_topic='users', value_format='json');
CREATE TABLE user_names AS SELECT id, name FROM users;

--- input users
u1 | {"name": "ann"}
{"name": "nobody"}
u2 | {"name": "bob"}

--- expect SELECT id, name FROM user_names ORDER BY id
u1 | ann
u2 | bob

--- metric sluice_query_errors_total{query="CTAS_USER_NAMES_9"}
1

-- Integer arithmetic that overflows is an expression error too, not a
-- wrapped value (counted once per failing row of an operator).
CREATE STREAM sums AS SELECT k, a + 1 AS next, a * 2 AS twice FROM nums WHERE k = 'r9';

--- input nums
r9 | {"a": 9223372036854775807, "b": 1, "code": "1"}

--- expect SELECT k, next, twice FROM sums
r9 | NULL | NULL

--- metric sluice_query_expression_errors_total{query="CSAS_SUMS_10"}
1

-- A tombstone deletes the row of a table whose value column is NOT NULL; an
-- upsert without that value is a bad record.
CREATE TABLE prices (sku VARCHAR PRIMARY KEY, price INT NOT NULL)
  WITH (kafka_topic='prices', value_format='json');
CREATE TABLE price_copy AS SELECT sku, price FROM prices;

--- input prices
s1 | {"price": 1}
s2 | {"price": 2}
s1 | null
s3 | {}
s4 | {"price": 4}

--- expect SELECT sku, price FROM price_copy ORDER BY sku
s2 | 2
s4 | 4

--- metric sluice_query_errors_total{query="CTAS_PRICE_COPY_12"}
1
