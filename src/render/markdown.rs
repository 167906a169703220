//! Markdown to the two parts of a message: HTML (raw HTML in the source is shown as text, never
//! passed through) and readable plain text with links kept. Also the escape function that makes
//! any value substituted into a Markdown template literal text. Pure functions.

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

/// Markdown to an HTML fragment. Raw HTML blocks and inline HTML are turned into text.
pub fn to_html(markdown: &str) -> String {
    html_from(markdown.len(), Parser::new_ext(markdown, options()))
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
/// bullets, links as `text <url>`, tables as aligned-free rows separated by `|`.
pub fn to_text(markdown: &str) -> String {
    text_from(Parser::new_ext(markdown, options()))
}

fn text_from<'a>(events: impl Iterator<Item = Event<'a>>) -> String {
    let mut w = TextWriter::default();
    for event in events {
        w.event(event);
    }
    w.finish()
}

/// Both parts from one parse: `(to_text(markdown), to_html(markdown))`.
pub fn to_text_and_html(markdown: &str) -> (String, String) {
    let events: Vec<Event> = Parser::new_ext(markdown, options()).collect();
    let text = text_from(events.iter().cloned());
    (text, html_from(markdown.len(), events.into_iter()))
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

    #[test]
    fn one_parse_gives_both_parts_as_two_would() {
        let md = "# Title\n\nHi **Ann**, see [the notes](https://x.example/a?b=1).\n\n\
                  * one\n* two\n  > quoted <b>raw</b>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n\
                  ```\ncode\n```\n";
        assert_eq!(to_text_and_html(md), (to_text(md), to_html(md)));
    }

    #[test]
    fn escaped_values_are_literal_text() {
        let name = "<b>Bob</b> [x](https://evil.example) *bold* \r\n# heading";
        let md = format!("Hello {}!", escape(name));
        let html = to_html(&md);
        assert!(!html.contains("<b>"), "{html}");
        assert!(!html.contains("<a "), "{html}");
        assert!(!html.contains("<em>") && !html.contains("<h1>"), "{html}");
        assert!(html.contains("&lt;b&gt;Bob&lt;/b&gt;"), "{html}");
        let text = to_text(&md);
        assert_eq!(
            text,
            "Hello <b>Bob</b> [x](https://evil.example) *bold*   # heading!\n"
        );
    }

    #[test]
    fn raw_html_in_markdown_is_shown_not_run() {
        let html = to_html("<script>alert(1)</script>\n\nhi <img src=x onerror=alert(1)>");
        assert!(
            !html.contains("<script>") && !html.contains("<img"),
            "{html}"
        );
    }

    #[test]
    fn extensions_are_on() {
        let html = to_html("| a | b |\n|---|---|\n| 1 | 2 |\n\n~~old~~\n\n- [x] done\n");
        assert!(
            html.contains("<table>") && html.contains("<del>old</del>"),
            "{html}"
        );
        assert!(html.contains("checkbox"), "{html}");
    }

    #[test]
    fn text_keeps_structure_and_links() {
        let text = to_text(concat!(
            "## What’s changed\n\n",
            "### New features\n\n",
            "* Add `graphql-engine` [docs](https://example.org/docs) (#1916)\n",
            "* Second\n  1. nested\n\n",
            "See <https://moped.austinmobility.io>.\n\n",
            "| a | b |\n|---|---|\n| 1 | 2 |\n",
        ));
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
}
