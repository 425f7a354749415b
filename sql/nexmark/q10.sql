-- Nexmark q10: log bids to a file partitioned by date and hour.
-- NOT RUNNABLE YET: the file sink writes one file and has no partitioning;
-- the projection itself would run.
CREATE STREAM nexmark_q10 WITH (connector='file', path='/tmp/nexmark_q10.jsonl') AS
SELECT auction, bidder, price, date_time, extra,
       to_char(date_time, '%Y-%m-%d') AS dt,
       to_char(date_time, '%H:%M') AS hm
FROM bid;
