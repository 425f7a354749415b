-- Nexmark q1: currency conversion. Bid prices from dollars to euros.
-- Runs today.
CREATE STREAM nexmark_q1 AS
SELECT auction, bidder, 0.908 * price AS price, date_time
FROM bid;
