CREATE STREAM m (k VARCHAR, x DOUBLE, ok BOOLEAN, tag VARCHAR) WITH (kafka_topic='m');
CREATE TABLE stats AS
  SELECT k, STDDEV(x) AS sd, VAR_SAMP(x) AS var, BOOL_AND(ok) AS all_ok,
         APPROX_DISTINCT(tag) AS tags, ARRAY_AGG(tag) AS tag_list
  FROM m GROUP BY k;
CREATE TABLE busy AS SELECT k, COUNT(*) AS n FROM m GROUP BY k HAVING COUNT(*) >= 2;
CREATE OR REPLACE TABLE busy AS SELECT k, COUNT(*) AS n FROM m GROUP BY k HAVING COUNT(*) >= 2;

--- input m
{"k": "a", "x": 1.0, "ok": true, "tag": "t1"}
{"k": "a", "x": 3.0, "ok": false, "tag": "t2"}
{"k": "b", "x": 5.0, "ok": true, "tag": "t1"}

--- expect SELECT k, sd, var, all_ok, tags, tag_list FROM stats ORDER BY k
a | 1.4142135623730951 | 2.0 | false | 2 | [t1, t2]
b | NULL | NULL | true | 1 | [t1]

--- expect SELECT * FROM busy
a | 2

--- restart

--- input m
{"k": "a", "x": 5.0, "ok": true, "tag": "t1"}
{"k": "b", "x": 5.0, "ok": true, "tag": "t3"}

--- expect SELECT k, sd, all_ok, tags, tag_list FROM stats ORDER BY k
a | 2.0 | false | 2 | [t1, t2, t1]
b | 0.0 | true | 2 | [t1, t3]

--- expect SELECT * FROM busy ORDER BY k
a | 3
b | 2

--- error EXPLAIN SELECT k, COUNT(*) FROM m GROUP BY k ORDER BY k EMIT CHANGES
ORDER BY is not supported in a continuous query
