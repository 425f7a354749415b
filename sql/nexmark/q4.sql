-- Nexmark q4: average price per category of the winning bids of closed auctions.
-- A bid counts while its auction is open (B.date_time BETWEEN A.date_time AND
-- A.expires). Sluice needs a constant bound to free join state, so WITHIN adds
-- one that covers every auction's lifetime (at the generator's default 10,000
-- events/s auctions last well under a second); the exact lifetime test stays in
-- ON. The subquery also selects A.id, the key the outer AVG retracts by when an
-- auction's maximum changes.
CREATE TABLE nexmark_q4 AS
SELECT Q.category, AVG(Q.final) AS avg_final
FROM (
    SELECT A.id, MAX(B.price) AS final, A.category
    FROM auction AS A
    JOIN bid AS B WITHIN (0 SECONDS, 1 MINUTE)
      ON A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
    GROUP BY A.id, A.category
) AS Q
GROUP BY Q.category;
