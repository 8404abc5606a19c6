//! Webhook secrets: the [`Secret`] type, per-number lookup and rotation.
//!
//! KwickPhone gives each number its own webhook secret. [`Secrets`] maps a
//! `number_id` to one or more secrets: while a secret is being rotated, the old
//! one and its successor both verify. The map can change while the server
//! runs. Users who keep secrets elsewhere implement [`SecretSource`].

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, PoisonError, RwLock};

use hmac::{Hmac, KeyInit};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::dedupe::BoxFuture;
use crate::error::{ConfigError, SecretSourceError};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// A webhook secret, such as `whsec_8f3c...`, with its HMAC key prepared once.
///
/// The secret is the HMAC key exactly as the vendor gave it, prefix included:
/// it is never base64-decoded and `whsec_` is never stripped. `Debug` and
/// `Display` print `Secret(..)` and never the value.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::Secret;
///
/// let secret = Secret::new("whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
/// assert_eq!(format!("{secret:?}"), "Secret(..)");
/// # Ok::<(), kwickphone_webhooks::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Secret {
    value: Arc<str>,
    keyed: HmacSha256,
}

impl Secret {
    /// Creates a secret from the value the vendor returned.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] when the value is empty or starts or ends with
    /// white space, which almost always means it was pasted or read wrongly.
    ///
    /// # Panics
    ///
    /// Does not panic: HMAC-SHA256 takes keys of any length.
    pub fn new(value: impl Into<String>) -> Result<Self, ConfigError> {
        let value: String = value.into();
        if value.is_empty() {
            return Err(ConfigError::EmptySecret);
        }
        if value.trim() != value {
            return Err(ConfigError::SecretWhitespace);
        }
        let keyed =
            HmacSha256::new_from_slice(value.as_bytes()).expect("HMAC accepts keys of any length");
        Ok(Self {
            value: value.into(),
            keyed,
        })
    }

    /// Returns the HMAC state keyed with this secret, ready to be cloned.
    pub(crate) fn keyed(&self) -> &HmacSha256 {
        &self.keyed
    }
}

impl PartialEq for Secret {
    fn eq(&self, other: &Self) -> bool {
        self.value.as_bytes().ct_eq(other.value.as_bytes()).into()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The secrets that verify one number's deliveries, newest last.
pub type SecretList = Arc<[Secret]>;

/// Looks up the webhook secrets of a number.
///
/// Implement it to read secrets from a database or a vault; the lookup may be
/// asynchronous. [`Secrets`] is the in-process implementation.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::{BoxFuture, Secret, SecretList, SecretSource, SecretSourceError};
///
/// #[derive(Debug)]
/// struct FromEnv;
///
/// impl SecretSource for FromEnv {
///     fn secrets_for<'a>(
///         &'a self,
///         number_id: &'a str,
///     ) -> BoxFuture<'a, Result<Option<SecretList>, SecretSourceError>> {
///         let key = format!("SECRET_{number_id}");
///         let found = std::env::var(key).ok().and_then(|v| Secret::new(v).ok());
///         Box::pin(async move { Ok(found.map(|s| SecretList::from(vec![s]))) })
///     }
/// }
/// ```
pub trait SecretSource: Send + Sync + fmt::Debug + 'static {
    /// Returns the secrets of `number_id`, or `None` for an unknown number.
    ///
    /// # Errors
    ///
    /// Returns a [`SecretSourceError`] when the lookup itself fails; the
    /// delivery is then answered 503 so that the vendor retries it.
    fn secrets_for<'a>(
        &'a self,
        number_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretList>, SecretSourceError>>;

    /// Returns every secret, if the source can list them cheaply.
    ///
    /// A signed body whose `number_id` cannot be read is checked against these
    /// so that it is answered 400 (verified but undecodable) rather than 401.
    /// The default returns `None`, and such bodies are answered 401.
    fn all_secrets(&self) -> Option<SecretList> {
        None
    }
}

/// The most secrets [`Secrets::all_secrets`] offers for a body without a
/// readable `number_id`, which bounds the work an unsigned body can cause.
///
/// Such a body gains only a 400 instead of a 401 by being checked at all, so
/// the bound is kept to the size of a small deployment with a rotation under
/// way; beyond it such bodies are answered 401 without any HMAC.
pub const MAX_FALLBACK_SECRETS: usize = 4;

/// Per-number webhook secrets held in memory, shared and updatable at run time.
///
/// Clones share the same map, so a clone kept by the application can rotate
/// secrets while the layer serves requests.
///
/// # Example
///
/// ```
/// use kwickphone_webhooks::{Secret, Secrets};
///
/// let secrets = Secrets::new();
/// secrets.add("num_12", Secret::new("whsec_old")?);
/// // Rotation: both secrets verify until the old one is retired.
/// secrets.add("num_12", Secret::new("whsec_new")?);
/// secrets.retire("num_12", &Secret::new("whsec_old")?);
/// assert_eq!(secrets.count("num_12"), 1);
/// # Ok::<(), kwickphone_webhooks::ConfigError>(())
/// ```
#[derive(Clone, Default)]
pub struct Secrets {
    inner: Arc<RwLock<Table>>,
}

#[derive(Default)]
struct Table {
    by_number: HashMap<String, SecretList>,
    every_number: Option<SecretList>,
}

impl Secrets {
    /// Creates an empty map: every number is unknown until added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates a map in which one secret verifies every number.
    pub fn single(secret: Secret) -> Self {
        let secrets = Self::new();
        secrets.write().every_number = Some(Arc::from(vec![secret]));
        secrets
    }

    /// Parses `num_12=whsec_a,num_13=whsec_b`; a number named twice keeps both
    /// secrets, for rotation.
    ///
    /// # Errors
    ///
    /// Returns a [`ConfigError`] for an entry without `=`, an empty number or
    /// an invalid secret.
    ///
    /// # Example
    ///
    /// ```
    /// use kwickphone_webhooks::Secrets;
    ///
    /// let secrets = Secrets::parse_list("num_12=whsec_a,num_13=whsec_b,num_12=whsec_c")?;
    /// assert_eq!(secrets.count("num_12"), 2);
    /// # Ok::<(), kwickphone_webhooks::ConfigError>(())
    /// ```
    pub fn parse_list(list: &str) -> Result<Self, ConfigError> {
        let secrets = Self::new();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (number_id, value) = entry
                .split_once('=')
                .ok_or(ConfigError::MalformedSecretList)?;
            let number_id = number_id.trim();
            if number_id.is_empty() {
                return Err(ConfigError::MalformedSecretList);
            }
            secrets.add(number_id, Secret::new(value.trim())?);
        }
        Ok(secrets)
    }

    /// Adds a secret for `number_id`, keeping the ones it already has.
    pub fn add(&self, number_id: impl Into<String>, secret: Secret) {
        let mut table = self.write();
        let list = table.by_number.entry(number_id.into()).or_default();
        if !list.contains(&secret) {
            *list = list.iter().cloned().chain([secret]).collect();
        }
    }

    /// Replaces every secret of `number_id`; an empty list removes the number.
    pub fn replace(&self, number_id: impl Into<String>, secrets: Vec<Secret>) {
        let number_id = number_id.into();
        let mut table = self.write();
        if secrets.is_empty() {
            table.by_number.remove(&number_id);
        } else {
            table.by_number.insert(number_id, secrets.into());
        }
    }

    /// Removes one secret of `number_id`, at the end of a rotation.
    ///
    /// Add the successor first: once its last secret is retired, the number
    /// is unknown and its deliveries are answered 401 `unknown_number`.
    pub fn retire(&self, number_id: &str, secret: &Secret) {
        let mut table = self.write();
        let Some(list) = table.by_number.get_mut(number_id) else {
            return;
        };
        *list = list.iter().filter(|s| *s != secret).cloned().collect();
        if list.is_empty() {
            table.by_number.remove(number_id);
        }
    }

    /// Returns how many secrets verify `number_id` right now.
    pub fn count(&self, number_id: &str) -> usize {
        self.lookup(number_id).map_or(0, |list| list.len())
    }

    /// Returns the secrets of `number_id`, without going through a future.
    pub fn lookup(&self, number_id: &str) -> Option<SecretList> {
        let table = self.read();
        let found = table
            .by_number
            .get(number_id)
            .or(table.every_number.as_ref());
        found.cloned()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SecretSource for Secrets {
    fn secrets_for<'a>(
        &'a self,
        number_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<SecretList>, SecretSourceError>> {
        let found = self.lookup(number_id);
        Box::pin(std::future::ready(Ok(found)))
    }

    fn all_secrets(&self) -> Option<SecretList> {
        let table = self.read();
        let all = table.every_number.iter().chain(table.by_number.values());
        let list: Vec<Secret> = all.flat_map(|l| l.iter().cloned()).collect();
        (list.len() <= MAX_FALLBACK_SECRETS).then(|| list.into())
    }
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let table = self.read();
        f.debug_struct("Secrets")
            .field("numbers", &table.by_number.len())
            .field("every_number", &table.every_number.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(value: &str) -> Secret {
        Secret::new(value).expect("test secrets are valid")
    }

    #[test]
    fn secret_values_never_print() {
        let s = secret("whsec_topsecret");
        for shown in [format!("{s:?}"), format!("{s}"), format!("{s:#?}")] {
            assert!(!shown.contains("topsecret"), "{shown}");
        }
    }

    #[test]
    fn refuses_empty_and_padded_secrets() {
        let cases = [
            ("empty", "", ConfigError::EmptySecret),
            ("leading", " whsec_a", ConfigError::SecretWhitespace),
            ("trailing", "whsec_a\n", ConfigError::SecretWhitespace),
        ];
        for (name, value, want) in cases {
            assert_eq!(Secret::new(value).err(), Some(want), "{name}");
        }
    }

    #[test]
    fn rotation_keeps_both_until_retired() {
        let secrets = Secrets::new();
        secrets.add("num_12", secret("whsec_old"));
        secrets.add("num_12", secret("whsec_new"));
        secrets.add("num_12", secret("whsec_new"));
        assert_eq!(secrets.count("num_12"), 2);

        secrets.retire("num_12", &secret("whsec_old"));
        let left = secrets.lookup("num_12").expect("one secret is left");
        assert_eq!(&*left, &[secret("whsec_new")]);

        secrets.retire("num_12", &secret("whsec_new"));
        assert!(secrets.lookup("num_12").is_none());
    }

    #[test]
    fn parses_lists_with_rotation() {
        let parsed = Secrets::parse_list(" num_12=whsec_a , num_13=whsec_b,num_12=whsec_c,")
            .expect("the list is well formed");
        assert_eq!(parsed.count("num_12"), 2);
        assert_eq!(parsed.count("num_13"), 1);
        assert_eq!(parsed.count("num_14"), 0);
        assert_eq!(parsed.all_secrets().map(|l| l.len()), Some(3));
    }

    #[test]
    fn refuses_malformed_lists() {
        let cases = [
            ("no equals", "num_12"),
            ("no number", "=whsec_a"),
            ("empty secret", "num_12="),
        ];
        for (name, list) in cases {
            assert!(Secrets::parse_list(list).is_err(), "{name}");
        }
    }

    #[test]
    fn single_secret_serves_every_number() {
        let secrets = Secrets::single(secret("whsec_a"));
        assert_eq!(secrets.count("num_1"), 1);
        assert_eq!(secrets.count("anything"), 1);
    }

    #[test]
    fn fallback_list_is_bounded() {
        let secrets = Secrets::new();
        for i in 0..=MAX_FALLBACK_SECRETS {
            secrets.add(format!("num_{i}"), secret(&format!("whsec_{i}")));
        }
        assert!(secrets.all_secrets().is_none());
    }
}
