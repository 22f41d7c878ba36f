//! A tier written the way a third party would write one: depending on `tiercache-core` alone.
//!
//! `FileTier` keeps each entry in a file of its own (the file name is the key in hex; the file
//! holds the expiry as Unix milliseconds, then the value). It passes the same conformance suite
//! as the built-in tiers (`cargo xtask test` runs it), and here it serves as L2 under the typed
//! L1: a second cache with an empty L1 finds what the first one wrote.
//!
//! Run it with `cargo run --example custom_tier`.
#![expect(
    clippy::print_stdout,
    reason = "an example shows its results on the terminal"
)]

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tiercache_core::{Entry, Error, Result, Tier, async_trait};

/// A tier that stores entries as files in one directory, which it removes when dropped.
#[derive(Debug)]
pub struct FileTier {
    dir: PathBuf,
}

impl FileTier {
    /// A tier over a new, empty directory.
    ///
    /// # Errors
    ///
    /// When the directory cannot be created.
    pub fn create(dir: impl Into<PathBuf>) -> io::Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path_of(&self, key: &str) -> PathBuf {
        let name: String = key.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(name)
    }

    fn key_of(path: &Path) -> Option<String> {
        let name = path.file_name()?.to_str()?;
        let bytes: Option<Vec<u8>> = (0..name.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(name.get(i..i + 2)?, 16).ok())
            .collect();
        String::from_utf8(bytes?).ok()
    }

    fn failed(&self, key: &str, err: io::Error) -> Error {
        Error::backend("file", Some(key), err)
    }

    async fn keys(&self) -> io::Result<Vec<(String, PathBuf)>> {
        let mut found = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dir).await?;
        while let Some(file) = dir.next_entry().await? {
            let path = file.path();
            if let Some(key) = Self::key_of(&path) {
                found.push((key, path));
            }
        }
        Ok(found)
    }
}

impl Drop for FileTier {
    fn drop(&mut self) {
        // Best effort: a leftover temp directory is harmless.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Unix milliseconds for an `Instant`, through the wall clock (files outlive the process).
fn to_unix_ms(at: Instant) -> u64 {
    let now = SystemTime::now();
    let wall = match at.checked_duration_since(Instant::now()) {
        Some(ahead) => now + ahead,
        None => now,
    };
    let ms = wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(ms).unwrap_or(u64::MAX)
}

fn from_unix_ms(ms: u64) -> Instant {
    let wall = UNIX_EPOCH + Duration::from_millis(ms);
    let ahead = wall.duration_since(SystemTime::now()).unwrap_or_default();
    Instant::now() + ahead
}

fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[async_trait]
impl Tier for FileTier {
    fn name(&self) -> &str {
        "file"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>> {
        let bytes = match tokio::fs::read(self.path_of(key)).await {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(self.failed(key, err)),
        };
        // A truncated file (a crash mid-write) reads as a miss.
        let Some((expiry, value)) = bytes.split_first_chunk::<8>() else {
            return Ok(None);
        };
        let entry = Entry::expiring_at(value.to_vec(), from_unix_ms(u64::from_le_bytes(*expiry)));
        Ok((!entry.is_expired()).then_some(entry))
    }

    async fn set(&self, key: &str, entry: Entry) -> Result<()> {
        if entry.is_expired() {
            return self.remove(key).await;
        }
        let mut file = to_unix_ms(entry.expires_at).to_le_bytes().to_vec();
        file.extend_from_slice(&entry.value);
        // Write then rename, so a reader never sees half a file.
        let path = self.path_of(key);
        let partial = path.with_extension("partial");
        tokio::fs::write(&partial, file)
            .await
            .map_err(|err| self.failed(key, err))?;
        tokio::fs::rename(&partial, &path)
            .await
            .map_err(|err| self.failed(key, err))
    }

    async fn remove(&self, key: &str) -> Result<()> {
        ignore_missing(tokio::fs::remove_file(self.path_of(key)).await)
            .map_err(|err| self.failed(key, err))
    }

    async fn remove_prefix(&self, prefix: &str) -> Result<u64> {
        let mut removed = 0;
        for (key, path) in self.keys().await.map_err(|err| self.failed(prefix, err))? {
            if key.starts_with(prefix) {
                ignore_missing(tokio::fs::remove_file(path).await)
                    .map_err(|err| self.failed(&key, err))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn clear(&self) -> Result<()> {
        self.remove_prefix("").await.map(drop)
    }

    async fn health(&self) -> Result<()> {
        tokio::fs::metadata(&self.dir)
            .await
            .map(drop)
            .map_err(|err| self.failed("", err))
    }
}

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("tiercache-{name}-{}", std::process::id()))
}

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    use std::sync::Arc;
    use tiercache::{Cache, CacheStrategy, MemoryTier};

    let files: Arc<dyn Tier> = Arc::new(FileTier::create(temp_dir("example"))?);
    let build = || {
        Cache::builder()
            .namespace("example")
            .memory(MemoryTier::new(1_000))
            .tier(Arc::clone(&files))
            .build()
    };

    let first = build().await?;
    first
        .set(
            "greeting",
            &"hello from a file".to_owned(),
            CacheStrategy::ShortTerm,
        )
        .await?;

    let second = build().await?; // another instance: its L1 is empty
    let greeting: Option<String> = second.get("greeting").await?;
    println!("second cache read        -> {greeting:?}");
    let l2 = second.stats().tiers;
    println!(
        "second cache's file tier -> hits {}, misses {}",
        l2[0].hits, l2[0].misses
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tiercache::{Cache, CacheStrategy, MemoryTier};

    use super::*;

    #[tokio::test]
    async fn file_tier_passes_the_conformance_suite() {
        let tier = FileTier::create(temp_dir("conformance")).unwrap();
        tiercache_testkit::conformance::run(&tier, "conformance:").await;
    }

    #[tokio::test]
    async fn file_tier_serves_as_l2_under_the_typed_l1() {
        let files: Arc<dyn Tier> = Arc::new(FileTier::create(temp_dir("l2")).unwrap());
        let over_files = || {
            Cache::builder()
                .namespace("t")
                .memory(MemoryTier::new(10))
                .tier(Arc::clone(&files))
                .build()
        };
        let writer = over_files().await.unwrap();
        writer
            .set("k", &vec![1u32, 2, 3], CacheStrategy::ShortTerm)
            .await
            .unwrap();

        let reader = over_files().await.unwrap();
        assert_eq!(
            reader.get::<Vec<u32>>("k").await.unwrap(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(reader.stats().tiers[0].hits, 1);
        assert_eq!(reader.stats().memory.map(|m| m.promotions), Some(1));
    }
}
