-- Read state, mentions and search.

-- How far the member has read the channel: a message id (0: nothing yet). Only ever moves
-- forward. Unread messages are those after it, counted on idx_messages_channel_id.
ALTER TABLE channel_members ADD COLUMN last_read_id INTEGER NOT NULL DEFAULT 0;

-- Who a message mentions (`@username` of a member, or everyone for `@channel`). Rows are
-- rewritten by an edit and removed when the message is deleted, so counting a member's
-- unread mentions is one index range: (user_id, channel_id, message_id > last_read_id).
CREATE TABLE message_mentions (
    message_id INTEGER NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_id INTEGER NOT NULL REFERENCES channels(id) ON DELETE CASCADE,
    PRIMARY KEY (message_id, user_id)
);
CREATE INDEX idx_message_mentions_user ON message_mentions (user_id, channel_id, message_id);

-- Search: FTS5 with the trigram tokenizer (case-insensitive substrings of 3+ characters,
-- which also finds runs inside text written without spaces). External content: the index
-- holds no copy of the text. Kept in step by triggers, in the transaction of the write that
-- changes a message or a file: posts, edits, (soft) deletes. Deleted rows leave the index.
CREATE VIRTUAL TABLE messages_fts USING fts5(
    content, content = 'messages', content_rowid = 'id', tokenize = 'trigram'
);
CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages WHEN new.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
END;
CREATE TRIGGER messages_fts_update AFTER UPDATE OF content, deleted_at ON messages BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content)
        SELECT 'delete', old.id, old.content WHERE old.deleted_at IS NULL;
    INSERT INTO messages_fts (rowid, content)
        SELECT new.id, new.content WHERE new.deleted_at IS NULL;
END;
CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages WHEN old.deleted_at IS NULL BEGIN
    INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
END;
INSERT INTO messages_fts (rowid, content) SELECT id, content FROM messages WHERE deleted_at IS NULL;

CREATE VIRTUAL TABLE files_fts USING fts5(
    file_name, content = 'file_uploads', content_rowid = 'id', tokenize = 'trigram'
);
CREATE TRIGGER files_fts_insert AFTER INSERT ON file_uploads WHEN new.is_deleted = 0 BEGIN
    INSERT INTO files_fts (rowid, file_name) VALUES (new.id, new.file_name);
END;
CREATE TRIGGER files_fts_update AFTER UPDATE OF file_name, is_deleted ON file_uploads BEGIN
    INSERT INTO files_fts (files_fts, rowid, file_name)
        SELECT 'delete', old.id, old.file_name WHERE old.is_deleted = 0;
    INSERT INTO files_fts (rowid, file_name)
        SELECT new.id, new.file_name WHERE new.is_deleted = 0;
END;
CREATE TRIGGER files_fts_delete AFTER DELETE ON file_uploads WHEN old.is_deleted = 0 BEGIN
    INSERT INTO files_fts (files_fts, rowid, file_name) VALUES ('delete', old.id, old.file_name);
END;
INSERT INTO files_fts (rowid, file_name) SELECT id, file_name FROM file_uploads WHERE is_deleted = 0;
