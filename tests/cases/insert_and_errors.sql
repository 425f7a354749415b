CREATE STREAM events (id BIGINT KEY, kind VARCHAR, amount DECIMAL(10,2), at TIMESTAMP)
  WITH (kafka_topic='events', timestamp='at');
INSERT INTO events (id, kind, amount, at) VALUES (1, 'buy', 10.50, '2024-05-01 10:00:00'), (2, 'sell', 3, '2024-05-01 10:00:01');
INSERT INTO events (id, kind) VALUES (3, 'buy');
CREATE STREAM buys (id BIGINT, kind VARCHAR, amount DECIMAL(10,2), at TIMESTAMP) WITH (kafka_topic='buys');
INSERT INTO buys SELECT id, kind, amount, at FROM events WHERE kind = 'buy';

--- expect SELECT id, kind, amount, at FROM buys ORDER BY id
1 | buy | 10.50 | 2024-05-01T10:00:00

--- expect SELECT id, amount FROM events ORDER BY id
1 | 10.50
2 | 3.00

--- error SELECT nope FROM events
nope
[42703]

--- error SELECT * FROM missing_stream
stream or table 'missing_stream' does not exist
line 1, column 15
HINT

--- error CREATE STREAM s2 (a INT) WITH (kafka_topic='s2', value_format='avro')
value_format 'avro' is not supported
HINT: value_format='json'

--- error CREATE STREAM s3 (a INT) WITH (kafka_topc='s3')
unknown property 'kafka_topc'
line 1, column 32

--- error CREATE STREAM events (a INT)
already exists
[42P07]

--- error CREATE TABLE t AS SELECT kind FROM events
a TABLE needs a key

--- error CREATE STREAM s4 AS SELECT kind, COUNT(*) FROM events GROUP BY kind
result is a TABLE

--- error SELECT kind FROM events WHERE amount > 'abc' EMIT CHANGES
Cannot cast

--- error CREATE STREAM s5 (a INT, ts VARCHAR) WITH (kafka_topic='s5', timestamp='tz')
timestamp column 'tz' is not a column

CREATE STREAM IF NOT EXISTS events (a INT);
DROP STREAM IF EXISTS nothing_here;

--- expect SHOW server_version
15.0 (Sluice 0.1.0)

--- error SHOW no_such_setting
unrecognized configuration parameter
[42704]
