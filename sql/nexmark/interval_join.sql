-- Not a standard Nexmark query: the stream-stream interval join benchmark.
-- Each bid with the auction it bids on, when the auction was opened within
-- 10 seconds (event time) of the bid.
CREATE STREAM nexmark_interval_join AS
SELECT B.auction, B.bidder, B.price, A.seller, A.category
FROM bid AS B
JOIN auction AS A WITHIN 10 SECONDS ON B.auction = A.id;
