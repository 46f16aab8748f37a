//! Names in text reports: control characters escaped (a hostile dump cannot write escape
//! sequences to a terminal) and long names elided in the middle, so table columns stay aligned.

/// The widest a name column grows (characters); longer names are elided in the middle.
pub(crate) const MAX_NAME_WIDTH: usize = 48;

/// `name` with control characters (and other characters that move the cursor or change the
/// terminal, e.g. ESC, CR, BS, the bidirectional overrides) escaped as `\u{..}`.
pub(crate) fn display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let bidi = matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// [`display_name`], elided in the middle (`…`) to at most `width` characters.
pub(crate) fn cell(name: &str, width: usize) -> String {
    let shown = display_name(name);
    let n = shown.chars().count();
    if n <= width || width < 3 {
        return shown;
    }
    let head = (width - 1) / 2;
    let tail = width - 1 - head;
    let mut out: String = shown.chars().take(head).collect();
    out.push('…');
    out.extend(shown.chars().skip(n - tail));
    out
}

/// The width of a name column: the longest shown name, at least `min`, at most
/// [`MAX_NAME_WIDTH`].
pub(crate) fn column_width<'a>(names: impl IntoIterator<Item = &'a str>, min: usize) -> usize {
    names
        .into_iter()
        .map(|n| display_name(n).chars().count())
        .max()
        .unwrap_or(0)
        .clamp(min, MAX_NAME_WIDTH.max(min))
}

/// `s` padded with spaces to `width` characters (by `char`, not bytes).
pub(crate) fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    let mut out = s.to_string();
    out.extend(std::iter::repeat_n(' ', width.saturating_sub(n)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_in_names_are_escaped() {
        assert_eq!(display_name("a\u{1b}[31mb"), "a\\u{1b}[31mb");
        assert_eq!(display_name("x\ry\n"), "x\\u{d}y\\u{a}");
        assert_eq!(display_name("fc1"), "fc1");
    }

    #[test]
    fn long_names_are_elided_to_the_width() {
        let long = "encoder.layer.11.attention.output.dense.with.a.very.long.suffix";
        let c = cell(long, 20);
        assert_eq!(c.chars().count(), 20);
        assert!(c.starts_with("encoder.") && c.ends_with("suffix") && c.contains('…'));
        assert_eq!(pad("é", 3), "é  ");
    }
}
