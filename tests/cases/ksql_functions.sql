-- ksqlDB's scalar functions (issue #14, point 9: the first of them), in a
-- continuous query as ksqlDB scenarios use them, with ksqlDB's answers.
CREATE STREAM logs (k VARCHAR KEY, msg VARCHAR, payload VARCHAR, ms BIGINT, stamp VARCHAR)
  WITH (kafka_topic='logs', value_format='json');

CREATE STREAM shaped AS SELECT k,
    UCASE(msg) AS up,
    LCASE(msg) AS down,
    LEN(msg) AS n,
    INSTR(msg, 'lo') AS at,
    IFNULL(EXTRACTJSONFIELD(payload, '$.user.name'), 'nobody') AS who,
    EXTRACTJSONFIELD(payload, '$.tags[1]') AS tag,
    TIMESTAMPTOSTRING(ms, 'yyyy-MM-dd HH:mm:ss') AS at_text,
    STRINGTOTIMESTAMP(stamp, 'yyyy-MM-dd HH:mm:ss') AS parsed
  FROM logs;

--- input logs
a | {"msg": "Hello", "payload": "{\"user\": {\"name\": \"ann\"}, \"tags\": [\"x\", \"y\"]}", "ms": 0, "stamp": "2024-01-02 03:04:05"}
b | {"msg": "cold", "payload": "not json", "ms": 1712345678901, "stamp": "bad"}

--- expect SELECT k, up, down, n, at, who, tag, at_text, parsed FROM shaped ORDER BY k
a | HELLO | hello | 5 | 4 | ann | y | 1970-01-01 00:00:00 | 1704164645000
b | COLD | cold | 4 | 0 | nobody | NULL | 2024-04-05 19:34:38 | NULL
