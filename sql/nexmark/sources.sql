-- The three Nexmark streams, generated in process from one seed. Leave out
-- `events` for an endless stream and `rate` for no throttle.
CREATE STREAM IF NOT EXISTS person WITH (connector='nexmark', nexmark.table='person', events=10000000, seed=42, partitions=4);
CREATE STREAM IF NOT EXISTS auction WITH (connector='nexmark', nexmark.table='auction', events=10000000, seed=42, partitions=4);
CREATE STREAM IF NOT EXISTS bid WITH (connector='nexmark', nexmark.table='bid', events=10000000, seed=42, partitions=4);
