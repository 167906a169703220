//! Front matter: a block of `key: value` lines between two `---` lines at the top of a Markdown
//! file. Values may be quoted with `"` or `'`. Pure: text in, map and body out.

use std::collections::BTreeMap;

/// A file split into its front matter and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub meta: BTreeMap<String, String>,
    pub body: String,
    /// How many lines of the file come before the body (to turn body lines into file lines).
    pub body_line_offset: usize,
}

/// A front-matter problem at a 1-based line of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct FrontMatterError {
    pub line: usize,
    pub message: String,
}

/// Split `text`; a file without a leading `---` line has empty front matter.
pub fn split(text: &str) -> Result<Document, FrontMatterError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next().unwrap_or("");
    if first.trim_end() != "---" {
        return Ok(Document {
            meta: BTreeMap::new(),
            body: text.to_string(),
            body_line_offset: 0,
        });
    }
    let mut meta = BTreeMap::new();
    let mut consumed = first.len();
    for (i, raw) in lines.enumerate() {
        let line_no = i + 2;
        consumed += raw.len();
        let line = raw.trim_end_matches(['\n', '\r']);
        if line.trim_end() == "---" {
            return Ok(Document {
                meta,
                body: text[consumed..].to_string(),
                body_line_offset: line_no,
            });
        }
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(FrontMatterError {
                line: line_no,
                message: format!("expected `key: value`, found `{line}`"),
            });
        };
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(FrontMatterError {
                line: line_no,
                message: format!("`{key}` is not a valid key (letters, digits and _)"),
            });
        }
        meta.insert(key.to_string(), unquote(value.trim()));
    }
    Err(FrontMatterError {
        line: 1,
        message: "front matter opened with `---` is never closed by another `---` line".into(),
    })
}

fn unquote(v: &str) -> String {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return v[1..v.len() - 1].to_string();
        }
    }
    v.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_meta_and_body() {
        let d =
            split("---\nsubject: \"Moped: {{ version }}\"\nname: Goliad\n---\nHello\n").unwrap();
        assert_eq!(d.meta["subject"], "Moped: {{ version }}");
        assert_eq!(d.meta["name"], "Goliad");
        assert_eq!(d.body, "Hello\n");
        assert_eq!(d.body_line_offset, 4);
    }

    #[test]
    fn no_front_matter_is_fine() {
        let d = split("Hello\n---\n").unwrap();
        assert!(d.meta.is_empty());
        assert_eq!(d.body_line_offset, 0);
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(split("---\nsubject x\n---\n").unwrap_err().line, 2);
        assert_eq!(split("---\nsubject: x\n").unwrap_err().line, 1);
    }
}
