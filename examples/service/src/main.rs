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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_args(std::env::args().skip(1))?;
    let db = Db::connect(&config.database_url, &config.schema, config.db_connections).await?;
    db.prepare(config.seed).await?;
    let cache = if config.cache {
        Some(tiercache_service::cache(&config.redis_url).await?)
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
        .with_graceful_shutdown(async {
            // NOTE: if the signal cannot be listened for, the server runs until it is killed.
            let _signal = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
