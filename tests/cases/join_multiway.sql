-- Joins of three inputs: stream-table-table lookups, a stream-stream-stream
-- interval join, and a table-table-table join with retractions.
CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR)
  WITH (kafka_topic='users', value_format='json');
CREATE TABLE regions (code VARCHAR PRIMARY KEY, label VARCHAR)
  WITH (kafka_topic='regions', value_format='json');
CREATE STREAM clicks (user_id VARCHAR, url VARCHAR)
  WITH (kafka_topic='clicks', value_format='json');
CREATE STREAM labelled AS
  SELECT c.url, u.name, r.label
  FROM clicks c JOIN users u ON c.user_id = u.id JOIN regions r ON u.region = r.code;

CREATE STREAM views (id VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (kafka_topic='views', value_format='json');
CREATE STREAM carts (id VARCHAR, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (kafka_topic='carts', value_format='json');
CREATE STREAM buys (id VARCHAR, amount INT, ts TIMESTAMP, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)
  WITH (kafka_topic='buys', value_format='json');
CREATE STREAM funnel AS
  SELECT v.id, b.amount
  FROM views v
  JOIN carts c WITHIN 1 MINUTE ON v.id = c.id
  JOIN buys b WITHIN 1 MINUTE ON v.id = b.id;

CREATE TABLE orders (order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, amount INT)
  WITH (kafka_topic='orders', value_format='json');
CREATE TABLE customers (id VARCHAR PRIMARY KEY, tier VARCHAR)
  WITH (kafka_topic='customers', value_format='json');
CREATE TABLE tiers (tier VARCHAR PRIMARY KEY, discount INT)
  WITH (kafka_topic='tiers', value_format='json');
CREATE TABLE order_discounts AS
  SELECT o.order_id, o.amount, t.discount
  FROM orders o JOIN customers c ON o.customer_id = c.id JOIN tiers t ON c.tier = t.tier;

--- input regions
eu | {"label": "Europe"}
us | {"label": "Americas"}

--- input users
u1 | {"name": "Ann", "region": "eu"}
u2 | {"name": "Bob", "region": "us"}

--- expect SELECT code FROM regions ORDER BY code
eu
us

--- expect SELECT id FROM users ORDER BY id
u1
u2

--- input clicks
{"user_id": "u1", "url": "/a"}
{"user_id": "u2", "url": "/b"}
{"user_id": "u3", "url": "/c"}

--- expect SELECT url, name, label FROM labelled ORDER BY url
/a | Ann | Europe
/b | Bob | Americas

--- input views
{"id": "s1", "ts": "2024-01-01T10:00:00"}
{"id": "s2", "ts": "2024-01-01T10:00:00"}

--- input carts
{"id": "s1", "ts": "2024-01-01T10:00:30"}
{"id": "s2", "ts": "2024-01-01T10:00:30"}

--- input buys
{"id": "s1", "amount": 30, "ts": "2024-01-01T10:00:50"}
{"id": "s2", "amount": 99, "ts": "2024-01-01T10:05:00"}

--- expect SELECT id, amount FROM funnel ORDER BY id
s1 | 30

--- input tiers
gold | {"discount": 10}
silver | {"discount": 5}

--- input customers
c1 | {"tier": "gold"}
c2 | {"tier": "silver"}

--- input orders
o1 | {"customer_id": "c1", "amount": 100}
o2 | {"customer_id": "c2", "amount": 50}

--- expect SELECT order_id, amount, discount FROM order_discounts ORDER BY order_id
o1 | 100 | 10
o2 | 50 | 5

-- A change two joins away reaches the result.
--- input tiers
gold | {"discount": 15}
silver | null

--- expect SELECT order_id, amount, discount FROM order_discounts ORDER BY order_id
o1 | 100 | 15
