//! Text from servers and users made safe to show: one sanitiser for the
//! terminal and every report. A leaf: it depends on nothing in the crate.

/// Whether a character must not reach a terminal or an XML report as it is:
/// control characters (ANSI/OSC escapes, NUL, DEL, C1 controls); Unicode's
/// Bidi_Control characters, which reorder what a reader sees ("Trojan
/// Source": U+061C, U+200E, U+200F, U+202A–U+202E, U+2066–U+2069); the line
/// and paragraph separators, which break lines in some terminals; and
/// U+FFFE and U+FFFF, which XML 1.0 does not allow.
fn needs_escape(c: char) -> bool {
    match c {
        '\n' | '\t' => false,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        '\u{2028}' | '\u{2029}' | '\u{fffe}' | '\u{ffff}' => true,
        c => c.is_control(),
    }
}

/// Server- or user-supplied text (reasons, evidence, URLs, error messages)
/// made safe for a terminal and for XML: every character `needs_escape`
/// names is shown escaped (`\u{1b}`, `\u{202e}`), so it is visible instead of
/// acting; newlines and tabs stay. The one sanitiser every report and
/// message uses.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if needs_escape(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Flattens to one line, escapes what [`printable`] escapes and shortens with an ellipsis.
pub fn one_line(s: &str, max: usize) -> String {
    let flat: String = printable(s).split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        format!("{}…", flat.chars().take(max).collect::<String>())
    } else {
        flat
    }
}

/// `s` with the credentials of every URL in it (`scheme://user:password@host`)
/// replaced by `…`: a server's log line may print its own connection string,
/// and a report or terminal must not show the password in it.
pub fn without_credentials(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends where the path, the text or the URL does.
        let end = tail.find(|c: char| c == '/' || c.is_whitespace() || "\"'()[]<>,;".contains(c)).unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(userinfo_end) => {
                out.push('…');
                out.push_str(&authority[userinfo_end..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod credential_tests {
    use super::without_credentials;

    #[test]
    fn passwords_in_urls_are_withheld() {
        assert_eq!(
            without_credentials("Cannot use database (connection_string=[postgresql://bgd:s3cret@db:5432/bgd])"),
            "Cannot use database (connection_string=[postgresql://…@db:5432/bgd])"
        );
        assert_eq!(
            without_credentials("a http://h:1/x and redis://:pw@r:6379 b"),
            "a http://h:1/x and redis://…@r:6379 b"
        );
        assert_eq!(without_credentials("no url here"), "no url here");
        assert_eq!(without_credentials("x://"), "x://");
    }
}
