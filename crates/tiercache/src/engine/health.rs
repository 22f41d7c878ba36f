//! [`Cache::health`](crate::Cache::health): L1, every tier (probed), and the bus.

use tiercache_core::Codec;

use super::Engine;
use crate::health::{Health, PartHealth, PartKind, PartStatus};

impl<C: Codec> Engine<C> {
    pub(crate) async fn health(&self) -> Health {
        let mut parts = Vec::new();
        if let Some((name, _)) = self.front.describe() {
            // L1 is process memory: it is there whenever the cache is.
            parts.push(PartHealth {
                name: name.to_owned(),
                kind: PartKind::Memory,
                status: PartStatus::Up,
                latency: None,
                circuit: None,
                detail: String::new(),
            });
        }
        parts.extend(self.stack.health().await);
        if let Some(bus) = self.coherence.stats() {
            let (status, detail) = if bus.connected {
                (PartStatus::Up, String::new())
            } else {
                (
                    PartStatus::Down,
                    "not connected: other instances' writes are not seen until it reconnects \
                     (then L1 is emptied)"
                        .to_owned(),
                )
            };
            parts.push(PartHealth {
                name: bus.transport,
                kind: PartKind::Bus,
                status,
                latency: None,
                circuit: None,
                detail,
            });
        }
        Health { parts }
    }
}
