//! `${VAR}` and `${VAR:-default}` substitution from the environment, done on the raw text before
//! TOML parsing (as Vector does), with an offset map so that every later error still points at
//! the line and column the user wrote.
//!
//! `$${` writes a literal `${`. Lines whose first non-blank character is `#` are left alone, so a
//! commented-out `${SECRET}` never needs to be set.

use std::ops::Range;

/// Where a piece of the interpolated text came from.
#[derive(Debug, Clone)]
struct Segment {
    /// Range in the interpolated text.
    out: Range<usize>,
    /// Start of the corresponding text in the original.
    src_start: usize,
    /// True when `out` is the value of a `${…}` and maps as a whole onto `src_start`.
    substituted: bool,
}

/// A variable reference that could not be resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MissingVar {
    /// Variable name as written.
    pub name: String,
    /// Byte range of the whole `${…}` in the original text.
    pub span: Range<usize>,
    /// Why it could not be used.
    pub problem: VarProblem,
}

/// What was wrong with a `${…}` reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum VarProblem {
    /// The variable is not set and no default was given.
    Unset,
    /// `${` without a closing `}` on the same line.
    Unterminated,
    /// The name is empty or has characters other than letters, digits and `_`.
    BadName,
}

/// Text after substitution plus a map back to the original offsets.
#[derive(Debug, Clone)]
pub(crate) struct Interpolated {
    /// The text to parse.
    pub text: String,
    segments: Vec<Segment>,
}

impl Interpolated {
    /// Maps a byte offset of the interpolated text back to the original text.
    pub(crate) fn original_offset(&self, offset: usize) -> usize {
        let idx = self.segments.partition_point(|s| s.out.end <= offset);
        match self.segments.get(idx) {
            Some(seg) if seg.substituted => seg.src_start,
            Some(seg) => seg.src_start + offset.saturating_sub(seg.out.start),
            None => self
                .segments
                .last()
                .map(|s| {
                    if s.substituted {
                        s.src_start
                    } else {
                        s.src_start + (offset - s.out.start)
                    }
                })
                .unwrap_or(offset),
        }
    }
}

/// Substitutes environment variables using `lookup`; returns the text and every problem found.
pub(crate) fn interpolate(
    input: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (Interpolated, Vec<MissingVar>) {
    let mut out = String::with_capacity(input.len());
    let mut segments = Vec::new();
    let mut missing = Vec::new();
    let mut literal_start = 0usize; // start (in input) of the pending literal run
    let bytes = input.as_bytes();
    let mut i = 0usize;
    let mut line_is_comment = is_comment_line(input, 0);

    let flush = |out: &mut String, segs: &mut Vec<Segment>, from: usize, to: usize| {
        if to > from {
            let start = out.len();
            out.push_str(&input[from..to]);
            segs.push(Segment {
                out: start..out.len(),
                src_start: from,
                substituted: false,
            });
        }
    };

    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\n' {
            line_is_comment = is_comment_line(input, i + 1);
            i += 1;
            continue;
        }
        if line_is_comment || b != b'$' {
            i += 1;
            continue;
        }
        // `$${` → literal `${`
        if input[i..].starts_with("$${") {
            flush(&mut out, &mut segments, literal_start, i);
            flush(&mut out, &mut segments, i + 1, i + 3);
            i += 3;
            literal_start = i;
            continue;
        }
        if !input[i..].starts_with("${") {
            i += 1;
            continue;
        }
        let line_end = input[i..].find('\n').map_or(input.len(), |n| i + n);
        let Some(close) = input[i..line_end].find('}').map(|n| i + n) else {
            missing.push(MissingVar {
                name: String::new(),
                span: i..line_end,
                problem: VarProblem::Unterminated,
            });
            i = line_end;
            continue;
        };
        let inner = &input[i + 2..close];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let value =
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                missing.push(MissingVar {
                    name: name.to_string(),
                    span: i..close + 1,
                    problem: VarProblem::BadName,
                });
                String::new()
            } else {
                match (lookup(name), default) {
                    (Some(v), Some(d)) if v.is_empty() => d.to_string(),
                    (Some(v), _) => v,
                    (None, Some(d)) => d.to_string(),
                    (None, None) => {
                        missing.push(MissingVar {
                            name: name.to_string(),
                            span: i..close + 1,
                            problem: VarProblem::Unset,
                        });
                        String::new()
                    }
                }
            };
        flush(&mut out, &mut segments, literal_start, i);
        let start = out.len();
        out.push_str(&value);
        segments.push(Segment {
            out: start..out.len(),
            src_start: i,
            substituted: true,
        });
        i = close + 1;
        literal_start = i;
    }
    flush(&mut out, &mut segments, literal_start, input.len());
    (
        Interpolated {
            text: out,
            segments,
        },
        missing,
    )
}

fn is_comment_line(input: &str, line_start: usize) -> bool {
    input[line_start..]
        .trim_start_matches([' ', '\t'])
        .starts_with('#')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("kafka.internal:9092".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let (out, missing) = interpolate(
            "a = \"${HOST}\"\nb = \"${NOPE:-x}\"\nc = \"${EMPTY:-d}\"",
            env,
        );
        assert!(missing.is_empty());
        assert_eq!(
            out.text,
            "a = \"kafka.internal:9092\"\nb = \"x\"\nc = \"d\""
        );
    }

    #[test]
    fn reports_unset_variable_at_its_original_position() {
        let src = "x = 1\ny = \"${MISSING}\"";
        let (_, missing) = interpolate(src, env);
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[0].name, "MISSING");
        assert_eq!(&src[missing[0].span.clone()], "${MISSING}");
        assert_eq!(missing[0].problem, VarProblem::Unset);
    }

    #[test]
    fn offsets_after_a_substitution_map_back_to_the_original() {
        let src = "a = \"${HOST}\" ; tail";
        let (out, _) = interpolate(src, env);
        let out_pos = out.text.find("tail").unwrap();
        assert_eq!(out.original_offset(out_pos), src.find("tail").unwrap());
        let inside = out.text.find("internal").unwrap();
        assert_eq!(out.original_offset(inside), src.find("${HOST}").unwrap());
    }

    #[test]
    fn escaped_dollar_and_comments_are_left_alone() {
        let (out, missing) = interpolate("# ${SECRET}\na = \"$${HOST}\"", env);
        assert!(missing.is_empty());
        assert_eq!(out.text, "# ${SECRET}\na = \"${HOST}\"");
    }
}
