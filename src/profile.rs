//! Worker profiles: `profiles/NAME.md`, appended to a worker's system prompt.
//!
//! A name is checked before it touches the file system (the schema's pattern again, so no `/`,
//! `..` or leading dot), and the file must be a regular file inside the profiles directory.

use std::path::{Path, PathBuf};

/// The profile used when an action names none (when the file exists).
pub const DEFAULT_PROFILE: &str = "default";
/// A profile larger than this is refused.
pub const MAX_PROFILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProfileError {
    #[error("profile name {0:?} must match ^[A-Za-z0-9][A-Za-z0-9_-]{{0,63}}$")]
    BadName(String),
    #[error("profile not found: {0} (no {0}.md in the profiles directory)")]
    NotFound(String),
    #[error("profile {0} is larger than {MAX_PROFILE_BYTES} bytes")]
    TooLarge(String),
    #[error("the profile's default tools {0} cannot be used: {1}")]
    BadTools(String, String),
}

/// A profile's default `tools` rules: `NAME.tools.json` beside `NAME.md`
/// (`{"allow": [...], "deny": [...]}`), when it exists.
pub fn default_tools(profile: Option<&Path>) -> Result<Option<crate::protocol::agent::ToolRules>, ProfileError> {
    let Some(path) = profile.map(|p| p.with_extension("tools.json")) else { return Ok(None) };
    let bad = |why: String| ProfileError::BadTools(path.display().to_string(), why);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(bad(err.to_string())),
    };
    let rules: crate::protocol::agent::ToolRules = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    match rules.allow.iter().chain(&rules.deny).find(|e| crate::protocol::agent::split_entry(e).is_none()) {
        Some(entry) => Err(bad(format!("{entry:?} is not SERVER.TOOL"))),
        None => Ok(Some(rules)),
    }
}

/// `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`.
pub fn is_profile_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Finds the file for `requested` (or the default profile, which may be absent).
/// Returns `Ok(None)` when no profile applies.
pub fn resolve(dir: &Path, requested: Option<&str>) -> Result<Option<PathBuf>, ProfileError> {
    let name = requested.unwrap_or(DEFAULT_PROFILE);
    if !is_profile_name(name) {
        return Err(ProfileError::BadName(name.to_owned()));
    }
    let path = dir.join(format!("{name}.md"));
    match std::fs::metadata(&path) {
        Ok(meta) if meta.is_file() => {
            if meta.len() > MAX_PROFILE_BYTES {
                return Err(ProfileError::TooLarge(name.to_owned()));
            }
            Ok(Some(path))
        }
        _ if requested.is_none() => Ok(None),
        _ => Err(ProfileError::NotFound(name.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for good in ["default", "a", "ops-2", "x_y"] {
            assert!(is_profile_name(good), "{good}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a.md", "-x", &"a".repeat(65)] {
            assert!(!is_profile_name(bad), "{bad}");
        }
    }

    #[test]
    fn resolution() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(resolve(dir.path(), None), Ok(None));
        assert_eq!(resolve(dir.path(), Some("ops")), Err(ProfileError::NotFound("ops".into())));
        assert_eq!(resolve(dir.path(), Some("../ops")), Err(ProfileError::BadName("../ops".into())));
        std::fs::write(dir.path().join("default.md"), "be brief").unwrap();
        std::fs::create_dir(dir.path().join("adir.md")).unwrap();
        assert_eq!(resolve(dir.path(), None), Ok(Some(dir.path().join("default.md"))));
        assert_eq!(resolve(dir.path(), Some("adir")), Err(ProfileError::NotFound("adir".into())));
    }
}
