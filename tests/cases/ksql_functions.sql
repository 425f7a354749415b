-- ksqlDB's scalar functions (issue #14, point 9: the first of them), in a
-- continuous query as ksqlDB scenarios use them, with ksqlDB's answers.
CREATE STREAM logs (k VARCHAR KEY, msg VARCHAR, payload VARCHAR, ms BIGINT, stamp VARCHAR)
  WITH (kafka_topic='logs', value_format='json');

CREATE STREAM shaped AS SELECT k,
    UCASE(msg) AS up,
    LCASE(msg) AS down,
    LEN(msg) AS n,
    INSTR(msg, 'lo') AS at,
    IFNULL(EXTRACTJSONFIELD(payload, '$.user.name'), 'nobody') AS who,
    EXTRACTJSONFIELD(payload, '$.tags[1]') AS tag,
    TIMESTAMPTOSTRING(ms, 'yyyy-MM-dd HH:mm:ss') AS at_text,
    STRINGTOTIMESTAMP(stamp, 'yyyy-MM-dd HH:mm:ss') AS parsed
  FROM logs;

--- input logs
a | {"msg": "Hello", "payload": "{\"user\": {\"name\": \"ann\"}, \"tags\": [\"x\", \"y\"]}", "ms": 0, "stamp": "2024-01-02 03:04:05"}
b | {"msg": "cold", "payload": "not json", "ms": 1712345678901, "stamp": "bad"}

--- expect SELECT k, up, down, n, at, who, tag, at_text, parsed FROM shaped ORDER BY k
a | HELLO | hello | 5 | 4 | ann | y | 1970-01-01 00:00:00 | 1704164645000
b | COLD | cold | 4 | 0 | nobody | NULL | 2024-04-05 19:34:38 | NULL

-- JSON, geography, URLs and masks.
CREATE STREAM visits (k VARCHAR KEY, url VARCHAR, card VARCHAR, lat DOUBLE, lon DOUBLE, items VARCHAR)
  WITH (kafka_topic='visits', value_format='json');

CREATE STREAM visit_facts AS SELECT k,
    URL_EXTRACT_HOST(url) AS host,
    URL_EXTRACT_PARAMETER(url, 'q') AS q,
    URL_EXTRACT_PORT(url) AS port,
    MASK_KEEP_RIGHT(card, 4) AS card_masked,
    CAST(ROUND(GEO_DISTANCE(lat, lon, 51.5257, -0.1122)) AS BIGINT) AS km_to_london,
    JSON_ARRAY_LENGTH(items) AS n_items,
    IS_JSON_STRING(items) AS is_json
  FROM visits;

--- input visits
v1 | {"url": "https://shop.example.com:8443/search?q=red%20shoes", "card": "4111-1111-1111-1234", "lat": 37.4439, "lon": -122.1663, "items": "[1, 2, 3]"}
v2 | {"url": "nonsense", "card": null, "lat": 51.5257, "lon": -0.1122, "items": "{"}

--- expect SELECT k, host, q, port, card_masked, km_to_london, n_items, is_json FROM visit_facts ORDER BY k
v1 | shop.example.com | red shoes | 8443 | nnnn-nnnn-nnnn-1234 | 8635 | 3 | true
v2 | NULL | NULL | NULL | NULL | 0 | NULL | false

-- Regular expressions, encodings and dates.
CREATE STREAM mails (k VARCHAR KEY, addr VARCHAR, hex VARCHAR, day VARCHAR)
  WITH (kafka_topic='mails', value_format='json');

CREATE STREAM mail_facts AS SELECT k,
    REGEXP_EXTRACT('@([a-z]+)[.]', addr, 1) AS domain,
    ENCODE(hex, 'hex', 'utf8') AS decoded,
    FORMAT_DATE(PARSE_DATE(day, 'yyyy-MM-dd'), 'dd.MM.yyyy') AS de_day
  FROM mails;

--- input mails
m1 | {"addr": "ann@example.com", "hex": "4578616d706c6521", "day": "2024-02-29"}
m2 | {"addr": "nobody", "hex": "zz", "day": "2024-02-30"}

--- expect SELECT k, domain, decoded, de_day FROM mail_facts ORDER BY k
m1 | example | Example! | 29.02.2024
m2 | NULL | NULL | NULL
