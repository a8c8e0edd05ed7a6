//! Configuration errors that name `file:line:column` and say how to fix the problem.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, 0 when the problem is not tied to a place (e.g. the file is unreadable).
    pub line: usize,
    /// 1-based column in characters.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we can tell.
    pub help: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file.display(),
                self.line,
                self.column,
                self.message
            )?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// Every problem found in a configuration file, in file order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} errors in configuration", self.0.len())?;
        }
        Ok(())
    }
}

/// Collects errors against the original text of one file.
pub(crate) struct Diagnostics<'a> {
    file: &'a Path,
    original: &'a str,
    map: &'a dyn Fn(usize) -> usize,
    errors: Vec<(usize, ConfigError)>,
    /// Indexes into `errors` of unresolved-variable errors.
    var_errors: Vec<usize>,
    /// Lines with an unresolved `${VAR}`: other errors there are its consequences.
    var_lines: Vec<usize>,
}

impl<'a> Diagnostics<'a> {
    pub(crate) fn new(file: &'a Path, original: &'a str, map: &'a dyn Fn(usize) -> usize) -> Self {
        Self {
            file,
            original,
            map,
            errors: Vec::new(),
            var_lines: Vec::new(),
            var_errors: Vec::new(),
        }
    }

    /// `value` read as one of the keywords of `choices`; `None` (with an error at its span:
    /// `unknown <what> "<value>"`, and `help`) when it is none of them. The one way the
    /// configuration reads a keyword.
    pub(crate) fn keyword<T: Clone>(
        &mut self,
        value: &serde_spanned::Spanned<String>,
        what: &str,
        choices: &[(&str, T)],
        help: &str,
    ) -> Option<T> {
        let given = value.get_ref().as_str();
        let found = choices
            .iter()
            .find(|(k, _)| *k == given)
            .map(|(_, v)| v.clone());
        if found.is_none() {
            self.at(
                value.span(),
                format!("unknown {what} \"{given}\""),
                Some(help.to_string()),
            );
        }
        found
    }

    /// Records an error at a span of the *parsed* (interpolated) text.
    pub(crate) fn at(
        &mut self,
        span: Range<usize>,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let offset = (self.map)(span.start);
        self.at_original(offset, message, help);
    }

    /// Records an error at an offset of the original text.
    pub(crate) fn at_original(
        &mut self,
        offset: usize,
        message: impl Into<String>,
        help: Option<String>,
    ) {
        let (line, column) = line_column(self.original, offset);
        self.errors.push((
            offset,
            ConfigError {
                file: self.file.to_path_buf(),
                line,
                column,
                message: message.into(),
                help,
            },
        ));
    }

    /// Records an unresolved `${VAR}` at an offset of the original text; other errors on its
    /// line are dropped as consequences.
    pub(crate) fn variable(&mut self, offset: usize, message: String, help: String) {
        self.var_errors.push(self.errors.len());
        self.at_original(offset, message, Some(help));
        let (line, _) = line_column(self.original, offset);
        self.var_lines.push(line);
    }

    /// Records a `toml` error (syntax or serde) with its span.
    pub(crate) fn toml(&mut self, err: &toml::de::Error, help: Option<String>) {
        let message = err.message().trim().to_string();
        let help = help.or_else(|| help_for(&message));
        match err.span() {
            Some(span) => self.at(span, message, help),
            None => self.at_original(0, message, help),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub(crate) fn finish(self) -> Vec<ConfigError> {
        let var_lines = self.var_lines;
        let var_errors = self.var_errors;
        let mut kept: Vec<(usize, ConfigError)> = self
            .errors
            .into_iter()
            .enumerate()
            .filter(|(i, (_, e))| var_errors.contains(i) || !var_lines.contains(&e.line))
            .map(|(_, x)| x)
            .collect();
        kept.sort_by_key(|(offset, _)| *offset);
        kept.into_iter().map(|(_, e)| e).collect()
    }
}

/// 1-based line and character column of a byte offset.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn help_for(message: &str) -> Option<String> {
    if message.starts_with("unknown field") {
        Some("remove the key or correct its spelling; README.md lists every key".into())
    } else if message.starts_with("invalid type") {
        Some("give the value the type shown (strings are quoted, numbers are not)".into())
    } else if message.starts_with("missing field") {
        Some("add the key to this table".into())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::line_column;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 6), (2, 1));
        let pos = text.find("= 2").unwrap();
        assert_eq!(line_column(text, pos), (2, 4));
    }
}
