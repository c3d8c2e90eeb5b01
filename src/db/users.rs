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
