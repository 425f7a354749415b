CREATE STREAM pageviews (user_id VARCHAR KEY, url VARCHAR, status INT, latency_ms DOUBLE)
  WITH (kafka_topic='pageviews', value_format='json', partitions=2);
CREATE STREAM errors AS
  SELECT user_id, UPPER(url) AS url, status, CAST(latency_ms AS BIGINT) AS ms,
         CASE WHEN status >= 503 THEN 'unavailable' ELSE 'error' END AS kind
  FROM pageviews WHERE status >= 500 EMIT CHANGES;

--- input pageviews
u1 | {"url": "/a", "status": 200, "latency_ms": 10.5}
u2 | {"url": "/b", "status": 500, "latency_ms": 30.2}
u1 | {"url": "/c", "status": 503, "latency_ms": 7.9}
{"user_id": "u3", "url": "/d", "status": 502}

--- expect SELECT * FROM errors ORDER BY user_id, url
u1 | /C | 503 | 7 | unavailable
u2 | /B | 500 | 30 | error
u3 | /D | 502 | NULL | error

--- expect SELECT COUNT(*) AS n FROM pageviews
4
