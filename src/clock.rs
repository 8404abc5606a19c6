//! The source of "now" for the timestamp window and dedupe retention.
//!
//! Both checks depend on the current time, so the clock sits behind a trait:
//! production uses [`SystemClock`], tests swap in a clock they control (see
//! `FakeClock` in the `testing` module, behind the `testing` feature).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current wall-clock time.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::clock::{Clock, SystemClock};
///
/// let now = SystemClock.now();
/// assert!(now > std::time::UNIX_EPOCH);
/// ```
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Returns the current time.
    fn now(&self) -> SystemTime;
}

/// The operating system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Returns the time elapsed since the Unix epoch, or zero for an earlier time.
pub(crate) fn since_epoch(time: SystemTime) -> Duration {
    time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO)
}
