//! TLS against a redis-server the test starts with a self-signed certificate it generates: the
//! tier connects when told to trust that certificate, and refuses a server it cannot verify.

use std::{sync::Arc, time::Duration};

use tiercache_core::{Entry, Tier};
use tiercache_redis::{
    RedisOptions, RedisTier,
    fred::types::config::{Config, TlsConnector},
};
use tiercache_testkit::RedisServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_is_reached_over_tls_and_an_unverifiable_one_is_refused() {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    let server = RedisServer::start_tls(&cert.pem(), &key_pair.serialize_pem()).unwrap();
    let url = format!("rediss://127.0.0.1:{}", server.tls_port().unwrap());

    // Trusting the test's certificate: the tier works over TLS.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut config = Config::from_url(&url).unwrap();
    config.tls = Some(TlsConnector::from(client).into());
    let tier = RedisTier::connect_with(RedisOptions::from_config(config))
        .await
        .unwrap();
    tier.set("k", Entry::new(&b"over tls"[..], Duration::from_secs(60)))
        .await
        .unwrap();
    let read = tier.get("k").await.unwrap().unwrap();
    assert_eq!(&read.value[..], b"over tls");

    // The URL alone trusts only the system's roots: the self-signed server is refused, not
    // reached in plaintext or without verification.
    let options = RedisOptions::from_url(&url)
        .unwrap()
        .connect_timeout(Duration::from_secs(2));
    assert!(RedisTier::connect_with(options).await.is_err());
}
