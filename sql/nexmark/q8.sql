-- Nexmark q8: new users who opened auctions in the same 10-second window in
-- which they registered.
-- Flink's text joins two windowed subqueries (TUMBLE ... GROUP BY on each side);
-- Sluice writes the same result as an interval join whose key includes the
-- window: two rows share a 10 s window only if they are less than 10 s apart, so
-- WITHIN 10 SECONDS loses no match and lets the join free its state.
CREATE TABLE nexmark_q8 AS
SELECT P.id, P.name, date_bin(INTERVAL '10' SECOND, P.date_time) AS starttime, COUNT(*) AS auctions
FROM person AS P
JOIN auction AS A WITHIN 10 SECONDS
  ON P.id = A.seller
 AND date_bin(INTERVAL '10' SECOND, P.date_time) = date_bin(INTERVAL '10' SECOND, A.date_time)
GROUP BY P.id, P.name, date_bin(INTERVAL '10' SECOND, P.date_time);
