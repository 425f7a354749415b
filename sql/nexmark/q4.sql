-- Nexmark q4: average price per category of the winning bids of closed auctions.
-- NOT RUNNABLE YET: needs an interval join (auction ⋈ bid within the auction's
-- lifetime) and an aggregate over its changelog.
CREATE TABLE nexmark_q4 AS
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
    SELECT MAX(B.price) AS final, A.category
    FROM auction AS A
    JOIN bid AS B
      ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS Q
GROUP BY Q.category;
