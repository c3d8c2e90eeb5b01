use clap::{Parser, Subcommand};

use chatserver::config::Settings;
use chatserver::db::Db;
use chatserver::startup::Application;
use chatserver::telemetry;

/// A real-time chat server whose attachments live in S3.
/// Configured by environment variables (and a `.env` file); see README.md.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Sweep the file store once: purge deleted files' objects, remove orphans, report
    /// missing objects. Prints the report as JSON.
    Gc,
    /// Check the file store against the database: rows whose object is missing or of
    /// another size, objects under this deployment's prefix with no row, and (with
    /// `--rehash`) objects whose SHA-256 differs from the row's. Prints the report as JSON;
    /// exits 0 when all agree, 2 when something is wrong, 1 when it could not check.
    Verify {
        /// Read every live object and compare its SHA-256 with the recorded one.
        #[arg(long)]
        rehash: bool,
        /// How many entries of each kind of finding the report lists (all are counted).
        #[arg(long, default_value_t = 1000)]
        max_listed: usize,
    },
    /// Grant or revoke administration (recorded in the database).
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
}

#[derive(Subcommand)]
enum AdminAction {
    /// Make an existing user an administrator.
    Grant { username: String },
    /// Take administration away from a user.
    Revoke { username: String },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::init();
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            // One line, with the cause chain, for the operator.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `verify`'s exit status when the store and the database disagree (1 is any failure).
const VERIFY_FOUND_PROBLEMS: u8 = 2;

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    let settings = Settings::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(settings)
                .await?
                .run_until_stopped()
                .await?
        }
        Command::Migrate => {
            let target = settings.database.clone();
            let applied =
                tokio::task::spawn_blocking(move || Db::connect(&target)?.migrate()).await??;
            println!(
                "{applied} migration(s) applied to the {} database",
                settings.database.backend_name()
            );
        }
        Command::Admin { action } => {
            let (username, admin) = match action {
                AdminAction::Grant { username } => (username, true),
                AdminAction::Revoke { username } => (username, false),
            };
            let target = settings.database.clone();
            let name = username.clone();
            let found = tokio::task::spawn_blocking(move || -> anyhow::Result<bool> {
                let db = Db::connect(&target)?;
                db.migrate()?;
                let mut conn = db.connection()?;
                Ok(chatserver::db::users::set_admin(&mut conn, &name, admin)?)
            })
            .await??;
            anyhow::ensure!(found, "no user named {username:?}");
            let verb = if admin { "is now" } else { "is no longer" };
            println!("{username} {verb} an administrator");
        }
        Command::Gc => {
            // The database and the store only: no hub, no Redis, no listener.
            let (db, store) = chatserver::startup::connect_storage(
                &settings,
                &chatserver::metrics::Metrics::new(),
            )
            .await?;
            let sweeper = chatserver::gc::Sweeper {
                db,
                store,
                settings: std::sync::Arc::new(settings),
            };
            let report = chatserver::gc::sweep(&sweeper)
                .await
                .map_err(|e| anyhow::anyhow!("{e}: {e:?}"))?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Verify { rehash, max_listed } => {
            // Like `gc`: the database and the store only.
            let (db, store) = chatserver::startup::connect_storage(
                &settings,
                &chatserver::metrics::Metrics::new(),
            )
            .await?;
            let options = chatserver::verify::VerifyOptions {
                max_listed,
                ..chatserver::verify::VerifyOptions::from_settings(&settings, rehash)
            };
            let report = chatserver::verify::verify(&db, &store, &options)
                .await
                .map_err(|e| anyhow::anyhow!("{e}: {e:?}"))?;
            println!("{}", serde_json::to_string(&report)?);
            if !report.ok {
                return Ok(std::process::ExitCode::from(VERIFY_FOUND_PROBLEMS));
            }
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}
