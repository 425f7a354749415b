-- Stream-stream joins bounded in event time: ksqlDB's WITHIN and Flink's
-- interval predicates; outer joins pad a row once its interval has closed.
CREATE STREAM searches (search_id INT, user_id VARCHAR, query VARCHAR, ts TIMESTAMP,
                        WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
  WITH (kafka_topic='searches', value_format='json');
CREATE STREAM clicks (user_id VARCHAR, url VARCHAR, ts TIMESTAMP,
                      WATERMARK FOR ts AS ts - INTERVAL '1' MINUTE)
  WITH (kafka_topic='clicks', value_format='json');
CREATE STREAM search_clicks AS
  SELECT s.search_id, s.query, c.url
  FROM searches s JOIN clicks c WITHIN 1 HOUR ON s.user_id = c.user_id;
-- A join feeds a windowed aggregate through its result stream, whose rows carry
-- the join's result time (the later of the two rows) as their timestamp.
CREATE TABLE searches_per_hour AS
  SELECT query, COUNT(*) AS n FROM search_clicks
  WINDOW TUMBLING (SIZE 1 HOUR) GROUP BY query;
CREATE STREAM clicked_after AS
  SELECT s.search_id, c.url
  FROM searches s JOIN clicks c
    ON s.user_id = c.user_id AND c.ts BETWEEN s.ts AND s.ts + INTERVAL '1' HOUR;
CREATE STREAM search_outcomes AS
  SELECT s.search_id, c.url
  FROM searches s LEFT JOIN clicks c WITHIN (0 SECONDS, 10 MINUTES) ON s.user_id = c.user_id;
-- Without a time bound an inner join is a regular join (Flink, RisingWave):
-- every row stays buffered, so a search meets its user's clicks of any time.
CREATE STREAM same_user AS
  SELECT s.search_id, c.url
  FROM searches s JOIN clicks c ON s.user_id = c.user_id;
-- Equal days are no time bound (rows of one day have many times): a regular join.
CREATE STREAM same_day AS
  SELECT s.search_id, c.url
  FROM searches s JOIN clicks c
    ON s.user_id = c.user_id AND CAST(s.ts AS DATE) = CAST(c.ts AS DATE);
CREATE STREAM all_activity AS
  SELECT s.search_id, c.url
  FROM searches s FULL OUTER JOIN clicks c WITHIN 5 MINUTES ON s.user_id = c.user_id;

--- input searches
{"search_id": 1, "user_id": "u1", "query": "shoes", "ts": "2024-01-01T10:00:00"}
{"search_id": 2, "user_id": "u2", "query": "hats", "ts": "2024-01-01T10:05:00"}
{"search_id": 3, "user_id": "u3", "query": "socks", "ts": "2024-01-01T10:10:00"}

--- input clicks
{"user_id": "u1", "url": "/shoes", "ts": "2024-01-01T10:02:00"}
{"user_id": "u2", "url": "/hats-early", "ts": "2024-01-01T09:50:00"}
{"user_id": "u4", "url": "/x", "ts": "2024-01-01T10:20:00"}

--- expect SELECT search_id, query, url FROM search_clicks ORDER BY search_id
1 | shoes | /shoes
2 | hats | /hats-early

--- expect SELECT search_id, url FROM clicked_after ORDER BY search_id
1 | /shoes

-- A search is padded once the clicks' watermark (10:20 - 1 minute) passes the
-- end of its interval: search 2's (10:15) has closed, search 3's (10:20) has not.
--- expect SELECT search_id, url FROM search_outcomes ORDER BY search_id
1 | /shoes
2 | NULL

-- Both streams move on to noon: every interval around 10:00 has closed.
--- input searches
{"search_id": 4, "user_id": "u9", "query": "late", "ts": "2024-01-01T12:00:00"}

--- input clicks
{"user_id": "u8", "url": "/y", "ts": "2024-01-01T12:00:00"}

--- expect SELECT search_id, url FROM search_outcomes ORDER BY search_id
1 | /shoes
2 | NULL
3 | NULL

--- expect SELECT search_id, url FROM all_activity ORDER BY search_id, url
1 | /shoes
2 | NULL
3 | NULL
NULL | /hats-early
NULL | /x

-- The buffered rows (search 4, click /y) survive a restart and still join.
--- restart

--- input clicks
{"user_id": "u9", "url": "/late-click", "ts": "2024-01-01T12:03:00"}
{"user_id": "u1", "url": "/too-late", "ts": "2024-01-01T09:00:00"}

--- expect SELECT search_id, query, url FROM search_clicks ORDER BY search_id
1 | shoes | /shoes
2 | hats | /hats-early
4 | late | /late-click

-- The regular join kept search 4 across the restart; the 09:00 click is behind
-- the clicks' watermark, so it is late and dropped there too.
--- expect SELECT search_id, url FROM same_user ORDER BY search_id
1 | /shoes
2 | /hats-early
4 | /late-click

--- expect SELECT search_id, url FROM same_day ORDER BY search_id
1 | /shoes
2 | /hats-early
4 | /late-click

--- expect SELECT query, windowstart, n FROM searches_per_hour ORDER BY query
hats | 2024-01-01T10:00:00 | 1
late | 2024-01-01T12:00:00 | 1
shoes | 2024-01-01T10:00:00 | 1

--- expect SELECT search_id, url FROM all_activity ORDER BY search_id, url
1 | /shoes
2 | NULL
3 | NULL
4 | /late-click
NULL | /hats-early
NULL | /x

--- error SELECT s.search_id FROM searches s LEFT JOIN clicks c ON s.user_id = c.user_id EMIT CHANGES
needs a time bound
WITHIN

--- error SELECT s.search_id FROM searches s JOIN clicks c WITHIN 1 HOUR WHERE s.user_id = c.user_id EMIT CHANGES
followed by ON

--- error SELECT s.search_id FROM searches s JOIN clicks c WITHIN 1 HOUR ON s.user_id = c.user_id
continuous join
