//! How a [`RedisTier`](crate::RedisTier) connects and how long it waits.

use std::time::Duration;

use fred::{
    clients::{Client, Pool},
    interfaces::ClientLike,
    types::{
        Builder,
        config::{Config, ReconnectPolicy},
    },
};
use tiercache_core::{Error, Result};

use crate::error::{from_fred, timed_out};

/// Connection and behaviour options for a [`RedisTier`](crate::RedisTier).
///
/// ```
/// use std::time::Duration;
/// use tiercache_redis::RedisOptions;
///
/// let options = RedisOptions::from_url("redis://127.0.0.1:6380")?
///     .pool_size(8)
///     .command_timeout(Duration::from_millis(200))
///     .key_prefix("svc:");
/// assert!(format!("{options:?}").contains("svc:"));
/// # Ok::<(), tiercache_core::Error>(())
/// ```
///
/// Its `Debug` output, and every error about it, shows no password.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisOptions {
    pub(crate) config: Config,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) command_timeout: Duration,
    pub(crate) reconnect: ReconnectPolicy,
    pub(crate) key_prefix: String,
    pub(crate) name: String,
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = crate::redact::REDACTED;
        f.debug_struct("RedisOptions")
            .field("server", &self.config.server)
            .field("username", &self.config.username)
            .field("password", &self.config.password.as_ref().map(|_| redacted))
            .field("database", &self.config.database)
            .field("tls", &self.config.uses_tls())
            .field("pool_size", &self.pool_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("key_prefix", &self.key_prefix)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl RedisOptions {
    /// Options for the server(s) named by `url`: `redis://`, `redis-cluster://host:port?node=...`,
    /// `redis-sentinel://...`, and `rediss://` (TLS) with the `tls` feature.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when fred cannot parse the URL, or when it asks for TLS and this build
    /// has no `tls` feature: the connection would otherwise go out in plaintext, password and
    /// all. The message shows the URL with its password redacted.
    pub fn from_url(url: &str) -> Result<Self> {
        if crate::redact::wants_tls(url) && !cfg!(feature = "tls") {
            return Err(Error::Config(format!(
                "the Redis URL {} asks for TLS, but tiercache was built without TLS: enable the \
                 `tls` feature (of tiercache, tiercache-redis or tiercache-bus)",
                crate::redact::redact_url(url)
            )));
        }
        let config = Config::from_url(url).map_err(|err| {
            Error::Config(format!(
                "bad Redis URL {}: {}",
                crate::redact::redact_url(url),
                err.details()
            ))
        })?;
        Ok(Self::from_config(config))
    }

    /// Options from a fred [`Config`], for what a URL cannot say.
    pub fn from_config(config: Config) -> Self {
        Self {
            config,
            pool_size: 4,
            connect_timeout: Duration::from_secs(5),
            command_timeout: Duration::from_millis(500),
            reconnect: ReconnectPolicy::new_exponential(0, 50, 2_000, 2),
            key_prefix: String::new(),
            name: "redis".to_owned(),
        }
    }

    /// Connections in the pool, used round-robin. Default: 4.
    #[must_use]
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = size.max(1);
        self
    }

    /// How long connecting may take at start-up. Default: 5 s.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long any one call (a read, a write, a SCAN page) may take before it fails with
    /// [`Error::Timeout`]. A stopped or overloaded server then costs at most this. Default: 500 ms.
    #[must_use]
    pub fn command_timeout(mut self, timeout: Duration) -> Self {
        self.command_timeout = timeout;
        self
    }

    /// How fred reconnects after a connection drops. Without a policy a restarted server would
    /// leave the tier failing for good. Default: exponential from 50 ms to 2 s, forever.
    #[must_use]
    pub fn reconnect_policy(mut self, policy: ReconnectPolicy) -> Self {
        self.reconnect = policy;
        self
    }

    /// A prefix this tier adds to every key, and the only keys [`clear`](tiercache_core::Tier::clear)
    /// removes. Default: none (and then `clear` refuses to run, rather than empty a database it
    /// may share).
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// A fred [`Builder`] for these options' servers, timeouts and reconnect policy (the command
    /// timeout as fred's per-command timeout). The bus and streams crates build their connections
    /// with it, so every Redis connection of a cache behaves alike; the tier builds its pool with
    /// it too, but turns fred's per-command timeout off and bounds each of its calls itself,
    /// which is cheaper under load.
    pub fn fred_builder(&self) -> Builder {
        let command_timeout = self.command_timeout;
        let connect_timeout = self.connect_timeout;
        let mut builder = Builder::from_config(self.config.clone());
        builder
            .with_performance_config(|perf| perf.default_command_timeout = command_timeout)
            .with_connection_config(|conn| {
                conn.connection_timeout = connect_timeout;
                conn.internal_command_timeout = connect_timeout;
                // A frozen server keeps its sockets open; this makes fred notice and reconnect.
                conn.unresponsive.max_timeout =
                    Some(command_timeout.max(Duration::from_millis(100)) * 2);
                conn.unresponsive.interval = Duration::from_millis(100);
            })
            .set_policy(self.reconnect.clone());
        builder
    }

    /// fred per-command options that bound a command by the command timeout, for connections
    /// that have no timeout of their own (the tier's pool). fred marks a command that hits this
    /// timeout and never writes or replays it afterwards.
    pub fn command_options(&self) -> fred::prelude::Options {
        fred::prelude::Options {
            timeout: Some(self.command_timeout),
            ..fred::prelude::Options::default()
        }
    }

    /// A connected pool of [`pool_size`](Self::pool_size) connections, as the tier uses.
    ///
    /// # Errors
    ///
    /// [`Error::Backend`] or [`Error::Timeout`] (named after [`name`](Self::name)) when the
    /// server cannot be reached within the connect timeout.
    pub async fn connect_pool(&self) -> Result<Pool> {
        self.connect_pool_with(|_| {}).await
    }

    /// A connected pool, built from [`fred_builder`](Self::fred_builder) after `adjust` changed
    /// what a caller needs, and connected within the connect timeout. Errors name
    /// [`name`](Self::name).
    ///
    /// # Errors
    ///
    /// As [`connect_pool`](Self::connect_pool).
    pub async fn connect_pool_with(&self, adjust: impl FnOnce(&mut Builder)) -> Result<Pool> {
        let mut builder = self.fred_builder();
        adjust(&mut builder);
        let pool = builder
            .build_pool(self.pool_size)
            .map_err(|err| from_fred(&self.name, None, err))?;
        self.wait_connected(pool.init()).await?;
        Ok(pool)
    }

    /// One connected client: for a connection of its own, such as one a blocking command holds.
    ///
    /// # Errors
    ///
    /// As [`connect_pool`](Self::connect_pool).
    pub async fn connect_client(&self) -> Result<Client> {
        self.connect_client_with(|_| {}).await
    }

    /// One connected client, built from [`fred_builder`](Self::fred_builder) after `adjust`
    /// changed what a caller needs (a RESP3 protocol, a larger event buffer, one cluster node),
    /// and connected within the connect timeout. Errors name [`name`](Self::name).
    ///
    /// # Errors
    ///
    /// As [`connect_pool`](Self::connect_pool).
    pub async fn connect_client_with(&self, adjust: impl FnOnce(&mut Builder)) -> Result<Client> {
        let mut builder = self.fred_builder();
        adjust(&mut builder);
        let client = builder
            .build()
            .map_err(|err| from_fred(&self.name, None, err))?;
        self.wait_connected(client.init()).await?;
        Ok(client)
    }

    /// Whether these options name a cluster.
    pub fn is_clustered(&self) -> bool {
        self.config.server.is_clustered()
    }

    async fn wait_connected<T>(
        &self,
        init: impl Future<Output = Result<T, fred::error::Error>>,
    ) -> Result<()> {
        match tokio::time::timeout(self.connect_timeout, init).await {
            Ok(Ok(_connection_task)) => Ok(()),
            Ok(Err(err)) => Err(from_fred(&self.name, None, err)),
            Err(_elapsed) => Err(timed_out(&self.name, None)),
        }
    }

    /// How long connecting may take at start-up.
    pub fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    /// The key prefix every key of the tier is stored under (see [`key_prefix`](Self::key_prefix)).
    pub fn key_prefix_value(&self) -> &str {
        &self.key_prefix
    }

    /// How long one command may take.
    pub fn command_timeout_value(&self) -> Duration {
        self.command_timeout
    }

    /// The name given with [`name`](Self::name).
    pub fn name_value(&self) -> &str {
        &self.name
    }

    /// The tier's name in stats, logs and errors. Default: `"redis"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWORD: &str = "hunter2-never-shown";

    #[test]
    fn debug_shows_the_server_but_not_the_password() {
        let options = RedisOptions::from_url(&format!("redis://app:{PASSWORD}@127.0.0.1:6380/3"))
            .unwrap_or_else(|err| panic!("{err}"));
        let shown = format!("{options:?}");
        assert!(!shown.contains(PASSWORD), "{shown}");
        assert!(shown.contains("6380") && shown.contains("app") && shown.contains("<redacted>"));
    }

    /// Without the `tls` feature fred would connect to a `rediss://` URL in plaintext (with a
    /// warning), sending AUTH in the clear; `cargo xtask test` runs this without the feature.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_tls_url_without_the_tls_feature_is_refused() {
        for url in [
            format!("rediss://:{PASSWORD}@127.0.0.1:6380"),
            "rediss-cluster://127.0.0.1:7000".to_owned(),
        ] {
            match RedisOptions::from_url(&url) {
                Err(Error::Config(message)) => {
                    assert!(message.contains("`tls` feature"), "{message}");
                    assert!(!message.contains(PASSWORD), "{message}");
                }
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[cfg(feature = "tls")]
    #[test]
    fn a_tls_url_with_the_tls_feature_asks_for_tls() {
        let options =
            RedisOptions::from_url("rediss://127.0.0.1:6380").unwrap_or_else(|err| panic!("{err}"));
        assert!(options.config.uses_tls());
    }
}
