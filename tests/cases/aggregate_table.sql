-- GROUP BY over a TABLE: an update retracts the key's old row from its group and
-- adds the new one; a delete retracts; a group left empty leaves the result.
CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR, age INT)
  WITH (kafka_topic='users', value_format='json');
CREATE TABLE per_region AS
  SELECT region, COUNT(*) AS users, SUM(age) AS total_age, AVG(age) AS avg_age
  FROM users GROUP BY region;

--- input users
u1 | {"name": "Ann", "region": "eu", "age": 30}
u2 | {"name": "Bob", "region": "us", "age": 40}
u3 | {"name": "Cy", "region": "eu", "age": 50}

--- expect SELECT region, users, total_age, avg_age FROM per_region ORDER BY region
eu | 2 | 80 | 40.0
us | 1 | 40 | 40.0

-- Ann moves to the us and has a birthday; Cy is deleted: eu is left empty.
--- input users
u1 | {"name": "Ann", "region": "us", "age": 31}
u3 | null

--- expect SELECT region, users, total_age, avg_age FROM per_region ORDER BY region
us | 2 | 71 | 35.5

--- restart

-- Bob changes twice in one batch: the second change retracts the first.
--- input users
u4 | {"name": "Di", "region": "eu", "age": 20}
u2 | {"name": "Bob", "region": "eu", "age": 99}
u2 | {"name": "Bob", "region": "us", "age": 41}

--- expect SELECT region, users, total_age, avg_age FROM per_region ORDER BY region
eu | 1 | 20 | 20.0
us | 2 | 72 | 36.0

--- error CREATE TABLE oldest AS SELECT region, MAX(age) AS oldest FROM users GROUP BY region
MAX(...) over a TABLE
COUNT, SUM and AVG
