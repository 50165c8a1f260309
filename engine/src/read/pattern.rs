//! Text patterns of filters: SQL's LIKE and regular expressions, compiled once per
//! filter and matched on each row. Both match in time linear in the value (LIKE at
//! worst in value times pattern), so no pattern can stall a scan.

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

/// The longest regular expression a filter takes, in bytes.
pub const MAX_REGEX_BYTES: usize = 1024;
/// The most memory one compiled regular expression may take. The `regex` crate
/// matches in time linear in the value (no backtracking), so with this bound no
/// pattern can cost more than a scan of the value per row.
const MAX_REGEX_COMPILED_BYTES: usize = 1 << 20;

/// One LIKE pattern, compiled: `%` matches any run of characters, `_` one character,
/// and `\` makes the next character literal (as in DataFusion's LIKE).
#[derive(Debug, Clone, PartialEq)]
pub struct LikePattern {
    tokens: Vec<LikeToken>,
    case_insensitive: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum LikeToken {
    AnyRun,
    AnyOne,
    Char(char),
}

impl LikePattern {
    pub fn new(pattern: &str, case_insensitive: bool) -> Self {
        let mut tokens = Vec::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            tokens.push(match c {
                '%' => LikeToken::AnyRun,
                '_' => LikeToken::AnyOne,
                '\\' => LikeToken::Char(chars.next().unwrap_or('\\')),
                c => LikeToken::Char(c),
            });
        }
        Self {
            tokens,
            case_insensitive,
        }
    }

    pub fn matches(&self, text: &str) -> bool {
        let fold = |c: char| -> char {
            if self.case_insensitive {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                c
            }
        };
        let text: Vec<char> = text.chars().map(fold).collect();
        // iterative matcher with backtracking to the last `%`: linear in most cases,
        // O(n*m) at worst, never exponential
        let (mut t, mut p) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while t < text.len() {
            match self.tokens.get(p) {
                Some(LikeToken::AnyRun) => {
                    star = Some((p, t));
                    p += 1;
                }
                Some(LikeToken::AnyOne) => {
                    t += 1;
                    p += 1;
                }
                Some(LikeToken::Char(c)) if fold(*c) == text[t] => {
                    t += 1;
                    p += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        p = sp + 1;
                        t = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        self.tokens[p..].iter().all(|t| *t == LikeToken::AnyRun)
    }
}

/// A [`TextPattern`], compiled.
#[derive(Debug, Clone)]
pub enum Matcher {
    Like(LikePattern),
    Regex(regex::Regex),
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Matcher::Like(a), Matcher::Like(b)) => a == b,
            (Matcher::Regex(a), Matcher::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Matcher {
    /// Compiles a pattern; a regular expression that is malformed or over the size
    /// bounds is refused.
    pub fn new(p: &TextPattern) -> Result<Self> {
        match p.kind {
            PatternKind::Like => Ok(Matcher::Like(LikePattern::new(&p.pattern, p.case_insensitive))),
            PatternKind::Regex => {
                if p.pattern.len() > MAX_REGEX_BYTES {
                    return Err(EngineError::FilterTooComplex(format!(
                        "the regular expression is longer than {MAX_REGEX_BYTES} bytes"
                    )));
                }
                regex::RegexBuilder::new(&p.pattern)
                    .case_insensitive(p.case_insensitive)
                    .size_limit(MAX_REGEX_COMPILED_BYTES)
                    .dfa_size_limit(MAX_REGEX_COMPILED_BYTES)
                    .build()
                    .map(Matcher::Regex)
                    .map_err(|e| match e {
                        regex::Error::CompiledTooBig(_) => {
                            EngineError::FilterTooComplex("the regular expression is too large".into())
                        }
                        e => EngineError::InvalidInput(format!("invalid regular expression: {e}")),
                    })
            }
        }
    }

    #[inline]
    pub fn matches(&self, text: &str) -> bool {
        match self {
            Matcher::Like(p) => p.matches(text),
            Matcher::Regex(r) => r.is_match(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns() {
        let m = |p: &str, t: &str| LikePattern::new(p, false).matches(t);
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
        assert!(LikePattern::new("HéL%", true).matches("hélLO"));
        assert!(!LikePattern::new("HéL%", false).matches("hélLO"));
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
            code(regex(&"a".repeat(MAX_REGEX_BYTES + 1), false)),
            Some(crate::error::ErrorCode::FilterTooComplex)
        );
        // short, but it compiles to far more than the bound
        assert_eq!(
            code(regex("\\w{1000}\\w{1000}", false)),
            Some(crate::error::ErrorCode::FilterTooComplex)
        );
    }
}
