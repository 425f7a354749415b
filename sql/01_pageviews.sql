-- Web traffic: server errors as their own stream, and error rate and latency per URL.
-- Safe to run again: every statement is IF NOT EXISTS.
CREATE STREAM IF NOT EXISTS pageviews (
  user_id VARCHAR KEY, url VARCHAR, status INT, latency_ms DOUBLE, ts TIMESTAMP
) WITH (kafka_topic='pageviews', value_format='json', timestamp='ts', partitions=4);

-- Every 5xx, as it happens.
CREATE STREAM IF NOT EXISTS server_errors AS
  SELECT user_id, url, status, latency_ms, ts
  FROM pageviews
  WHERE status >= 500
  EMIT CHANGES;

-- Error rate per endpoint, kept up to date and queryable:
--   SELECT * FROM error_rate WHERE error_rate > 0.05 ORDER BY total DESC;
CREATE TABLE IF NOT EXISTS error_rate AS
  SELECT url,
         COUNT(*) AS total,
         COUNT(*) FILTER (WHERE status >= 500) AS errors,
         COUNT(*) FILTER (WHERE status >= 500) * 1.0 / COUNT(*) AS error_rate,
         AVG(latency_ms) AS avg_latency_ms,
         MAX(latency_ms) AS max_latency_ms
  FROM pageviews
  GROUP BY url
  EMIT CHANGES;

-- "Error rate over the last minute, refreshed every 5 seconds", with latency
-- percentiles (t-digest). Events up to 10 s out of order still count (grace).
--   SELECT * FROM error_rate_1m WHERE url = '/checkout' ORDER BY windowstart DESC LIMIT 12;
CREATE TABLE IF NOT EXISTS error_rate_1m AS
  SELECT url,
         COUNT(*) AS total,
         COUNT(*) FILTER (WHERE status >= 500) * 1.0 / COUNT(*) AS error_rate,
         APPROX_PERCENTILE(latency_ms, 0.95) AS p95_ms,
         APPROX_PERCENTILE(latency_ms, 0.99) AS p99_ms
  FROM pageviews
  WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 5 SECONDS, GRACE PERIOD 10 SECONDS)
  GROUP BY url
  EMIT CHANGES;

-- Browsing sessions, closed after 30 minutes without a page view; one row per
-- session once it is over.
CREATE TABLE IF NOT EXISTS user_sessions AS
  SELECT user_id,
         COUNT(*) AS pages,
         COUNT(DISTINCT url) AS distinct_urls
  FROM pageviews
  WINDOW SESSION (30 MINUTES)
  GROUP BY user_id
  EMIT FINAL;
