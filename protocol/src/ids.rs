//! Identifiers: sortable UUIDv7 strings.

/// A new, time-ordered, globally unique identifier (UUIDv7, lowercase hyphenated).
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Whether `s` looks like an id this service issues (a UUID of any version).
///
/// Used to reject garbage early, before it reaches storage.
pub fn is_valid_id(s: &str) -> bool {
    s.len() == 36 && uuid::Uuid::parse_str(s).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sortable_and_valid() {
        let a = new_id();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id();
        assert!(a < b);
        assert!(is_valid_id(&a));
        assert!(!is_valid_id("x"));
        assert!(!is_valid_id("'; DROP TABLE users; --------------"));
    }
}
