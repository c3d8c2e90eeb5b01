// Table definitions shared by both backends (the migrations keep them in step).

diesel::table! {
    deployment (id) {
        id -> Integer,
        key_prefix -> Text,
    }
}

diesel::table! {
    users (id) {
        id -> Integer,
        username -> Text,
        display_name -> Text,
        password_hash -> Text,
        created_at -> Timestamp,
        is_admin -> Bool,
        storage_used_bytes -> BigInt,
    }
}

diesel::table! {
    channels (id) {
        id -> Integer,
        name -> Text,
        is_private -> Bool,
        created_by -> Integer,
        created_at -> Timestamp,
        event_seq -> BigInt,
        retention_days -> Nullable<Integer>,
        kind -> Text,
        dm_key -> Nullable<Text>,
    }
}

diesel::table! {
    channel_members (channel_id, user_id) {
        channel_id -> Integer,
        user_id -> Integer,
        role -> Text,
        joined_at -> Timestamp,
        last_read_id -> Integer,
        hidden -> Bool,
    }
}

diesel::table! {
    message_mentions (message_id, user_id) {
        message_id -> Integer,
        user_id -> Integer,
        channel_id -> Integer,
    }
}

// PostgreSQL also has `messages.content_words` (a generated tsvector for search, read only
// by the SQL in db/search.rs); it has no diesel type and no SQLite counterpart.
diesel::table! {
    messages (id) {
        id -> Integer,
        channel_id -> Integer,
        user_id -> Integer,
        content -> Text,
        created_at -> Timestamp,
        edited_at -> Nullable<Timestamp>,
        deleted_at -> Nullable<Timestamp>,
        thread_id -> Nullable<Integer>,
        reply_count -> Integer,
        last_reply_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    message_reactions (id) {
        id -> Integer,
        message_id -> Integer,
        user_id -> Integer,
        emoji -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    file_uploads (id) {
        id -> Integer,
        message_id -> Integer,
        file_name -> Text,
        s3_key -> Text,
        content_type -> Nullable<Text>,
        file_size -> Nullable<BigInt>,
        uploaded_at -> Timestamp,
        uploaded_by -> Nullable<Integer>,
        is_deleted -> Bool,
        channel_id -> Integer,
        sha256 -> Nullable<Text>,
        deleted_at -> Nullable<Timestamp>,
        purged_at -> Nullable<Timestamp>,
        download_count -> BigInt,
        last_downloaded_at -> Nullable<Timestamp>,
        width -> Nullable<Integer>,
        height -> Nullable<Integer>,
        thumbnail_key -> Nullable<Text>,
        preview -> Nullable<Text>,
    }
}

diesel::table! {
    media_jobs (file_id) {
        file_id -> Integer,
        attempts -> Integer,
        leased_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    idempotency_keys (user_id, scope, client_key) {
        user_id -> Integer,
        scope -> Text,
        client_key -> Text,
        fingerprint -> Text,
        claim_token -> Text,
        state -> Text,
        status_code -> Nullable<Integer>,
        response_body -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    quota_reservations (id) {
        id -> BigInt,
        user_id -> Integer,
        bytes -> BigInt,
        created_at -> Timestamp,
    }
}

diesel::table! {
    upload_sessions (id) {
        id -> Text,
        user_id -> Integer,
        channel_id -> Integer,
        file_name -> Text,
        file_size -> BigInt,
        content_type -> Nullable<Text>,
        state -> Text,
        part_size -> BigInt,
        part_count -> Integer,
        object_key -> Text,
        s3_upload_id -> Nullable<Text>,
        sha256 -> Nullable<Text>,
        failure -> Nullable<Text>,
        file_id -> Nullable<Integer>,
        updated_at -> Timestamp,
        expires_at -> Timestamp,
        stored_size -> Nullable<BigInt>,
    }
}

diesel::joinable!(channel_members -> channels (channel_id));
diesel::joinable!(channel_members -> users (user_id));
diesel::joinable!(channels -> users (created_by));
diesel::joinable!(messages -> channels (channel_id));
diesel::joinable!(messages -> users (user_id));
diesel::joinable!(file_uploads -> messages (message_id));
diesel::joinable!(message_reactions -> messages (message_id));
diesel::joinable!(message_reactions -> users (user_id));
diesel::joinable!(message_mentions -> messages (message_id));
diesel::joinable!(message_mentions -> users (user_id));
diesel::joinable!(idempotency_keys -> users (user_id));
diesel::joinable!(quota_reservations -> users (user_id));
diesel::joinable!(media_jobs -> file_uploads (file_id));
diesel::joinable!(upload_sessions -> users (user_id));

diesel::allow_tables_to_appear_in_same_query!(
    users,
    channels,
    channel_members,
    messages,
    message_reactions,
    message_mentions,
    file_uploads,
    idempotency_keys,
    quota_reservations,
    media_jobs,
    upload_sessions,
);
