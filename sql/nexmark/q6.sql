-- Nexmark q6: average selling price per seller over their last 10 closed
-- auctions.
-- NOT RUNNABLE YET: the join and the MAX per auction run (as in q4), but an
-- aggregate OVER a ROWS frame (the last 10 per seller) is refused, and its input
-- would be a changelog (each auction's MAX changes as bids arrive).
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
