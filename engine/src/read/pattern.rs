//! Text patterns of filters: SQL's LIKE and regular expressions, compiled once per
//! filter and matched on each row. Both compile to the `regex` crate's automata, which
//! match in time linear in the value (no backtracking), and both are bounded in size,
//! so no pattern can stall a scan, a subscription's matching or the commit path.

use crate::error::{EngineError, Result};

/// How a [`TextPattern`] is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternKind {
    /// SQL's LIKE: `%`, `_` and `\` as the escape.
    Like,
    /// A regular expression in the syntax of Rust's `regex` crate (PostgreSQL's `~`
    /// for the common cases), matched anywhere in the value unless anchored.
    Regex,
}

/// A pattern that a text value is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextPattern {
    pub kind: PatternKind,
    pub pattern: String,
    pub case_insensitive: bool,
}

/// The longest pattern (LIKE or regular expression) a filter takes, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;
/// The most memory one compiled pattern may take. Matching costs at most a scan of
/// the value per state, so with this bound no pattern costs more than a bounded
/// multiple of the value's length.
const MAX_COMPILED_BYTES: usize = 1 << 20;

/// A LIKE pattern as an anchored regular expression: `%` is any run of characters,
/// `_` one character, and `\` makes the next character literal; a pattern that ends
/// in a lone `\` is refused, as PostgreSQL refuses it.
fn like_to_regex(pattern: &str) -> Result<String> {
    let mut out = String::with_capacity(pattern.len() + 8);
    out.push_str("(?s)^");
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '%' => out.push_str(".*"),
            '_' => out.push('.'),
            '\\' => {
                let lit = chars.next().ok_or_else(|| {
                    EngineError::InvalidInput("a LIKE pattern must not end with the escape character \\".into())
                })?;
                out.push_str(&regex::escape(lit.encode_utf8(&mut [0; 4])));
            }
            c => out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4]))),
        }
    }
    out.push('$');
    Ok(out)
}

/// A character's lowercase as PostgreSQL takes it under a UTF-8 locale (`towlower`):
/// always one character; the one whose full Unicode lowercase is longer ('İ', whose
/// lowercase is 'i' and a combining dot) takes its first. `lower()` and every
/// case-insensitive LIKE (`ILIKE`, `_ilike`) fold with it, in every path.
#[inline]
pub fn lower_char(c: char) -> char {
    if c.is_ascii() {
        c.to_ascii_lowercase()
    } else {
        c.to_lowercase().next().unwrap_or(c)
    }
}

/// A text's lowercase, character by character (see [`lower_char`]).
pub fn pg_lower(s: &str) -> std::borrow::Cow<'_, str> {
    if s.chars().all(|c| lower_char(c) == c) {
        s.into()
    } else {
        s.chars().map(lower_char).collect::<String>().into()
    }
}

/// A [`TextPattern`], compiled. A case-insensitive LIKE is matched as PostgreSQL
/// matches it: the pattern and the text both lowercased.
#[derive(Debug, Clone)]
pub struct Matcher {
    regex: regex::Regex,
    lower_text: bool,
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.regex.as_str() == other.regex.as_str() && self.lower_text == other.lower_text
    }
}

impl Matcher {
    /// Compiles a pattern; one that is malformed or over the size bounds is refused.
    pub fn new(p: &TextPattern) -> Result<Self> {
        if p.pattern.len() > MAX_PATTERN_BYTES {
            return Err(EngineError::FilterTooComplex(format!(
                "the pattern is longer than {MAX_PATTERN_BYTES} bytes"
            )));
        }
        let lower_text = p.kind == PatternKind::Like && p.case_insensitive;
        let source = match p.kind {
            PatternKind::Like if lower_text => like_to_regex(&pg_lower(&p.pattern))?,
            PatternKind::Like => like_to_regex(&p.pattern)?,
            PatternKind::Regex => p.pattern.clone(),
        };
        regex::RegexBuilder::new(&source)
            .case_insensitive(p.case_insensitive && !lower_text)
            .size_limit(MAX_COMPILED_BYTES)
            .dfa_size_limit(MAX_COMPILED_BYTES)
            .build()
            .map(|regex| Matcher { regex, lower_text })
            .map_err(|e| match e {
                regex::Error::CompiledTooBig(_) => EngineError::FilterTooComplex("the pattern is too large".into()),
                e => EngineError::InvalidInput(format!("invalid regular expression: {e}")),
            })
    }

    #[inline]
    pub fn matches(&self, text: &str) -> bool {
        if self.lower_text {
            self.regex.is_match(&pg_lower(text))
        } else {
            self.regex.is_match(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ilike_folds_as_postgresql_does() {
        let ilike = |p: &str, t: &str| {
            Matcher::new(&TextPattern {
                kind: PatternKind::Like,
                pattern: p.into(),
                case_insensitive: true,
            })
            .expect("compiles")
            .matches(t)
        };
        // what PostgreSQL 15 answers under a C.UTF-8 locale
        for (text, pattern, expected) in [
            ("ſ", "s", false),
            ("ſ", "S", false),
            ("İ", "i", true),
            ("É", "é", true),
            ("ß", "SS", false),
            ("\u{212A}", "k", true),
            ("ǅ", "ǆ", true),
            ("Σ", "ς", false),
            ("ẞ", "ß", true),
            ("StraSSe", "%strasse", true),
        ] {
            assert_eq!(ilike(pattern, text), expected, "{text:?} ILIKE {pattern:?}");
        }
    }

    #[test]
    fn like_patterns() {
        let like = |p: &str, ci: bool| {
            Matcher::new(&TextPattern {
                kind: PatternKind::Like,
                pattern: p.into(),
                case_insensitive: ci,
            })
            .expect("compiles")
        };
        let m = |p: &str, t: &str| like(p, false).matches(t);
        assert!(m("a%", "abc"));
        assert!(m("%c", "abc"));
        assert!(m("a_c", "abc"));
        assert!(!m("a_c", "abbc"));
        assert!(m("%b%", "abc"));
        assert!(m("%", ""));
        assert!(!m("_", ""));
        assert!(m("a\\%", "a%"));
        assert!(!m("a\\%", "ab"));
        assert!(m("%a%a%a%a%b", "aaaaaaaaaaaaaaaaaaaaaab"));
        assert!(!m("%a%a%a%a%b", "aaaaaaaaaaaaaaaaaaaaaaa"));
        assert!(like("HéL%", true).matches("hélLO"));
        assert!(!like("HéL%", false).matches("hélLO"));
        assert!(m("a.c", "a.c") && !m("a.c", "abc"), "regex syntax is literal in LIKE");
        assert!(m("(%)", "(x)") && m("a\\_", "a_") && !m("a\\_", "ab"));
        assert!(m("%", "line\nbreak"));
        // many wildcards over a long value
        let value = "a".repeat(120_000);
        let pattern = "%a".repeat(500);
        assert!(m(&pattern, &value));
        assert!(!m(&format!("{pattern}b"), &value));
        let too_long = TextPattern {
            kind: PatternKind::Like,
            pattern: "%".repeat(MAX_PATTERN_BYTES + 1),
            case_insensitive: false,
        };
        assert_eq!(
            Matcher::new(&too_long).err().map(|e| e.code()),
            Some(crate::error::ErrorCode::FilterTooComplex)
        );
    }

    #[test]
    fn regular_expressions_are_bounded() {
        let regex = |pattern: &str, ci: bool| {
            Matcher::new(&TextPattern {
                kind: PatternKind::Regex,
                pattern: pattern.into(),
                case_insensitive: ci,
            })
        };
        let m = regex("^a.c$", false).expect("compiles");
        assert!(m.matches("abc"));
        assert!(!m.matches("xabc"));
        assert!(regex("B", true).expect("compiles").matches("abc"));
        assert!(!regex("B", false).expect("compiles").matches("abc"));
        // a pattern that backtracking engines take exponential time on is linear here
        let evil = regex("^(a+)+$", false).expect("compiles");
        assert!(!evil.matches(&format!("{}b", "a".repeat(100_000))));
        let code = |r: Result<Matcher>| r.err().map(|e| e.code());
        assert_eq!(code(regex("(", false)), Some(crate::error::ErrorCode::InvalidInput));
        assert_eq!(
            code(regex(&"a".repeat(MAX_PATTERN_BYTES + 1), false)),
            Some(crate::error::ErrorCode::FilterTooComplex)
        );
        // short, but it compiles to far more than the bound
        assert_eq!(
            code(regex("\\w{1000}\\w{1000}", false)),
            Some(crate::error::ErrorCode::FilterTooComplex)
        );
    }
}
