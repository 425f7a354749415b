-- A shop: clicks enriched with the customer's profile, searches correlated with
-- the clicks that followed them, and orders kept joined with their customer.
-- Safe to run again: every statement is IF NOT EXISTS.
CREATE TABLE IF NOT EXISTS customers (
  id VARCHAR PRIMARY KEY, name VARCHAR, tier VARCHAR
) WITH (kafka_topic='customers', value_format='json');

CREATE STREAM IF NOT EXISTS searches (
  customer_id VARCHAR, query VARCHAR, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (kafka_topic='searches', value_format='json', partitions=2);

CREATE STREAM IF NOT EXISTS shop_clicks (
  customer_id VARCHAR, url VARCHAR, ts TIMESTAMP,
  WATERMARK FOR ts AS ts - INTERVAL '5' SECOND
) WITH (kafka_topic='shop_clicks', value_format='json', partitions=2);

CREATE TABLE IF NOT EXISTS orders (
  order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, amount DOUBLE
) WITH (kafka_topic='orders', value_format='json');

-- Enrichment (stream-table): each click with the customer's current tier.
CREATE STREAM IF NOT EXISTS clicks_by_tier AS
  SELECT c.customer_id, c.url, u.tier
  FROM shop_clicks c LEFT JOIN customers u ON c.customer_id = u.id;

-- Correlation (stream-stream): searches followed by a click within 10 minutes
-- (Flink-style bound on the two event times).
CREATE STREAM IF NOT EXISTS search_then_click AS
  SELECT s.customer_id, s.query, c.url
  FROM searches s JOIN shop_clicks c
    ON s.customer_id = c.customer_id
   AND c.ts BETWEEN s.ts AND s.ts + INTERVAL '10' MINUTE;

-- Searches nobody clicked after within 10 minutes, emitted once that is certain
-- (ksqlDB-style WITHIN (before, after)).
CREATE STREAM IF NOT EXISTS abandoned_searches AS
  SELECT s.customer_id, s.query
  FROM searches s LEFT JOIN shop_clicks c WITHIN (0 SECONDS, 10 MINUTES)
    ON s.customer_id = c.customer_id
  WHERE c.url IS NULL;

-- Table-table (foreign key): every order with its customer, kept up to date as
-- either side changes, and revenue per tier on top of it.
CREATE TABLE IF NOT EXISTS order_details AS
  SELECT o.order_id, o.amount, u.name, u.tier
  FROM orders o LEFT JOIN customers u ON o.customer_id = u.id;

CREATE TABLE IF NOT EXISTS revenue_per_tier AS
  SELECT u.tier, SUM(o.amount) AS revenue, COUNT(*) AS orders
  FROM orders o JOIN customers u ON o.customer_id = u.id
  GROUP BY u.tier;
