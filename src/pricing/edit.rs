//! Editing rule files from the console: a save is compiled together with the rest of the
//! directory first (the same checks as `tariff rules check` and start-up), refused with every
//! error if it does not compile, and otherwise written atomically and loaded at once. The
//! version it replaced is kept beside it (`.<file>.previous`, which the loader ignores) for a
//! one-click revert, itself checked the same way.

use std::path::{Path, PathBuf};

use super::reload::RulesHandle;
use super::rules::{RuleErrors, RuleSet, load_sources, rule_files};

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("`{0}` is not a rule file of this directory")]
    UnknownFile(String),
    #[error("there is no previous version of `{0}` to go back to")]
    NoPrevious(String),
    #[error("the rules would not compile:\n{0}")]
    Invalid(RuleErrors),
    #[error("{0}")]
    Io(String),
}

/// A plain file name: letters, digits, `-`, `_`, `.`, ending in `.toml`, not hidden.
pub fn plain_name(name: &str) -> bool {
    name.len() <= 128
        && name.ends_with(".toml")
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn previous_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!(".{name}.previous"))
}

fn io(what: &str, e: std::io::Error) -> EditError {
    EditError::Io(format!("{what}: {e}"))
}

impl RulesHandle {
    /// The rule files' names, sorted.
    pub fn file_names(&self) -> Vec<String> {
        rule_files(self.dir())
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(str::to_string))
            .collect()
    }

    fn existing(&self, name: &str) -> Result<PathBuf, EditError> {
        if !plain_name(name) || !self.file_names().iter().any(|n| n == name) {
            return Err(EditError::UnknownFile(name.to_string()));
        }
        Ok(self.dir().join(name))
    }

    pub fn read_file(&self, name: &str) -> Result<String, EditError> {
        let path = self.existing(name)?;
        std::fs::read_to_string(&path).map_err(|e| io(name, e))
    }

    pub fn has_previous(&self, name: &str) -> bool {
        plain_name(name) && previous_path(self.dir(), name).is_file()
    }

    /// Compiles the directory as it would be with `name` holding `text`.
    /// The directory with `name` replaced by `text`, compiled (an experiment's candidate).
    pub fn candidate(&self, name: &str, text: &str) -> Result<RuleSet, EditError> {
        self.existing(name)?;
        self.compile_with(name, text)
    }

    fn compile_with(&self, name: &str, text: &str) -> Result<RuleSet, EditError> {
        let mut sources = Vec::new();
        for path in rule_files(self.dir()).map_err(EditError::Io)? {
            let body = if path.file_name().and_then(|f| f.to_str()) == Some(name) {
                text.to_string()
            } else {
                std::fs::read_to_string(&path).map_err(|e| io(&path.display().to_string(), e))?
            };
            sources.push((path, body));
        }
        load_sources(&sources, self.env(), self.options()).map_err(EditError::Invalid)
    }

    fn check_with(&self, name: &str, text: &str) -> Result<(), EditError> {
        self.compile_with(name, text).map(|_| ())
    }

    /// Writes `text` as `name` if the directory then compiles, keeping the version it
    /// replaces, and loads the new rules at once.
    pub fn save_file(&self, name: &str, text: &str) -> Result<(), EditError> {
        let _one_edit_at_a_time = self.edit_lock();
        let path = self.existing(name)?;
        self.check_with(name, text)?;
        let old = std::fs::read(&path).map_err(|e| io(name, e))?;
        std::fs::write(previous_path(self.dir(), name), &old).map_err(|e| io("previous", e))?;
        write_atomically(&path, text.as_bytes())?;
        self.reload().map_err(EditError::Invalid)
    }

    /// Puts the previous version of `name` back (the current one becomes the previous), if
    /// the directory compiles with it.
    pub fn revert_file(&self, name: &str) -> Result<(), EditError> {
        let _one_edit_at_a_time = self.edit_lock();
        let path = self.existing(name)?;
        let prev = previous_path(self.dir(), name);
        let Ok(before) = std::fs::read_to_string(&prev) else {
            return Err(EditError::NoPrevious(name.to_string()));
        };
        self.check_with(name, &before)?;
        let now = std::fs::read(&path).map_err(|e| io(name, e))?;
        write_atomically(&path, before.as_bytes())?;
        std::fs::write(&prev, now).map_err(|e| io("previous", e))?;
        self.reload().map_err(EditError::Invalid)
    }
}

/// A temporary file in the same directory, then a rename: a reader sees the old file or the
/// new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), EditError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".tariff-edit-{:016x}.tmp", rand::random::<u64>()));
    std::fs::write(&tmp, bytes).map_err(|e| io("temporary file", e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io("rename", e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_toml_names_are_files() {
        for ok in ["search.toml", "a-b_c.1.toml"] {
            assert!(plain_name(ok), "{ok}");
        }
        for bad in [
            "../search.toml",
            "/etc/x.toml",
            ".search.toml.previous",
            "search.toml/..",
            "search",
            "a b.toml",
            ".hidden.toml",
        ] {
            assert!(!plain_name(bad), "{bad}");
        }
    }
}
