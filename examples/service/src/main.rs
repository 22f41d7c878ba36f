//! One instance of the products service: `tiercache-service --port 8080 [--no-cache]` (see
//! `Config` for every flag). `cargo xtask service` starts two or three of them.
#![expect(
    clippy::print_stderr,
    reason = "a command-line program reports on the terminal"
)]

use std::process::ExitCode;

use tiercache_service::{AppState, Config, Db, router};

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tiercache-service: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM (what `cargo xtask service` and process managers send).
async fn shutdown() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // NOTE: without the handler only Ctrl-C (or a kill) stops the server.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_args(std::env::args().skip(1))?;
    let db = Db::connect(&config.database_url, &config.schema, config.db_connections).await?;
    if config.reset {
        db.drop_schema().await?;
    }
    db.prepare(config.seed).await?;
    let cache = if config.cache {
        Some(tiercache_service::cache(&config.redis_url, &config.namespace).await?)
    } else {
        None
    };
    let state = AppState::new(db, cache, tiercache_service::prometheus()?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.port)).await?;
    eprintln!(
        "tiercache-service: listening on http://127.0.0.1:{} (cache {})",
        config.port,
        if config.cache { "on" } else { "off" }
    );
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown())
        .await?;
    Ok(())
}
