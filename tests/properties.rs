//! Properties of verification and of the dedupe protocol, checked on random
//! inputs: signing then verifying always passes, any single flipped bit fails,
//! no header value makes parsing panic, and no interleaving of claims lets two
//! deliveries hold one event or loses a released one.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use kwickphone_webhooks::clock::Clock;
use kwickphone_webhooks::dedupe::{Claim, ClaimToken, DedupeStore, EventKey, MemoryStore};
use kwickphone_webhooks::testing::FakeClock;
use kwickphone_webhooks::verify::{
    self, MAX_SIGNATURE_HEADER_LEN, MAX_SIGNATURES, MAX_TIMESTAMP_DIGITS, Signatures, Timestamp,
    VerifyError,
};
use kwickphone_webhooks::{Secret, StoreErrorKind};
use proptest::prelude::*;

const NOW: u64 = 1_781_942_245;

/// A secret as the vendor could issue it: printable, no surrounding spaces.
fn secret_text() -> impl Strategy<Value = String> {
    "[!-~]([ -~]{0,70}[!-~])?"
}

fn timestamp_secs() -> impl Strategy<Value = u64> {
    0..=999_999_999_999u64
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..2048)
}

/// Runs every step a receiver runs, on header values as they came.
fn check(
    secret: &Secret,
    timestamp: &[u8],
    signature: &[u8],
    body: &[u8],
) -> Result<(), VerifyError> {
    let timestamp = Timestamp::parse(timestamp)?;
    let signatures = Signatures::parse([signature])?;
    verify::verify(std::slice::from_ref(secret), &timestamp, &signatures, body)
}

fn flip(bytes: &[u8], bit: usize) -> Vec<u8> {
    let mut flipped = bytes.to_vec();
    flipped[bit / 8] ^= 1 << (bit % 8);
    flipped
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn sign_then_verify_accepts(text in secret_text(), secs in timestamp_secs(), body in body()) {
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let signed = verify::sign(&secret, secs, &body);

        let verdict = check(&secret, signed.timestamp.as_bytes(), signed.signature.as_bytes(), &body);
        prop_assert_eq!(verdict, Ok(()));
    }

    #[test]
    fn flipping_a_body_bit_rejects(
        text in secret_text(),
        secs in timestamp_secs(),
        body in prop::collection::vec(any::<u8>(), 1..2048),
        pick in any::<prop::sample::Index>(),
    ) {
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let signed = verify::sign(&secret, secs, &body);
        let tampered = flip(&body, pick.index(body.len() * 8));

        let verdict = check(&secret, signed.timestamp.as_bytes(), signed.signature.as_bytes(), &tampered);
        prop_assert_eq!(verdict, Err(VerifyError::Mismatch));
    }

    #[test]
    fn flipping_a_timestamp_bit_rejects(
        text in secret_text(),
        secs in timestamp_secs(),
        body in body(),
        pick in any::<prop::sample::Index>(),
    ) {
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let signed = verify::sign(&secret, secs, &body);
        let stamp = signed.timestamp.as_bytes();
        let tampered = flip(stamp, pick.index(stamp.len() * 8));

        let verdict = check(&secret, &tampered, signed.signature.as_bytes(), &body);
        let still_digits = tampered.iter().all(u8::is_ascii_digit);
        let want = if still_digits { VerifyError::Mismatch } else { VerifyError::MalformedTimestamp };
        prop_assert_eq!(verdict, Err(want));
    }

    #[test]
    fn flipping_a_digest_bit_rejects(
        text in secret_text(),
        secs in timestamp_secs(),
        body in body(),
        pick in 0..256usize,
    ) {
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let signed = verify::sign(&secret, secs, &body);
        let digest = hex::decode(&signed.signature[3..]).expect("sign writes hex");
        let tampered = format!("v1={}", hex::encode(flip(&digest, pick)));

        let verdict = check(&secret, signed.timestamp.as_bytes(), tampered.as_bytes(), &body);
        prop_assert_eq!(verdict, Err(VerifyError::Mismatch));
    }

    /// Hex may come in either case, so a flip that only changes a letter's
    /// case must still verify; every other flip of the header text rejects.
    #[test]
    fn flipping_a_signature_header_bit_rejects_unless_only_case_changed(
        text in secret_text(),
        secs in timestamp_secs(),
        body in body(),
        pick in any::<prop::sample::Index>(),
    ) {
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let signed = verify::sign(&secret, secs, &body);
        let header = signed.signature.as_bytes();
        let bit = pick.index(header.len() * 8);
        let tampered = flip(header, bit);

        let at = bit / 8;
        let case_only = at >= 3 && header[at].is_ascii_alphabetic()
            && tampered[at].eq_ignore_ascii_case(&header[at]);
        let verdict = check(&secret, signed.timestamp.as_bytes(), &tampered, &body);
        if case_only {
            prop_assert_eq!(verdict, Ok(()));
        } else {
            prop_assert!(verdict.is_err(), "flipped bit {bit} still verified");
        }
    }

    #[test]
    fn another_secret_never_verifies(
        text in secret_text(),
        other in secret_text(),
        secs in timestamp_secs(),
        body in body(),
    ) {
        prop_assume!(text != other);
        let secret = Secret::new(text).expect("the strategy yields valid secrets");
        let other = Secret::new(other).expect("the strategy yields valid secrets");
        let signed = verify::sign(&other, secs, &body);

        let verdict = check(&secret, signed.timestamp.as_bytes(), signed.signature.as_bytes(), &body);
        prop_assert_eq!(verdict, Err(VerifyError::Mismatch));
    }
}

/// Header lines biased towards what the parsers look for.
fn header_line() -> impl Strategy<Value = Vec<u8>> {
    let near_miss = "( |\t|,|v1=|V1=|v0=|[0-9a-fA-F]{1,70}|[0-9]{1,14}|[+-]|\\.)*";
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        near_miss.prop_map(String::into_bytes),
        (0..MAX_SIGNATURE_HEADER_LEN + 200).prop_map(|n| "v1=,".repeat(n / 4).into_bytes()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_signature_header_parses_or_is_refused(lines in prop::collection::vec(header_line(), 0..6)) {
        let total: usize = lines.iter().map(Vec::len).sum();
        let parsed = Signatures::parse(lines.iter().map(Vec::as_slice));

        match parsed {
            Ok(signatures) => {
                prop_assert!((1..=MAX_SIGNATURES).contains(&signatures.len()));
                prop_assert!(total <= MAX_SIGNATURE_HEADER_LEN);
            }
            Err(VerifyError::MissingSignature) => prop_assert!(lines.is_empty()),
            Err(err) => prop_assert_eq!(err, VerifyError::MalformedSignature),
        }
    }

    #[test]
    fn any_timestamp_header_parses_or_is_refused(
        lines in prop::collection::vec(header_line(), 0..3),
        now in any::<u64>(),
        tolerance in any::<u64>(),
    ) {
        let parsed = Timestamp::parse_lines(lines.iter().map(Vec::as_slice));
        let Ok(timestamp) = parsed else {
            return Ok(());
        };

        let only = &lines[0];
        prop_assert_eq!(lines.len(), 1);
        prop_assert!(only.len() <= MAX_TIMESTAMP_DIGITS && only.iter().all(u8::is_ascii_digit));
        prop_assert_eq!(timestamp.as_bytes(), only.as_slice());
        let text = std::str::from_utf8(only).expect("digits are UTF-8");
        prop_assert_eq!(Some(timestamp.secs()), text.parse::<u64>().ok());

        let inside = timestamp.secs().abs_diff(now) <= tolerance;
        let verdict = timestamp.check_window(now, Duration::from_secs(tolerance));
        prop_assert_eq!(verdict.is_ok(), inside);
    }
}

fn now_ms(clock: &FakeClock) -> u64 {
    let since = clock
        .now()
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch");
    u64::try_from(since.as_millis()).expect("fits")
}

const LEASE_MS: u64 = 1_000;
const RETENTION_MS: u64 = 5_000;
const KEYS: usize = 2;
const TASKS: usize = 4;

/// One step of one delivery task.
#[derive(Debug, Clone)]
enum Step {
    Claim { task: usize, key: usize },
    Extend { task: usize },
    Complete { task: usize },
    Release { task: usize },
    Advance { ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    let task = 0..TASKS;
    prop_oneof![
        4 => (task.clone(), 0..KEYS).prop_map(|(task, key)| Step::Claim { task, key }),
        1 => task.clone().prop_map(|task| Step::Extend { task }),
        2 => task.clone().prop_map(|task| Step::Complete { task }),
        2 => task.prop_map(|task| Step::Release { task }),
        2 => prop_oneof![
            0..LEASE_MS / 2,
            LEASE_MS..RETENTION_MS + LEASE_MS,
            // Exactly on a lease's or a marker's last millisecond.
            Just(LEASE_MS),
            Just(RETENTION_MS),
        ]
        .prop_map(|ms| Step::Advance { ms }),
    ]
}

/// What the protocol promises, written as plainly as possible.
#[derive(Debug, Default)]
struct Model {
    /// Per key: which task holds the claim, and until when.
    held: HashMap<usize, (usize, u64)>,
    /// Per key: until when the done-marker counts.
    done: HashMap<usize, u64>,
}

impl Model {
    fn expect_claim(&self, key: usize, now: u64) -> Claim {
        match (self.done.get(&key), self.held.get(&key)) {
            (Some(&until), _) if until > now => Claim::Done,
            (_, Some(&(_, until))) if until > now => Claim::InFlight,
            _ => Claim::First(ClaimToken::random()),
        }
    }

    fn holds(&self, task: usize, key: usize, now: u64) -> bool {
        matches!(self.held.get(&key), Some(&(t, until)) if t == task && until > now)
    }

    /// Whether another task holds a live claim on the key.
    fn held_by_another(&self, task: usize, key: usize, now: u64) -> bool {
        matches!(self.held.get(&key), Some(&(t, until)) if t != task && until > now)
    }

    /// Whether the task's token is still the one in the store, expired or
    /// not: nobody claimed the key after it.
    fn token_current(&self, task: usize, key: usize) -> bool {
        matches!(self.held.get(&key), Some(&(t, _)) if t == task)
    }
}

fn key(index: usize) -> EventKey {
    EventKey::new(&format!("num_{index}"), "call.completed", "CA1")
}

/// Plays the steps against a real store and the model, step by step.
fn play(steps: &[Step]) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime starts");
    let clock = FakeClock::at_unix(NOW);
    let store = MemoryStore::with_clock(
        NonZeroUsize::new(16).expect("not zero"),
        Arc::new(clock.clone()),
    );
    let lease = Duration::from_millis(LEASE_MS);
    let retention = Duration::from_millis(RETENTION_MS);
    let mut model = Model::default();
    let mut holding: [Option<(usize, ClaimToken)>; TASKS] = [None; TASKS];

    for step in steps {
        let now = now_ms(&clock);
        match *step {
            Step::Advance { ms } => clock.advance(Duration::from_millis(ms)),
            Step::Claim { task, key: k } => {
                if holding[task].is_some() {
                    continue;
                }
                let want = model.expect_claim(k, now);
                let got = runtime
                    .block_on(store.claim(&key(k), lease))
                    .expect("memory store answers");
                match (got, want) {
                    (Claim::First(token), Claim::First(_)) => {
                        let rival = model.held.get(&k).filter(|(_, until)| *until > now);
                        prop_assert!(rival.is_none(), "two claims on key {k}");
                        model.held.insert(k, (task, now + LEASE_MS));
                        model.done.remove(&k);
                        holding[task] = Some((k, token));
                    }
                    (got, want) => prop_assert_eq!(got, want, "claim of key {} at {}", k, now),
                }
            }
            Step::Extend { task } => {
                let Some((k, token)) = holding[task] else {
                    continue;
                };
                let got = runtime.block_on(store.extend(&key(k), token, lease));
                if model.holds(task, k, now) {
                    prop_assert!(got.is_ok());
                    model.held.insert(k, (task, now + LEASE_MS));
                } else {
                    prop_assert_eq!(got.map_err(|e| e.kind()), Err(StoreErrorKind::ClaimLost));
                }
            }
            Step::Complete { task } => {
                let Some((k, token)) = holding[task].take() else {
                    continue;
                };
                let got = runtime.block_on(store.complete(&key(k), token, retention));
                // The handler ran: the event is done unless another delivery
                // holds it right now, even if this claim lapsed meanwhile.
                if !model.held_by_another(task, k, now) {
                    prop_assert!(got.is_ok());
                    model.held.remove(&k);
                    model.done.insert(k, now + RETENTION_MS);
                } else {
                    prop_assert_eq!(got.map_err(|e| e.kind()), Err(StoreErrorKind::ClaimLost));
                }
            }
            Step::Release { task } => {
                let Some((k, token)) = holding[task].take() else {
                    continue;
                };
                runtime
                    .block_on(store.release(&key(k), token))
                    .expect("memory store answers");
                if model.token_current(task, k) {
                    model.held.remove(&k);
                }
                // A released event is never lost: the next claim runs it.
                if model.done.get(&k).is_none_or(|&until| until <= now)
                    && !model.held.contains_key(&k)
                {
                    let again = runtime
                        .block_on(store.claim(&key(k), lease))
                        .expect("memory store answers");
                    let Claim::First(token) = again else {
                        return Err(TestCaseError::fail(format!(
                            "released key {k} answered {again:?}"
                        )));
                    };
                    runtime
                        .block_on(store.release(&key(k), token))
                        .expect("memory store answers");
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn dedupe_interleavings_match_the_protocol(steps in prop::collection::vec(step(), 1..80)) {
        play(&steps)?;
    }
}

/// One delivery task's plan: which key to claim and whether its handler
/// succeeds, repeated.
fn plans() -> impl Strategy<Value = Vec<Vec<(usize, bool)>>> {
    prop::collection::vec(
        prop::collection::vec((0..KEYS, any::<bool>()), 1..20),
        TASKS,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Several tasks on a multi-threaded runtime race for the same keys; an
    /// occupancy counter per key catches two holders at once.
    #[test]
    fn concurrent_tasks_never_share_a_claim(plans in plans()) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(TASKS)
            .build()
            .expect("a runtime starts");
        let store = MemoryStore::new(NonZeroUsize::new(16).expect("not zero"));
        let occupancy: Arc<[AtomicUsize; KEYS]> = Arc::new(Default::default());
        let completed: Arc<Mutex<[bool; KEYS]>> = Arc::default();

        let outcome: Result<(), String> = runtime.block_on(async {
            let mut tasks = Vec::new();
            for plan in plans {
                let (store, occupancy, completed) =
                    (store.clone(), Arc::clone(&occupancy), Arc::clone(&completed));
                tasks.push(tokio::spawn(async move {
                    run_plan(&store, &occupancy, &completed, plan).await
                }));
            }
            for task in tasks {
                task.await.map_err(|e| e.to_string())??;
            }
            check_nothing_lost(&store, &completed).await
        });
        prop_assert_eq!(outcome, Ok(()));
    }
}

async fn run_plan(
    store: &MemoryStore,
    occupancy: &[AtomicUsize; KEYS],
    completed: &Mutex<[bool; KEYS]>,
    plan: Vec<(usize, bool)>,
) -> Result<(), String> {
    let lease = Duration::from_secs(60);
    for (k, succeeds) in plan {
        let claim = store
            .claim(&key(k), lease)
            .await
            .map_err(|e| e.to_string())?;
        let Claim::First(token) = claim else {
            tokio::task::yield_now().await;
            continue;
        };
        if occupancy[k].fetch_add(1, Ordering::SeqCst) != 0 {
            return Err(format!("two claims held key {k} at once"));
        }
        tokio::task::yield_now().await;
        occupancy[k].fetch_sub(1, Ordering::SeqCst);
        if succeeds {
            completed.lock().expect("not poisoned")[k] = true;
            store
                .complete(&key(k), token, Duration::from_secs(3600))
                .await
        } else {
            store.release(&key(k), token).await
        }
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Every key is either done, when some task completed it, or free to be
/// claimed again; never stuck in flight.
async fn check_nothing_lost(
    store: &MemoryStore,
    completed: &Mutex<[bool; KEYS]>,
) -> Result<(), String> {
    let completed = *completed.lock().expect("not poisoned");
    for (k, done) in completed.into_iter().enumerate() {
        let claim = store
            .claim(&key(k), Duration::from_secs(60))
            .await
            .map_err(|e| e.to_string())?;
        let fine = if done {
            claim == Claim::Done
        } else {
            matches!(claim, Claim::First(_))
        };
        if !fine {
            return Err(format!("key {k} (completed: {done}) answered {claim:?}"));
        }
    }
    Ok(())
}
