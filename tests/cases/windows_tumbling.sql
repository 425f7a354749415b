-- Tumbling windows on event time: EMIT CHANGES keeps updating a window until it
-- closes (watermark past end + grace); EMIT FINAL emits it once, when it closes.
-- Events later than that are dropped.
CREATE STREAM clicks (user_id VARCHAR KEY, url VARCHAR, status INT, ts TIMESTAMP)
  WITH (kafka_topic='clicks', value_format='json', timestamp='ts', watermark_delay='5 seconds');
CREATE TABLE per_minute AS
  SELECT url, COUNT(*) AS n, SUM(status) AS total FROM clicks
  WINDOW TUMBLING (SIZE 1 MINUTE, GRACE PERIOD 10 SECONDS) GROUP BY url EMIT CHANGES;
CREATE TABLE per_minute_final AS
  SELECT url, WINDOWSTART AS ws, COUNT(*) AS n FROM clicks
  WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY url EMIT FINAL;
-- RETENTION bounds how long closed windows stay queryable.
CREATE TABLE recent AS
  SELECT url, COUNT(*) AS n FROM clicks
  WINDOW TUMBLING (SIZE 1 MINUTE, RETENTION 1 MINUTE) GROUP BY url;

--- input clicks
u1 | {"url": "/a", "status": 200, "ts": "2024-01-01T00:00:10"}
u2 | {"url": "/a", "status": 500, "ts": "2024-01-01T00:00:50"}
u1 | {"url": "/b", "status": 200, "ts": "2024-01-01T00:01:05"}

--- expect SELECT url, ws, n FROM per_minute_final ORDER BY ws, url
/a | 2024-01-01T00:00:00 | 2

--- input clicks
u3 | {"url": "/a", "status": 404, "ts": "2024-01-01T00:00:30"}

--- expect SELECT url, windowstart, windowend, n, total FROM per_minute ORDER BY windowstart, url
/a | 2024-01-01T00:00:00 | 2024-01-01T00:01:00 | 3 | 1104
/b | 2024-01-01T00:01:00 | 2024-01-01T00:02:00 | 1 | 200

--- restart

--- input clicks
u1 | {"url": "/b", "status": 200, "ts": "2024-01-01T00:02:20"}

--- expect SELECT url, ws, n FROM per_minute_final ORDER BY ws, url
/a | 2024-01-01T00:00:00 | 2
/b | 2024-01-01T00:01:00 | 1

-- The watermark is now 00:02:15: [00:00, 00:01) closed at 00:01:10 (grace 10 s).
--- input clicks
u1 | {"url": "/a", "status": 200, "ts": "2024-01-01T00:00:40"}
u1 | {"url": "/c", "status": 200, "ts": "2024-01-01T00:02:21"}

--- expect SELECT url, windowstart, n FROM per_minute ORDER BY windowstart, url
/a | 2024-01-01T00:00:00 | 3
/b | 2024-01-01T00:01:00 | 1
/b | 2024-01-01T00:02:00 | 1
/c | 2024-01-01T00:02:00 | 1

--- expect SELECT url, ws, n FROM per_minute_final ORDER BY ws, url
/a | 2024-01-01T00:00:00 | 2
/b | 2024-01-01T00:01:00 | 1

--- expect SELECT url, n FROM per_minute WHERE windowstart >= '2024-01-01T00:01:00' AND url = '/b' ORDER BY windowstart DESC
/b | 1
/b | 1

-- Watermark 00:02:16: the 00:00 window ended more than a minute ago.
--- expect SELECT url, windowstart, n FROM recent ORDER BY windowstart, url
/b | 2024-01-01T00:01:00 | 1
/b | 2024-01-01T00:02:00 | 1
/c | 2024-01-01T00:02:00 | 1

-- The window is part of the key: the output topic's JSON record keys carry it, so
-- a consumer can rebuild the table.
--- expect DESCRIBE per_minute_final
url | VARCHAR | true
ws | TIMESTAMP | true
n | BIGINT | false
windowend | TIMESTAMP | true
