use diesel::prelude::*;

use super::AnyConnection;
use super::models::{Channel, User, now};
use super::schema::{channel_members, channels, users};

pub const ROLE_OWNER: &str = "owner";
pub const ROLE_MEMBER: &str = "member";

/// Creates the channel with its creator as owner and first member.
pub fn create(
    conn: &mut AnyConnection,
    name: &str,
    is_private: bool,
    owner_id: i32,
) -> QueryResult<Channel> {
    conn.transaction(|conn| {
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
        Ok(channel)
    })
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

/// Ids of the channels `user_id` belongs to (the WebSocket's subscriptions).
pub fn ids_for_member(conn: &mut AnyConnection, user_id: i32) -> QueryResult<Vec<i32>> {
    channel_members::table
        .filter(channel_members::user_id.eq(user_id))
        .order(channel_members::channel_id.asc())
        .select(channel_members::channel_id)
        .load(conn)
}

/// Adds a member; `Ok(false)` when they already were one.
pub fn add_member(
    conn: &mut AnyConnection,
    channel_id: i32,
    user_id: i32,
    role: &str,
) -> QueryResult<bool> {
    // No ON CONFLICT over MultiConnection: insert and treat the unique violation as "already".
    let inserted = diesel::insert_into(channel_members::table)
        .values((
            channel_members::channel_id.eq(channel_id),
            channel_members::user_id.eq(user_id),
            channel_members::role.eq(role),
            channel_members::joined_at.eq(now()),
        ))
        .execute(conn);
    match inserted {
        Ok(_) => Ok(true),
        Err(diesel::result::Error::DatabaseError(
            diesel::result::DatabaseErrorKind::UniqueViolation,
            _,
        )) => Ok(false),
        Err(e) => Err(e),
    }
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
