use diesel::prelude::*;

use super::AnyConnection;
use super::models::{NewUser, User, now};
use super::schema::users;

pub fn insert(
    conn: &mut AnyConnection,
    username: &str,
    display_name: &str,
    password_hash: &str,
) -> QueryResult<User> {
    let new_user = NewUser {
        username,
        display_name,
        password_hash,
        created_at: now(),
    };
    crate::per_backend!(conn, |c| diesel::insert_into(users::table)
        .values(&new_user)
        .returning(User::as_returning())
        .get_result(c))
}

pub fn find(conn: &mut AnyConnection, id: i32) -> QueryResult<User> {
    users::table.find(id).select(User::as_select()).first(conn)
}

pub fn find_by_username(conn: &mut AnyConnection, username: &str) -> QueryResult<Option<User>> {
    users::table
        .filter(users::username.eq(username))
        .select(User::as_select())
        .first(conn)
        .optional()
}

/// The user and their password hash, for login.
pub fn find_credentials(
    conn: &mut AnyConnection,
    username: &str,
) -> QueryResult<Option<(User, String)>> {
    users::table
        .filter(users::username.eq(username))
        .select((User::as_select(), users::password_hash))
        .first(conn)
        .optional()
}

/// Grants or revokes administration; false when there is no such user.
pub fn set_admin(conn: &mut AnyConnection, username: &str, admin: bool) -> QueryResult<bool> {
    let updated = diesel::update(users::table.filter(users::username.eq(username)))
        .set(users::is_admin.eq(admin))
        .execute(conn)?;
    Ok(updated > 0)
}

pub fn is_admin(conn: &mut AnyConnection, id: i32) -> QueryResult<bool> {
    users::table.find(id).select(users::is_admin).first(conn)
}

/// Sets a user's display name; the user as now stored.
pub fn set_display_name(
    conn: &mut AnyConnection,
    id: i32,
    display_name: &str,
) -> QueryResult<User> {
    diesel::update(users::table.find(id))
        .set(users::display_name.eq(display_name))
        .execute(conn)?;
    find(conn, id)
}
