//! Running proptest strategies for a bounded number of cases, or for `PGHERALD_FUZZ_SECS`
//! seconds when that variable is set (the long run documented in the README).

use std::time::{Duration, Instant};

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Run `test` on values of `strategy`: `cases` of them, or as many as fit in
/// `PGHERALD_FUZZ_SECS` seconds. A failure panics with the shrunk input.
pub fn run<S>(cases: u32, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let budget = std::env::var("PGHERALD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs);
    let start = Instant::now();
    loop {
        let config = Config {
            cases,
            failure_persistence: None,
            max_shrink_iters: 256,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{e}");
        }
        match budget {
            Some(b) if start.elapsed() < b => continue,
            _ => return,
        }
    }
}

/// `default` cases, or `PGHERALD_FUZZ_CASES` when set.
pub fn cases(default: u32) -> u32 {
    std::env::var("PGHERALD_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}
