//! The one rule for ids of sessions, models and versions: they appear in file names, LSL stream
//! names and metrics, so they are short and plain.

/// What [`is_valid_id`] accepts, for error messages.
pub const ID_RULE: &str = "1-128 characters of [A-Za-z0-9._-]";

/// 1-128 characters of [A-Za-z0-9._-].
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

/// A client-given id or text as an error message shows it: quoted, cut after 64 characters (a
/// 4 MB label is not echoed back).
pub fn shown(text: &str) -> String {
    const SHOWN: usize = 64;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{:?}... ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

/// Version order: runs of digits compare as numbers, the rest as text ("2" < "10",
/// "1.9" < "1.10"; UTC stamps keep their order).
pub fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(s: &str) -> impl Iterator<Item = (bool, &str)> {
        let mut rest = s;
        std::iter::from_fn(move || {
            let first = rest.chars().next()?;
            let digits = first.is_ascii_digit();
            let end = rest.find(|c: char| c.is_ascii_digit() != digits).unwrap_or(rest.len());
            let (run, tail) = rest.split_at(end);
            rest = tail;
            Some((digits, run))
        })
    }
    let (mut left, mut right) = (runs(a), runs(b));
    loop {
        match (left.next(), right.next()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some((true, x)), Some((true, y))) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                let order = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
                if order.is_ne() {
                    return order;
                }
            }
            (Some((_, x)), Some((_, y))) => {
                if x != y {
                    return x.cmp(y);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_short_and_plain() {
        assert!(super::is_valid_id("subject1_session-2.v3"));
        assert!(!super::is_valid_id(""));
        assert!(!super::is_valid_id(&"a".repeat(129)));
        assert!(!super::is_valid_id("a/b"));
        assert!(!super::is_valid_id("é"));
    }

    #[test]
    fn versions_order_by_their_numbers() {
        use std::cmp::Ordering::*;
        assert_eq!(super::version_order("2", "10"), Less);
        assert_eq!(super::version_order("1.9", "1.10"), Less);
        assert_eq!(super::version_order("20261201T101500.123Z", "20261130T235959.999Z"), Greater);
        assert_eq!(super::version_order("1", "1"), Equal);
        assert_eq!(super::version_order("1", "1a"), Less);
    }

    #[test]
    fn long_texts_are_cut_in_errors() {
        assert_eq!(super::shown("abc"), "\"abc\"");
        let long = "x".repeat(4 << 20);
        assert!(super::shown(&long).len() < 100);
    }
}
