-- Nexmark q0: pass-through. Measures the cost of reading and writing bids.
-- Runs today.
CREATE STREAM nexmark_q0 AS
SELECT auction, bidder, price, date_time
FROM bid;
