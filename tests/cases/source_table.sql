CREATE TABLE users (id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR)
  WITH (kafka_topic='users', value_format='json');

--- input users
u1 | {"name": "Ann", "region": "eu"}
u2 | {"name": "Bob", "region": "us"}
u1 | {"name": "Ann B", "region": "eu"}
u3 | {"name": "Cy", "region": "us"}
u2 | null

--- expect SELECT * FROM users ORDER BY id
u1 | Ann B | eu
u3 | Cy | us

--- expect SELECT region, COUNT(*) AS n FROM users GROUP BY region ORDER BY region
eu | 1
us | 1

CREATE TABLE us_users AS SELECT id, name FROM users WHERE region = 'us';

--- expect SELECT * FROM us_users ORDER BY id
u3 | Cy

--- input users
u3 | {"name": "Cy", "region": "eu"}
u4 | {"name": "Di", "region": "us"}

--- expect SELECT * FROM us_users ORDER BY id
u4 | Di
