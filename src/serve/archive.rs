//! The release-notes archive: an index of the releases (newest first), one page per release with
//! its notes as the release-notes email shows them (without the greeting), and an Atom feed
//! (RFC 4287). Served under `/releases` and written as static files by `notify archive build DIR`.
//!
//! Only the files [`crate::release::known_versions`] lists are ever read, and of those only the
//! ones that resolve to a regular file inside the releases folder (a symlinked `.md` whose target
//! is elsewhere is skipped). A request names a version, which is parsed and looked up in that list:
//! no part of a request becomes a path.
//!
//! The notes are rendered with [`markdown::to_html`] under the release-notes template's link and
//! image rule (its `images:` front matter, none by default), so the page shows what the email
//! shows. The pages and the feed are Tera templates built into the binary
//! (`templates/archive/`); names ending in `.html` and `.xml` turn Tera's escaping on, so release
//! names and the notes' HTML inside the feed's `content type="html"` are escaped.
//!
//! [`Archive`] and its renderers are pure; loading reads the releases folder; the handlers only
//! load, render and answer.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::Context as _;
use axum::extract::{Path as UrlPath, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::NaiveDate;
use tera::Tera;

use super::AppState;
use crate::config::Config;
use crate::release::{self, Release, Version};
use crate::render::{front_matter, markdown};

/// The templates, in the binary. The names decide Tera's escaping: `.html` and `.xml` escape.
const TEMPLATES: [(&str, &str); 4] = [
    (
        "base.html",
        include_str!("../../templates/archive/base.html"),
    ),
    (
        "index.html",
        include_str!("../../templates/archive/index.html"),
    ),
    (
        "release.html",
        include_str!("../../templates/archive/release.html"),
    ),
    ("feed.xml", include_str!("../../templates/archive/feed.xml")),
];

/// The feed's `updated` for a release without a date (and for a feed without releases): a fixed
/// instant, so the feed is the same for the same notes.
pub const NO_DATE: &str = "1970-01-01T00:00:00Z";

/// The `Content-Type` of the feed.
pub const ATOM_CONTENT_TYPE: &str = "application/atom+xml; charset=utf-8";

/// What pages may load: their own inline styles, and images from http(s) (the notes' images
/// already passed the template's `images:` rule). No script, no frames, no forms.
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src http: https:; \
                        base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The release-notes template, whose `images:` rule the archive follows.
const NOTES_TEMPLATE: &str = "release-notes.md";

/// Where the archive's links point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Links {
    /// Under a URL prefix, no trailing slash: `https://host/releases` (absolute) or `/releases`.
    /// The index is the prefix itself, a release `<prefix>/v3.12.0`, the feed `<prefix>/feed.atom`.
    Under(String),
    /// Static files opened from disk or any host: relative links to `index.html` files. `up`
    /// when the page is one folder below the index (a release's page).
    Files { up: bool },
}

impl Links {
    fn prefix(&self) -> (&str, &str) {
        match self {
            Links::Under(base) => (base, "/"),
            Links::Files { up: true } => ("..", "/"),
            Links::Files { up: false } => ("", ""),
        }
    }

    /// The index.
    pub fn index(&self) -> String {
        match self {
            Links::Under(base) if base.is_empty() => "/".to_string(),
            Links::Under(base) => base.clone(),
            Links::Files { up } => format!("{}index.html", if *up { "../" } else { "" }),
        }
    }

    /// A release's page (`version` canonical, `v3.12.0`).
    pub fn release(&self, version: &str) -> String {
        match self {
            Links::Under(base) => format!("{base}/{version}"),
            Links::Files { .. } => {
                let (p, sep) = self.prefix();
                format!("{p}{sep}{version}/index.html")
            }
        }
    }

    /// The feed.
    pub fn feed(&self) -> String {
        let (p, sep) = self.prefix();
        format!("{p}{sep}feed.atom")
    }
}

/// One release as the archive shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub release: Release,
    /// The notes as HTML, under the release-notes template's link and image rule.
    pub html: String,
}

impl Entry {
    /// `v3.12.0 Goliad`, or `v3.12.0` for a release without a name.
    pub fn title(&self) -> String {
        if self.release.name.is_empty() {
            self.release.version.clone()
        } else {
            format!("{} {}", self.release.version, self.release.name)
        }
    }

    /// RFC 3339: midnight UTC of the notes' date, else [`NO_DATE`].
    pub fn updated(&self) -> String {
        self.release
            .date
            .map_or_else(|| NO_DATE.to_string(), |d| format!("{d}T00:00:00Z"))
    }
}

/// The archive: every release, newest first, and what the feed needs to name itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub entries: Vec<Entry>,
    /// The feed's author (the configured `team_name`).
    pub author: String,
    /// The authority of the feed's `tag:` ids (the host of `app_url`): ids stay the same
    /// wherever the archive is hosted.
    pub authority: String,
}

impl Archive {
    /// The archive of `releases` (any order), the notes rendered under `policy`.
    pub fn new(
        mut releases: Vec<Release>,
        policy: &markdown::Policy,
        author: &str,
        authority: &str,
    ) -> Archive {
        releases.sort_by_key(|r| std::cmp::Reverse(Version::parse(&r.version)));
        let entries = releases
            .into_iter()
            .map(|release| Entry {
                html: markdown::to_html(&release.notes, policy),
                release,
            })
            .collect();
        Archive {
            entries,
            author: if author.trim().is_empty() {
                "Moped".to_string()
            } else {
                author.to_string()
            },
            authority: authority.to_string(),
        }
    }

    /// The release `wanted` names in any spelling [`Version::parse`] takes, if the archive has it.
    pub fn find(&self, wanted: &str) -> Option<&Entry> {
        let v = Version::parse(wanted)?;
        self.entries
            .iter()
            .find(|e| Version::parse(&e.release.version) == Some(v))
    }

    /// The index page.
    pub fn index_html(&self, links: &Links) -> Result<String, tera::Error> {
        let releases: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "href": links.release(&e.release.version),
                    "version": e.release.version,
                    "name": e.release.name,
                    "date_iso": date_iso(e.release.date),
                    "date_human": date_human(e.release.date),
                })
            })
            .collect();
        let mut ctx = page_context(self, links);
        ctx.insert("releases", &releases);
        templates()?.render("index.html", &ctx)
    }

    /// A release's page: its title, date and notes.
    pub fn release_html(&self, entry: &Entry, links: &Links) -> Result<String, tera::Error> {
        let mut ctx = page_context(self, links);
        ctx.insert("title", &entry.title());
        ctx.insert("version", &entry.release.version);
        ctx.insert("name", &entry.release.name);
        ctx.insert("date_iso", &date_iso(entry.release.date));
        ctx.insert("date_human", &date_human(entry.release.date));
        ctx.insert("notes_html", &entry.html);
        templates()?.render("release.html", &ctx)
    }

    /// The Atom feed: one entry per release, the notes' HTML escaped in `content type="html"`.
    /// Characters XML 1.0 cannot carry (most control characters) are left out.
    pub fn feed_xml(&self, links: &Links) -> Result<String, tera::Error> {
        let entries: Vec<serde_json::Value> = self
            .entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "id": self.tag(&format!("releases/{}", e.release.version)),
                    "title": xml_chars(&e.title()),
                    "updated": e.updated(),
                    "href": xml_chars(&links.release(&e.release.version)),
                    "html": xml_chars(&e.html),
                })
            })
            .collect();
        let updated = self
            .entries
            .iter()
            .map(Entry::updated)
            .max()
            .unwrap_or_else(|| NO_DATE.to_string());
        let mut ctx = tera::Context::new();
        ctx.insert("feed_id", &self.tag("releases"));
        ctx.insert("author", &xml_chars(&self.author));
        ctx.insert("updated", &updated);
        ctx.insert("self_href", &xml_chars(&links.feed()));
        ctx.insert("index_href", &xml_chars(&links.index()));
        ctx.insert("entries", &entries);
        templates()?.render("feed.xml", &ctx)
    }

    /// A `tag:` URI (RFC 4151) under the archive's authority.
    fn tag(&self, specific: &str) -> String {
        xml_chars(&format!("tag:{},2025:moped/{specific}", self.authority))
    }
}

fn page_context(archive: &Archive, links: &Links) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("index_href", &links.index());
    ctx.insert("feed_href", &links.feed());
    ctx.insert("team_name", &archive.author);
    ctx
}

fn date_iso(d: Option<NaiveDate>) -> String {
    d.map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

fn date_human(d: Option<NaiveDate>) -> String {
    d.map(|d| crate::notice::format_date(&d))
        .unwrap_or_default()
}

/// `s` without the characters XML 1.0 does not allow even as references (control characters
/// other than tab, line feed and carriage return; U+FFFE, U+FFFF).
pub fn xml_chars(s: &str) -> String {
    s.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r')
                || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}' && c != '\u{7F}')
        })
        .collect()
}

/// Tera's escape for every value the templates print without `| safe`: the five characters
/// that are markup in HTML text and attributes and in XML (Tera's own also turns `/` into
/// `&#x2F;`, which neither needs).
fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn templates() -> Result<&'static Tera, tera::Error> {
    static TERA: OnceLock<Result<Tera, String>> = OnceLock::new();
    TERA.get_or_init(|| {
        let mut tera = Tera::default();
        tera.set_escape_fn(escape_markup);
        tera.add_raw_templates(TEMPLATES)
            .map_err(|e| format!("{e:?}"))?;
        Ok(tera)
    })
    .as_ref()
    .map_err(|e| tera::Error::msg(format!("the archive's templates do not parse: {e}")))
}

/// The releases found in `dir`, read and checked, and the problems of those that could not be
/// read (each naming its file). Only files [`release::known_versions`] lists are read, and only
/// those that resolve to a regular file inside `dir`.
pub fn load_releases(dir: &Path) -> (Vec<Release>, Vec<String>) {
    let mut releases = Vec::new();
    let mut problems = Vec::new();
    let Ok(root) = std::fs::canonicalize(dir) else {
        problems.push(format!("cannot read the releases folder {}", dir.display()));
        return (releases, problems);
    };
    for (version, path) in release::known_versions(dir) {
        if !resolves_inside(&root, &path) {
            problems.push(format!(
                "{}: skipped: not a file inside {}",
                path.display(),
                dir.display()
            ));
            continue;
        }
        match release::load(&path, Some(version)) {
            Ok(r) => releases.push(r),
            Err(e) => problems.push(e.to_string()),
        }
    }
    (releases, problems)
}

/// `path`, with every symlink followed, is a regular file under `root` (itself canonical).
fn resolves_inside(root: &Path, path: &Path) -> bool {
    std::fs::canonicalize(path).is_ok_and(|real| real.starts_with(root) && real.is_file())
}

/// The link and image rule of the release-notes template in `templates` (its `images:`), or
/// the default (no images) when there is no such template.
pub fn notes_policy(templates: &Path) -> anyhow::Result<markdown::Policy> {
    let path = templates.join(NOTES_TEMPLATE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(markdown::Policy::default())
        }
        Err(e) => return Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    };
    let doc = front_matter::split(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    match doc.meta.get("images") {
        Some(list) => markdown::Policy::with_images(list)
            .map_err(|e| anyhow::anyhow!("{}: images: {e}", path.display())),
        None => Ok(markdown::Policy::default()),
    }
}

/// The authority of the feed's `tag:` ids: the host of `app_url`, else `localhost`.
pub fn authority(cfg: &Config) -> String {
    url::Url::parse(&cfg.app_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "localhost".to_string())
}

/// Load the archive for `cfg`, with the problems of the release files left out.
pub fn load(cfg: &Config) -> anyhow::Result<(Archive, Vec<String>)> {
    let policy = notes_policy(&cfg.templates)?;
    let (releases, problems) = load_releases(&cfg.releases);
    Ok((
        Archive::new(releases, &policy, &cfg.team_name, &authority(cfg)),
        problems,
    ))
}

/// This part's routes: `GET /releases`, `GET /releases/feed.atom`, `GET /releases/{version}`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/releases", get(index))
        .route("/releases/", get(index))
        .route("/releases/feed.atom", get(feed))
        .route("/releases/{version}", get(page))
}

/// Write the archive's pages and feed into `dir` (created if need be): `index.html`,
/// `<version>/index.html` and `feed.atom`; how many files. The pages link relatively, so they
/// work from disk; the feed links under `archive_url` when it is set. A release file that
/// cannot be read stops the build, naming the file.
pub fn build(cfg: &Config, dir: &Path) -> anyhow::Result<usize> {
    let (archive, problems) = load(cfg)?;
    if let Some(first) = problems.first() {
        anyhow::bail!("{first}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = 0;
    let mut write = |path: PathBuf, text: Result<String, tera::Error>| -> anyhow::Result<()> {
        let text = text.map_err(|e| anyhow::anyhow!("cannot render {}: {e:?}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written += 1;
        Ok(())
    };
    write(
        dir.join("index.html"),
        archive.index_html(&Links::Files { up: false }),
    )?;
    for entry in &archive.entries {
        let folder = dir.join(&entry.release.version);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
        write(
            folder.join("index.html"),
            archive.release_html(entry, &Links::Files { up: true }),
        )?;
    }
    let feed_links = if cfg.archive_url.is_empty() {
        Links::Files { up: false }
    } else {
        Links::Under(cfg.archive_url.clone())
    };
    write(dir.join("feed.atom"), archive.feed_xml(&feed_links))?;
    Ok(written)
}

/// Where the served archive links: under `archive_url` when set; else under
/// `<scheme>://<Host>/releases` when the request's Host is a plain host name or address (the
/// scheme is https only when `X-Forwarded-Proto` says so); else under `/releases`.
pub fn served_links(cfg: &Config, headers: &HeaderMap) -> Links {
    if !cfg.archive_url.is_empty() {
        return Links::Under(cfg.archive_url.clone());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| plain_host(h));
    match host {
        Some(host) => {
            let https = headers
                .get("x-forwarded-proto")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
            let scheme = if https { "https" } else { "http" };
            Links::Under(format!("{scheme}://{host}/releases"))
        }
        None => Links::Under("/releases".to_string()),
    }
}

/// A Host header value that is a host name, IPv4 or bracketed IPv6 address, with an optional port.
fn plain_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 255
        && !h.starts_with(['.', '-', ':'])
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Load the archive off the async threads; the problems with release files are logged.
async fn load_logged(cfg: std::sync::Arc<Config>) -> anyhow::Result<Archive> {
    let (archive, problems) = tokio::task::spawn_blocking(move || load(&cfg))
        .await
        .map_err(|e| anyhow::anyhow!("loading the archive stopped: {e}"))??;
    for p in problems {
        tracing::warn!(problem = %crate::inert::line(&p), "release notes left out of the archive");
    }
    Ok(archive)
}

fn page_response(content_type: &'static str, body: String) -> Response {
    let mut res = (StatusCode::OK, body).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if content_type.starts_with("text/html") {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(PAGE_CSP),
        );
    }
    res
}

fn failed(what: &str, e: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %crate::inert::line(&e.to_string()), "cannot show the {what}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the release-notes archive cannot be shown\n",
    )
        .into_response()
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "no such release\n").into_response()
}

fn answer(what: &str, content_type: &'static str, r: Result<String, tera::Error>) -> Response {
    match r {
        Ok(body) => page_response(content_type, body),
        Err(e) => failed(what, &format!("{e:?}")),
    }
}

async fn index(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let links = served_links(&state.cfg, &headers);
    match load_logged(state.cfg.clone()).await {
        Ok(archive) => answer(
            "archive index",
            "text/html; charset=utf-8",
            archive.index_html(&links),
        ),
        Err(e) => failed("archive index", &e),
    }
}

async fn feed(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let links = served_links(&state.cfg, &headers);
    match load_logged(state.cfg.clone()).await {
        Ok(archive) => answer("feed", ATOM_CONTENT_TYPE, archive.feed_xml(&links)),
        Err(e) => failed("feed", &e),
    }
}

async fn page(
    State(state): State<AppState>,
    version: Result<UrlPath<String>, axum::extract::rejection::PathRejection>,
    headers: HeaderMap,
) -> Response {
    // A path that does not decode (invalid UTF-8) names no release either.
    let Ok(UrlPath(version)) = version else {
        return not_found();
    };
    if Version::parse(&version).is_none() {
        return not_found();
    }
    let links = served_links(&state.cfg, &headers);
    match load_logged(state.cfg.clone()).await {
        Ok(archive) => match archive.find(&version) {
            Some(entry) => answer(
                "release page",
                "text/html; charset=utf-8",
                archive.release_html(entry, &links),
            ),
            None => not_found(),
        },
        Err(e) => failed("release page", &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ATOM: &str = "http://www.w3.org/2005/Atom";

    fn rel(version: &str, name: &str, date: Option<&str>, notes: &str) -> Release {
        Release {
            version: version.to_string(),
            name: name.to_string(),
            date: date.map(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap()),
            notes: notes.to_string(),
            path: PathBuf::from(format!("releases/{version}.md")),
        }
    }

    fn archive() -> Archive {
        Archive::new(
            vec![
                rel("v3.11.0", "Falfurrias", Some("2026-07-23"), "* older\n"),
                rel(
                    "v3.12.0",
                    "<script>alert(1)</script> \"Goliad\" & 'co'",
                    Some("2026-08-06"),
                    "## What’s changed\n\n* [PR](https://github.com/cityofaustin/atd-moped/pull/1) \
                     a < b & c\n* <script>alert(2)</script>\n* ![pixel](https://tracker.example/p.gif)\n",
                ),
                rel("v3.9.0", "", None, "* undated\u{1}\n"),
            ],
            &markdown::Policy::default(),
            "The Moped team, Data & Technology Services",
            "moped.austinmobility.io",
        )
    }

    fn child<'a, 'i>(n: roxmltree::Node<'a, 'i>, name: &str) -> roxmltree::Node<'a, 'i> {
        n.children()
            .find(|c| c.has_tag_name((ATOM, name)))
            .unwrap_or_else(|| panic!("no <{name}> in <{}>", n.tag_name().name()))
    }

    fn text<'a>(n: roxmltree::Node<'a, '_>, name: &str) -> &'a str {
        child(n, name).text().unwrap_or_default()
    }

    fn rfc3339(s: &str) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn entries_are_newest_first_and_found_in_any_spelling() {
        let a = archive();
        let versions: Vec<&str> = a
            .entries
            .iter()
            .map(|e| e.release.version.as_str())
            .collect();
        assert_eq!(versions, ["v3.12.0", "v3.11.0", "v3.9.0"]);
        for wanted in ["v3.12.0", "3.12.0", "v3.12", "V3.12.0", "v.3.12.0"] {
            assert_eq!(
                a.find(wanted).map(|e| e.release.version.as_str()),
                Some("v3.12.0"),
                "{wanted}"
            );
        }
        for wanted in [
            "v9.9.9",
            "",
            "..",
            "../v3.12.0",
            "/etc/passwd",
            "v3.12.0.md",
            "%2e%2e",
        ] {
            assert!(a.find(wanted).is_none(), "{wanted}");
        }
    }

    #[test]
    fn a_hostile_release_name_and_raw_html_in_the_notes_are_text_on_the_pages() {
        let a = archive();
        let links = Links::Under("/releases".into());
        let index = a.index_html(&links).unwrap();
        let page = a.release_html(a.find("v3.12.0").unwrap(), &links).unwrap();
        for html in [&index, &page] {
            assert!(!html.contains("<script"), "{html}");
            assert!(
                html.contains(
                    "&lt;script&gt;alert(1)&lt;/script&gt; &quot;Goliad&quot; &amp; &#39;co&#39;"
                ),
                "{html}"
            );
            assert!(html.contains("<meta name=\"viewport\""), "{html}");
            assert!(
                html.contains(
                    "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"Moped release notes\" href=\"/releases/feed.atom\">"
                ),
                "{html}"
            );
        }
        // The notes as the email shows them: links kept, raw HTML as text, images the
        // template does not allow as their alt text.
        assert!(page.contains("<a href=\"https://github.com/cityofaustin/atd-moped/pull/1\">PR</a> a &lt; b &amp; c"), "{page}");
        assert!(
            page.contains("&lt;script&gt;alert(2)&lt;/script&gt;"),
            "{page}"
        );
        assert!(
            !page.contains("tracker.example") && page.contains("pixel"),
            "{page}"
        );
        assert!(page.contains("<time class=\"date\" datetime=\"2026-08-06\">Released Thursday, August 6, 2026</time>"), "{page}");
        assert!(
            !page.contains("Hi ") && !page.contains("first_name"),
            "no greeting: {page}"
        );
        // Newest first, each linked.
        let at = |s: &str| index.find(s).unwrap_or_else(|| panic!("{s}: {index}"));
        assert!(at("href=\"/releases/v3.12.0\"") < at("href=\"/releases/v3.11.0\""));
        assert!(at("href=\"/releases/v3.11.0\"") < at("href=\"/releases/v3.9.0\""));
        assert!(index.contains("Thursday, July 23, 2026"), "{index}");
    }

    #[test]
    fn the_feed_is_atom_with_the_notes_escaped_as_html_content() {
        let a = archive();
        let xml = a
            .feed_xml(&Links::Under("https://moped.example/releases".into()))
            .unwrap();
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed"),
            "{xml}"
        );
        assert!(!xml.contains("<script") && !xml.contains('\u{1}'), "{xml}");
        let doc = roxmltree::Document::parse(&xml).unwrap_or_else(|e| panic!("{e}: {xml}"));
        let feed = doc.root_element();
        assert!(feed.has_tag_name((ATOM, "feed")));
        assert_eq!(
            text(feed, "id"),
            "tag:moped.austinmobility.io,2025:moped/releases"
        );
        assert_eq!(text(feed, "title"), "Moped release notes");
        assert_eq!(
            text(child(feed, "author"), "name"),
            "The Moped team, Data & Technology Services"
        );
        assert_eq!(
            rfc3339(text(feed, "updated")),
            rfc3339("2026-08-06T00:00:00Z")
        );
        let links: Vec<(Option<&str>, Option<&str>)> = feed
            .children()
            .filter(|c| c.has_tag_name((ATOM, "link")))
            .map(|l| (l.attribute("rel"), l.attribute("href")))
            .collect();
        assert_eq!(
            links,
            [
                (
                    Some("self"),
                    Some("https://moped.example/releases/feed.atom")
                ),
                (Some("alternate"), Some("https://moped.example/releases")),
            ]
        );
        let entries: Vec<_> = feed
            .children()
            .filter(|c| c.has_tag_name((ATOM, "entry")))
            .collect();
        assert_eq!(entries.len(), 3);
        let e = entries[0];
        assert_eq!(
            text(e, "id"),
            "tag:moped.austinmobility.io,2025:moped/releases/v3.12.0"
        );
        assert_eq!(
            text(e, "title"),
            "v3.12.0 <script>alert(1)</script> \"Goliad\" & 'co'"
        );
        assert_eq!(rfc3339(text(e, "updated")), rfc3339("2026-08-06T00:00:00Z"));
        let link = child(e, "link");
        assert_eq!(link.attribute("rel"), Some("alternate"));
        assert_eq!(
            link.attribute("href"),
            Some("https://moped.example/releases/v3.12.0")
        );
        let content = child(e, "content");
        assert_eq!(content.attribute("type"), Some("html"));
        // Read back, the content is the page's HTML: markup once escaped, the notes' own raw
        // HTML still escaped inside it.
        assert_eq!(content.text(), Some(a.entries[0].html.as_str()));
        assert!(a.entries[0].html.contains("&lt;script&gt;alert(2)"));
        // Every entry has what RFC 4287 requires; undated is the fixed epoch, not "now".
        for e in &entries {
            for name in ["id", "title", "updated", "link", "content"] {
                child(*e, name);
            }
        }
        assert_eq!(text(entries[2], "title"), "v3.9.0");
        assert_eq!(text(entries[2], "updated"), NO_DATE);
        assert!(!child(entries[2], "content")
            .text()
            .unwrap()
            .contains('\u{1}'));
    }

    #[test]
    fn an_empty_feed_is_still_valid_and_dated_at_the_fixed_epoch() {
        let a = Archive::new(Vec::new(), &markdown::Policy::default(), "", "h.example");
        let xml = a.feed_xml(&Links::Files { up: false }).unwrap();
        let doc = roxmltree::Document::parse(&xml).unwrap();
        let feed = doc.root_element();
        assert_eq!(text(feed, "updated"), NO_DATE);
        assert_eq!(text(child(feed, "author"), "name"), "Moped");
        assert!(a
            .index_html(&Links::Files { up: false })
            .unwrap()
            .contains("No release notes"));
    }

    #[test]
    fn links_under_a_prefix_and_between_files() {
        let under = Links::Under("https://h.example/releases".into());
        assert_eq!(under.index(), "https://h.example/releases");
        assert_eq!(
            under.release("v3.12.0"),
            "https://h.example/releases/v3.12.0"
        );
        assert_eq!(under.feed(), "https://h.example/releases/feed.atom");
        let top = Links::Files { up: false };
        assert_eq!(
            (top.index(), top.release("v1.0.0"), top.feed()),
            (
                "index.html".into(),
                "v1.0.0/index.html".into(),
                "feed.atom".into()
            )
        );
        let below = Links::Files { up: true };
        assert_eq!(
            (below.index(), below.release("v1.0.0"), below.feed()),
            (
                "../index.html".into(),
                "../v1.0.0/index.html".into(),
                "../feed.atom".into()
            )
        );
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn config() -> Config {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.toml");
        std::fs::write(&path, "app_url = \"https://moped.austinmobility.io\"\n").unwrap();
        Config::load(
            &path,
            true,
            &Default::default(),
            &crate::config::Overrides::default(),
        )
        .unwrap()
    }

    #[test]
    fn served_links_follow_archive_url_else_a_plain_host() {
        let mut cfg = config();
        assert_eq!(authority(&cfg), "moped.austinmobility.io");
        assert_eq!(
            served_links(&cfg, &headers(&[("host", "127.0.0.1:8025")])),
            Links::Under("http://127.0.0.1:8025/releases".into())
        );
        assert_eq!(
            served_links(
                &cfg,
                &headers(&[("host", "notes.example"), ("x-forwarded-proto", "https")])
            ),
            Links::Under("https://notes.example/releases".into())
        );
        for hostile in [
            "evil\"><script>",
            "a/b",
            "x@evil.example",
            "",
            ".x",
            "h ost",
        ] {
            assert_eq!(
                served_links(&cfg, &headers(&[("host", hostile)])),
                Links::Under("/releases".into()),
                "{hostile}"
            );
        }
        assert_eq!(
            served_links(&cfg, &HeaderMap::new()),
            Links::Under("/releases".into())
        );
        cfg.archive_url = "https://moped.austinmobility.io/releases".into();
        assert_eq!(
            served_links(&cfg, &headers(&[("host", "127.0.0.1:8025")])),
            Links::Under("https://moped.austinmobility.io/releases".into())
        );
    }

    const NOTES: &str =
        "---\nname: Goliad\ndate: 2026-08-06\n---\n* fixed ![map](https://img.example/m.png)\n";

    #[test]
    fn only_regular_files_inside_the_releases_folder_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("releases");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(dir.join("v3.12.0.md"), NOTES).unwrap();
        std::fs::write(
            outside.join("secret.md"),
            "---\nname: Secret\n---\nSECRET\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.join("secret.md"), dir.join("v9.0.0.md")).unwrap();
        std::os::unix::fs::symlink(dir.join("v3.12.0.md"), dir.join("v3.12.1.md")).unwrap();
        std::fs::create_dir(dir.join("v4.0.0.md")).unwrap();
        std::fs::write(dir.join("notes.md"), "---\nname: Not a version\n---\nx\n").unwrap();
        std::fs::write(dir.join("v5.0.0.md"), "---\ndate: soon\n---\nx\n").unwrap();
        let (releases, problems) = load_releases(&dir);
        let found: Vec<(&str, &str)> = releases
            .iter()
            .map(|r| (r.version.as_str(), r.name.as_str()))
            .collect();
        assert_eq!(found, [("v3.12.0", "Goliad"), ("v3.12.1", "Goliad")]);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems
            .iter()
            .any(|p| p.contains("v9.0.0.md") && p.contains("skipped")));
        assert!(problems
            .iter()
            .any(|p| p.contains("v4.0.0.md") && p.contains("skipped")));
        assert!(problems
            .iter()
            .any(|p| p.contains("v5.0.0.md") && p.contains("soon")));

        let (none, problems) = load_releases(&tmp.path().join("missing"));
        assert!(none.is_empty());
        assert!(problems[0].contains("missing"), "{problems:?}");
    }

    #[test]
    fn the_notes_follow_the_release_notes_template_image_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let release = rel(
            "v3.12.0",
            "Goliad",
            None,
            "![map](https://img.example/m.png)\n",
        );
        let html = |policy: &markdown::Policy| {
            Archive::new(vec![release.clone()], policy, "", "h").entries[0]
                .html
                .clone()
        };
        // No template: no images, as by default.
        let none = notes_policy(tmp.path()).unwrap();
        assert!(!html(&none).contains("<img"), "{}", html(&none));
        std::fs::write(
            tmp.path().join("release-notes.md"),
            "---\nsubject: x\nimages: https://img.example/\n---\nbody\n",
        )
        .unwrap();
        let allowed = notes_policy(tmp.path()).unwrap();
        assert!(
            html(&allowed).contains("<img src=\"https://img.example/m.png\" alt=\"map\""),
            "{}",
            html(&allowed)
        );
        std::fs::write(
            tmp.path().join("release-notes.md"),
            "---\nsubject: x\nimages: ftp://img.example/\n---\nbody\n",
        )
        .unwrap();
        let e = notes_policy(tmp.path()).unwrap_err().to_string();
        assert!(
            e.contains("release-notes.md") && e.contains("ftp://"),
            "{e}"
        );
    }

    #[test]
    fn build_writes_pages_and_feed_that_link_between_files() {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config();
        cfg.releases = tmp.path().join("releases");
        cfg.templates = tmp.path().join("templates");
        std::fs::create_dir_all(&cfg.releases).unwrap();
        std::fs::write(cfg.releases.join("v3.12.0.md"), NOTES).unwrap();
        std::fs::write(
            cfg.releases.join("v3.11.0.md"),
            "---\nname: Falfurrias\ndate: 2026-07-23\n---\n* older\n",
        )
        .unwrap();
        let out = tmp.path().join("site/archive");
        assert_eq!(build(&cfg, &out).unwrap(), 4);
        let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
        let index = read("index.html");
        assert!(index.contains("href=\"v3.12.0/index.html\""), "{index}");
        assert!(index.contains("href=\"feed.atom\""), "{index}");
        let page = read("v3.11.0/index.html");
        assert!(page.contains("href=\"../index.html\"") && page.contains("href=\"../feed.atom\""));
        let feed = read("feed.atom");
        roxmltree::Document::parse(&feed).unwrap();
        assert!(feed.contains("href=\"v3.12.0/index.html\""), "{feed}");

        // With archive_url, the feed links there; the pages still link between files.
        cfg.archive_url = "https://moped.austinmobility.io/releases".into();
        build(&cfg, &out).unwrap();
        assert!(
            read("feed.atom").contains("href=\"https://moped.austinmobility.io/releases/v3.12.0\"")
        );
        assert!(read("index.html").contains("href=\"v3.12.0/index.html\""));

        // A bad release file stops the build and is named.
        std::fs::write(
            cfg.releases.join("v3.13.0.md"),
            "---\nname: Hays\n---\n[x](javascript:alert(1))\n",
        )
        .unwrap();
        let e = build(&cfg, &out).unwrap_err().to_string();
        assert!(e.contains("v3.13.0.md") && e.contains("javascript"), "{e}");
        std::fs::remove_file(cfg.releases.join("v3.13.0.md")).unwrap();

        // A folder that cannot be made is named.
        std::fs::write(tmp.path().join("file"), "x").unwrap();
        let e = build(&cfg, &tmp.path().join("file/archive"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("file/archive"), "{e}");
    }

    #[test]
    fn xml_chars_keep_text_and_drop_what_xml_cannot_carry() {
        assert_eq!(
            xml_chars("a\tb\nc\r\u{0}d\u{1b}e\u{7f}f\u{FFFE}g’"),
            "a\tb\nc\rdefg’"
        );
    }
}
