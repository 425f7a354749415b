-- Window table-valued functions (Flink / RisingWave style) and session windows
-- that merge when a late event bridges two sessions.
CREATE STREAM clicks (user_id VARCHAR KEY, url VARCHAR, ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
  WITH (kafka_topic='clicks', value_format='json');
CREATE TABLE hopping AS
  SELECT url, window_start, window_end, COUNT(*) AS n
  FROM HOP(clicks, ts, INTERVAL '30' SECOND, INTERVAL '1' MINUTE)
  GROUP BY url, window_start, window_end;
CREATE TABLE cumulative AS
  SELECT window_start, window_end, COUNT(*) AS n
  FROM CUMULATE(clicks, ts, INTERVAL '30' SECOND, INTERVAL '1' MINUTE)
  GROUP BY window_start, window_end;
-- One row per minute, no other key, emitted when the minute closes.
CREATE TABLE per_minute AS
  SELECT window_start, window_end, COUNT(*) AS n
  FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE)
  GROUP BY window_start, window_end EMIT FINAL;
-- Windowed aggregates in subqueries are streams of closed windows: the busiest
-- url of each minute joins the counts per url with their maximum per minute.
CREATE STREAM top_url AS
  SELECT c.url, c.n, c.window_start
  FROM (SELECT url, window_start, window_end, COUNT(*) AS n
        FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY url, window_start, window_end) c
  JOIN (SELECT window_end, MAX(n) AS top
        FROM (SELECT url, window_end, COUNT(*) AS n
              FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY url, window_start, window_end) x
        GROUP BY window_end) m
  ON c.window_end = m.window_end AND c.n = m.top;
-- The two best urls of each minute: a ranking of windows' results, keyed by
-- the window and the rank.
CREATE TABLE top2_urls AS
  SELECT window_start, window_end, rn, url, n FROM (
    SELECT window_start, window_end, url, n,
           ROW_NUMBER() OVER (PARTITION BY window_start, window_end ORDER BY n DESC) AS rn
    FROM (SELECT url, window_start, window_end, COUNT(*) AS n
          FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY url, window_start, window_end) c) r
  WHERE rn <= 2;
-- Windows assigned in a subquery but aggregated by the outer query follow its
-- EMIT mode (here the default, EMIT CHANGES): counts appear before windows close.
CREATE TABLE a_per_minute AS
  SELECT window_start, window_end, COUNT(*) AS n
  FROM (SELECT * FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) WHERE url = '/a') w
  GROUP BY window_start, window_end;
CREATE TABLE sessions AS
  SELECT user_id, window_start, window_end, COUNT(*) AS n
  FROM SESSION(clicks, ts, INTERVAL '30' SECOND)
  GROUP BY user_id, window_start, window_end;

--- input clicks
u1 | {"url": "/a", "ts": "2024-01-01T00:00:00"}
u1 | {"url": "/a", "ts": "2024-01-01T00:00:20"}
u2 | {"url": "/b", "ts": "2024-01-01T00:00:40"}
u1 | {"url": "/a", "ts": "2024-01-01T00:01:10"}

--- expect SELECT window_start, n FROM a_per_minute ORDER BY window_start
2024-01-01T00:00:00 | 2
2024-01-01T00:01:00 | 1

--- expect SELECT url, window_start, window_end, n FROM hopping ORDER BY url, window_start
/a | 2023-12-31T23:59:30 | 2024-01-01T00:00:30 | 2
/a | 2024-01-01T00:00:00 | 2024-01-01T00:01:00 | 2
/a | 2024-01-01T00:00:30 | 2024-01-01T00:01:30 | 1
/a | 2024-01-01T00:01:00 | 2024-01-01T00:02:00 | 1
/b | 2024-01-01T00:00:00 | 2024-01-01T00:01:00 | 1
/b | 2024-01-01T00:00:30 | 2024-01-01T00:01:30 | 1

--- expect SELECT window_start, window_end, n FROM cumulative ORDER BY window_start, window_end
2024-01-01T00:00:00 | 2024-01-01T00:00:30 | 2
2024-01-01T00:00:00 | 2024-01-01T00:01:00 | 3
2024-01-01T00:01:00 | 2024-01-01T00:01:30 | 1
2024-01-01T00:01:00 | 2024-01-01T00:02:00 | 1

--- expect SELECT user_id, window_start, window_end, n FROM sessions ORDER BY user_id, window_start
u1 | 2024-01-01T00:00:00 | 2024-01-01T00:00:50 | 2
u1 | 2024-01-01T00:01:10 | 2024-01-01T00:01:40 | 1
u2 | 2024-01-01T00:00:40 | 2024-01-01T00:01:10 | 1

--- restart

-- 00:00:45 bridges u1's two sessions: both rows are retracted, the merged one replaces them.
--- input clicks
u1 | {"url": "/a", "ts": "2024-01-01T00:00:45"}

--- expect SELECT user_id, window_start, window_end, n FROM sessions ORDER BY user_id, window_start
u1 | 2024-01-01T00:00:00 | 2024-01-01T00:01:40 | 4
u2 | 2024-01-01T00:00:40 | 2024-01-01T00:01:10 | 1

--- expect SELECT window_start, window_end, n FROM cumulative ORDER BY window_start, window_end
2024-01-01T00:00:00 | 2024-01-01T00:00:30 | 2
2024-01-01T00:00:00 | 2024-01-01T00:01:00 | 4
2024-01-01T00:01:00 | 2024-01-01T00:01:30 | 1
2024-01-01T00:01:00 | 2024-01-01T00:02:00 | 1

--- error SELECT url, COUNT(*) FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY url
add EMIT CHANGES or EMIT FINAL

--- error SELECT url, COUNT(*) FROM clicks GROUP BY url EMIT FINAL
EMIT FINAL needs an aggregate over windows

--- error SELECT COUNT(*) FROM TUMBLE(clicks, url, INTERVAL '1' MINUTE) GROUP BY window_start, window_end EMIT CHANGES
'url' is not it

--- error SELECT COUNT(*) FROM TUMBLE(clicks, ts, INTERVAL '1' MINUTE) GROUP BY window_start EMIT CHANGES
must GROUP BY window_start and window_end

--- error CREATE TABLE bad AS SELECT url, COUNT(*) FROM clicks WINDOW HOPPING (SIZE 1 MINUTE) GROUP BY url
line 1, column
ADVANCE BY

-- The watermark passes 00:02: both minutes close, with the click that arrived
-- after the restart counted.
--- input clicks
u3 | {"url": "/c", "ts": "2024-01-01T00:03:00"}

--- expect SELECT window_start, n FROM per_minute ORDER BY window_start
2024-01-01T00:00:00 | 4
2024-01-01T00:01:00 | 1

--- expect SELECT url, n, window_start FROM top_url ORDER BY window_start
/a | 3 | 2024-01-01T00:00:00
/a | 1 | 2024-01-01T00:01:00

--- expect SELECT window_start, rn, url, n FROM top2_urls ORDER BY window_start, rn
2024-01-01T00:00:00 | 1 | /a | 3
2024-01-01T00:00:00 | 2 | /b | 1
2024-01-01T00:01:00 | 1 | /a | 1
