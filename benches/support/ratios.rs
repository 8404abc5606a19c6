//! Prints ratios between benchmarks of the run that just ended, read from
//! criterion's own estimates so that they match its report.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::SystemTime;

/// Where criterion writes its estimates, found the way criterion finds it.
fn criterion_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| "target".into(), PathBuf::from);
    target.join("criterion")
}

/// Returns the median time in nanoseconds of `group/function/parameter`, if
/// it was measured after `since`.
pub fn median_ns(id: &str, since: SystemTime) -> Option<f64> {
    let path = criterion_home().join(id).join("new/estimates.json");
    let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
    if modified < since {
        return None;
    }
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints `name: a / b` for each pair measured in this run.
pub fn print(title: &str, since: SystemTime, pairs: &[(String, String, String)]) {
    eprintln!("\n{title}");
    for (name, a, b) in pairs {
        match (median_ns(a, since), median_ns(b, since)) {
            (Some(a), Some(b)) => eprintln!("  {name:<48} {:>7.2}x", a / b),
            _ => eprintln!("  {name:<48}     n/a (not measured in this run)"),
        }
    }
}
