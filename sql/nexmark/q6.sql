-- Nexmark q6: average selling price per seller over their last 10 closed
-- auctions.
-- NOT RUNNABLE YET: needs an interval join, top-1 per auction and a ROWS window
-- function over the result.
CREATE TABLE nexmark_q6 AS
SELECT Q.seller,
       AVG(Q.final) OVER (PARTITION BY Q.seller ORDER BY Q.date_time
                          ROWS BETWEEN 10 PRECEDING AND CURRENT ROW) AS avg_final
FROM (
    SELECT MAX(B.price) AS final, A.seller, B.date_time
    FROM auction AS A
    JOIN bid AS B
      ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.seller, B.date_time
) AS Q;
