-- Dashboard aggregates per window: error rate with FILTER, latency percentiles
-- (exact and t-digest), distinct users, first/last by offset, lists and top-k.
CREATE STREAM requests (user_id VARCHAR KEY, service VARCHAR, status INT, latency_ms DOUBLE, ts BIGINT)
  WITH (kafka_topic='requests', value_format='json', timestamp='ts');
CREATE TABLE service_health AS
  SELECT service,
         COUNT(*) AS requests,
         CAST(COUNT(*) FILTER (WHERE status >= 500) AS DOUBLE) / COUNT(*) AS error_rate,
         APPROX_PERCENTILE(latency_ms, 0.5) AS p50,
         PERCENTILE(latency_ms, 0.5) AS exact_p50,
         MAX(latency_ms) AS worst,
         ROUND(STDDEV(latency_ms), 3) AS sd,
         APPROX_COUNT_DISTINCT(user_id) AS users,
         EARLIEST_BY_OFFSET(status) AS first_status,
         LATEST_BY_OFFSET(status) AS last_status,
         COLLECT_LIST(status) AS statuses,
         TOPK(latency_ms, 2) AS slowest
  FROM requests
  WINDOW TUMBLING (SIZE 10 SECONDS)
  GROUP BY service EMIT FINAL;

--- input requests
u1 | {"service": "api", "status": 200, "latency_ms": 10, "ts": 1000}
u2 | {"service": "api", "status": 500, "latency_ms": 40, "ts": 2000}
u1 | {"service": "api", "status": 200, "latency_ms": 20, "ts": 3000}
u3 | {"service": "api", "status": 503, "latency_ms": 30, "ts": 4000}
u1 | {"service": "web", "status": 200, "latency_ms": 5, "ts": 5000}
u1 | {"service": "web", "status": 200, "latency_ms": 5, "ts": 25000}

--- expect SELECT service, windowstart, requests, error_rate, p50, exact_p50, worst, sd, users, first_status, last_status, statuses, slowest FROM service_health ORDER BY service
api | 1970-01-01T00:00:00 | 4 | 0.5 | 25.0 | 25.0 | 40.0 | 12.91 | 3 | 200 | 503 | [200, 500, 200, 503] | [40.0, 30.0]
web | 1970-01-01T00:00:00 | 1 | 0.0 | 5.0 | 5.0 | 5.0 | NULL | 1 | 200 | 200 | [200] | [5.0]
