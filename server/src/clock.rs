//! The server's clocks: the monotonic receive clock (nanoseconds since the process started; it
//! never jumps, unlike wall time, so every latency computed from it is honest) and UTC stamps
//! for file names and model versions.

use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Instant> = OnceLock::new();

/// Pin the clock's origin; called once at start-up (later calls are no-ops).
pub fn init() {
    START.get_or_init(Instant::now);
}

/// Nanoseconds since the server started.
pub fn now_ns() -> u64 {
    let start = START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// UTC time to the millisecond, `20261130T064512.123Z`: sorts as text, so the newest version or
/// file is the largest.
pub fn utc_stamp() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let (secs, millis) = (now.as_secs(), now.subsec_millis());
    let days = secs / 86_400;
    let (h, m, s) = (secs % 86_400 / 3600, secs % 3600 / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm): a dozen lines, where a
    // date-time crate would be a dependency for one format string.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}T{h:02}{m:02}{s:02}.{millis:03}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_stamps_have_one_length_and_sort() {
        let v = super::utc_stamp();
        assert_eq!(v.len(), "20261130T064512.123Z".len(), "{v}");
        assert!(v.starts_with("20"), "{v}");
        assert!(super::utc_stamp() >= v);
    }
}
