//! Jittered exponential backoff for reconnects and upload retries, from the `backon` crate.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Exponential backoff with jitter: each wait is uniform in [base/2, base), base doubling from `min` up
/// to `max`, without end. Jitter keeps a fleet of agents from reconnecting in lockstep after a coordinator
/// restart. (`backon` adds up to one delay of jitter, so it runs on half the bounds.)
#[derive(Debug)]
pub struct Backoff {
    builder: ExponentialBuilder,
    delays: ExponentialBackoff,
    max: Duration,
}

impl Backoff {
    /// Starts at `min`, caps at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let builder = ExponentialBuilder::default()
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times();
        Self { delays: builder.build(), builder, max }
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        // Without a limit on times the iterator never ends; `max` if it did.
        self.delays.next().unwrap_or(self.max).min(self.max)
    }

    /// Back to the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.delays = self.builder.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let d: Vec<Duration> = (0..8).map(|_| b.next_delay()).collect();
        assert!(d[0] >= Duration::from_millis(50) && d[0] <= Duration::from_millis(100));
        assert!(d[3] >= Duration::from_millis(400) && d[3] <= Duration::from_millis(800));
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
