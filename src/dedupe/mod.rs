//! Deduplication of retried deliveries: the store trait and the claim
//! protocol.
//!
//! KwickPhone delivers at least once, so the same event can arrive several
//! times, even at the same moment. After a delivery is verified and parsed,
//! the layer claims the event's [`EventKey`] in a [`DedupeStore`]:
//!
//! 1. [`Claim::First`]: this delivery runs the handler. A 2xx answer marks
//!    the event done for the retention period; anything else releases the
//!    claim, so the vendor's retry runs the handler again.
//! 2. [`Claim::InFlight`]: another delivery holds the claim; answered 409
//!    with `Retry-After`.
//! 3. [`Claim::Done`]: the event was handled; answered 200 without running
//!    the handler.
//!
//! A claim is a lease. While the handler runs, the layer extends the lease
//! every third of its length, so a slow handler never loses its claim to a
//! retry; if the store cannot extend it, the handler is cut off while a
//! third of the lease is still left, and the delivery is answered 503. A
//! process that dies mid-way stops extending, so its claim lapses and a later
//! retry is processed. The guarantee holds while store outages and stalls of
//! the process stay under a third of the lease; the docs of `RedisStore`
//! (feature `redis`) say what lies beyond.

mod claim;
mod memory;
#[cfg(feature = "redis")]
mod redis;

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sha2::{Digest, Sha256};

pub use crate::error::{StoreError, StoreErrorKind};
pub(crate) use claim::ClaimGuard;
pub use memory::{DEFAULT_CAPACITY, MemoryStore};
#[cfg(feature = "redis")]
pub use redis::{RedisStore, RedisStoreBuilder};

/// A boxed future, as returned by [`DedupeStore`] and
/// [`SecretSource`](crate::SecretSource) methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The identity of an event: its number, its type and its call.
///
/// It never depends on the body's bytes or the signature, since a retry is
/// signed anew and may be serialized differently. Keys of different numbers
/// never collide, so one tenant's events cannot block another's.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::dedupe::EventKey;
///
/// let a = EventKey::new("num_12", "call.completed", "CA1");
/// let b = EventKey::new("num_1", "2call.completed", "CA1");
/// assert_ne!(a.digest(), b.digest());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EventKey {
    /// The three fields one after the other, in one allocation that clones
    /// share: a delivery keeps a copy for its claim.
    fields: Arc<str>,
    /// Where `number_id` and `event_type` end in `fields`.
    ends: [usize; 2],
    /// Computed once: a delivery's claim and its completion both need it.
    digest: [u8; 16],
}

impl EventKey {
    /// Creates the key of one event.
    pub fn new(number_id: &str, event_type: &str, call_sid: &str) -> Self {
        let ends = [number_id.len(), number_id.len() + event_type.len()];
        let mut fields = String::with_capacity(ends[1] + call_sid.len());
        for field in [number_id, event_type, call_sid] {
            fields.push_str(field);
        }
        Self {
            fields: fields.into(),
            ends,
            digest: digest_of([number_id, event_type, call_sid]),
        }
    }

    /// Returns the number the event belongs to.
    pub fn number_id(&self) -> &str {
        &self.fields[..self.ends[0]]
    }

    /// Returns the event type, such as `call.completed`.
    pub fn event_type(&self) -> &str {
        &self.fields[self.ends[0]..self.ends[1]]
    }

    /// Returns the call the event is about.
    pub fn call_sid(&self) -> &str {
        &self.fields[self.ends[1]..]
    }

    /// Returns a 16-byte digest of the three fields, each length-prefixed so
    /// that no two distinct keys share an encoding. Stores keep this instead of
    /// the strings to stay small.
    pub fn digest(&self) -> [u8; 16] {
        self.digest
    }
}

fn digest_of(fields: [&str; 3]) -> [u8; 16] {
    let mut hasher = Sha256::new();
    for field in fields {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    let full = hasher.finalize();
    let mut short = [0; 16];
    short.copy_from_slice(&full[..16]);
    short
}

impl fmt::Debug for EventKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventKey")
            .field("number_id", &self.number_id())
            .field("event_type", &self.event_type())
            .field("call_sid", &self.call_sid())
            .finish()
    }
}

/// Proof that a delivery holds a claim; stores compare it before they mark
/// an event done or release it.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken([u8; 16]);

impl ClaimToken {
    /// Returns a token that no other claim, in this process or another, is
    /// expected to share.
    pub fn random() -> Self {
        static PROCESS: OnceLock<u64> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);

        let process = *PROCESS.get_or_init(random_u64);
        let count = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut bytes = [0; 16];
        bytes[..8].copy_from_slice(&process.to_be_bytes());
        bytes[8..].copy_from_slice(&(count ^ random_u64()).to_be_bytes());
        Self(bytes)
    }

    /// Returns the token's bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Returns the token as 32 lower-case hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for ClaimToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClaimToken({})", self.to_hex())
    }
}

/// Returns 64 bits from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// A store's answer to a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// No delivery of this event was seen, or the last one failed: this
    /// delivery now holds the claim.
    First(ClaimToken),
    /// Another delivery holds the claim right now.
    InFlight,
    /// The event was handled already.
    Done,
}

/// Where claims and done-markers live.
///
/// Implementations must make [`claim`](Self::claim) atomic: of any number of
/// concurrent claims of one key, at most one gets [`Claim::First`]. The other
/// methods act only if the token still holds the claim.
pub trait DedupeStore: Send + Sync + fmt::Debug + 'static {
    /// Claims `key` for `lease`, unless it is held or done.
    ///
    /// # Errors
    ///
    /// Returns a [`StoreError`] when the store cannot answer.
    fn claim<'a>(
        &'a self,
        key: &'a EventKey,
        lease: Duration,
    ) -> BoxFuture<'a, Result<Claim, StoreError>>;

    /// Extends a held claim's lease to `lease` from now.
    ///
    /// # Errors
    ///
    /// Returns [`StoreErrorKind::ClaimLost`] when `token` no longer holds the
    /// claim, or [`StoreErrorKind::Unavailable`].
    fn extend<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        lease: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Turns a held claim into a done-marker kept for `retention`.
    ///
    /// The handler has run when this is called, so a store should also mark
    /// the event done when the claim lapsed and no other delivery claimed the
    /// event since, and answer `Ok` when it is done already.
    ///
    /// # Errors
    ///
    /// Returns [`StoreErrorKind::ClaimLost`] when another delivery holds the
    /// claim, or [`StoreErrorKind::Unavailable`].
    fn complete<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
        retention: Duration,
    ) -> BoxFuture<'a, Result<(), StoreError>>;

    /// Gives up a held claim so that the next delivery is processed.
    ///
    /// # Errors
    ///
    /// Returns [`StoreErrorKind::Unavailable`] when the store cannot answer;
    /// the claim then lapses with its lease.
    fn release<'a>(
        &'a self,
        key: &'a EventKey,
        token: ClaimToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_different_tenants_never_collide() {
        let cases = [
            (
                ("num_12", "call.completed", "CA1"),
                ("num_13", "call.completed", "CA1"),
            ),
            (
                ("num_1", "2call.completed", "CA1"),
                ("num_12", "call.completed", "CA1"),
            ),
            (("a", "b", "c"), ("a", "", "bc")),
            (
                ("num_12", "call.completed", "CA1"),
                ("num_12", "call.started", "CA1"),
            ),
        ];
        for (a, b) in cases {
            let a = EventKey::new(a.0, a.1, a.2);
            let b = EventKey::new(b.0, b.1, b.2);
            assert_ne!(a.digest(), b.digest(), "{a:?} vs {b:?}");
        }
        let same = EventKey::new("num_12", "call.completed", "CA1");
        assert_eq!(same.digest(), same.clone().digest());
    }

    #[test]
    fn keys_give_back_their_fields_and_differ_by_any_of_them() {
        let cases = [
            ("num_12", "call.completed", "CA1"),
            ("num_1", "2call.completed", "CA1"),
            ("", "", ""),
            ("a", "", "bc"),
            ("a", "b", "c"),
            ("ab", "", "c"),
        ];
        let keys: Vec<_> = cases.iter().map(|c| EventKey::new(c.0, c.1, c.2)).collect();
        for (i, (key, case)) in keys.iter().zip(&cases).enumerate() {
            let fields = (key.number_id(), key.event_type(), key.call_sid());
            assert_eq!(fields, *case);
            for (j, other) in keys.iter().enumerate() {
                assert_eq!(key == other, i == j, "{key:?} vs {other:?}");
            }
        }
    }

    #[test]
    fn tokens_are_distinct() {
        let tokens: std::collections::HashSet<_> =
            (0..1000).map(|_| ClaimToken::random()).collect();
        assert_eq!(tokens.len(), 1000);
    }
}
