//! Capture windows (capture for `window_s` every `period_s`) and frame pacing.

use serde::Serialize;

/// Whether the pipeline should run now.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub enum CaptureState {
    Capturing,
    /// Paused until this time (seconds on the governor's clock).
    PausedUntil(f64),
}

/// Gaps this close to a window's start count as inside it (avoids sleeping for 1e-12 s).
const EDGE_S: f64 = 1e-9;

/// The duty cycle; `None` window means capturing all the time.
#[derive(Clone, Debug, PartialEq)]
pub struct CaptureSchedule {
    /// (window_s, period_s); windows start at `origin + k·period_s` for every integer k.
    window: Option<(f64, f64)>,
    origin: f64,
}

impl CaptureSchedule {
    pub fn always() -> CaptureSchedule {
        CaptureSchedule {
            window: None,
            origin: 0.0,
        }
    }

    /// Windows of `window_s` every `period_s`, the first starting at `start + offset_s`.
    pub fn windows(window_s: f64, period_s: f64, start: f64, offset_s: f64) -> CaptureSchedule {
        CaptureSchedule {
            window: Some((window_s.min(period_s), period_s)),
            origin: start + offset_s,
        }
    }

    pub fn state(&self, now: f64) -> CaptureState {
        let Some((window, period)) = self.window else {
            return CaptureState::Capturing;
        };
        let phase = (now - self.origin).rem_euclid(period);
        if phase < window || period - phase < EDGE_S {
            CaptureState::Capturing
        } else {
            CaptureState::PausedUntil(now + (period - phase))
        }
    }

    /// Capture time in `[origin, t]` (negative before the origin); differences give overlaps.
    fn cumulative(&self, t: f64) -> f64 {
        match self.window {
            None => t,
            Some((window, period)) => {
                let tau = t - self.origin;
                let k = (tau / period).floor();
                k * window + (tau - k * period).min(window)
            }
        }
    }

    /// Seconds of capture time within `[a, b]`.
    pub fn capturing_between(&self, a: f64, b: f64) -> f64 {
        if b <= a {
            0.0
        } else {
            (self.cumulative(b) - self.cumulative(a)).clamp(0.0, b - a)
        }
    }
}

/// Frame pacing to a target rate. `delay(now)` says how long to sleep before starting the next
/// frame. A late frame starts at once; lateness of a full interval or more is forgiven instead
/// of being caught up, so the pipeline never bursts to work off a backlog (after a pause, a slow
/// frame or a rate change).
#[derive(Clone, Debug)]
pub struct Pacer {
    interval: f64,
    next_due: Option<f64>,
}

impl Pacer {
    pub fn new(fps: f64) -> Pacer {
        Pacer {
            interval: interval(fps),
            next_due: None,
        }
    }

    /// Changes the rate; the next frame is due one new interval after the last one started.
    pub fn set_fps(&mut self, fps: f64) {
        let new = interval(fps);
        if (new - self.interval).abs() > 1e-12 {
            if let Some(due) = self.next_due.as_mut() {
                *due += new - self.interval;
            }
            self.interval = new;
        }
    }

    pub fn fps(&self) -> f64 {
        1.0 / self.interval
    }

    /// Seconds to wait before starting the next frame; the frame is assumed to start then.
    pub fn delay(&mut self, now: f64) -> f64 {
        let start = match self.next_due {
            Some(due) if due > now => due,
            // Late by less than an interval: start now, keep the phase.
            Some(due) if now - due < self.interval => {
                self.next_due = Some(due + self.interval);
                return 0.0;
            }
            // First frame, or a backlog: start now and restart the phase from here.
            _ => now,
        };
        self.next_due = Some(start + self.interval);
        start - now
    }

    /// Forgets the phase (e.g. after a pause); the next frame starts at once.
    pub fn reset(&mut self) {
        self.next_due = None;
    }
}

fn interval(fps: f64) -> f64 {
    if fps.is_finite() && fps > 0.0 {
        1.0 / fps
    } else {
        f64::INFINITY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacer_holds_the_rate_and_never_bursts() {
        let mut p = Pacer::new(10.0);
        assert_eq!(p.delay(0.0), 0.0);
        // Work of 30 ms: sleep the remaining 70 ms.
        assert!((p.delay(0.03) - 0.07).abs() < 1e-9);
        // 20 ms late (frame started at 0.1, took 120 ms): start now, next still due at 0.3.
        assert_eq!(p.delay(0.22), 0.0);
        assert!((p.delay(0.25) - 0.05).abs() < 1e-9);
        // A 2 s stall: no catch-up burst; the next frame after it waits a full interval.
        assert_eq!(p.delay(2.5), 0.0);
        assert!((p.delay(2.51) - 0.09).abs() < 1e-9);
        // Over a long run at 1 ms of work per frame the rate is 10 fps, not more.
        let (mut t, mut frames) = (10.0, 0);
        p.reset();
        loop {
            let start = t + p.delay(t);
            if start >= 19.95 {
                break;
            }
            frames += 1;
            t = start + 0.001;
        }
        assert_eq!(frames, 100);
    }

    #[test]
    fn pacer_rate_change_takes_effect_at_the_next_frame() {
        let mut p = Pacer::new(10.0);
        p.delay(0.0);
        p.set_fps(2.0);
        assert!((p.delay(0.01) - 0.49).abs() < 1e-9);
        assert!((p.fps() - 2.0).abs() < 1e-12);
    }

    #[test]
    fn capture_windows_and_overlap() {
        let s = CaptureSchedule::windows(30.0, 120.0, 100.0, 0.0);
        assert_eq!(s.state(100.0), CaptureState::Capturing);
        assert_eq!(s.state(129.9), CaptureState::Capturing);
        assert_eq!(s.state(130.0), CaptureState::PausedUntil(220.0));
        assert_eq!(s.state(220.0), CaptureState::Capturing);
        assert!((s.capturing_between(100.0, 580.0) - 120.0).abs() < 1e-9);
        assert!((s.capturing_between(110.0, 235.0) - 35.0).abs() < 1e-9);
        assert_eq!(s.capturing_between(140.0, 200.0), 0.0);
        assert_eq!(CaptureSchedule::always().capturing_between(1.0, 3.5), 2.5);
    }
}
