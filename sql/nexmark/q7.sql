-- Nexmark q7: highest bid in each 10-second tumbling window.
-- The windowed maximum is a stream of one row per window, timed by the
-- window's end; the WHERE bound makes the join an interval join, so a bid is
-- kept only until its window's maximum has passed.
CREATE STREAM nexmark_q7 AS
SELECT B.auction, B.price, B.bidder, B.date_time
FROM bid AS B
JOIN (
    SELECT MAX(price) AS maxprice, window_end AS date_time
    FROM TUMBLE(bid, date_time, INTERVAL '10' SECOND)
    GROUP BY window_start, window_end
) AS B1
ON B.price = B1.maxprice
WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time;
