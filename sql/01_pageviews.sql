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
