//! Markdown to the two parts of a message: HTML (raw HTML in the source is shown as text, never
//! passed through) and readable plain text with links kept. Also the escape function that makes
//! any value substituted into a Markdown template literal text, and the link and image rule
//! ([`Policy`]): a link becomes clickable only for `http:`, `https:` and `mailto:`, an image is
//! loaded only from a URL the notice template allows; anything else is rendered as its text
//! ([`refusals`] finds them in a source so loading can refuse it with the line). Pure functions.

use pulldown_cmark::{html, Event, HeadingLevel, LinkType, Options, Parser, Tag, TagEnd};

/// The Markdown extensions notices use, set one by one.
pub fn options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// Escape a value so that Markdown shows it literally: every ASCII punctuation character gets a
/// backslash and line breaks and other control characters become spaces, so a value can neither
/// add markup (links, emphasis, HTML) nor start a new block.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        if c.is_ascii_punctuation() {
            out.push('\\');
            out.push(c);
        } else if c.is_control() || c == '\u{2028}' || c == '\u{2029}' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// The schemes a link may have to be clickable, compared without regard to case.
pub const LINK_SCHEMES: [&str; 3] = ["https://", "http://", "mailto:"];

/// Which link and image destinations may stay links and images. The default allows no image.
///
/// Links: the destination must begin with one of [`LINK_SCHEMES`] (any case) and have something
/// after it, or be an `<name@host>` autolink. The destination is judged as pulldown-cmark hands
/// it over, with entities and backslash escapes already decoded, and the renderer writes it out
/// with the same first characters (it only percent-encodes), so `&#106;avascript:`,
/// `JaVaScRiPt:`, `<javascript:…>`, `[x][ref]` and a leading space or tab are all judged on what
/// a mail client would see: none of them starts with an allowed scheme.
///
/// Images: only from an http(s) URL under one of the template's prefixes (none by default). The
/// URL is compared after the `url` crate normalises it (case of the scheme and host, `\`, `..`,
/// default ports), and a prefix matches only up to a boundary: `https://a.example` allows
/// `https://a.example/x.png` but not `https://a.example.evil.example/` or
/// `https://a.example@evil.example/`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Normalised http(s) URL prefixes images may come from.
    image_prefixes: Vec<String>,
    /// Every http(s) image passes (only for checking a source whose images a template judges
    /// later, see [`Policy::any_remote_image`]).
    any_remote_image: bool,
}

impl Policy {
    /// Links as the rule says and images from the given URL prefixes, written as a template's
    /// `images:` value: separated by spaces or commas. `Err` names the first entry that is not an
    /// absolute http(s) URL with a host.
    pub fn with_images(list: &str) -> Result<Policy, String> {
        let mut prefixes = Vec::new();
        for entry in list.split([' ', ',', '\t']).filter(|e| !e.is_empty()) {
            let url = url::Url::parse(entry)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .filter(|u| u.username().is_empty() && u.password().is_none())
                .ok_or_else(|| {
                    format!(
                        "`{}` is not an http(s) URL prefix such as https://moped.austinmobility.io/",
                        crate::inert::line(entry)
                    )
                })?;
            prefixes.push(url.to_string());
        }
        Ok(Policy {
            image_prefixes: prefixes,
            any_remote_image: false,
        })
    }

    /// Links as the rule says; every image with an http(s) URL passes. For checking release notes
    /// when they are loaded: which remote images may show is the notice template's to say, at
    /// render time.
    pub fn any_remote_image() -> Policy {
        Policy {
            image_prefixes: Vec::new(),
            any_remote_image: true,
        }
    }

    /// The allowed image URL prefixes, normalised (empty: no image is allowed).
    pub fn image_prefixes(&self) -> &[String] {
        &self.image_prefixes
    }

    /// Whether a link to `dest` stays a link.
    pub fn allows_link(&self, link_type: LinkType, dest: &str) -> bool {
        link_type == LinkType::Email || LINK_SCHEMES.iter().any(|s| has_scheme(dest, s))
    }

    /// Whether an image from `dest` stays an image.
    pub fn allows_image(&self, dest: &str) -> bool {
        if !has_scheme(dest, "https://") && !has_scheme(dest, "http://") {
            return false;
        }
        let Ok(url) = url::Url::parse(dest) else {
            return false;
        };
        if !url.username().is_empty() || url.password().is_some() {
            return false;
        }
        if self.any_remote_image {
            return true;
        }
        let url = url.as_str();
        self.image_prefixes.iter().any(|p| {
            url.strip_prefix(p.as_str()).is_some_and(|rest| {
                p.ends_with('/') || rest.is_empty() || rest.starts_with(['/', '?', '#'])
            })
        })
    }

    fn image_rule(&self) -> String {
        match self.image_prefixes() {
            [] => "this template allows no images; list the URL prefixes it may load images from \
                   in its front matter (`images: https://…/`)"
                .to_string(),
            list => format!("this template allows images only from {}", list.join(", ")),
        }
    }
}

/// `dest` begins with `scheme` (ASCII case ignored) and has more after it.
fn has_scheme(dest: &str, scheme: &str) -> bool {
    dest.len() > scheme.len()
        && dest.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
}

/// A link or image [`Policy`] refuses, at a 1-based line of the Markdown it was found in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub line: usize,
    pub message: String,
}

/// Every link and image in `markdown` that `policy` refuses, in order, except those whose
/// destination `skip` says to leave (a template's `{{ … }}` destinations, judged once rendered).
/// A reference-style link is reported at the line where it is used.
pub fn refusals(markdown: &str, policy: &Policy, skip: impl Fn(&str) -> bool) -> Vec<Refusal> {
    let mut found = Vec::new();
    for (event, range) in Parser::new_ext(markdown, options()).into_offset_iter() {
        let message = match event {
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                ..
            }) if !skip(&dest_url) && !policy.allows_link(link_type, &dest_url) => format!(
                "link to `{}`: only http, https and mailto links are allowed",
                crate::inert::line(&dest_url)
            ),
            Event::Start(Tag::Image { dest_url, .. })
                if !skip(&dest_url) && !policy.allows_image(&dest_url) =>
            {
                if policy.any_remote_image {
                    format!(
                        "image `{}`: only http(s) images can be allowed",
                        crate::inert::line(&dest_url)
                    )
                } else {
                    format!(
                        "image `{}`: {}",
                        crate::inert::line(&dest_url),
                        policy.image_rule()
                    )
                }
            }
            _ => continue,
        };
        let line = markdown
            .get(..range.start)
            .map_or(1, |before| before.matches('\n').count() + 1);
        found.push(Refusal { line, message });
    }
    found
}

/// The events with every link and image `policy` refuses taken out, their text left in place:
/// a refused link shows as its text, a refused image as its alt text. Also how many were.
fn guard<'a>(events: Vec<Event<'a>>, policy: &Policy) -> (Vec<Event<'a>>, usize) {
    // Links do not nest in links nor images in images' URLs, but an image may sit in a link's
    // text and an image in another's alt text: one stack per kind keeps each end with its start.
    let mut links: Vec<bool> = Vec::new();
    let mut images: Vec<bool> = Vec::new();
    let mut refused = 0;
    let kept = events
        .into_iter()
        .filter(|event| match event {
            Event::Start(Tag::Link {
                link_type,
                dest_url,
                ..
            }) => {
                let keep = policy.allows_link(*link_type, dest_url);
                links.push(keep);
                refused += usize::from(!keep);
                keep
            }
            Event::End(TagEnd::Link) => links.pop().unwrap_or(true),
            Event::Start(Tag::Image { dest_url, .. }) => {
                let keep = policy.allows_image(dest_url);
                images.push(keep);
                refused += usize::from(!keep);
                keep
            }
            Event::End(TagEnd::Image) => images.pop().unwrap_or(true),
            _ => true,
        })
        .collect();
    (kept, refused)
}

/// Markdown to an HTML fragment. Raw HTML blocks and inline HTML are turned into text; links
/// and images `policy` refuses into their text.
pub fn to_html(markdown: &str, policy: &Policy) -> String {
    let (events, _) = guard(Parser::new_ext(markdown, options()).collect(), policy);
    html_from(markdown.len(), events.into_iter())
}

fn html_from<'a>(size: usize, events: impl Iterator<Item = Event<'a>>) -> String {
    let events = events.map(|event| match event {
        Event::Html(s) | Event::InlineHtml(s) => Event::Text(s),
        other => other,
    });
    let mut out = String::with_capacity(size * 2);
    html::push_html(&mut out, events);
    out
}

/// Markdown to plain text meant to be read in a mail client: headings underlined, lists with
/// bullets, links as `text <url>`, tables as aligned-free rows separated by `|`. Links and images
/// `policy` refuses are their text alone.
pub fn to_text(markdown: &str, policy: &Policy) -> String {
    let (events, _) = guard(Parser::new_ext(markdown, options()).collect(), policy);
    text_from(events.into_iter())
}

fn text_from<'a>(events: impl Iterator<Item = Event<'a>>) -> String {
    let mut w = TextWriter::default();
    for event in events {
        w.event(event);
    }
    w.finish()
}

/// Both parts from one parse: `(to_text(markdown, policy), to_html(markdown, policy))`.
pub fn to_text_and_html(markdown: &str, policy: &Policy) -> (String, String) {
    let parts = to_parts(markdown, policy);
    (parts.text, parts.html)
}

/// Both parts of a message, and how many links and images were rendered as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parts {
    pub text: String,
    pub html: String,
    pub refused: usize,
}

/// Both parts from one parse, counting what `policy` refused.
pub fn to_parts(markdown: &str, policy: &Policy) -> Parts {
    let (events, refused) = guard(Parser::new_ext(markdown, options()).collect(), policy);
    let text = text_from(events.iter().cloned());
    Parts {
        text,
        html: html_from(markdown.len(), events.into_iter()),
        refused,
    }
}

#[derive(Default)]
struct TextWriter {
    out: String,
    /// The current line being built (so prefixes and underlines can be applied).
    line: String,
    /// Prefix for every line of the current block (quotes, list indentation).
    prefixes: Vec<String>,
    /// List counters: `None` for bullets.
    lists: Vec<Option<u64>>,
    /// Pending first-line marker for a list item (`* `, `1. `).
    item_marker: Option<String>,
    heading: Option<HeadingLevel>,
    links: Vec<(String, usize)>,
    in_code_block: bool,
    table_row: Vec<String>,
    in_table_head: bool,
    cell: Option<String>,
}

impl TextWriter {
    fn push_text(&mut self, s: &str) {
        if let Some(cell) = self.cell.as_mut() {
            cell.push_str(s);
        } else {
            self.line.push_str(s);
        }
    }

    fn prefix(&mut self) -> String {
        let mut p: String = self.prefixes.concat();
        if let Some(marker) = self.item_marker.take() {
            // The marker replaces the item's own indentation on its first line.
            let indent = marker.len();
            if p.len() >= indent {
                p.truncate(p.len() - indent);
            }
            p.push_str(&marker);
        }
        p
    }

    fn flush_line(&mut self) {
        let prefix = self.prefix();
        let start = self.out.len();
        self.out.push_str(&prefix);
        self.out.push_str(&self.line);
        self.line.clear();
        let kept = self.out[start..].trim_end().len();
        self.out.truncate(start + kept);
        self.out.push('\n');
    }

    fn blank_line(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            let quote: String = self
                .prefixes
                .iter()
                .filter(|p| p.starts_with('>'))
                .cloned()
                .collect();
            self.out.push_str(quote.trim_end());
            self.out.push('\n');
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Start(tag) => self.start(tag),
            Event::End(tag) => self.end(tag),
            Event::Text(t) => {
                if self.in_code_block {
                    for (i, part) in t.split('\n').enumerate() {
                        if i > 0 {
                            self.flush_line();
                        }
                        self.push_text(part);
                    }
                } else {
                    self.push_text(&t);
                }
            }
            Event::Code(t) => self.push_text(&t),
            Event::Html(t) | Event::InlineHtml(t) => {
                let t = t.trim_end_matches('\n').to_string();
                self.push_text(&t)
            }
            Event::SoftBreak | Event::HardBreak => {
                if self.cell.is_some() {
                    self.push_text(" ");
                } else {
                    self.flush_line();
                }
            }
            Event::Rule => {
                self.blank_line();
                self.push_text("----------------------------------------");
                self.flush_line();
                self.blank_line();
            }
            Event::TaskListMarker(done) => self.push_text(if done { "[x] " } else { "[ ] " }),
            Event::FootnoteReference(name) => self.push_text(&format!("[{name}]")),
            Event::InlineMath(t) | Event::DisplayMath(t) => self.push_text(&t),
        }
    }

    fn start(&mut self, tag: Tag) {
        match tag {
            Tag::Paragraph => {}
            Tag::Heading { level, .. } => {
                self.blank_line();
                self.heading = Some(level);
            }
            Tag::BlockQuote(_) => {
                self.blank_line();
                self.prefixes.push("> ".into());
            }
            Tag::CodeBlock(_) => {
                self.blank_line();
                self.in_code_block = true;
                self.prefixes.push("    ".into());
            }
            Tag::List(start) => {
                if self.lists.is_empty() {
                    self.blank_line();
                } else if !self.line.is_empty() {
                    self.flush_line();
                }
                self.lists.push(start);
            }
            Tag::Item => {
                if !self.line.is_empty() {
                    self.flush_line();
                }
                let marker = match self.lists.last_mut() {
                    Some(Some(n)) => {
                        let m = format!("{n}. ");
                        *n += 1;
                        m
                    }
                    _ => "* ".to_string(),
                };
                self.prefixes.push(" ".repeat(marker.len()));
                self.item_marker = Some(marker);
            }
            Tag::FootnoteDefinition(name) => {
                self.blank_line();
                self.push_text(&format!("[{name}]: "));
            }
            Tag::Table(_) => self.blank_line(),
            Tag::TableHead => {
                self.in_table_head = true;
                self.table_row.clear();
            }
            Tag::TableRow => self.table_row.clear(),
            Tag::TableCell => self.cell = Some(String::new()),
            Tag::Emphasis | Tag::Strong | Tag::Strikethrough => {}
            Tag::Link {
                link_type,
                dest_url,
                ..
            } => {
                let start = if self.cell.is_some() {
                    self.cell.as_ref().map(String::len).unwrap_or(0)
                } else {
                    self.line.len()
                };
                let dest = match link_type {
                    LinkType::Email => format!("mailto:{dest_url}"),
                    _ => dest_url.to_string(),
                };
                self.links.push((dest, start));
            }
            Tag::Image { dest_url, .. } => self.links.push((dest_url.to_string(), usize::MAX)),
            _ => {}
        }
    }

    fn end(&mut self, tag: TagEnd) {
        match tag {
            TagEnd::Paragraph => {
                self.flush_line();
                if self.lists.is_empty() {
                    self.blank_line();
                }
            }
            TagEnd::Heading(_) => {
                let level = self.heading.take();
                let width = self.line.chars().count().max(3);
                self.flush_line();
                let underline = match level {
                    Some(HeadingLevel::H1) => "=".repeat(width),
                    _ => "-".repeat(width),
                };
                self.push_text(&underline);
                self.flush_line();
                self.blank_line();
            }
            TagEnd::BlockQuote(_) => {
                if !self.line.is_empty() {
                    self.flush_line();
                }
                self.prefixes.pop();
                self.blank_line();
            }
            TagEnd::CodeBlock => {
                if !self.line.is_empty() {
                    self.flush_line();
                }
                self.in_code_block = false;
                self.prefixes.pop();
                self.blank_line();
            }
            TagEnd::List(_) => {
                self.lists.pop();
                if self.lists.is_empty() {
                    self.blank_line();
                }
            }
            TagEnd::Item => {
                if !self.line.is_empty() || self.item_marker.is_some() {
                    self.flush_line();
                }
                self.prefixes.pop();
            }
            TagEnd::FootnoteDefinition => {}
            TagEnd::TableHead => {
                let row = std::mem::take(&mut self.table_row);
                let width = row.join(" | ").chars().count();
                self.push_text(&row.join(" | "));
                self.flush_line();
                self.push_text(&"-".repeat(width));
                self.flush_line();
                self.in_table_head = false;
            }
            TagEnd::TableRow => {
                let row = std::mem::take(&mut self.table_row);
                self.push_text(&row.join(" | "));
                self.flush_line();
            }
            TagEnd::TableCell => {
                let cell = self.cell.take().unwrap_or_default();
                self.table_row.push(cell.trim().to_string());
            }
            TagEnd::Table => self.blank_line(),
            TagEnd::Link => {
                if let Some((dest, start)) = self.links.pop() {
                    let buf = self.cell.as_ref().unwrap_or(&self.line);
                    let text = buf.get(start..).unwrap_or("").trim().to_string();
                    let bare = dest.strip_prefix("mailto:").unwrap_or(&dest);
                    if text != dest && text != bare {
                        self.push_text(&format!(" <{dest}>"));
                    }
                }
            }
            TagEnd::Image => {
                if let Some((dest, _)) = self.links.pop() {
                    self.push_text(&format!(" <{dest}>"));
                }
            }
            _ => {}
        }
    }

    fn finish(mut self) -> String {
        if !self.line.is_empty() {
            self.flush_line();
        }
        let mut out = self.out.trim_end().to_string();
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn none() -> Policy {
        Policy::default()
    }

    #[test]
    fn one_parse_gives_both_parts_as_two_would() {
        let md = "# Title\n\nHi **Ann**, see [the notes](https://x.example/a?b=1).\n\n\
                  * one\n* two\n  > quoted <b>raw</b>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n\
                  ```\ncode\n```\n";
        assert_eq!(
            to_text_and_html(md, &none()),
            (to_text(md, &none()), to_html(md, &none()))
        );
    }

    #[test]
    fn escaped_values_are_literal_text() {
        let name = "<b>Bob</b> [x](https://evil.example) *bold* \r\n# heading";
        let md = format!("Hello {}!", escape(name));
        let html = to_html(&md, &none());
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<a "), "{html}");
        assert!(!html.contains("<em>") && !html.contains("<h1>"), "{html}");
        assert!(html.contains("&lt;b&gt;Bob&lt;/b&gt;"), "{html}");
        let text = to_text(&md, &none());
        assert_eq!(
            text,
            "Hello <b>Bob</b> [x](https://evil.example) *bold*   # heading!\n"
        );
    }

    #[test]
    fn raw_html_in_markdown_is_shown_not_run() {
        let html = to_html(
            "<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)>",
            &none(),
        );
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
    }

    #[test]
    fn extensions_are_on() {
        let html = to_html(
            "| a | b |\n|---|---|\n| 1 | 2 |\n\n~~old~~\n\n- [x] done\n",
            &none(),
        );
        assert!(
            html.contains("<table>") && html.contains("<del>old</del>"),
            "{html}"
        );
        assert!(html.contains("checkbox"), "{html}");
    }

    #[test]
    fn text_keeps_structure_and_links() {
        let text = to_text(
            concat!(
                "## What’s changed\n\n",
                "### New features\n\n",
                "* Add `graphql-engine` [docs](https://example.org/docs) (#1916)\n",
                "* Second\n  1. nested\n\n",
                "See <https://moped.austinmobility.io>.\n\n",
                "| a | b |\n|---|---|\n| 1 | 2 |\n",
            ),
            &none(),
        );
        assert_eq!(
            text,
            concat!(
                "What’s changed\n",
                "--------------\n\n",
                "New features\n",
                "------------\n\n",
                "* Add graphql-engine docs <https://example.org/docs> (#1916)\n",
                "* Second\n",
                "  1. nested\n\n",
                "See https://moped.austinmobility.io.\n\n",
                "a | b\n",
                "-----\n",
                "1 | 2\n",
            )
        );
    }

    fn images_from(list: &str) -> Policy {
        Policy::with_images(list).unwrap()
    }

    /// Links a mail client would run or open outside the web, in the spellings that slip past a
    /// naive check.
    const HOSTILE_LINKS: &[&str] = &[
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x](&#106;avascript:alert(1))",
        "[x](&#x6A;avascript&colon;alert(1))",
        "[x](java&#09;script:alert(1))",
        "[x](<javascript:alert(1)>)",
        "[x](< javascript:alert(1)>)",
        "[x](\njavascript:alert(1))",
        "[x](\\javascript:alert(1))",
        "<javascript:alert(1)>",
        "<JAVASCRIPT:alert(1)>",
        "[x][r]\n\n[r]: javascript:alert(1)",
        "[x][]\n\n[x]: <vbscript:msgbox(1)> \"t\"",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](vbscript:msgbox(1))",
        "[x](file:///C:/Windows/System32/calc.exe)",
        "[x](//evil.example/)",
        "[x](https:evil.example)",
        "[x](ms-msdt:/id%20PCWDiagnostic)",
        "[x](relative/page.html)",
        "[x](#top)",
        "[x](http://)",
        "- item with [x](javascript:alert(1))\n",
        "| a |\n|---|\n| [x](javascript:alert(1)) |\n",
        "> [x](javascript:alert(1))\n",
        "[^1]\n\n[^1]: see [x](javascript:alert(1))\n",
    ];

    #[test]
    fn hostile_links_are_text_in_both_parts_and_refused_with_their_line() {
        for md in HOSTILE_LINKS {
            let (text, html) = to_text_and_html(md, &none());
            // The only links left are the renderer's own footnote anchors.
            let links = html.matches("<a href=\"").count();
            assert_eq!(
                links,
                html.matches("<a href=\"#").count(),
                "{md:?} gave {html}"
            );
            for scheme in ["javascript:", "vbscript:", "data:", "file:", "ms-msdt:"] {
                assert!(
                    !text.to_ascii_lowercase().contains(&format!("<{scheme}")),
                    "{md:?} gave {text}"
                );
                assert!(
                    !html.to_ascii_lowercase().contains(&format!("\"{scheme}")),
                    "{md:?} gave {html}"
                );
            }
            let found = refusals(md, &none(), |_| false);
            assert_eq!(found.len(), 1, "{md:?}: {found:?}");
            assert!(
                found[0].message.contains("only http, https and mailto"),
                "{found:?}"
            );
            // Reported where the link is used: its `[x]`, or the autolink's `<`.
            let at = md.find("[x]").or_else(|| md.find('<')).unwrap();
            let expected = md[..at].matches('\n').count() + 1;
            assert_eq!(found[0].line, expected, "{md:?}");
        }
    }

    #[test]
    fn http_https_and_mailto_links_stay_links() {
        let md = "[a](https://moped.austinmobility.io/projects?x=1&y=2) [b](HTTP://example.org) \
                  [c](mailto:moped@austintexas.gov?subject=Hi) <moped@austintexas.gov> \
                  <https://github.com/cityofaustin/atd-moped/pull/1916>\n";
        let (text, html) = to_text_and_html(md, &none());
        for href in [
            "href=\"https://moped.austinmobility.io/projects?x=1&amp;y=2\"",
            "href=\"HTTP://example.org\"",
            "href=\"mailto:moped@austintexas.gov?subject=Hi\"",
            "href=\"mailto:moped@austintexas.gov\"",
            "href=\"https://github.com/cityofaustin/atd-moped/pull/1916\"",
        ] {
            assert!(html.contains(href), "{href} not in {html}");
        }
        assert!(
            text.contains("a <https://moped.austinmobility.io/projects?x=1&y=2>"),
            "{text}"
        );
        assert!(
            text.contains("c <mailto:moped@austintexas.gov?subject=Hi>"),
            "{text}"
        );
        assert!(refusals(md, &none(), |_| false).is_empty());
    }

    #[test]
    fn raw_html_links_stay_text() {
        let md = "<a href=\"javascript:alert(1)\">x</a>\n\nand <a href='data:text/html,x'>y</a>\n";
        let html = to_html(md, &none());
        assert!(!html.contains("<a "), "{html}");
        assert!(html.contains("&lt;a href="), "{html}");
    }

    #[test]
    fn images_come_only_from_allowed_prefixes() {
        let policy =
            images_from("https://moped.austinmobility.io, https://github.com/user-attachments/");
        for ok in [
            "https://moped.austinmobility.io/logo.png",
            "HTTPS://MOPED.austinmobility.io/logo.png",
            "https://moped.austinmobility.io:443/logo.png",
            "https://moped.austinmobility.io",
            "https://github.com/user-attachments/assets/9f1c.png",
        ] {
            assert!(policy.allows_image(ok), "{ok}");
        }
        for refused in [
            "https://tracker.example/pixel.gif",
            "https://moped.austinmobility.io.evil.example/x.png",
            "https://moped.austinmobility.io@evil.example/x.png",
            "https://user:pw@moped.austinmobility.io/x.png",
            "https://github.com/user-attachments/../evil/x.png",
            "https://github.com/user-attachmentsevil/x.png",
            "http://moped.austinmobility.io/logo.png",
            "//moped.austinmobility.io/logo.png",
            "/logo.png",
            "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
            "javascript:alert(1)",
            "cid:logo",
        ] {
            assert!(!policy.allows_image(refused), "{refused}");
        }
        let prefix = images_from("https://a.example/img");
        assert!(prefix.allows_image("https://a.example/img/x.png"));
        assert!(!prefix.allows_image("https://a.example/imgevil.png"));
        assert!(!none().allows_image("https://moped.austinmobility.io/logo.png"));
        assert!(Policy::any_remote_image().allows_image("https://tracker.example/p.gif"));
        assert!(!Policy::any_remote_image().allows_image("data:image/gif;base64,R0"));
    }

    #[test]
    fn a_refused_image_is_its_alt_text() {
        let policy = images_from("https://moped.austinmobility.io/");
        let md = "Look: ![the *new* map](https://tracker.example/pixel.gif?u=ann \"t\") and \
                  ![logo](https://moped.austinmobility.io/logo.png)\n\n\
                  [![inner](https://moped.austinmobility.io/i.png)](javascript:alert(1))\n";
        let (text, html) = to_text_and_html(md, &policy);
        assert!(
            !html.contains("tracker.example") && !text.contains("tracker.example"),
            "{html}{text}"
        );
        assert!(html.contains("the <em>new</em> map"), "{html}");
        assert!(
            text.contains("Look: the new map and logo <https://moped.austinmobility.io/logo.png>"),
            "{text}"
        );
        assert!(
            html.contains("<img src=\"https://moped.austinmobility.io/logo.png\" alt=\"logo\""),
            "{html}"
        );
        assert!(
            html.contains("<img src=\"https://moped.austinmobility.io/i.png\""),
            "{html}"
        );
        assert!(!html.contains("<a "), "{html}");
        let found = refusals(md, &policy, |_| false);
        assert_eq!(
            found.iter().map(|r| r.line).collect::<Vec<_>>(),
            [1, 3],
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .contains("https://tracker.example/pixel.gif?u=ann"),
            "{found:?}"
        );
        assert!(
            found[0]
                .message
                .contains("only from https://moped.austinmobility.io/"),
            "{found:?}"
        );
        let message = &refusals("![x](https://a.example/p.gif)", &none(), |_| false)[0].message;
        assert!(
            message.contains("allows no images") && message.contains("images:"),
            "{message}"
        );
    }

    #[test]
    fn image_prefixes_must_be_http_urls() {
        for bad in [
            "moped.austinmobility.io",
            "javascript:alert(1)",
            "data:image/png",
            "https://u@a.example/",
            "file:///tmp/",
        ] {
            let e = Policy::with_images(bad).unwrap_err();
            assert!(e.contains(bad), "{e}");
        }
        assert_eq!(images_from("").image_prefixes(), &[] as &[String]);
        assert_eq!(
            images_from("https://A.example").image_prefixes(),
            ["https://a.example/"]
        );
    }

    #[test]
    fn skipped_destinations_are_left_for_later() {
        let md = "[a]({{app_url}}) ![b]({{logo}})\n";
        assert!(refusals(md, &none(), |d| d.contains("{{")).is_empty());
        assert_eq!(refusals(md, &none(), |_| false).len(), 2);
    }
}
