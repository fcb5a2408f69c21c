//! Per-caller request budgets: a token bucket per identity (a sensor pod,
//! or a key), so one noisy or hostile caller cannot crowd out the rest.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most identities tracked; idle buckets are dropped beyond this.
const MAX_BUCKETS: usize = 100_000;

/// A rate and a burst.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests allowed at once after idling.
    pub burst: f64,
}

/// Token buckets by identity.
pub struct Limiter {
    rate: Rate,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Limiter {
    /// Buckets refilled at `rate`.
    pub fn new(rate: Rate) -> Self {
        Self {
            rate,
            buckets: Mutex::default(),
        }
    }

    /// Takes one request from `who`'s budget, or says how long to wait.
    pub fn take(&self, who: &str) -> Result<(), Duration> {
        self.take_at(who, Instant::now())
    }

    fn take_at(&self, who: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(who) {
            // Full buckets are the idle ones: forgetting them changes nothing.
            let Rate { per_second, burst } = self.rate;
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
        }
        let (tokens, at) = buckets
            .entry(who.to_owned())
            .or_insert((self.rate.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate.per_second)
            .min(self.rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - *tokens) / self.rate.per_second.max(f64::MIN_POSITIVE);
            Err(Duration::from_secs_f64(wait.min(3600.0)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate_per_identity() {
        let l = Limiter::new(Rate {
            per_second: 2.0,
            burst: 3.0,
        });
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.take_at("a", t0).is_ok());
        }
        let wait = l.take_at("a", t0).expect_err("over the burst");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500));
        // Another identity has its own budget.
        assert!(l.take_at("b", t0).is_ok());
        // Half a second refills one request at 2/s.
        assert!(l.take_at("a", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.take_at("a", t0 + Duration::from_millis(500)).is_err());
    }
}
