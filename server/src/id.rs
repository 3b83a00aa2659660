//! The one rule for ids of sessions, models and versions: they appear in file names, LSL stream
//! names and metrics, so they are short and plain.

/// What [`is_valid_id`] accepts, for error messages.
pub const ID_RULE: &str = "1-128 characters of [A-Za-z0-9._-]";

/// 1-128 characters of [A-Za-z0-9._-].
pub fn is_valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
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
}
