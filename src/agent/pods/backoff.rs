//! kubelet's flowcontrol.Backoff: per key, 10 s doubling to 5 min; an entry untouched for twice
//! the maximum (10 min) starts over. Times are wall-clock nanoseconds (CRI timestamps are too).
use std::collections::HashMap;
use std::time::Duration;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone)]
struct Entry {
    backoff: Duration,
    last_update: i64,
}

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    entries: HashMap<String, Entry>,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, MAX)
    }
}

fn ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            entries: HashMap::new(),
        }
    }

    fn expired(&self, e: &Entry, now: i64) -> bool {
        now - e.last_update > 2 * ns(self.max)
    }

    /// Current back-off for `key` (zero if none).
    pub fn get(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.backoff).unwrap_or_default()
    }

    /// Record a failure at `now`: start at the initial delay, else double up to the maximum.
    pub fn next(&mut self, key: &str, now: i64) {
        let (initial, max) = (self.initial, self.max);
        let expired = self.entries.get(key).is_some_and(|e| self.expired(e, now));
        let e = self.entries.entry(key.to_string()).or_insert(Entry {
            backoff: Duration::ZERO,
            last_update: now,
        });
        e.backoff = if e.backoff.is_zero() || expired {
            initial
        } else {
            (e.backoff * 2).min(max)
        };
        e.last_update = now;
    }

    /// Time left in back-off counted from `event_time` (e.g. a container's finishedAt),
    /// `None` when not in back-off.
    pub fn remaining_since(&self, key: &str, event_time: i64, now: i64) -> Option<Duration> {
        let e = self.entries.get(key)?;
        if self.expired(e, now) {
            return None;
        }
        let left = ns(e.backoff) - (now - event_time);
        (left > 0).then(|| Duration::from_nanos(left as u64))
    }

    /// Time left counted from the last failure recorded with [`Backoff::next`].
    pub fn remaining_since_update(&self, key: &str, now: i64) -> Option<Duration> {
        let e = self.entries.get(key)?;
        self.remaining_since(key, e.last_update, now)
    }

    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// Drop entries untouched for twice the maximum.
    pub fn gc(&mut self, now: i64) {
        let max2 = 2 * ns(self.max);
        self.entries.retain(|_, e| now - e.last_update <= max2);
    }
}

/// Go's time.Duration formatting for whole seconds ("10s", "1m20s", "5m0s"), as kubelet prints.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}h{}m{}s", s / 3600, (s % 3600) / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const S: i64 = 1_000_000_000;

    #[test]
    fn doubles_to_max_and_resets_after_idle() {
        let mut b = Backoff::default();
        let mut t = 0;
        let mut seen = vec![];
        for _ in 0..7 {
            b.next("k", t);
            seen.push(b.get("k").as_secs());
            t += S;
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300]);
        b.next("k", t + 601 * S);
        assert_eq!(b.get("k"), INITIAL);
    }

    #[test]
    fn in_backoff_since_event() {
        let mut b = Backoff::default();
        assert_eq!(b.remaining_since("k", 0, 0), None);
        b.next("k", 100 * S); // 10 s
        assert_eq!(
            b.remaining_since("k", 95 * S, 100 * S),
            Some(Duration::from_secs(5))
        );
        assert_eq!(b.remaining_since("k", 95 * S, 105 * S), None);
        assert_eq!(
            b.remaining_since_update("k", 104 * S),
            Some(Duration::from_secs(6))
        );
    }

    #[test]
    fn go_format() {
        assert_eq!(go_duration(Duration::from_secs(20)), "20s");
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_secs(300)), "5m0s");
    }
}
