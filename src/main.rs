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
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line, with the cause chain, for the operator.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
    }
    Ok(())
}
