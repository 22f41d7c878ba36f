//! [`BusKey`]: the secret every instance of a fleet shares to authenticate its bus messages.

use std::{fmt, sync::Arc};

use crate::{Error, Result};

/// The shortest key accepted, in bytes.
pub const MIN_BUS_KEY_LEN: usize = 16;

/// A shared secret with which every bus message carries a MAC (HMAC-SHA256 in the Redis
/// transports), so a receiver drops what someone without the key published.
///
/// Cloning is cheap (the bytes are shared). The bytes never appear in `Debug` output, errors or
/// logs.
///
/// ```
/// use tiercache_core::BusKey;
///
/// let key = BusKey::new(b"32 random bytes from your secret store")?;
/// assert_eq!(format!("{key:?}"), "BusKey(<redacted>)");
/// assert!(BusKey::new(b"short").is_err());
/// # Ok::<(), tiercache_core::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BusKey {
    secret: Arc<[u8]>,
}

impl BusKey {
    /// A key of `secret`: at least [`MIN_BUS_KEY_LEN`] bytes (32 random bytes is what HMAC-SHA256
    /// wants).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a shorter secret (its length is said, never its bytes).
    pub fn new(secret: impl AsRef<[u8]>) -> Result<Self> {
        let secret = secret.as_ref();
        if secret.len() < MIN_BUS_KEY_LEN {
            return Err(Error::Config(format!(
                "a bus key needs at least {MIN_BUS_KEY_LEN} bytes, this one has {}",
                secret.len()
            )));
        }
        Ok(Self {
            secret: Arc::from(secret),
        })
    }

    /// The secret, for a transport that computes MACs with it.
    pub fn secret(&self) -> &[u8] {
        &self.secret
    }
}

impl fmt::Debug for BusKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BusKey(<redacted>)")
    }
}
