//! CSS inlining that costs one HTML parse per page *shape* instead of one per recipient.
//!
//! Which `style` attributes an element gets depends only on the document's markup (elements,
//! attributes, their nesting and order), never on the words between the tags: CSS selectors do
//! not look at text. Personalised messages of one notice share their markup and differ only in
//! text (a name, an address), so the page is split into its markup (the *skeleton*, where every
//! piece of text is replaced by a numbered marker) and its text. The skeleton is inlined once by
//! `css-inline`; for every page of the same skeleton the recipient's own text goes back in place
//! of the markers. A page whose markup differs (a template branch that depends on the recipient)
//! simply has a skeleton of its own. Every page goes through this same path, so the output does
//! not depend on what was rendered before it.
//!
//! Text is kept as the page had it (already HTML-escaped by the layout or the Markdown renderer);
//! whitespace-only text stays in the skeleton, so `:empty` and whitespace handling see the page
//! exactly as it is. `<style>` and `<script>` content is markup, not text.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Start and end of a text marker in a skeleton. Private-use characters: the HTML parser and
/// serializer pass them through untouched, and pages that contain them are inlined directly.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Skeletons kept at once; beyond that the cache starts again (a template whose markup changes
/// with every recipient gains nothing from it, and must not grow memory).
const MAX_SHAPES: usize = 64;

/// An inlined skeleton: literal output with the page's text pieces to put back in order.
enum Shape {
    /// Literal runs and, between them, the index of the text piece that goes there.
    Parts(Vec<Part>),
    /// The skeleton did not come back with each marker exactly once: inline such pages whole.
    Direct,
}

enum Part {
    Literal(String),
    Text(usize),
}

/// A CSS inliner with a cache of inlined skeletons, safe to share between threads.
pub struct Inliner {
    inner: css_inline::CSSInliner<'static>,
    shapes: Mutex<HashMap<String, Arc<Shape>>>,
}

impl Inliner {
    pub fn new() -> Inliner {
        Inliner {
            inner: css_inline::CSSInliner::options()
                .keep_style_tags(false)
                .keep_link_tags(false)
                .load_remote_stylesheets(false)
                .build(),
            shapes: Mutex::new(HashMap::new()),
        }
    }

    /// Inline the page's `<style>` rules into `style` attributes and drop the `<style>` tags.
    pub fn inline(&self, html: &str) -> Result<String, css_inline::InlineError> {
        let Some((skeleton, texts)) = split(html) else {
            return self.inner.inline(html);
        };
        let cached = self
            .shapes
            .lock()
            .ok()
            .and_then(|m| m.get(&skeleton).cloned());
        let shape = match cached {
            Some(s) => s,
            None => {
                let inlined = self.inner.inline(&skeleton)?;
                let shape = Arc::new(parse_shape(&inlined, texts.len()));
                if let Ok(mut m) = self.shapes.lock() {
                    if m.len() >= MAX_SHAPES {
                        m.clear();
                    }
                    m.insert(skeleton, shape.clone());
                }
                shape
            }
        };
        match &*shape {
            Shape::Direct => self.inner.inline(html),
            Shape::Parts(parts) => {
                let size = parts
                    .iter()
                    .map(|p| match p {
                        Part::Literal(s) => s.len(),
                        Part::Text(i) => texts[*i].len(),
                    })
                    .sum();
                let mut out = String::with_capacity(size);
                for p in parts {
                    match p {
                        Part::Literal(s) => out.push_str(s),
                        Part::Text(i) => push_text_as_serialized(&mut out, texts[*i]),
                    }
                }
                Ok(out)
            }
        }
    }
}

impl Default for Inliner {
    fn default() -> Self {
        Inliner::new()
    }
}

/// Split a page into its skeleton and its text pieces. `None` when the page is not one this
/// simple reader is sure about (a tag or comment left open, or marker characters in the page):
/// such a page is inlined whole.
fn split(html: &str) -> Option<(String, Vec<&str>)> {
    if html.contains([OPEN, CLOSE]) {
        return None;
    }
    let mut skeleton = String::with_capacity(html.len());
    let mut texts = Vec::new();
    for piece in pieces(html, tag_end, raw_text_element).ok()? {
        match piece {
            Piece::Text(r) => push_text(&html[r], &mut skeleton, &mut texts),
            // The content of raw-text elements is markup as far as styles are concerned.
            Piece::Markup(r) => skeleton.push_str(&html[r]),
        }
    }
    Some((skeleton, texts))
}

/// A stretch of a page: text, or markup (a tag, comment or declaration, with the content of a
/// raw-text element that the tag opens).
pub(super) enum Piece {
    Text(std::ops::Range<usize>),
    Markup(std::ops::Range<usize>),
}

/// Cut `html` into text and markup, in order. A `<` that starts no markup is text. `tag_end`
/// finds where a tag ends, `raw_text` names the elements whose content is markup too. `Err`
/// says what was left open.
pub(super) fn pieces(
    html: &str,
    tag_end: fn(&[u8], usize) -> Option<usize>,
    raw_text: fn(&str) -> Option<&'static str>,
) -> Result<Vec<Piece>, &'static str> {
    let b = html.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut text_start = 0;
    while i < b.len() {
        if b[i] != b'<' {
            i += 1;
            continue;
        }
        let next = b.get(i + 1).copied().unwrap_or(0);
        let end = if b[i..].starts_with(b"<!--") {
            find(b, i + 4, b"-->").ok_or("open comment")? + 3
        } else if next == b'!' || next == b'?' {
            find(b, i + 2, b">").ok_or("open declaration")? + 1
        } else if next.is_ascii_alphabetic()
            || (next == b'/' && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic))
        {
            tag_end(b, i + 1).ok_or("open tag")?
        } else {
            i += 1;
            continue;
        };
        if text_start < i {
            out.push(Piece::Text(text_start..i));
        }
        let markup_end = match raw_text(&html[i..end]) {
            Some(name) => find_close(b, end, name).ok_or("open raw text element")?,
            None => end,
        };
        out.push(Piece::Markup(i..markup_end));
        i = markup_end;
        text_start = i;
    }
    if text_start < b.len() {
        out.push(Piece::Text(text_start..b.len()));
    }
    Ok(out)
}

/// Text as an HTML serializer writes it: the layout's escaping of `"`, `'` and `/` (needed in
/// attributes, not in text) is undone, as re-parsing the page used to do, so `https://…` stays
/// readable in the HTML source; `&`, `<` and `>` stay escaped.
fn push_text_as_serialized(out: &mut String, text: &str) {
    if !text.contains('&') {
        out.push_str(text);
        return;
    }
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let (plain, len) = [
            ("&quot;", '"'),
            ("&#x27;", '\''),
            ("&#39;", '\''),
            ("&#x2F;", '/'),
            ("&#47;", '/'),
        ]
        .iter()
        .find(|(entity, _)| tail.starts_with(entity))
        .map(|(entity, c)| (Some(*c), entity.len()))
        .unwrap_or((None, 1));
        match plain {
            Some(c) => out.push(c),
            None => out.push('&'),
        }
        rest = &tail[len..];
    }
    out.push_str(rest);
}

fn push_text<'a>(text: &'a str, skeleton: &mut String, texts: &mut Vec<&'a str>) {
    if text.bytes().all(|c| c.is_ascii_whitespace()) {
        skeleton.push_str(text);
    } else {
        skeleton.push(OPEN);
        skeleton.push_str(&texts.len().to_string());
        skeleton.push(CLOSE);
        texts.push(text);
    }
}

fn find(b: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    b.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The end (exclusive) of the tag whose name starts at `from`, skipping quoted attribute values.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i + 1),
            b'=' => {
                i += 1;
                while i < b.len() && b[i].is_ascii_whitespace() {
                    i += 1;
                }
                if let Some(&q @ (b'"' | b'\'')) = b.get(i) {
                    i = b[i + 1..].iter().position(|&c| c == q)? + i + 2;
                    continue;
                }
            }
            _ => i += 1,
        }
    }
    None
}

/// The element name of a tag (`<Style media=x>` -> `style`), lower case.
pub(super) fn element_name(tag: &str) -> String {
    tag[1..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// `style` or `script` when `tag` opens one of them.
fn raw_text_element(tag: &str) -> Option<&'static str> {
    match element_name(tag).as_str() {
        "style" => Some("style"),
        "script" => Some("script"),
        _ => None,
    }
}

/// Where `</name` (any case) starts at or after `from`; the end of the page for `plaintext`,
/// which no end tag closes.
fn find_close(b: &[u8], from: usize, name: &str) -> Option<usize> {
    if name == "plaintext" {
        return Some(b.len());
    }
    let mut i = from;
    while let Some(at) = find(b, i, b"</") {
        let rest = &b[at + 2..];
        if rest.len() >= name.len() && rest[..name.len()].eq_ignore_ascii_case(name.as_bytes()) {
            return Some(at);
        }
        i = at + 2;
    }
    None
}

/// Read the inlined skeleton back into literal runs and text slots. Every marker `0..count`
/// must appear exactly once, in text, or the shape is not used.
fn parse_shape(inlined: &str, count: usize) -> Shape {
    let mut parts = Vec::with_capacity(count * 2 + 1);
    let mut seen = vec![false; count];
    let mut rest = inlined;
    while let Some(open) = rest.find(OPEN) {
        let after = &rest[open + OPEN.len_utf8()..];
        let Some(close) = after.find(CLOSE) else {
            return Shape::Direct;
        };
        let Ok(index) = after[..close].parse::<usize>() else {
            return Shape::Direct;
        };
        if index >= count || seen[index] {
            return Shape::Direct;
        }
        seen[index] = true;
        parts.push(Part::Literal(rest[..open].to_string()));
        parts.push(Part::Text(index));
        rest = &after[close + CLOSE.len_utf8()..];
    }
    if rest.contains(CLOSE) || seen.iter().any(|s| !s) {
        return Shape::Direct;
    }
    parts.push(Part::Literal(rest.to_string()));
    Shape::Parts(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STYLE: &str = "p { color: red } li > p { margin: 0 } .card a { color: blue } \
        td:first-child { font-weight: bold } p:empty { display: none } h2 + p { margin-top: 0 }";

    fn page(title: &str, body: &str) -> String {
        format!(
            "<!DOCTYPE html>\n<html><head><title>{title}</title><style>{STYLE}</style></head>\n\
             <body><div class=\"card\">\n{body}\n</div></body></html>"
        )
    }

    /// The page as a browser would rebuild it: parsed and written out again, no CSS applied.
    fn normalised(html: &str) -> String {
        css_inline::CSSInliner::options()
            .keep_style_tags(true)
            .load_remote_stylesheets(false)
            .build()
            .inline(html)
            .unwrap()
    }

    fn whole(html: &str) -> String {
        css_inline::CSSInliner::options()
            .keep_style_tags(false)
            .keep_link_tags(false)
            .load_remote_stylesheets(false)
            .build()
            .inline(html)
            .unwrap()
    }

    fn bodies(name: &str) -> Vec<String> {
        vec![
            format!("<p>Hi {name},</p>\n<p>Moped is back.</p>"),
            format!(
                "<h2>Fixes</h2>\n<p>Text right after a heading</p>\n<ul>\n<li><p>{name} in a loose list</p>\n</li>\n<li>tight</li>\n</ul>"
            ),
            format!(
                "<table>\n<thead>\n<tr><th>Who</th><th>What</th></tr>\n</thead>\n<tbody>\n<tr><td>{name}</td><td>a &lt; b &amp;&amp; c</td></tr>\n</tbody>\n</table>"
            ),
            format!(
                "<p></p><p>a < b and a <3 c {name}</p><!-- a <p> in a comment --><p title=\"x > y\">{name}</p>\
                 <script>var s = '<p>not a paragraph</p>';</script><pre><code>\n  {name}\n</code></pre>"
            ),
        ]
    }

    #[test]
    fn every_page_comes_out_as_inlining_it_whole_would_give() {
        let inliner = Inliner::new();
        for name in [
            "Ann",
            "Zoë &amp; Li",
            "&lt;b&gt;x&lt;/b&gt;",
            "  Bo  ",
            "O&#39;Neil",
        ] {
            for body in bodies(name) {
                let html = page(&format!("Hello {name}"), &body);
                let got = inliner.inline(&html).unwrap();
                assert_eq!(normalised(&got), normalised(&whole(&html)), "{html}");
                assert!(got.contains(" style=\""), "{got}");
                assert!(!got.contains("<style"), "{got}");
            }
        }
        // One inlined skeleton per markup shape, shared by every name.
        let shapes = inliner.shapes.lock().unwrap().len();
        assert_eq!(shapes, bodies("x").len());
    }

    #[test]
    fn each_page_keeps_its_own_text() {
        let inliner = Inliner::new();
        let c = inliner
            .inline(&page(
                "C",
                "<p>https:&#x2F;&#x2F;x &quot;q&quot; O&#x27;Neil &amp; &lt;b&gt;</p>",
            ))
            .unwrap();
        assert!(
            c.contains(">https://x \"q\" O'Neil &amp; &lt;b&gt;</p>"),
            "{c}"
        );
        let a = inliner.inline(&page("A", "<p>Hi Ann</p>")).unwrap();
        let b = inliner.inline(&page("B", "<p>Hi Bob</p>")).unwrap();
        assert!(a.contains(">Hi Ann</p>") && !a.contains("Bob"), "{a}");
        assert!(b.contains(">Hi Bob</p>") && !b.contains("Ann"), "{b}");
        assert!(a.contains("<title>A</title>"), "{a}");
    }

    #[test]
    fn pages_it_cannot_split_are_inlined_whole() {
        let inliner = Inliner::new();
        for html in [
            page("x", "<p>a \u{E000}0\u{E001} marker</p>"),
            page("x", "<p>an open <a href=\"x"),
            page("x", "<p>an open comment <!-- never closed</p>"),
        ] {
            let got = inliner.inline(&html).unwrap();
            assert_eq!(got, whole(&html));
        }
        assert!(inliner.shapes.lock().unwrap().is_empty());
    }

    #[test]
    fn the_cache_is_bounded() {
        let inliner = Inliner::new();
        for i in 0..(MAX_SHAPES * 2) {
            let body = format!("<p class=\"c{i}\">x</p>");
            inliner.inline(&page("t", &body)).unwrap();
        }
        assert!(inliner.shapes.lock().unwrap().len() <= MAX_SHAPES);
    }
}
