-- Nexmark q3: local item suggestion. Sellers in OR, ID or CA with auctions in
-- category 10.
-- A join of two streams without a time bound: as in Flink and RisingWave, every
-- person and auction stays in the join's state (it grows with the streams).
CREATE STREAM nexmark_q3 AS
SELECT P.name, P.city, P.state, A.id
FROM auction AS A
JOIN person AS P ON A.seller = P.id
WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA');
