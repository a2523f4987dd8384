//! Exponential backoff for reconnecting a failed source.

/// Delays 1, 2, 4, … seconds up to `max_s`, reset after a frame arrives.
#[derive(Clone, Debug, PartialEq)]
pub struct Backoff {
    pub initial_s: f64,
    pub max_s: f64,
    next_s: f64,
    /// Failures since the last frame.
    pub failures: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(1.0, 30.0)
    }
}

impl Backoff {
    pub fn new(initial_s: f64, max_s: f64) -> Self {
        Backoff {
            initial_s,
            max_s,
            next_s: initial_s,
            failures: 0,
        }
    }

    /// The delay before the next attempt; doubles each call up to the maximum.
    pub fn fail(&mut self) -> f64 {
        let delay = self.next_s;
        self.failures += 1;
        self.next_s = (self.next_s * 2.0).min(self.max_s);
        delay
    }

    /// A frame arrived: the next failure starts from the initial delay again.
    pub fn reset(&mut self) {
        self.next_s = self.initial_s;
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_after_a_frame() {
        let mut b = Backoff::new(1.0, 5.0);
        let delays: Vec<f64> = (0..5).map(|_| b.fail()).collect();
        assert_eq!(delays, [1.0, 2.0, 4.0, 5.0, 5.0]);
        assert_eq!(b.failures, 5);
        b.reset();
        assert_eq!((b.fail(), b.failures), (1.0, 1));
    }
}
