-- Nexmark q9: winning bid of each auction (the highest bid placed before it
-- expired).
-- NOT RUNNABLE YET: needs an interval join and ROW_NUMBER() top-1 per auction.
CREATE TABLE nexmark_q9 AS
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller,
       category, auction, bidder, price, bid_date_time
FROM (
    SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time,
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
    FROM auction AS A
    JOIN bid AS B
      ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
) AS Q
WHERE rownum <= 1;
