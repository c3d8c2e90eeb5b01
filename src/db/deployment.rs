//! This deployment's identity, kept in its database.

use diesel::prelude::*;

use super::AnyConnection;
use super::schema::deployment;

/// The key prefix of this deployment's objects: the one on record, or `proposed` recorded
/// now if there is none yet. Instances starting together agree: the first insert wins and
/// everyone reads it back.
pub fn key_prefix(conn: &mut AnyConnection, proposed: &str) -> QueryResult<String> {
    let insert = diesel::insert_into(deployment::table)
        .values((deployment::id.eq(1), deployment::key_prefix.eq(proposed)))
        .on_conflict_do_nothing();
    crate::per_backend!(conn, |c| insert.execute(c))?;
    deployment::table
        .select(deployment::key_prefix)
        .filter(deployment::id.eq(1))
        .first(conn)
}
