-- Nexmark q7: highest bid in each 10-second tumbling window.
-- NOT RUNNABLE YET: needs TUMBLE windows and a join of the bids with their
-- window's maximum.
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
