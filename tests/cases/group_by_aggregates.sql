CREATE STREAM clicks (user_id VARCHAR, url VARCHAR, status INT, latency DOUBLE)
  WITH (kafka_topic='clicks', value_format='json', partitions=3);
CREATE TABLE per_url AS
  SELECT url, COUNT(*) AS total, SUM(latency) AS total_latency, AVG(latency) AS avg_latency,
         MIN(latency) AS min_latency, MAX(latency) AS max_latency,
         COUNT(DISTINCT user_id) AS users,
         COUNT(*) FILTER (WHERE status >= 500) AS errors
  FROM clicks GROUP BY url EMIT CHANGES;

--- input clicks
{"user_id": "a", "url": "/x", "status": 200, "latency": 1.0}
{"user_id": "b", "url": "/x", "status": 500, "latency": 3.0}
{"user_id": "a", "url": "/y", "status": 200, "latency": 5.0}
{"user_id": "a", "url": "/x", "status": 503, "latency": 8.0}

--- expect SELECT * FROM per_url ORDER BY url
/x | 3 | 12.0 | 4.0 | 1.0 | 8.0 | 2 | 2
/y | 1 | 5.0 | 5.0 | 5.0 | 5.0 | 1 | 0

--- restart

--- input clicks
{"user_id": "c", "url": "/y", "status": 500, "latency": 1.0}

--- expect SELECT url, total, users, errors FROM per_url ORDER BY url
/x | 3 | 2 | 2
/y | 2 | 2 | 1

--- expect SELECT p.url, p.total, q.total FROM per_url p JOIN per_url q ON p.url = q.url WHERE p.total > 2
/x | 3 | 3
