//! The drain rate of a bulkhead (completions per second, an exponentially weighted moving
//! average) and the `Retry-After` computed from it.
//!
//! The estimate is a decaying count over a decaying span: every completion adds 1 to a
//! count that decays as `exp(-age / TIME_CONSTANT)`, and the rate is that count divided
//! by the time measured, weighted the same way (`TIME_CONSTANT * (1 - exp(-elapsed /
//! TIME_CONSTANT))`). Under a steady rate `r` it reads `r` from the first completions on
//! (no warm-up bias); when completions stop it decays towards 0 without any update. A
//! measurement starts with the first admission and restarts when the bulkhead has been
//! idle (nothing in flight, nothing completed) for `RESTART_AFTER`.

use std::time::Duration;

use tokio::time::Instant;

/// How quickly old completions are forgotten.
pub const TIME_CONSTANT: Duration = Duration::from_secs(5);
/// An idle bulkhead starts a new measurement after this long without completions.
pub const RESTART_AFTER: Duration = Duration::from_secs(20);
/// The shortest span a rate is measured over (seconds): the first completions of a
/// measurement do not read as an unbounded rate.
const MIN_SPAN: f64 = 0.1;

/// The jitter factor of `Retry-After` is drawn from this range.
pub const JITTER: std::ops::RangeInclusive<f64> = 0.8..=1.2;

#[derive(Debug, Default)]
pub struct Drain {
    /// When this measurement started (the first admission of it).
    start: Option<Instant>,
    /// The last completion and the decayed count as of then.
    last: Option<Instant>,
    count: f64,
}

impl Drain {
    /// A request is admitted; `idle`: nothing was in flight.
    pub fn admitted(&mut self, now: Instant, idle: bool) {
        let stale = match (self.start, self.last) {
            (None, _) => true,
            (Some(start), None) => idle && now.saturating_duration_since(start) > RESTART_AFTER,
            (Some(_), Some(last)) => idle && now.saturating_duration_since(last) > RESTART_AFTER,
        };
        if stale {
            *self = Drain {
                start: Some(now),
                last: None,
                count: 0.0,
            };
        }
    }

    /// A request completed.
    pub fn completed(&mut self, now: Instant) {
        self.count = self.count_at(now) + 1.0;
        self.last = Some(now);
        self.start.get_or_insert(now);
    }

    fn count_at(&self, now: Instant) -> f64 {
        match self.last {
            None => 0.0,
            Some(last) => self.count * decay(now.saturating_duration_since(last)),
        }
    }

    /// Completions per second at `now`; `None` before the first completion of this
    /// measurement.
    pub fn rate(&self, now: Instant) -> Option<f64> {
        let start = self.start?;
        self.last?;
        let tau = TIME_CONSTANT.as_secs_f64();
        let span = tau * (1.0 - decay(now.saturating_duration_since(start)));
        Some(self.count_at(now) / span.max(MIN_SPAN))
    }
}

fn decay(age: Duration) -> f64 {
    (-age.as_secs_f64() / TIME_CONSTANT.as_secs_f64()).exp()
}

/// `Retry-After` in whole seconds: `(ahead + 1) / (rate * fraction) * jitter`, rounded up
/// and clamped to `[min, max]`; `min` without a measured rate.
pub fn retry_after(
    ahead: usize,
    rate: Option<f64>,
    fraction: f64,
    jitter: f64,
    min: u32,
    max: u32,
) -> u32 {
    let Some(rate) = rate else {
        return min;
    };
    let secs = ((ahead as f64 + 1.0) / (rate * fraction) * jitter).ceil();
    // A rate decayed to 0 (or a NaN from a 0 fraction) means: no idea when; the maximum.
    if secs.is_nan() || secs >= f64::from(max) {
        max
    } else {
        (secs as u32).clamp(min, max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, secs: f64) -> Instant {
        t0 + Duration::from_secs_f64(secs)
    }

    #[test]
    fn a_steady_rate_reads_as_itself_from_the_start() {
        let t0 = Instant::now();
        let mut d = Drain::default();
        d.admitted(t0, true);
        assert_eq!(d.rate(t0), None, "no measurement before a completion");
        // 20 completions per second.
        for i in 1..=10 {
            d.completed(at(t0, i as f64 * 0.05));
        }
        let early = d.rate(at(t0, 0.5)).unwrap();
        assert!((early - 20.0).abs() < 2.0, "{early}");
        for i in 11..=600 {
            d.completed(at(t0, i as f64 * 0.05));
        }
        let late = d.rate(at(t0, 30.0)).unwrap();
        assert!((late - 20.0).abs() < 1.0, "{late}");
    }

    #[test]
    fn the_rate_decays_when_idle_and_a_new_measurement_starts_after_a_long_idle() {
        let t0 = Instant::now();
        let mut d = Drain::default();
        d.admitted(t0, true);
        for i in 1..=200 {
            d.completed(at(t0, i as f64 * 0.1));
        }
        let busy = d.rate(at(t0, 20.0)).unwrap();
        let later = d.rate(at(t0, 25.0)).unwrap();
        let much_later = d.rate(at(t0, 60.0)).unwrap();
        assert!(
            later < busy * 0.5 && much_later < 0.01,
            "{busy} {later} {much_later}"
        );
        // Not idle (something in flight): the measurement goes on.
        d.admitted(at(t0, 60.0), false);
        assert!(d.rate(at(t0, 60.0)).is_some());
        // Idle for longer than RESTART_AFTER: a new measurement, no rate until a completion.
        d.admitted(at(t0, 61.0), true);
        assert_eq!(d.rate(at(t0, 61.0)), None);
        d.completed(at(t0, 61.5));
        let fresh = d.rate(at(t0, 61.5)).unwrap();
        assert!((fresh - 2.0).abs() < 0.2, "{fresh}");
    }

    #[test]
    fn simultaneous_first_completions_do_not_divide_by_zero() {
        let t0 = Instant::now();
        let mut d = Drain::default();
        d.admitted(t0, true);
        d.completed(t0);
        let r = d.rate(t0).unwrap();
        assert!(r.is_finite() && r > 0.0);
    }

    #[test]
    fn retry_after_formula() {
        // No measurement: the minimum.
        assert_eq!(retry_after(100, None, 1.0, 1.0, 2, 60), 2);
        // 10 ahead at 11 per second: 1 s.
        assert_eq!(retry_after(10, Some(11.0), 1.0, 1.0, 1, 60), 1);
        // A quarter share of the drain: 4 s; jitter 1.2: 4.8 -> 5.
        assert_eq!(retry_after(10, Some(11.0), 0.25, 1.0, 1, 60), 4);
        assert_eq!(retry_after(10, Some(11.0), 0.25, 1.2, 1, 60), 5);
        // Rounded up, then clamped.
        assert_eq!(retry_after(0, Some(3.0), 1.0, 1.0, 1, 60), 1);
        assert_eq!(retry_after(0, Some(3.0), 1.0, 1.0, 5, 60), 5);
        assert_eq!(retry_after(1000, Some(1.0), 1.0, 1.0, 1, 60), 60);
        // A rate decayed to nothing: the maximum.
        assert_eq!(retry_after(0, Some(0.0), 1.0, 1.0, 1, 60), 60);
        assert_eq!(retry_after(0, Some(1e-300), 1e-10, 1.0, 1, 60), 60);
    }

    #[test]
    fn retry_after_grows_with_the_queue_ahead() {
        let mut prev = 0;
        for ahead in [0, 5, 20, 50, 100, 200] {
            let s = retry_after(ahead, Some(10.0), 1.0, 1.0, 1, 3600);
            assert!(s >= prev, "{ahead}: {s} < {prev}");
            prev = s;
        }
        assert_eq!(prev, 21);
    }
}
