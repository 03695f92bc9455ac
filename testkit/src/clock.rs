//! Times relative to the clock at run time. A test never sends a fixed date: a reading
//! stamped on a literal day is refused once it is older than the twin accepts, and a
//! suite that passes today fails next week.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(since_epoch.as_micros()).expect("the clock is before year 292,277")
}

/// `age` before now, in microseconds since the Unix epoch.
pub fn micros_ago(age: Duration) -> i64 {
    now_micros() - micros(age)
}

/// `ahead` after now, in microseconds since the Unix epoch.
pub fn micros_from_now(ahead: Duration) -> i64 {
    now_micros() + micros(ahead)
}

fn micros(duration: Duration) -> i64 {
    i64::try_from(duration.as_micros()).expect("a test duration fits in 292,000 years")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_bracket_now() {
        let before = now_micros();
        let ago = micros_ago(Duration::from_secs(60));
        let ahead = micros_from_now(Duration::from_secs(60));
        let after = now_micros();
        assert!((before - 60_000_000..=after - 60_000_000).contains(&ago));
        assert!((before + 60_000_000..=after + 60_000_000).contains(&ahead));
    }
}
