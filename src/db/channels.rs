use diesel::prelude::*;

use super::AnyConnection;
use super::models::{Channel, KIND_DM, User, now};
use super::schema::{channel_members, channels, users};

pub const ROLE_OWNER: &str = "owner";
pub const ROLE_MEMBER: &str = "member";

/// Creates the channel with its creator as owner and first member; returns it with the
/// event number of that first membership. Call inside `Db::write`, which makes it one
/// transaction.
pub fn create(
    conn: &mut AnyConnection,
    name: &str,
    is_private: bool,
    owner_id: i32,
) -> QueryResult<(Channel, i64)> {
    let values = (
        channels::name.eq(name),
        channels::is_private.eq(is_private),
        channels::created_by.eq(owner_id),
        channels::created_at.eq(now()),
    );
    let channel = crate::per_backend!(conn, |c| diesel::insert_into(channels::table)
        .values(values)
        .returning(Channel::as_returning())
        .get_result(c))?;
    add_member(conn, channel.id, owner_id, ROLE_OWNER)?;
    let seq = super::allocate_event_seq(conn, channel.id, 1)?;
    Ok((channel, seq))
}

/// Sets a channel's retention (days; `None`: the deployment's alone).
pub fn set_retention(
    conn: &mut AnyConnection,
    channel_id: i32,
    retention_days: Option<i32>,
) -> QueryResult<Channel> {
    crate::per_backend!(conn, |c| diesel::update(channels::table.find(channel_id))
        .set(channels::retention_days.eq(retention_days))
        .returning(Channel::as_returning())
        .get_result(c))
}

/// Channels with a retention of their own: `(id, days)`.
pub fn with_retention(conn: &mut AnyConnection) -> QueryResult<Vec<(i32, i32)>> {
    let rows: Vec<(i32, Option<i32>)> = channels::table
        .filter(channels::retention_days.is_not_null())
        .select((channels::id, channels::retention_days))
        .load(conn)?;
    Ok(rows
        .into_iter()
        .filter_map(|(id, days)| days.map(|d| (id, d)))
        .collect())
}

/// The unique key of the direct messages of two users: `"<smaller id>:<larger id>"`.
pub fn dm_key(a: i32, b: i32) -> String {
    format!("{}:{}", a.min(b), a.max(b))
}

pub fn find_dm(conn: &mut AnyConnection, key: &str) -> QueryResult<Option<Channel>> {
    channels::table
        .filter(channels::dm_key.eq(key))
        .select(Channel::as_select())
        .first(conn)
        .optional()
}

/// Creates the private direct-message channel of two users, both members (the creator as
/// owner). A second one for the same key is a unique violation. The caller takes the
/// event numbers of the two memberships.
pub fn create_dm(
    conn: &mut AnyConnection,
    name: &str,
    key: &str,
    creator_id: i32,
    other_id: i32,
) -> QueryResult<Channel> {
    let values = (
        channels::name.eq(name),
        channels::is_private.eq(true),
        channels::created_by.eq(creator_id),
        channels::created_at.eq(now()),
        channels::kind.eq(KIND_DM),
        channels::dm_key.eq(Some(key)),
    );
    let channel = crate::per_backend!(conn, |c| diesel::insert_into(channels::table)
        .values(values)
        .returning(Channel::as_returning())
        .get_result(c))?;
    add_member(conn, channel.id, creator_id, ROLE_OWNER)?;
    add_member(conn, channel.id, other_id, ROLE_MEMBER)?;
    Ok(channel)
}

pub fn find(conn: &mut AnyConnection, channel_id: i32) -> QueryResult<Channel> {
    channels::table
        .find(channel_id)
        .select(Channel::as_select())
        .first(conn)
}

/// The channel if `user_id` is a member; `NotFound` otherwise, whether or not it exists.
pub fn find_for_member(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
) -> QueryResult<Channel> {
    channels::table
        .inner_join(channel_members::table)
        .filter(channels::id.eq(channel_id))
        .filter(channel_members::user_id.eq(user_id))
        .select(Channel::as_select())
        .first(conn)
}

pub fn is_member(conn: &mut AnyConnection, channel_id: i32, user_id: i32) -> QueryResult<bool> {
    diesel::select(diesel::dsl::exists(
        channel_members::table
            .filter(channel_members::channel_id.eq(channel_id))
            .filter(channel_members::user_id.eq(user_id)),
    ))
    .get_result(conn)
}

pub fn list_for_member(conn: &mut AnyConnection, user_id: i32) -> QueryResult<Vec<Channel>> {
    channels::table
        .inner_join(channel_members::table)
        .filter(channel_members::user_id.eq(user_id))
        .order(channels::id.asc())
        .select(Channel::as_select())
        .load(conn)
}

pub fn list_public(conn: &mut AnyConnection) -> QueryResult<Vec<Channel>> {
    channels::table
        .filter(channels::is_private.eq(false))
        .order(channels::id.asc())
        .select(Channel::as_select())
        .load(conn)
}

/// The channels `user_id` belongs to, each with its last event number (a WebSocket's
/// subscriptions, and where their event streams stand).
pub fn subscriptions(conn: &mut AnyConnection, user_id: i32) -> QueryResult<Vec<(i32, i64)>> {
    channels::table
        .inner_join(channel_members::table)
        .filter(channel_members::user_id.eq(user_id))
        .order(channels::id.asc())
        .select((channels::id, channels::event_seq))
        .load(conn)
}

/// Adds a member. Someone who already is one is a unique violation (which aborts a
/// PostgreSQL transaction): check `is_member` first.
pub fn add_member(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    role: &str,
) -> QueryResult<()> {
    diesel::insert_into(channel_members::table)
        .values((
            channel_members::channel_id.eq(channel_id),
            channel_members::user_id.eq(user_id),
            channel_members::role.eq(role),
            channel_members::joined_at.eq(now()),
        ))
        .execute(conn)
        .map(|_| ())
}

/// Removes a member; `Ok(false)` when they were not one.
pub fn remove_member(conn: &mut AnyConnection, channel_id: i32, user_id: i32) -> QueryResult<bool> {
    let removed = diesel::delete(
        channel_members::table
            .filter(channel_members::channel_id.eq(channel_id))
            .filter(channel_members::user_id.eq(user_id)),
    )
    .execute(conn)?;
    Ok(removed > 0)
}

pub fn members(conn: &mut AnyConnection, channel_id: i32) -> QueryResult<Vec<User>> {
    users::table
        .inner_join(channel_members::table)
        .filter(channel_members::channel_id.eq(channel_id))
        .order(users::username.asc())
        .select(User::as_select())
        .load(conn)
}

/// Hides (or shows again) a channel in one member's sidebar; `false` if not a member.
pub fn set_hidden(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    hidden: bool,
) -> QueryResult<bool> {
    let changed = diesel::update(
        channel_members::table
            .filter(channel_members::channel_id.eq(channel_id))
            .filter(channel_members::user_id.eq(user_id)),
    )
    .set(channel_members::hidden.eq(hidden))
    .execute(conn)?;
    Ok(changed > 0)
}

/// Shows the channel again to every member who hid it (a new message in a DM). Writes
/// nothing when nobody did.
pub fn unhide_for_all(conn: &mut AnyConnection, channel_id: i32) -> QueryResult<()> {
    diesel::update(
        channel_members::table
            .filter(channel_members::channel_id.eq(channel_id))
            .filter(channel_members::hidden.eq(true)),
    )
    .set(channel_members::hidden.eq(false))
    .execute(conn)
    .map(|_| ())
}
