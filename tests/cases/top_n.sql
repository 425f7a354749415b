-- Top-N per key: ROW_NUMBER() in a subquery, limited by a filter on it. The
-- result is a table keyed by the partition key (top 1) or by it and the rank.
CREATE STREAM orders (customer VARCHAR, order_id INT, amount DOUBLE, ts TIMESTAMP)
  WITH (kafka_topic='orders', value_format='json', timestamp='ts');
CREATE TABLE biggest_order AS
  SELECT customer, order_id, amount FROM (
    SELECT customer, order_id, amount,
           ROW_NUMBER() OVER (PARTITION BY customer ORDER BY amount DESC) AS rn
    FROM orders) o
  WHERE rn = 1;
CREATE TABLE top2 AS
  SELECT customer, rn, order_id FROM (
    SELECT customer, order_id, amount,
           ROW_NUMBER() OVER (PARTITION BY customer ORDER BY amount DESC, ts) AS rn
    FROM orders) o
  WHERE rn <= 2 AND amount > 1;

--- input orders
{"customer": "c1", "order_id": 1, "amount": 10, "ts": "2024-01-01T00:00:00"}
{"customer": "c1", "order_id": 2, "amount": 30, "ts": "2024-01-01T00:00:01"}
{"customer": "c2", "order_id": 3, "amount": 5, "ts": "2024-01-01T00:00:02"}
{"customer": "c1", "order_id": 4, "amount": 20, "ts": "2024-01-01T00:00:03"}

--- expect SELECT customer, order_id FROM biggest_order ORDER BY customer
c1 | 2
c2 | 3

--- expect SELECT customer, rn, order_id FROM top2 ORDER BY customer, rn
c1 | 1 | 2
c1 | 2 | 4
c2 | 1 | 3

-- The ranks survive a restart; 25 pushes order 4 out of c1's top 2, and c2's
-- second order fails the rest of the filter, so its rank-2 row stays absent.
--- restart

--- input orders
{"customer": "c1", "order_id": 5, "amount": 25, "ts": "2024-01-01T00:00:04"}
{"customer": "c2", "order_id": 6, "amount": 0.5, "ts": "2024-01-01T00:00:05"}
{"customer": "c1", "order_id": 7, "amount": 30, "ts": "2024-01-01T00:00:06"}

--- expect SELECT customer, rn, order_id FROM top2 ORDER BY customer, rn
c1 | 1 | 2
c1 | 2 | 7
c2 | 1 | 3

--- expect SELECT customer, order_id FROM biggest_order ORDER BY customer
c1 | 2
c2 | 3

--- error SELECT customer FROM (SELECT customer, RANK() OVER (PARTITION BY customer ORDER BY amount) AS r FROM orders) o WHERE r = 1 EMIT CHANGES
RANK()
ROW_NUMBER()

--- error SELECT customer, ROW_NUMBER() OVER (PARTITION BY customer ORDER BY amount) AS rn FROM orders EMIT CHANGES
without a limit

--- error SELECT customer FROM (SELECT customer, ROW_NUMBER() OVER (PARTITION BY customer ORDER BY amount) AS rn FROM orders) o WHERE rn < 2.5 EMIT CHANGES
without a limit

--- error CREATE TABLE bad AS SELECT customer, order_id FROM (SELECT customer, order_id, ROW_NUMBER() OVER (PARTITION BY customer ORDER BY amount) AS rn FROM orders) o WHERE rn <= 2
must appear unchanged in the SELECT list
