-- Administration is a recorded grant (`chatserver admin grant USERNAME`), not a username:
-- whoever registered `admin` first used to be an administrator.
ALTER TABLE users ADD COLUMN is_admin BOOLEAN NOT NULL DEFAULT 0;
