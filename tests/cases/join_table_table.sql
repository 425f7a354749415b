-- Table-table joins kept up to date with retractions: a foreign-key join, an
-- outer join on both primary keys, and a join feeding an aggregation.
CREATE TABLE customers (id VARCHAR PRIMARY KEY, name VARCHAR, tier VARCHAR)
  WITH (kafka_topic='customers', value_format='json');
CREATE TABLE orders (order_id VARCHAR PRIMARY KEY, customer_id VARCHAR, amount INT)
  WITH (kafka_topic='orders', value_format='json');
CREATE TABLE profiles (id VARCHAR PRIMARY KEY, bio VARCHAR)
  WITH (kafka_topic='profiles', value_format='json');
-- Foreign key: each order meets at most one customer, so the key is order_id.
CREATE TABLE order_details AS
  SELECT o.order_id, o.amount, c.name
  FROM orders o JOIN customers c ON o.customer_id = c.id;
CREATE TABLE order_details_left AS
  SELECT o.order_id, c.name
  FROM orders o LEFT JOIN customers c ON o.customer_id = c.id;
-- FULL OUTER on both keys: the result is keyed by both (one may be NULL).
CREATE TABLE everyone AS
  SELECT c.id AS customer_id, p.id AS profile_id, c.name, p.bio
  FROM customers c FULL OUTER JOIN profiles p ON c.id = p.id;
CREATE TABLE revenue_per_tier AS
  SELECT c.tier, SUM(o.amount) AS revenue, COUNT(*) AS orders
  FROM orders o JOIN customers c ON o.customer_id = c.id
  GROUP BY c.tier;

--- input customers
c1 | {"name": "Ann", "tier": "gold"}
c2 | {"name": "Bob", "tier": "silver"}

--- input orders
o1 | {"customer_id": "c1", "amount": 10}
o2 | {"customer_id": "c2", "amount": 20}
o3 | {"customer_id": "c3", "amount": 5}

--- input profiles
c1 | {"bio": "hi"}
c9 | {"bio": "new"}

--- expect SELECT order_id, amount, name FROM order_details ORDER BY order_id
o1 | 10 | Ann
o2 | 20 | Bob

--- expect SELECT order_id, name FROM order_details_left ORDER BY order_id
o1 | Ann
o2 | Bob
o3 | NULL

--- expect SELECT customer_id, profile_id, name, bio FROM everyone ORDER BY customer_id, profile_id
c1 | c1 | Ann | hi
c2 | NULL | Bob | NULL
NULL | c9 | NULL | new

--- expect SELECT tier, revenue, orders FROM revenue_per_tier ORDER BY tier
gold | 10 | 1
silver | 20 | 1

-- Bob is deleted, Cy arrives, o1 moves to Bob: every affected result row is
-- retracted or replaced, and the silver group empties.
--- input customers
c2 | null
c3 | {"name": "Cy", "tier": "gold"}

--- input orders
o1 | {"customer_id": "c2", "amount": 15}

--- expect SELECT order_id, amount, name FROM order_details ORDER BY order_id
o3 | 5 | Cy

--- expect SELECT order_id, name FROM order_details_left ORDER BY order_id
o1 | NULL
o2 | NULL
o3 | Cy

--- expect SELECT customer_id, profile_id, name, bio FROM everyone ORDER BY customer_id, profile_id
c1 | c1 | Ann | hi
c3 | NULL | Cy | NULL
NULL | c9 | NULL | new

--- expect SELECT tier, revenue, orders FROM revenue_per_tier ORDER BY tier
gold | 5 | 1

-- The join state survives a restart.
--- restart

--- input profiles
c3 | {"bio": "yo"}
c1 | null

--- input customers
c2 | {"name": "Bob", "tier": "silver"}

--- expect SELECT order_id, amount, name FROM order_details ORDER BY order_id
o1 | 15 | Bob
o2 | 20 | Bob
o3 | 5 | Cy

--- expect SELECT customer_id, profile_id, name, bio FROM everyone ORDER BY customer_id, profile_id
c1 | NULL | Ann | NULL
c2 | NULL | Bob | NULL
c3 | c3 | Cy | yo
NULL | c9 | NULL | new

--- expect SELECT tier, revenue, orders FROM revenue_per_tier ORDER BY tier
gold | 5 | 1
silver | 35 | 2

--- error CREATE TABLE bad AS SELECT o.order_id, c.name FROM orders o JOIN customers c ON o.customer_id = c.id AND o.amount > 5
other than equalities
WHERE

--- error CREATE TABLE bad AS SELECT c.name, p.bio FROM customers c FULL OUTER JOIN profiles p ON c.id = p.id
PRIMARY KEY
