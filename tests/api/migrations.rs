//! Migrations applied from scratch on the backend under test, and the schema they leave.

use chatserver::config::DatabaseTarget;
use chatserver::db::models::FileUpload;
use chatserver::db::schema::file_uploads;
use chatserver::db::{AnyConnection, Db};
use diesel::prelude::*;
use diesel::sql_types::Text;

use crate::helpers::{PostgresDatabase, TestDatabase, test_database};

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

fn index_names(conn: &mut AnyConnection) -> Vec<String> {
    let sql = match conn {
        AnyConnection::Postgresql(_) => {
            "SELECT indexname AS name FROM pg_indexes WHERE schemaname = 'public'"
        }
        AnyConnection::Sqlite(_) => "SELECT name FROM sqlite_master WHERE type = 'index'",
    };
    diesel::sql_query(sql)
        .load::<Name>(conn)
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect()
}

#[tokio::test]
async fn migrations_apply_from_scratch_once() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _postgres) = match test_database() {
        TestDatabase::Sqlite => (DatabaseTarget::Sqlite(dir.path().join("fresh.db")), None),
        TestDatabase::Postgres(server) => {
            let db = PostgresDatabase::create(&server);
            (DatabaseTarget::Postgres(db.url.clone()), Some(db))
        }
    };
    let db = Db::connect(&target).unwrap();
    assert!(
        db.migrate().unwrap() >= 1,
        "a fresh database gets every migration"
    );
    assert_eq!(db.migrate().unwrap(), 0, "a second run applies nothing");

    let indexes = db.run(|conn| Ok(index_names(conn))).await.unwrap();
    for expected in [
        "idx_messages_channel_read",
        "idx_file_uploads_message_id",
        "idx_file_uploads_uploaded_by",
        "idx_file_uploads_uploaded_at",
    ] {
        assert!(
            indexes.iter().any(|i| i == expected),
            "missing {expected} in {indexes:?}"
        );
    }
    // Every column the code maps exists with a compatible type.
    let rows: Vec<FileUpload> = db
        .run(|conn| {
            Ok(file_uploads::table
                .select(FileUpload::as_select())
                .load(conn)?)
        })
        .await
        .unwrap();
    assert!(rows.is_empty());
}
