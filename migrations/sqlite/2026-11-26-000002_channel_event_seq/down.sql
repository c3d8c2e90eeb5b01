ALTER TABLE channels DROP COLUMN event_seq;
