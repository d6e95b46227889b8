//! Wall-clock time as integer milliseconds, behind a clock that tests can drive.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch. Quotes expire on this clock; Redis receives the same
/// absolute time (`PXAT`) so every instance agrees on when a quote dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn as_secs(self) -> u64 {
        self.0 / 1000
    }
    pub fn plus_secs(self, secs: u64) -> UnixMillis {
        UnixMillis(self.0.saturating_add(secs.saturating_mul(1000)))
    }
}

/// The system clock, or a manual one that tests advance explicitly.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn manual(start: UnixMillis) -> Clock {
        Clock::Manual(Arc::new(AtomicU64::new(start.0)))
    }

    pub fn now(&self) -> UnixMillis {
        match self {
            Clock::System => {
                let since = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("system clock is before 1970");
                UnixMillis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            }
            Clock::Manual(ms) => UnixMillis(ms.load(Ordering::SeqCst)),
        }
    }

    /// Moves a manual clock forward; a no-op on the system clock.
    pub fn advance_ms(&self, ms: u64) {
        if let Clock::Manual(now) = self {
            now.fetch_add(ms, Ordering::SeqCst);
        }
    }
}
