-- Every committed change in a channel takes the next number, in the same transaction, so
-- real-time events can be delivered in commit order on every instance.
ALTER TABLE channels ADD COLUMN event_seq BIGINT NOT NULL DEFAULT 0;
