//! Rendering: a notice template (Markdown + Tera, subject in front matter) and the shared HTML
//! layout turned into a subject, a plain-text part and an HTML part with its CSS inlined.
//! Pure apart from reading the template files once at load time; it knows nothing of SMTP or
//! the database.
//!
//! Safety rule: values are substituted into the *Markdown* with a Markdown escape (so a contact
//! called `<b>[x](y)` stays literal text), the Markdown becomes HTML with raw HTML shown as text,
//! and that HTML goes into an HTML-escaping layout. Trusted Markdown (the release notes) is
//! passed with `| safe`.
//!
//! Link rule (see [`markdown::Policy`]): a link is clickable only for `http:`, `https:` and
//! `mailto:`; an image shows only from a URL prefix listed in the notice template's front matter
//! (`images: https://moped.austinmobility.io/`, none by default). A template whose own Markdown
//! breaks the rule is refused at load with its file and line. Trusted Markdown inserted with
//! `| safe` (the notes) that breaks it stops the render, naming the template line that inserts it
//! and the link or image (the notes' links were already refused when they were loaded; this is
//! where a remote image the template does not list is caught, the same for every recipient, so
//! the check before sending catches it). Whatever any other value brings in is rendered as its
//! text (a link's text, an image's alt text).

pub mod front_matter;
pub mod inline;
pub mod markdown;
pub mod merge;

use std::path::{Path, PathBuf};

use tera::Tera;

/// What a notice looks like for one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// One line, no control characters.
    pub subject: String,
    pub text: String,
    /// A whole HTML document with styles inlined.
    pub html: String,
}

/// A template problem, with the file and (when known) the line.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct TemplateError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

/// The name of the shared layout file in the templates directory.
pub const LAYOUT_FILE: &str = "layout.html";

struct Source {
    path: PathBuf,
    text: String,
    line_offset: usize,
}

/// Loaded and parsed templates for one notice.
pub struct Templates {
    notice: Tera,
    layout: Tera,
    inliner: inline::Inliner,
    policy: markdown::Policy,
    /// Variables the body inserts as trusted Markdown (`{{ notes | safe }}`), with the body line.
    safe: Vec<(String, usize)>,
    body: Source,
    subject: Source,
    layout_src: Source,
}

const BODY: &str = "body.md";
const SUBJECT: &str = "subject.txt";
const LAYOUT: &str = "layout.html";

impl Templates {
    /// Load `<dir>/<notice>.md` and `<dir>/layout.html`.
    pub fn load(dir: &Path, notice: &str) -> Result<Templates, TemplateError> {
        let path = dir.join(format!("{notice}.md"));
        let text = std::fs::read_to_string(&path).map_err(|e| TemplateError {
            path: path.clone(),
            line: None,
            message: format!("cannot read the template: {e}"),
        })?;
        let doc = front_matter::split(&text).map_err(|e| TemplateError {
            path: path.clone(),
            line: Some(e.line),
            message: e.message,
        })?;
        let subject = doc
            .meta
            .get("subject")
            .cloned()
            .ok_or_else(|| TemplateError {
                path: path.clone(),
                line: Some(1),
                message: "no `subject:` in the front matter".into(),
            })?;
        let meta_line = |key: &str| {
            text.lines()
                .position(|l| l.trim_start().starts_with(key))
                .map_or(1, |i| i + 1)
        };
        let policy = match doc.meta.get("images") {
            Some(list) => markdown::Policy::with_images(list).map_err(|message| TemplateError {
                path: path.clone(),
                line: Some(meta_line("images")),
                message: format!("images: {message}"),
            })?,
            None => markdown::Policy::default(),
        };
        check_links(&path, &doc.body, doc.body_line_offset, &policy)?;
        let layout_path = dir.join(LAYOUT_FILE);
        let layout_text = std::fs::read_to_string(&layout_path).map_err(|e| TemplateError {
            path: layout_path.clone(),
            line: None,
            message: format!("cannot read the layout: {e}"),
        })?;
        let subject_line = meta_line("subject");
        Self::from_sources(
            Source {
                path: path.clone(),
                text: doc.body,
                line_offset: doc.body_line_offset,
            },
            Source {
                path,
                text: subject,
                line_offset: subject_line - 1,
            },
            Source {
                path: layout_path,
                text: layout_text,
                line_offset: 0,
            },
            policy,
        )
    }

    fn from_sources(
        body: Source,
        subject: Source,
        layout_src: Source,
        policy: markdown::Policy,
    ) -> Result<Templates, TemplateError> {
        let mut notice = Tera::default();
        notice.autoescape_on(vec![".md"]);
        notice.set_escape_fn(markdown::escape);
        notice
            .add_raw_template(BODY, &body.text)
            .map_err(|e| tera_error(&body, &e))?;
        notice
            .add_raw_template(SUBJECT, &subject.text)
            .map_err(|e| tera_error(&subject, &e))?;
        let mut layout = Tera::default();
        layout.autoescape_on(vec![".html"]);
        layout
            .add_raw_template(LAYOUT, &layout_src.text)
            .map_err(|e| tera_error(&layout_src, &e))?;
        let inliner = inline::Inliner::new();
        let safe = safe_variables(&body.text);
        Ok(Templates {
            notice,
            layout,
            inliner,
            policy,
            safe,
            body,
            subject,
            layout_src,
        })
    }

    /// The links and images this notice may carry (its `images:` front matter).
    pub fn policy(&self) -> &markdown::Policy {
        &self.policy
    }

    /// The Tera instance holding the notice's body and subject templates.
    pub(crate) fn notice_tera(&self) -> &Tera {
        &self.notice
    }

    /// The Tera instance holding the layout.
    pub(crate) fn layout_tera(&self) -> &Tera {
        &self.layout
    }

    /// A value inserted with `| safe` that holds a link or an image the policy refuses is an
    /// error, not text: it is Markdown the admin wrote and vouched for. For a shared value (the
    /// notes) it is the same for every recipient, so the render before sending finds it.
    fn check_safe_values(&self, ctx: &tera::Context) -> Result<(), TemplateError> {
        for (name, line) in &self.safe {
            let Some(value) = ctx.get(name).and_then(|v| v.as_str()) else {
                continue;
            };
            if let Some(r) = markdown::refusals(value, &self.policy, |_| false)
                .into_iter()
                .next()
            {
                return Err(TemplateError {
                    path: self.body.path.clone(),
                    line: Some(line + self.body.line_offset),
                    message: format!(
                        "`{name}`, inserted here, has at its line {}: {}",
                        r.line, r.message
                    ),
                });
            }
        }
        Ok(())
    }

    /// The body's Markdown for `ctx`, before it becomes text and HTML.
    pub(crate) fn body_markdown(&self, ctx: &tera::Context) -> tera::Result<String> {
        self.notice.render(BODY, ctx)
    }

    /// Templates from in-memory texts (tests).
    #[cfg(test)]
    pub(crate) fn from_texts(
        body: &str,
        subject: &str,
        layout: &str,
    ) -> Result<Templates, TemplateError> {
        let src = |text: &str, path: &str| Source {
            path: PathBuf::from(path),
            text: text.to_string(),
            line_offset: 0,
        };
        Self::from_sources(
            src(body, "test.md"),
            src(subject, "test.md"),
            src(layout, LAYOUT_FILE),
            markdown::Policy::default(),
        )
    }

    /// Render for one recipient. `ctx` holds every variable the notice may use.
    pub fn render(&self, ctx: &tera::Context) -> Result<Rendered, TemplateError> {
        let subject_raw = self
            .notice
            .render(SUBJECT, ctx)
            .map_err(|e| tera_error(&self.subject, &e))?;
        let subject = one_line(&subject_raw);
        let body_md = self
            .notice
            .render(BODY, ctx)
            .map_err(|e| tera_error(&self.body, &e))?;
        let parts = markdown::to_parts(&body_md, &self.policy);
        if parts.refused > 0 {
            self.check_safe_values(ctx)?;
        }
        let (text, body_html) = (parts.text, parts.html);
        let mut layout_ctx = ctx.clone();
        layout_ctx.insert("subject", &subject);
        layout_ctx.insert("body", &body_html);
        let html = self
            .layout
            .render(LAYOUT, &layout_ctx)
            .map_err(|e| tera_error(&self.layout_src, &e))?;
        let html = self.inliner.inline(&html).map_err(|e| TemplateError {
            path: self.layout_src.path.clone(),
            line: None,
            message: format!("cannot inline the CSS: {e}"),
        })?;
        Ok(Rendered {
            subject,
            text,
            html,
        })
    }
}

/// Refuse a template whose own Markdown has a link or an image `policy` does not allow, naming
/// the file and line. Destinations written with Tera (`{{ app_url }}`) are judged once rendered.
fn check_links(
    path: &Path,
    body: &str,
    line_offset: usize,
    policy: &markdown::Policy,
) -> Result<(), TemplateError> {
    let tera = |dest: &str| dest.contains("{{") || dest.contains("{%") || dest.contains("{#");
    match markdown::refusals(body, policy, tera).into_iter().next() {
        Some(r) => Err(TemplateError {
            path: path.to_path_buf(),
            line: Some(r.line + line_offset),
            message: r.message,
        }),
        None => Ok(()),
    }
}

/// The variables a template body prints as `{{ name | safe }}`, with the 1-based line of the
/// first such use.
fn safe_variables(body: &str) -> Vec<(String, usize)> {
    let mut found: Vec<(String, usize)> = Vec::new();
    for (i, line) in body.lines().enumerate() {
        let mut rest = line;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let Some(close) = after.find("}}") else {
                break;
            };
            let inner = after[..close].trim_matches(|c: char| c == '-' || c.is_whitespace());
            let mut filters = inner.split('|').map(str::trim);
            let name = filters.next().unwrap_or_default();
            let is_name = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.');
            if is_name && filters.any(|f| f == "safe") && !found.iter().any(|(n, _)| n == name) {
                found.push((name.to_string(), i + 1));
            }
            rest = &after[close + 2..];
        }
    }
    found
}

/// Collapse a rendered subject to one line without control characters.
pub fn one_line(s: &str) -> String {
    let cleaned: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    cleaned.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turn a Tera error into a message naming the file and the line. Tera reports parse errors
/// with a `--> line:col` position; for a missing variable it names the variable, and the line is
/// the first one that uses it.
fn tera_error(src: &Source, err: &tera::Error) -> TemplateError {
    let mut chain = vec![err.to_string()];
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let full = chain.join(": ");
    let mut line = parse_position(&full);
    let mut message = chain
        .iter()
        .rev()
        .find(|m| !m.starts_with("Failed to render") && !m.starts_with("Failed to parse"))
        .cloned()
        .unwrap_or_else(|| full.clone());
    if let Some(var) = missing_variable(&full) {
        message = format!("undefined variable `{var}`");
        line = src
            .text
            .lines()
            .position(|l| uses_variable(l, &var))
            .map(|i| i + 1);
    }
    // Pest's message repeats the source; keep its first line and the expectation.
    let message = message
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !(t.is_empty()
                || t.starts_with("-->")
                || t.starts_with('|')
                || t.starts_with('=')
                || t.starts_with(|c: char| c.is_ascii_digit()))
        })
        .chain(message.lines().filter(|l| l.trim_start().starts_with('=')))
        .map(|l| l.trim().trim_start_matches("= ").to_string())
        .collect::<Vec<_>>()
        .join("; ");
    TemplateError {
        path: src.path.clone(),
        line: line.map(|l| l + src.line_offset),
        message: if message.is_empty() { full } else { message },
    }
}

fn parse_position(s: &str) -> Option<usize> {
    let at = s.find("--> ")?;
    let rest = &s[at + 4..];
    let num: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    num.parse().ok()
}

fn missing_variable(s: &str) -> Option<String> {
    let at = s.find("Variable `")?;
    let rest = &s[at + 10..];
    let end = rest.find('`')?;
    Some(rest[..end].to_string())
}

fn uses_variable(line: &str, var: &str) -> bool {
    let root = var.split(['.', '[']).next().unwrap_or(var);
    let mut rest = line;
    while let Some(i) = rest.find(root) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + root.len()..].chars().next();
        let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        if !word(before) && !word(after) && (line.contains("{{") || line.contains("{%")) {
            return true;
        }
        rest = &rest[i + root.len()..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(body: &str) -> Result<Templates, TemplateError> {
        let src = |text: &str, path: &str, off: usize| Source {
            path: PathBuf::from(path),
            text: text.to_string(),
            line_offset: off,
        };
        Templates::from_sources(
            src(body, "templates/x.md", 3),
            src("Hello {{ first_name }}", "templates/x.md", 1),
            src(
                "<html><head><style>p { color: red }</style></head><body>{{ body | safe }}</body></html>",
                "templates/layout.html",
                0,
            ),
            markdown::Policy::default(),
        )
    }

    fn ctx() -> tera::Context {
        let mut c = tera::Context::new();
        c.insert("first_name", "Ann\r\nBcc: x@evil.example");
        c
    }

    #[test]
    fn css_is_inlined_and_subject_is_one_line() {
        let t = templates("Hi {{ first_name }}\n").unwrap();
        let r = t.render(&ctx()).unwrap();
        assert!(r.html.contains("<p style=\"color: red;\">"), "{}", r.html);
        assert!(!r.html.contains("<style"), "{}", r.html);
        assert_eq!(r.subject, "Hello Ann Bcc: x@evil.example");
    }

    #[test]
    fn undefined_variable_names_file_and_line() {
        let t = templates("line one\n\nHi {{ nickname }}\n").unwrap();
        let e = t.render(&ctx()).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert!(e.message.contains("nickname"), "{e}");
        assert!(e.to_string().starts_with("templates/x.md:6:"), "{e}");
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let e = templates("ok\n{% if %}\n").err().unwrap();
        assert_eq!(e.line, Some(5), "{e}");
        assert!(e.to_string().starts_with("templates/x.md:5:"), "{e}");
    }

    #[test]
    fn safe_variables_are_found_with_their_line() {
        assert_eq!(
            safe_variables("Hi {{ first_name }}\n\n{{ notes | safe }} {{notes|safe}}\n{{- extra | trim | safe -}}\n"),
            [("notes".to_string(), 3), ("extra".to_string(), 4)]
        );
    }

    #[test]
    fn a_refused_image_in_trusted_markdown_stops_the_render_and_elsewhere_is_alt_text() {
        let t = templates("Hi {{ first_name }}\n\n{{ notes | safe }}\n\n![logo]({{ logo }})\n")
            .unwrap();
        let mut c = ctx();
        c.insert("logo", "https://tracker.example/logo.png");
        c.insert(
            "notes",
            "* fixed\n* ![pixel](https://tracker.example/p.gif)\n",
        );
        let e = t.render(&c).unwrap_err();
        assert_eq!(e.line, Some(6), "{e}");
        let shown = e.to_string();
        assert!(
            shown.contains("`notes`")
                && shown.contains("line 2")
                && shown.contains("https://tracker.example/p.gif"),
            "{shown}"
        );
        // The same image from an escaped value's destination is its alt text.
        c.insert(
            "notes",
            "* fixed [PR](https://github.com/cityofaustin/atd-moped/pull/1)\n",
        );
        let r = t.render(&c).unwrap();
        assert!(
            !r.html.contains("tracker.example") && !r.text.contains("tracker.example"),
            "{}",
            r.html
        );
        assert!(
            r.html.contains(">logo<") || r.html.contains(">logo\n"),
            "{}",
            r.html
        );
        assert!(
            r.html
                .contains("href=\"https://github.com/cityofaustin/atd-moped/pull/1\""),
            "{}",
            r.html
        );
    }
}
