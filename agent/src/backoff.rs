//! Jittered exponential backoff for reconnects and upload retries.

use std::time::Duration;

/// Exponential backoff with "full jitter": each wait is uniform in [base/2, base], base doubling up to
/// `max`. Jitter keeps a fleet of agents from reconnecting in lockstep after a coordinator restart.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
    state: u64,
}

impl Backoff {
    /// Starts at `min`, caps at `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let seed =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
                ^ u64::from(std::process::id()).rotate_left(32);
        Self { next: min, min, max, state: seed | 1 }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: plenty for jitter.
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        self.state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// The next wait.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let half = base / 2;
        let span = (base - half).as_micros().max(1) as u64;
        half + Duration::from_micros(self.random() % span)
    }

    /// Back to the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
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
