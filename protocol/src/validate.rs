//! Validation rules for user input, shared by the node and the clients.

use thiserror::Error;

/// Shortest allowed username.
pub const USERNAME_MIN: usize = 3;
/// Longest allowed username.
pub const USERNAME_MAX: usize = 32;
/// Shortest allowed password, in characters.
pub const PASSWORD_MIN: usize = 8;
/// Longest allowed password, in characters.
pub const PASSWORD_MAX: usize = 128;
/// Longest room name, in characters.
pub const ROOM_NAME_MAX: usize = 100;
/// Longest message body, in characters (Unicode scalar values).
pub const BODY_MAX: usize = 4000;
/// Longest `client_msg_id`, in bytes.
pub const CLIENT_MSG_ID_MAX: usize = 128;
/// Longest `ref`, in bytes.
pub const REF_MAX: usize = 128;

/// A rule that input broke; the message is safe to show to the client.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(msg: impl Into<String>) -> Invalid {
    Invalid(msg.into())
}

/// Checks a username and returns its canonical (lowercase) form.
///
/// 3-32 characters of `a-z 0-9 _ . -`, compared case-insensitively.
pub fn username(raw: &str) -> Result<String, Invalid> {
    let lower = raw.to_ascii_lowercase();
    let n = lower.chars().count();
    if !(USERNAME_MIN..=USERNAME_MAX).contains(&n) {
        return Err(invalid(format!(
            "username must be {USERNAME_MIN}-{USERNAME_MAX} characters"
        )));
    }
    if !lower
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
    {
        return Err(invalid(
            "username may contain only a-z, 0-9, '_', '.' and '-'",
        ));
    }
    Ok(lower)
}

/// Checks a password: 8-128 characters.
pub fn password(raw: &str) -> Result<(), Invalid> {
    let n = raw.chars().count();
    if !(PASSWORD_MIN..=PASSWORD_MAX).contains(&n) {
        return Err(invalid(format!(
            "password must be {PASSWORD_MIN}-{PASSWORD_MAX} characters"
        )));
    }
    Ok(())
}

/// Checks a room name: 1-100 characters, at least one of them visible (not
/// whitespace or an invisible format character), no control characters.
pub fn room_name(raw: &str) -> Result<(), Invalid> {
    let n = raw.chars().count();
    if n == 0 || n > ROOM_NAME_MAX {
        return Err(invalid(format!(
            "room name must be 1-{ROOM_NAME_MAX} characters"
        )));
    }
    if raw.chars().all(is_invisible) {
        return Err(invalid("room name must have a visible character"));
    }
    if raw.chars().any(|c| c.is_control()) {
        return Err(invalid("room name may not contain control characters"));
    }
    Ok(())
}

/// Whitespace, or a character that shows nothing by itself: format
/// characters (soft hyphen, zero-width spaces and joiners, direction marks
/// and isolates, word joiner, BOM, tags), variation selectors, the
/// combining grapheme joiner, Hangul fillers and the blank Braille pattern.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E007F}'
                | '\u{E0100}'..='\u{E01EF}'
        )
}

/// Checks a message body: 1-4000 characters. Any Unicode is kept as sent.
pub fn body(raw: &str) -> Result<(), Invalid> {
    let n = raw.chars().count();
    if n == 0 || n > BODY_MAX {
        return Err(invalid(format!("body must be 1-{BODY_MAX} characters")));
    }
    Ok(())
}

/// Checks a `client_msg_id`: 1-128 bytes, printable, no whitespace.
pub fn client_msg_id(raw: &str) -> Result<(), Invalid> {
    if raw.is_empty() || raw.len() > CLIENT_MSG_ID_MAX {
        return Err(invalid(format!(
            "client_msg_id must be 1-{CLIENT_MSG_ID_MAX} bytes"
        )));
    }
    if raw.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(invalid(
            "client_msg_id may not contain whitespace or control characters",
        ));
    }
    Ok(())
}

/// Checks a request `ref`: at most 128 bytes.
pub fn request_ref(raw: &str) -> Result<(), Invalid> {
    if raw.len() > REF_MAX {
        return Err(invalid(format!("ref must be at most {REF_MAX} bytes")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(username("Alice_1").unwrap(), "alice_1");
        assert_eq!(username("a.b-c").unwrap(), "a.b-c");
        assert!(username("ab").is_err());
        assert!(username(&"a".repeat(33)).is_err());
        assert!(username("al ice").is_err());
        assert!(username("al'ice").is_err());
        assert!(username("ålice").is_err());
    }

    #[test]
    fn passwords_count_characters() {
        assert!(password("1234567").is_err());
        assert!(password("12345678").is_ok());
        assert!(password(&"é".repeat(128)).is_ok());
        assert!(password(&"x".repeat(129)).is_err());
    }

    #[test]
    fn bodies_and_names() {
        assert!(body("").is_err());
        assert!(body(&"😀".repeat(4000)).is_ok());
        assert!(body(&"x".repeat(4001)).is_err());
        assert!(room_name("").is_err());
        assert!(room_name("   ").is_err());
        for invisible in [
            "\u{00A0}",
            "\u{200B}",
            "\u{200B}\u{FEFF} \u{2060}",
            // Isolates, Arabic letter mark, tags, variation selectors, the
            // combining grapheme joiner, Hangul fillers, blank Braille.
            "\u{2066}\u{2069}",
            "\u{061C}",
            "\u{E0020}",
            "\u{FE0F}\u{034F}",
            "\u{3164}\u{115F}\u{1160}\u{FFA0}",
            "\u{2800}",
        ] {
            let err = room_name(invisible).err().map(|e| e.0).unwrap_or_default();
            assert!(err.contains("visible character"), "{invisible:?}: {err}");
        }
        assert!(room_name("\u{200B}x").is_ok());
        assert!(room_name("general").is_ok());
        assert!(room_name(&"n".repeat(101)).is_err());
        assert!(client_msg_id("abc-1").is_ok());
        assert!(client_msg_id("").is_err());
        assert!(client_msg_id("a b").is_err());
    }
}
