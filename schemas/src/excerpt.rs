//! Quoting input in error messages: a short prefix, never the whole of it.
//!
//! An error that repeats a megabyte of input cannot be sent back (it exceeds the
//! server's max payload), so the caller would only see a timeout. Every error message
//! that quotes input quotes it through `excerpt`.

/// How many characters of an input an error message quotes.
pub const EXCERPT_CHARS: usize = 64;

/// `text` quoted (`"…"`, escaped like `{:?}`); past `EXCERPT_CHARS` characters only
/// its prefix, followed by its length: `"aaaa…"… (70000 bytes)`.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// `message` cut to at most `max` bytes (on a character boundary), saying how much
/// was cut: the last guard for error messages built from input.
pub fn cap(message: &str, max: usize) -> String {
    if message.len() <= max {
        return message.to_owned();
    }
    let mut cut = max;
    while !message.is_char_boundary(cut) {
        cut -= 1;
    }
    format!(
        "{}… ({} more bytes cut)",
        &message[..cut],
        message.len() - cut
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_input_is_quoted_by_its_prefix() {
        assert_eq!(excerpt("inc1"), "\"inc1\"");
        assert_eq!(excerpt("a\u{1}b"), "\"a\\u{1}b\"");
        let long = "é".repeat(70_000);
        let quoted = excerpt(&long);
        assert!(quoted.len() < 200, "{quoted}");
        assert!(quoted.ends_with("… (140000 bytes)"), "{quoted}");
        let capped = cap(&long, 101);
        assert!(
            capped.len() < 150 && capped.contains("more bytes cut"),
            "{capped}"
        );
        assert_eq!(cap("short", 10), "short");
    }
}
