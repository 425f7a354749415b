-- Stream-table joins: each click is enriched with the user's row as the table has
-- it when the click is processed; table updates and deletes change later joins.
CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR)
  WITH (kafka_topic='users', value_format='json');
CREATE STREAM clicks (click_id INT, user_id VARCHAR, url VARCHAR)
  WITH (kafka_topic='clicks', value_format='json');
CREATE STREAM enriched AS
  SELECT c.click_id, c.url, u.name, u.region
  FROM clicks c JOIN users u ON c.user_id = u.id;
CREATE STREAM enriched_all AS
  SELECT c.click_id, u.name
  FROM clicks c LEFT JOIN users u ON u.id = c.user_id;
-- Joins feed aggregations: clicks per region.
CREATE TABLE clicks_per_region AS
  SELECT u.region, COUNT(*) AS clicks
  FROM clicks c JOIN users u ON c.user_id = u.id
  GROUP BY u.region;

--- input users
u1 | {"name": "Ann", "region": "eu"}
u2 | {"name": "Bob", "region": "us"}

--- expect SELECT id, name FROM users ORDER BY id
u1 | Ann
u2 | Bob

--- input clicks
{"click_id": 1, "user_id": "u1", "url": "/a"}
{"click_id": 2, "user_id": "u3", "url": "/b"}
{"click_id": 3, "user_id": "u2", "url": "/c"}

--- expect SELECT click_id, url, name, region FROM enriched ORDER BY click_id
1 | /a | Ann | eu
3 | /c | Bob | us

--- expect SELECT click_id, name FROM enriched_all ORDER BY click_id
1 | Ann
2 | NULL
3 | Bob

--- expect SELECT region, clicks FROM clicks_per_region ORDER BY region
eu | 1
us | 1

-- Ann moves, Bob is deleted, u3 appears: later clicks see the new rows.
--- input users
u1 | {"name": "Ann", "region": "apac"}
u2 | null
u3 | {"name": "Cy", "region": "eu"}

--- expect SELECT id, region FROM users ORDER BY id
u1 | apac
u3 | eu

-- After a restart the join looks up its own restored copy of the table
-- (whichever query restarts first).
--- restart

--- input clicks
{"click_id": 4, "user_id": "u1", "url": "/d"}
{"click_id": 5, "user_id": "u2", "url": "/e"}
{"click_id": 6, "user_id": "u3", "url": "/f"}

--- expect SELECT click_id, url, name, region FROM enriched ORDER BY click_id
1 | /a | Ann | eu
3 | /c | Bob | us
4 | /d | Ann | apac
6 | /f | Cy | eu

--- expect SELECT click_id, name FROM enriched_all ORDER BY click_id
1 | Ann
2 | NULL
3 | Bob
4 | Ann
5 | NULL
6 | Cy

--- expect SELECT region, clicks FROM clicks_per_region ORDER BY region
apac | 1
eu | 2
us | 1

--- error DROP TABLE users
enriched, enriched_all read it

--- error CREATE STREAM bad AS SELECT c.url FROM clicks c JOIN users u ON c.url = u.name
PRIMARY KEY

--- error CREATE STREAM bad AS SELECT c.url FROM clicks c LEFT JOIN clicks d ON c.url = d.url
stream-stream
