//! The service's settings: command-line flags, with `REDIS_URL` and `DATABASE_URL` from the
//! environment as defaults.

/// The settings of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The port on 127.0.0.1 (`--port`, default 8080).
    pub port: u16,
    /// Redis (`--redis`, else `REDIS_URL`, else `redis://127.0.0.1:6379`). Prefer the
    /// environment for URLs with a password: command lines are visible to every local user.
    pub redis_url: String,
    /// PostgreSQL (`--database`, else `DATABASE_URL`, else the local server's `test` database).
    pub database_url: String,
    /// The schema of the service's table (`--schema`, default `tiercache_service`).
    pub schema: String,
    /// Products seeded into an empty table (`--seed`, default 10,000).
    pub seed: i64,
    /// Whether reads go through tiercache (`--no-cache` turns it off).
    pub cache: bool,
    /// Database connections (`--db-connections`, default 4).
    pub db_connections: usize,
    /// Drop the schema and seed it again on start (`--reset`), for a run that starts from the
    /// seeded data. Give it to one instance only.
    pub reset: bool,
    /// The cache's namespace in Redis (`--namespace`, default [`NAMESPACE`](crate::NAMESPACE)).
    pub namespace: String,
}

/// The local PostgreSQL the machine runs (trust authentication).
pub const DEFAULT_DATABASE_URL: &str = "host=127.0.0.1 port=5432 user=postgres dbname=test";

impl Config {
    /// Reads the flags in `args` (without the program name).
    ///
    /// # Errors
    ///
    /// A message naming the flag that is unknown, lacks its value or has a bad one.
    pub fn from_args(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut config = Self {
            port: 8080,
            redis_url: std::env::var("REDIS_URL")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned()),
            database_url: std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| DEFAULT_DATABASE_URL.to_owned()),
            schema: "tiercache_service".to_owned(),
            seed: 10_000,
            cache: true,
            db_connections: 4,
            namespace: crate::NAMESPACE.to_owned(),
            reset: false,
        };
        let mut args = args.into_iter();
        while let Some(flag) = args.next() {
            if flag == "--no-cache" {
                config.cache = false;
                continue;
            }
            if flag == "--reset" {
                config.reset = true;
                continue;
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
            let number = |what: &str| format!("{flag} takes {what}, not {value:?}");
            match flag.as_str() {
                "--port" => config.port = value.parse().map_err(|_| number("a port"))?,
                "--redis" => config.redis_url = value,
                "--database" => config.database_url = value,
                "--schema" => config.schema = value,
                "--namespace" => config.namespace = value,
                "--seed" => config.seed = value.parse().map_err(|_| number("a count"))?,
                "--db-connections" => {
                    config.db_connections = value.parse().map_err(|_| number("a count"))?;
                }
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        Ok(config)
    }
}
