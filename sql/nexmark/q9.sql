-- Nexmark q9: winning bid of each auction (the highest bid placed before it
-- expired; the earliest of equal bids).
-- The join is bounded as in q4: WITHIN adds a constant bound covering every
-- auction's lifetime at the generator's default rate, and the exact lifetime test
-- stays in ON. ROW_NUMBER() with rownum <= 1 is a Top-N per auction: the table
-- keeps each auction's best bid so far and updates it as better bids arrive.
CREATE TABLE nexmark_q9 AS
SELECT id, item_name, description, initial_bid, reserve, date_time, expires, seller,
       category, auction, bidder, price, bid_date_time
FROM (
    SELECT A.*, B.auction, B.bidder, B.price, B.date_time AS bid_date_time,
           ROW_NUMBER() OVER (PARTITION BY A.id ORDER BY B.price DESC, B.date_time ASC) AS rownum
    FROM auction AS A
    JOIN bid AS B WITHIN (0 SECONDS, 1 MINUTE)
      ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
) AS Q
WHERE rownum <= 1;
