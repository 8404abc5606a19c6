//! A dudect-style check that signature verification does not leak, through
//! its running time, how much of a forged signature is right.
//!
//! Two classes of forged signature are verified in random order: one wrong in
//! its first byte, one wrong only in its last byte. A comparison that stops
//! at the first differing byte rejects the first class sooner; one that runs
//! in constant time cannot be told apart. Welch's t statistic measures the
//! difference between the two timing distributions, on all samples and on
//! samples cropped at several percentiles (noise from interrupts lives in the
//! tail); |t| above 4.5 is the usual sign of a leak.
//!
//! The same measurement runs on a control: the same HMAC followed by a
//! byte-by-byte comparison that returns early, as the vendor's Node.js sample
//! does with `!==`. Its t shows that the method can see a leak of that size.
//!
//! ```text
//! cargo run --release --example timing -- [SAMPLES]
//! ```
//!
//! Exits with status 1 when the crate's verification exceeds the threshold.
//! Timings are noisy on a shared machine: rerun before drawing conclusions.

#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Instant;

use kwickphone_webhooks::Secret;
use kwickphone_webhooks::verify::{self, Signatures, Timestamp};

const THRESHOLD: f64 = 4.5;
const DEFAULT_SAMPLES: usize = 2_000_000;
const WARMUP: usize = 20_000;
const PERCENTILES: [f64; 5] = [0.5, 0.75, 0.9, 0.99, 1.0];

/// Running mean and variance (Welford), per class.
#[derive(Debug, Default, Clone, Copy)]
struct Moments {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let delta = x - self.mean;
        self.mean += delta / self.n;
        self.m2 += delta * (x - self.mean);
    }

    fn variance(&self) -> f64 {
        if self.n < 2.0 {
            return 0.0;
        }
        self.m2 / (self.n - 1.0)
    }
}

/// Welch's t between two classes.
fn welch_t(a: &Moments, b: &Moments) -> f64 {
    let spread = (a.variance() / a.n + b.variance() / b.n).sqrt();
    if spread == 0.0 {
        return 0.0;
    }
    (a.mean - b.mean) / spread
}

/// A small xorshift generator: the class order must not follow a pattern
/// that the CPU's predictors could learn.
struct Coin(u64);

impl Coin {
    fn flip(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        usize::from(self.0 & 1 == 1)
    }
}

/// Measures `run` on two inputs in random order and returns the largest |t|
/// over the percentile crops, with the mean time per call in nanoseconds.
fn measure<I>(samples: usize, inputs: &[I; 2], mut run: impl FnMut(&I) -> bool) -> (f64, f64) {
    let mut coin = Coin(0x9E37_79B9_7F4A_7C15);
    let mut time_one = |class: usize| {
        let start = Instant::now();
        let verdict = run(black_box(&inputs[class]));
        let elapsed = start.elapsed().as_nanos() as f64;
        assert!(!black_box(verdict), "every input is a forgery");
        elapsed
    };

    let mut warmup: Vec<f64> = (0..WARMUP).map(|_| time_one(coin.flip())).collect();
    warmup.sort_by(f64::total_cmp);
    let cuts: Vec<f64> = PERCENTILES
        .iter()
        .map(|p| match *p {
            p if p >= 1.0 => f64::INFINITY,
            p => warmup[(p * warmup.len() as f64) as usize],
        })
        .collect();

    let mut classes = vec![[Moments::default(); 2]; cuts.len()];
    let mut all = Moments::default();
    for _ in 0..samples {
        let class = coin.flip();
        let t = time_one(class);
        all.push(t);
        for (cut, moments) in cuts.iter().zip(classes.iter_mut()) {
            if t <= *cut {
                moments[class].push(t);
            }
        }
    }
    let worst = classes
        .iter()
        .map(|[a, b]| welch_t(a, b).abs())
        .fold(0.0, f64::max);
    (worst, all.mean)
}

/// Returns a copy of `digest` with one byte changed.
fn forged(digest: &[u8; 32], at: usize) -> [u8; 32] {
    let mut wrong = *digest;
    wrong[at] ^= 0x01;
    wrong
}

/// What the vendor's Node.js sample does: a comparison that stops early.
fn leaky_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
    }
    true
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let samples = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => DEFAULT_SAMPLES,
    };
    let secret = Secret::new("whsec_8f3c2a9b7d1e4f60a5b3c7d9e1f2a4b6")?;
    let secrets = [secret.clone()];
    let body = br#"{"type":"call.completed","number_id":"num_12","call":{"call_sid":"CA1"}}"#;
    let stamp = b"1781942245";
    let timestamp = Timestamp::parse(stamp)?;
    let digest = verify::digest(&secret, stamp, body);
    let wrong = [forged(&digest, 0), forged(&digest, 31)];

    let headers = wrong.map(|w| format!("v1={}", hex::encode(w)));
    let parsed = [
        Signatures::parse([headers[0].as_bytes()])?,
        Signatures::parse([headers[1].as_bytes()])?,
    ];
    let (crate_t, crate_ns) = measure(samples, &parsed, |signatures| {
        verify::verify(&secrets, &timestamp, signatures, body).is_ok()
    });
    let (control_t, control_ns) = measure(samples, &wrong, |candidate| {
        leaky_eq(&verify::digest(&secret, stamp, body), candidate)
    });

    println!("samples per measurement: {samples}");
    println!(
        "verify::verify, first vs last byte wrong: |t| = {crate_t:.2} ({crate_ns:.0} ns per call)"
    );
    println!(
        "control, early-exit compare:              |t| = {control_t:.2} ({control_ns:.0} ns per call)"
    );
    if crate_t >= THRESHOLD {
        println!("LEAK: |t| of verify::verify is at or above {THRESHOLD}");
        std::process::exit(1);
    }
    println!("no leak detected: |t| of verify::verify stays below {THRESHOLD}");
    Ok(())
}
