//! Release notes: `releases/<version>.md` files (front matter `name`, `date`; body as the team
//! writes it) and the tolerant version matching Moped's tags need (`v3.12.0`, `3.12.0`, `v3.12`,
//! `v.2.40.0`). Reads files; renders nothing. Notes are refused at load, with the file and line,
//! when a link is not `http:`, `https:` or `mailto:` or an image is not an http(s) URL (which
//! remote images show is the notice template's `images:` to say, when it renders).

use std::path::{Path, PathBuf};

use chrono::NaiveDate;

use crate::render::{front_matter, markdown};

/// One release: what the notes say and what it is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Canonical form, `v3.12.0`.
    pub version: String,
    /// The voted release name, e.g. "Goliad".
    pub name: String,
    pub date: Option<NaiveDate>,
    /// The notes as Markdown.
    pub notes: String,
    /// The file it came from.
    pub path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("`{0}` is not a version (expected something like v3.12.0, 3.12.0 or v3.12)")]
    BadVersion(String),
    #[error("no release notes for {wanted} in {dir}; known versions: {}", if known.is_empty() { "none".to_string() } else { known.join(", ") })]
    Unknown {
        wanted: String,
        dir: PathBuf,
        known: Vec<String>,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

/// A version as three numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// Parse `v3.12.0`, `3.12.0`, `v3.12`, `v.2.40.0`, `V3`.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim();
        let s = s
            .strip_prefix(['v', 'V'])
            .map(|r| r.strip_prefix('.').unwrap_or(r))
            .unwrap_or(s);
        let parts: Vec<&str> = s.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        let mut n = [0u64; 3];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || !p.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            n[i] = p.parse().ok()?;
        }
        Some(Version(n[0], n[1], n[2]))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Every `*.md` file in `dir` whose stem is a version, sorted by version.
pub fn known_versions(dir: &Path) -> Vec<(Version, PathBuf)> {
    let mut found: Vec<(Version, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let path = e.path();
            if path.extension()? != "md" {
                return None;
            }
            let v = Version::parse(path.file_stem()?.to_str()?)?;
            Some((v, path))
        })
        .collect();
    found.sort();
    found
}

/// Find the notes for `wanted` in `dir`.
pub fn find(dir: &Path, wanted: &str) -> Result<Release, ReleaseError> {
    let v = Version::parse(wanted).ok_or_else(|| ReleaseError::BadVersion(wanted.to_string()))?;
    let known = known_versions(dir);
    match known.iter().find(|(k, _)| *k == v) {
        Some((_, path)) => load(path, Some(v)),
        None => Err(ReleaseError::Unknown {
            wanted: v.to_string(),
            dir: dir.to_path_buf(),
            known: known.iter().map(|(k, _)| k.to_string()).collect(),
        }),
    }
}

/// Load a release-notes file. The version comes from `version`, else the front matter's
/// `version`, else the file name.
pub fn load(path: &Path, version: Option<Version>) -> Result<Release, ReleaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReleaseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc = front_matter::split(&text).map_err(|e| ReleaseError::Invalid {
        path: path.to_path_buf(),
        line: e.line,
        message: e.message,
    })?;
    let invalid = |message: String| ReleaseError::Invalid {
        path: path.to_path_buf(),
        line: 1,
        message,
    };
    let version = match version {
        Some(v) => v,
        None => {
            let from_meta = doc.meta.get("version").map(String::as_str);
            let from_name = path.file_stem().and_then(|s| s.to_str());
            from_meta
                .or(from_name)
                .and_then(Version::parse)
                .ok_or_else(|| {
                    invalid("no version: add `version: v3.12.0` to the front matter".into())
                })?
        }
    };
    let date = match doc.meta.get("date") {
        Some(d) if !d.is_empty() => Some(
            NaiveDate::parse_from_str(d, "%Y-%m-%d")
                .map_err(|_| invalid(format!("date `{d}` is not a date like 2026-08-06")))?,
        ),
        _ => None,
    };
    if doc.body.trim().is_empty() {
        return Err(invalid("the release notes are empty".into()));
    }
    let refused = markdown::refusals(&doc.body, &markdown::Policy::any_remote_image(), |_| false);
    if let Some(r) = refused.into_iter().next() {
        return Err(ReleaseError::Invalid {
            path: path.to_path_buf(),
            line: r.line + doc.body_line_offset,
            message: r.message,
        });
    }
    Ok(Release {
        version: version.to_string(),
        name: doc.meta.get("name").cloned().unwrap_or_default(),
        date,
        notes: drop_empty_sections(&doc.body),
        path: path.to_path_buf(),
    })
}

/// Remove headings that have nothing under them (release-drafter leaves "### New features" in
/// place when a release has none): a heading followed only by blank lines and then a heading of
/// the same or a higher level, or the end.
pub fn drop_empty_sections(markdown: &str) -> String {
    fn level(line: &str) -> Option<usize> {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        (1..=6)
            .contains(&hashes)
            .then(|| line[hashes..].starts_with(' ').then_some(hashes))
            .flatten()
    }
    let lines: Vec<&str> = markdown.lines().collect();
    let mut keep = vec![true; lines.len()];
    let mut in_fence = false;
    for i in 0..lines.len() {
        if lines[i].trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        let Some(own) = (!in_fence).then(|| level(lines[i])).flatten() else {
            continue;
        };
        let next = lines[i + 1..]
            .iter()
            .enumerate()
            .find(|(_, l)| !l.trim().is_empty());
        let empty = match next {
            None => true,
            Some((_, l)) => level(l).is_some_and(|n| n <= own),
        };
        if empty {
            keep[i] = false;
        }
    }
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    for (line, k) in lines.iter().zip(keep) {
        if k && !(line.trim().is_empty() && out.last().is_some_and(|l| l.trim().is_empty())) {
            out.push(line);
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_sections_are_dropped() {
        let md =
            "## What’s changed\n\n### New features\n\n### Enhancements\n\n* a\n\n### Bug fixes\n";
        assert_eq!(
            drop_empty_sections(md),
            "## What’s changed\n\n### Enhancements\n\n* a\n\n"
        );
    }

    #[test]
    fn versions_in_every_spelling_moped_uses() {
        assert_eq!(Version::parse("v3.12.0"), Some(Version(3, 12, 0)));
        assert_eq!(Version::parse("3.12.0"), Some(Version(3, 12, 0)));
        assert_eq!(Version::parse("v3.12"), Some(Version(3, 12, 0)));
        assert_eq!(Version::parse("v.2.40.0"), Some(Version(2, 40, 0)));
        assert_eq!(Version::parse("v3.12.0-rc"), None);
        assert_eq!(Version::parse(""), None);
        assert_eq!(Version::parse("v1.2.3.4"), None);
    }

    #[test]
    fn unknown_version_lists_the_known_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("v3.11.0.md"),
            "---\nname: Falfurrias\n---\nx\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("v3.12.0.md"), "---\nname: Goliad\n---\nx\n").unwrap();
        let e = find(dir.path(), "v9.9").unwrap_err().to_string();
        assert!(
            e.contains("v9.9.0") && e.contains("v3.11.0, v3.12.0"),
            "{e}"
        );
        let r = find(dir.path(), "3.12").unwrap();
        assert_eq!(r.name, "Goliad");
        assert_eq!(r.version, "v3.12.0");
    }

    #[test]
    fn bad_date_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v1.0.0.md");
        std::fs::write(&p, "---\ndate: next week\n---\nx\n").unwrap();
        let e = find(dir.path(), "v1.0.0").unwrap_err().to_string();
        assert!(e.contains("v1.0.0.md") && e.contains("next week"), "{e}");
    }

    #[test]
    fn notes_with_a_link_that_is_not_http_or_mailto_are_refused_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v3.13.0.md");
        for (body, line) in [
            ("Hi\n\n* [x](javascript:alert(1))\n", 6),
            ("a\n\nb <JavaScript:alert(1)>\n", 6),
            ("[x][r]\n\n[r]: &#106;avascript:alert(1)\n", 4),
            ("a\n![pixel](data:image/gif;base64,R0lGOD)\n", 5),
        ] {
            std::fs::write(&p, format!("---\nname: Hays\n---\n{body}")).unwrap();
            let e = load(&p, None).unwrap_err();
            let shown = e.to_string();
            assert!(
                matches!(e, ReleaseError::Invalid { line: l, .. } if l == line),
                "{body:?}: {shown}"
            );
            assert!(
                shown.starts_with(&format!("{}:{line}: ", p.display())),
                "{shown}"
            );
        }
        std::fs::write(
            &p,
            "---\nname: Hays\n---\n[PR](https://github.com/cityofaustin/atd-moped/pull/1) \
             <moped@austintexas.gov> [m](mailto:a@b.example) ![map](https://x.example/m.png)\n\n\
             <a href=\"javascript:alert(1)\">raw HTML is shown as text</a>\n",
        )
        .unwrap();
        assert!(load(&p, None).is_ok());
    }

    #[test]
    fn shipped_release_notes_load() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("releases");
        let known = known_versions(&dir);
        assert!(!known.is_empty());
        for (v, path) in known {
            load(&path, Some(v)).unwrap();
        }
    }
}
