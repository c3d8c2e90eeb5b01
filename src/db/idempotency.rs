//! Idempotency keys in the database: claim, complete, release, expire. What a key may look
//! like, the answers and the HTTP side are `crate::idempotency`'s.
//!
//! A row is claimed `in_flight` by the request that inserted it (the primary key decides
//! between concurrent requests, on any instance), then either completed `done` with the
//! answer (in the transaction that did the work) or deleted (released) when the request
//! failed. Every completion and release names the claim's token, so a request whose claim
//! was taken over as abandoned can neither complete nor release its successor's.

use chrono::NaiveDateTime;
use diesel::prelude::*;

use super::AnyConnection;
use super::schema::idempotency_keys;

pub const IN_FLIGHT: &str = "in_flight";
pub const DONE: &str = "done";

/// Which key: a user's own, in one namespace (`scope`).
#[derive(Debug, Clone)]
pub struct KeyId {
    pub user_id: i32,
    pub scope: &'static str,
    pub key: String,
}

/// What a claim found.
#[derive(Debug)]
pub enum Claimed {
    /// The key is the caller's: it does the work, then completes or releases with `token`.
    Mine { token: String },
    /// Done before for the same request: its answer.
    Done { status: i32, body: String },
    /// Another request with this key is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_keys)]
struct Row {
    fingerprint: String,
    claim_token: String,
    state: String,
    status_code: Option<i32>,
    response_body: Option<String>,
    created_at: NaiveDateTime,
}

/// When the claim is judged.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub now: NaiveDateTime,
    /// Rows created before this have expired: they count as absent.
    pub expired_before: NaiveDateTime,
    /// In-flight rows created before this were abandoned (a crash): they may be taken over.
    pub abandoned_before: NaiveDateTime,
}

/// Claims `id` for a request with this fingerprint. Call in a write transaction of its own,
/// committed before the work starts, so that other requests see the claim.
pub fn claim(
    conn: &mut AnyConnection,
    id: &KeyId,
    fingerprint: &str,
    clock: Clock,
) -> QueryResult<Claimed> {
    let token = uuid::Uuid::new_v4().to_string();
    // A row may vanish (released) or change (taken over) between the statements below; look
    // again a few times, then call it in flight: it is, or just was.
    for _ in 0..3 {
        let values = (
            idempotency_keys::user_id.eq(id.user_id),
            idempotency_keys::scope.eq(id.scope),
            idempotency_keys::client_key.eq(&id.key),
            idempotency_keys::fingerprint.eq(fingerprint),
            idempotency_keys::claim_token.eq(&token),
            idempotency_keys::state.eq(IN_FLIGHT),
            idempotency_keys::created_at.eq(clock.now),
        );
        // On PostgreSQL this waits for a concurrent insert of the same key to commit or
        // roll back; SQLite has one writer.
        let inserted = crate::per_backend!(conn, |c| diesel::insert_into(idempotency_keys::table)
            .values(values)
            .on_conflict_do_nothing()
            .execute(c))?;
        if inserted == 1 {
            return Ok(Claimed::Mine { token });
        }
        let Some(row) = find(id)
            .select(Row::as_select())
            .first::<Row>(conn)
            .optional()?
        else {
            continue;
        };
        let expired = row.created_at < clock.expired_before;
        let abandoned = row.state == IN_FLIGHT && row.created_at < clock.abandoned_before;
        if expired || abandoned {
            // Compare-and-set on the old token: of two requests taking over at once, one does.
            let taken =
                diesel::update(find(id).filter(idempotency_keys::claim_token.eq(&row.claim_token)))
                    .set((
                        idempotency_keys::fingerprint.eq(fingerprint),
                        idempotency_keys::claim_token.eq(&token),
                        idempotency_keys::state.eq(IN_FLIGHT),
                        idempotency_keys::status_code.eq(None::<i32>),
                        idempotency_keys::response_body.eq(None::<String>),
                        idempotency_keys::created_at.eq(clock.now),
                    ))
                    .execute(conn)?;
            if taken == 1 {
                return Ok(Claimed::Mine { token });
            }
            continue;
        }
        return Ok(if row.fingerprint != fingerprint {
            Claimed::Mismatch
        } else if row.state == DONE {
            Claimed::Done {
                status: row.status_code.unwrap_or(200),
                body: row.response_body.unwrap_or_else(|| "null".into()),
            }
        } else {
            Claimed::InFlight
        });
    }
    Ok(Claimed::InFlight)
}

/// Stores the answer of a claimed key; whether the claim was still the caller's. Call in
/// the transaction that does the work, and fail it when this is `false`.
pub fn complete(
    conn: &mut AnyConnection,
    id: &KeyId,
    token: &str,
    status: i32,
    body: &str,
) -> QueryResult<bool> {
    let updated = diesel::update(
        find(id)
            .filter(idempotency_keys::claim_token.eq(token))
            .filter(idempotency_keys::state.eq(IN_FLIGHT)),
    )
    .set((
        idempotency_keys::state.eq(DONE),
        idempotency_keys::status_code.eq(Some(status)),
        idempotency_keys::response_body.eq(Some(body)),
    ))
    .execute(conn)?;
    Ok(updated == 1)
}

/// Deletes a claim that is still in flight and still the caller's, so the key can be used
/// again. A completed row is never released.
pub fn release(conn: &mut AnyConnection, id: &KeyId, token: &str) -> QueryResult<bool> {
    let deleted = diesel::delete(
        find(id)
            .filter(idempotency_keys::claim_token.eq(token))
            .filter(idempotency_keys::state.eq(IN_FLIGHT)),
    )
    .execute(conn)?;
    Ok(deleted == 1)
}

/// Deletes keys created before `before`; how many.
pub fn delete_expired(conn: &mut AnyConnection, before: NaiveDateTime) -> QueryResult<usize> {
    diesel::delete(idempotency_keys::table.filter(idempotency_keys::created_at.lt(before)))
        .execute(conn)
}

fn find(id: &KeyId) -> diesel::dsl::Find<idempotency_keys::table, (i32, &'static str, String)> {
    idempotency_keys::table.find((id.user_id, id.scope, id.key.clone()))
}
