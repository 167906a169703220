//! Untrusted text made inert for output. Names, diagnostics and raw sources come from contact
//! exports and from bounce mail anybody can send; before such text reaches a terminal, a pipe, a
//! file or a spreadsheet it goes through here. Pure functions, no I/O.
//!
//! * [`csv_cell`]: OWASP's rule against spreadsheet formula injection: a cell that begins with
//!   `=`, `+`, `-`, `@`, a tab or a carriage return gets a leading `'`, so Excel and LibreOffice
//!   show it as text instead of evaluating it.
//! * [`line`] and [`text`]: control characters (C0, DEL, C1) and the bidirectional overrides
//!   that can make a terminal or an editor show something other than what is there are written
//!   as visible escapes (`\x1b`, `\u{202e}`); [`text`] keeps line breaks and tabs, [`line`]
//!   escapes them too.

use std::borrow::Cow;
use std::fmt::Write as _;

/// `s` as a CSV cell a spreadsheet will not evaluate (OWASP CSV injection rule).
pub fn csv_cell(s: &str) -> Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => Cow::Owned(format!("'{s}")),
        _ => Cow::Borrowed(s),
    }
}

/// `s` for one line of output: every control character escaped, line breaks included.
pub fn line(s: &str) -> Cow<'_, str> {
    escape(s, false)
}

/// `s` for multi-line output: line feeds and tabs kept, every other control character escaped
/// (a CR before LF is dropped, so CRLF text prints as lines).
pub fn text(s: &str) -> Cow<'_, str> {
    escape(s, true)
}

/// A character [`line`] escapes: a control character (C0, DEL, C1) or a bidirectional mark or
/// override.
pub fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape(s: &str, keep_lines: bool) -> Cow<'_, str> {
    let kept = |c: char| keep_lines && (c == '\n' || c == '\t');
    if !s.chars().any(|c| is_unsafe(c) && !kept(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if keep_lines && c == '\r' && chars.peek() == Some(&'\n') {
            continue;
        }
        if !is_unsafe(c) || kept(c) {
            out.push(c);
        } else if (c as u32) < 0x100 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formula_cells_are_quoted_and_others_left_alone() {
        for s in [
            "=HYPERLINK(\"http://x\",\"y\")",
            "+1",
            "-2+3",
            "@SUM(A1)",
            "\tx",
            "\rx",
        ] {
            assert_eq!(csv_cell(s), format!("'{s}"), "{s:?}");
        }
        for s in ["", "jane.doe@austintexas.gov", "O'Brien", "a=b", "3.12"] {
            assert!(matches!(csv_cell(s), Cow::Borrowed(_)), "{s:?}");
        }
    }

    #[test]
    fn escape_sequences_become_visible_text() {
        assert_eq!(line("a\x1b[31mred\x07"), "a\\x1b[31mred\\x07");
        assert_eq!(line("two\r\nlines"), "two\\x0d\\x0alines");
        assert_eq!(
            text("two\r\nlines\tand\x1b]0;t\x07"),
            "two\nlines\tand\\x1b]0;t\\x07"
        );
        assert_eq!(text("lone\rcr"), "lone\\x0dcr");
        assert_eq!(line("abc\u{202e}fed\u{9b}"), "abc\\u{202e}fed\\x9b");
        assert!(matches!(line("Ünïcödé is fine"), Cow::Borrowed(_)));
        assert!(matches!(text("a\nb\tc"), Cow::Borrowed(_)));
    }
}
