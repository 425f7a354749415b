-- Security: IPs with repeated failed logins, and the user directory as a table.
-- Safe to run again: every statement is IF NOT EXISTS.
CREATE STREAM IF NOT EXISTS logins (
  ip VARCHAR, user_name VARCHAR, success BOOLEAN, ts TIMESTAMP
) WITH (kafka_topic='logins', value_format='json', timestamp='ts', partitions=2);

-- IPs with at least 3 failed logins; an IP leaves the table if it drops below
-- (HAVING over a changelog turns into deletes).
CREATE TABLE IF NOT EXISTS suspicious_ips AS
  SELECT ip,
         COUNT(*) FILTER (WHERE NOT success) AS failures,
         COUNT(DISTINCT user_name) AS users_tried,
         MAX(ts) AS last_attempt
  FROM logins
  GROUP BY ip
  HAVING COUNT(*) FILTER (WHERE NOT success) >= 3
  EMIT CHANGES;

-- The user directory from a compacted topic: the latest row per user id.
CREATE TABLE IF NOT EXISTS users (
  id VARCHAR PRIMARY KEY, name VARCHAR, region VARCHAR
) WITH (kafka_topic='users', value_format='json', partitions=2);

-- "Login failures per IP in 30 seconds": IPs with 3 or more failures in a window.
CREATE TABLE IF NOT EXISTS login_failures_30s AS
  SELECT ip, COUNT(*) AS failures, COUNT(DISTINCT user_name) AS users_tried
  FROM logins
  WINDOW TUMBLING (SIZE 30 SECONDS)
  WHERE NOT success
  GROUP BY ip
  HAVING COUNT(*) >= 3
  EMIT CHANGES;
