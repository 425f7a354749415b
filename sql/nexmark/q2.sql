-- Nexmark q2: selection. Bids on every 123rd auction (the Flink/RisingWave form of
-- the original list of auction ids).
-- Runs today.
CREATE STREAM nexmark_q2 AS
SELECT auction, price
FROM bid
WHERE auction % 123 = 0;
