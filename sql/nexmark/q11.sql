-- Nexmark q11: user sessions. Bids per bidder in sessions closed after 10
-- seconds of inactivity.
CREATE TABLE nexmark_q11 AS
SELECT bidder, COUNT(*) AS bid_count, window_start AS starttime, window_end AS endtime
FROM SESSION(bid, date_time, INTERVAL '10' SECOND)
GROUP BY bidder, window_start, window_end;
