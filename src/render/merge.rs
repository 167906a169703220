//! Mail merge: render a notice once with a marker in place of each per-recipient variable, then
//! make each recipient's message by splicing their values in place of the markers.
//!
//! `Templates::render` costs a Tera render, a Markdown parse, a layout render and a CSS inlining
//! per recipient; a splice is three string concatenations. The splice is only used where it is
//! proven to give exactly what `Templates::render` would:
//!
//! * `Merge::new` refuses templates that use a per-recipient variable (a *field*) in any way but a
//!   bare `{{ field }}` (no conditions, loops, filters, tests, concatenation, filter sections,
//!   macros, includes…; in the layout `{{ subject }}` and `{{ body | safe }}` only), and marker
//!   positions where Markdown or HTML could read a value as more than text: headings and table
//!   heads (the plain text underlines them to their width), links, images, code, raw HTML; after
//!   a `<`, a backtick, an open `[` or a `](` in the same block, or right after `&…`; in the HTML
//!   anywhere but text (tags, comments, `<style>`, `<script>`, `<textarea>`), or right after `<`.
//!   A field followed by `.` or `)` where a line may start takes no value starting with a digit
//!   (`12.` would start a list). Last, a few probe recipients are compared with full renders.
//! * `Merge::render` refuses values that are not plain words: empty, longer than
//!   [`MAX_VALUE_CHARS`], with characters outside letters, digits and [`VALUE_PUNCTUATION`], two
//!   spaces in a row, or not starting and ending with a letter or digit that Markdown does not
//!   count as punctuation.
//!
//! A refusal is `None`: the caller renders that recipient (or every recipient) the slow way.

use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use tera::ast::{Expr, ExprVal, Node};

use super::inline::{element_name, pieces, Piece};
use super::{markdown, Rendered, Templates};

/// Start and end of a field marker: `OPEN`, the field's index in decimal, `CLOSE`. Private-use
/// characters that no template, shared value or accepted value contains (`inline.rs` uses
/// U+E000 and U+E001).
const OPEN: char = '\u{E010}';
const CLOSE: char = '\u{E011}';

/// The longest value spliced, in characters.
pub const MAX_VALUE_CHARS: usize = 200;

/// The characters besides letters and digits a spliced value may hold (a space never twice in a
/// row, and none of them first or last). Each one is shown identical through every stage by the
/// tests (`every_allowed_character_splices_as_rendered`): Markdown escapes it with a backslash
/// and prints it back, the HTML renderer leaves it alone, the layout's `&#x27;` for `'` is
/// written back as `'` by the CSS inliner, and the plain-text writer copies it. Not allowed,
/// among others: `&` (`&amp;` in the HTML), `<` `>` (escaped), `/` (`&#x2F;` kept in attributes),
/// `"`, `:` `;` `#` `(` `)` `[` `]` `*` `` ` `` `|` `~` `\` (Markdown syntax next to template text).
pub const VALUE_PUNCTUATION: &[char] = &[' ', '-', '.', '\'', '@', '+', '_'];

/// Names the layout is given besides the context: both carry the notice's markers.
const LAYOUT_SUBJECT: &str = "subject";
const LAYOUT_BODY: &str = "body";

/// A notice rendered once with a marker in place of each per-recipient variable.
#[derive(Debug, Clone)]
pub struct Merge {
    fields: usize,
    subject: Output,
    text: Output,
    html: Output,
    /// Per field: a value may not start with an ASCII digit (a marker followed by `.` or `)`
    /// could become an ordered-list number).
    no_leading_digit: Vec<bool>,
    /// Per field: it appears in some output. A field the templates never print cannot change
    /// the message (fields appear only as bare `{{ field }}`), so its value is not checked.
    used: Vec<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Field(usize),
}

/// One output cut into literal runs and field slots.
#[derive(Debug, Clone)]
struct Output {
    parts: Vec<Part>,
    literal_len: usize,
    /// How many slots each field has.
    uses: Vec<usize>,
}

impl Merge {
    /// `shared`: the variables common to every recipient. `fields`: the names of the
    /// per-recipient variables. `None` when the templates use a field in a way a plain
    /// substitution cannot reproduce: the caller then renders every recipient with
    /// `Templates::render`.
    pub fn new(templates: &Templates, shared: &tera::Context, fields: &[&str]) -> Option<Merge> {
        let merge = Merge::prepare(templates, shared, fields).ok()?;
        merge.verify(templates, shared, fields).then_some(merge)
    }

    /// Everything `new` does but the probe renders; `Err` says why the templates are refused.
    fn prepare(
        templates: &Templates,
        shared: &tera::Context,
        fields: &[&str],
    ) -> Result<Merge, String> {
        for (i, f) in fields.iter().enumerate() {
            if f.is_empty() || fields[..i].contains(f) {
                return Err(format!("field `{f}` is empty or named twice"));
            }
            if [LAYOUT_SUBJECT, LAYOUT_BODY].contains(f) || f.starts_with("__tera") {
                return Err(format!("field `{f}` has a reserved name"));
            }
        }
        let shared_json = serde_json::to_string(&shared.clone().into_json())
            .map_err(|e| format!("shared context: {e}"))?;
        if shared_json.contains([OPEN, CLOSE]) {
            return Err("a shared value holds marker characters".into());
        }
        let mut carrying: Vec<&str> = fields.to_vec();
        check_tera(templates.notice_tera(), &carrying, false)?;
        carrying.extend([LAYOUT_SUBJECT, LAYOUT_BODY]);
        check_tera(templates.layout_tera(), &carrying, true)?;

        let mut ctx = shared.clone();
        for (i, f) in fields.iter().enumerate() {
            ctx.insert(*f, &marker(i));
        }
        let markdown = templates
            .body_markdown(&ctx)
            .map_err(|e| format!("body: {e}"))?;
        let no_leading_digit = check_markdown(&markdown, fields.len())?;
        let rendered = templates.render(&ctx).map_err(|e| e.to_string())?;
        // The page before CSS inlining, as `Templates::render` builds it: a field in a `<style>`
        // or `<link>` the inliner consumes would change the styles and leave no marker.
        let mut layout_ctx = ctx;
        layout_ctx.insert(LAYOUT_SUBJECT, &rendered.subject);
        layout_ctx.insert(
            LAYOUT_BODY,
            &markdown::to_html(&markdown, templates.policy()),
        );
        let page = templates
            .layout_tera()
            .render(super::LAYOUT_FILE, &layout_ctx)
            .map_err(|e| format!("layout: {e}"))?;
        check_html(&page)?;
        check_html(&rendered.html)?;
        let subject = Output::cut(&rendered.subject, fields.len()).ok_or("subject markers")?;
        let text = Output::cut(&rendered.text, fields.len()).ok_or("text markers")?;
        let html = Output::cut(&rendered.html, fields.len()).ok_or("html markers")?;
        let used = (0..fields.len())
            .map(|i| subject.uses[i] + text.uses[i] + html.uses[i] > 0)
            .collect();
        Ok(Merge {
            fields: fields.len(),
            subject,
            text,
            html,
            no_leading_digit,
            used,
        })
    }

    /// Splice probe recipients and compare with full renders: a last check that the templates
    /// behave as the guards expect.
    fn verify(&self, templates: &Templates, shared: &tera::Context, fields: &[&str]) -> bool {
        let probes: [&dyn Fn(usize) -> &'static str; 3] = [
            &|_| "Q",
            &|i| ["Zoë O'Neil-Li", "ann.lee@x.example", "Ñu_7+b 中"][i % 3],
            &|i| if self.no_leading_digit[i] { "Ab" } else { "42" },
        ];
        probes.iter().all(|probe| {
            let values: Vec<&str> = (0..fields.len()).map(probe).collect();
            let mut ctx = shared.clone();
            for (f, v) in fields.iter().zip(&values) {
                ctx.insert(*f, v);
            }
            match (self.render(&values), templates.render(&ctx)) {
                (Some(spliced), Ok(full)) => spliced == full,
                _ => false,
            }
        })
    }

    /// The message for one recipient; `values` in the order of `fields`, as the strings Tera
    /// would print (an integer as its decimal digits). `None` when a value is not one the splice
    /// is proven to handle: the caller then uses `Templates::render` for that recipient.
    pub fn render(&self, values: &[&str]) -> Option<Rendered> {
        if values.len() != self.fields {
            return None;
        }
        for ((v, &no_digit), &used) in values.iter().zip(&self.no_leading_digit).zip(&self.used) {
            if used && !value_ok(v, no_digit) {
                return None;
            }
        }
        Some(Rendered {
            subject: self.subject.fill(values),
            text: self.text.fill(values),
            html: self.html.fill(values),
        })
    }
}

fn marker(i: usize) -> String {
    format!("{OPEN}{i}{CLOSE}")
}

impl Output {
    /// Cut `s` at its markers. `None` unless every marker is whole and names a field.
    fn cut(s: &str, fields: usize) -> Option<Output> {
        let mut out = Output {
            parts: Vec::new(),
            literal_len: 0,
            uses: vec![0; fields],
        };
        let mut rest = s;
        while let Some(at) = rest.find(OPEN) {
            let after = &rest[at + OPEN.len_utf8()..];
            let close = after.find(CLOSE)?;
            let digits = &after[..close];
            if digits.is_empty()
                || !digits.bytes().all(|b| b.is_ascii_digit())
                || (digits.len() > 1 && digits.starts_with('0'))
            {
                return None;
            }
            let index: usize = digits.parse().ok()?;
            if index >= fields || rest[..at].contains(CLOSE) {
                return None;
            }
            out.literal(&rest[..at]);
            out.parts.push(Part::Field(index));
            out.uses[index] += 1;
            rest = &after[close + CLOSE.len_utf8()..];
        }
        if rest.contains(CLOSE) {
            return None;
        }
        out.literal(rest);
        Some(out)
    }

    fn literal(&mut self, s: &str) {
        if !s.is_empty() {
            self.literal_len += s.len();
            self.parts.push(Part::Literal(s.to_string()));
        }
    }

    fn fill(&self, values: &[&str]) -> String {
        let size = self.literal_len
            + self
                .uses
                .iter()
                .zip(values)
                .map(|(n, v)| n * v.len())
                .sum::<usize>();
        let mut out = String::with_capacity(size);
        for p in &self.parts {
            match p {
                Part::Literal(s) => out.push_str(s),
                Part::Field(i) => out.push_str(values[*i]),
            }
        }
        out
    }
}

/// Whether `v` splices exactly as a full render would print it.
fn value_ok(v: &str, no_leading_digit: bool) -> bool {
    let mut chars = v.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if !edge_ok(first) || (no_leading_digit && first.is_ascii_digit()) {
        return false;
    }
    let mut prev = first;
    for (n, c) in chars.enumerate() {
        // `n` counts the characters after the first.
        if n + 1 >= MAX_VALUE_CHARS
            || (c == ' ' && prev == ' ')
            || !(alphanumeric(c) || VALUE_PUNCTUATION.contains(&c))
        {
            return false;
        }
        prev = c;
    }
    edge_ok(prev)
}

fn alphanumeric(c: char) -> bool {
    c.is_alphanumeric() && !private_use(c)
}

/// A letter or digit that Markdown's emphasis rules see as neither space nor punctuation, like
/// the marker it replaces. Unicode gives a few symbols (circled and squared Latin letters) the
/// Alphabetic property while CommonMark counts them as punctuation.
fn edge_ok(c: char) -> bool {
    alphanumeric(c)
        && !matches!(c,
            '\u{24B6}'..='\u{24E9}'
            | '\u{1F130}'..='\u{1F149}'
            | '\u{1F150}'..='\u{1F169}'
            | '\u{1F170}'..='\u{1F189}')
}

fn private_use(c: char) -> bool {
    matches!(c,
        '\u{E000}'..='\u{F8FF}' | '\u{F0000}'..='\u{FFFFD}' | '\u{100000}'..='\u{10FFFD}')
}

// ---------------------------------------------------------------------------------------------
// Guard 1: how the templates use the fields.

/// Check every template of `tera`. `carrying`: names whose value holds markers (the fields, and
/// in the layout `subject` and `body`).
fn check_tera(tera: &tera::Tera, carrying: &[&str], layout: bool) -> Result<(), String> {
    for (name, t) in &tera.templates {
        if !t.parents.is_empty()
            || !t.macros.is_empty()
            || !t.imported_macro_files.is_empty()
            || !t.blocks.is_empty()
        {
            return Err(format!("{name}: inheritance or macros"));
        }
        let scope = Scope { carrying, layout };
        scope
            .nodes(&t.ast, false)
            .map_err(|e| format!("{name}: {e}"))?;
    }
    Ok(())
}

struct Scope<'a> {
    carrying: &'a [&'a str],
    layout: bool,
}

impl Scope<'_> {
    /// `filtered`: inside a `{% filter %}` section, whose output is transformed.
    fn nodes(&self, nodes: &[Node], filtered: bool) -> Result<(), String> {
        for node in nodes {
            self.node(node, filtered)?;
        }
        Ok(())
    }

    fn node(&self, node: &Node, filtered: bool) -> Result<(), String> {
        match node {
            Node::Text(s) | Node::Raw(_, s, _) => no_marker_chars(s),
            Node::Comment(..) | Node::Break(_) | Node::Continue(_) => Ok(()),
            Node::VariableBlock(_, expr) => self.variable_block(expr, filtered),
            Node::Set(_, set) => {
                self.binds(&set.key)?;
                self.expr(&set.value)
            }
            Node::FilterSection(_, section, _) => {
                self.call_args(&section.filter.args)?;
                self.nodes(&section.body, true)
            }
            Node::Forloop(_, fl, _) => {
                if let Some(key) = &fl.key {
                    self.binds(key)?;
                }
                self.binds(&fl.value)?;
                self.expr(&fl.container)?;
                self.nodes(&fl.body, filtered)?;
                match &fl.empty_body {
                    Some(body) => self.nodes(body, filtered),
                    None => Ok(()),
                }
            }
            Node::If(i, _) => {
                for (_, cond, body) in &i.conditions {
                    self.expr(cond)?;
                    self.nodes(body, filtered)?;
                }
                match &i.otherwise {
                    Some((_, body)) => self.nodes(body, filtered),
                    None => Ok(()),
                }
            }
            Node::Super
            | Node::MacroDefinition(..)
            | Node::Extends(..)
            | Node::Include(..)
            | Node::ImportMacro(..)
            | Node::Block(..) => Err("inheritance, include or macro".into()),
        }
    }

    fn variable_block(&self, expr: &Expr, filtered: bool) -> Result<(), String> {
        let ExprVal::Ident(name) = &expr.val else {
            return self.expr(expr);
        };
        if !self.carrying.contains(&name.as_str()) {
            return self.expr(expr);
        }
        let bare = !expr.negated && !filtered;
        let plain = if self.layout && name == LAYOUT_BODY {
            // The body is HTML: it goes in as is, and only that way.
            matches!(expr.filters.as_slice(), [f] if f.name == "safe" && f.args.is_empty())
        } else {
            expr.filters.is_empty()
        };
        if bare && plain {
            Ok(())
        } else {
            Err(format!(
                "`{name}` used other than as a bare {{{{ {name} }}}}"
            ))
        }
    }

    /// A name the template assigns: never one that carries markers.
    fn binds(&self, name: &str) -> Result<(), String> {
        if self.carrying.contains(&name) {
            Err(format!("`{name}` assigned"))
        } else {
            Ok(())
        }
    }

    fn expr(&self, expr: &Expr) -> Result<(), String> {
        self.val(&expr.val)?;
        for f in &expr.filters {
            self.call_args(&f.args)?;
        }
        Ok(())
    }

    fn call_args(&self, args: &std::collections::HashMap<String, Expr>) -> Result<(), String> {
        args.values().try_for_each(|e| self.expr(e))
    }

    fn val(&self, val: &ExprVal) -> Result<(), String> {
        match val {
            ExprVal::Int(_) | ExprVal::Float(_) | ExprVal::Bool(_) => Ok(()),
            ExprVal::String(s) => no_marker_chars(s),
            ExprVal::Ident(name) => self.ident(name),
            ExprVal::Math(m) => {
                self.expr(&m.lhs)?;
                self.expr(&m.rhs)
            }
            ExprVal::Logic(l) => {
                self.expr(&l.lhs)?;
                self.expr(&l.rhs)
            }
            ExprVal::In(i) => {
                self.expr(&i.lhs)?;
                self.expr(&i.rhs)
            }
            ExprVal::Test(t) => {
                self.ident(&t.ident)?;
                t.args.iter().try_for_each(|e| self.expr(e))
            }
            ExprVal::Array(items) => items.iter().try_for_each(|e| self.expr(e)),
            ExprVal::StringConcat(c) => c.values.iter().try_for_each(|v| self.val(v)),
            // `range` is the one function that gives the same answer every time.
            ExprVal::FunctionCall(f) if f.name == "range" => self.call_args(&f.args),
            ExprVal::FunctionCall(f) => Err(format!("function `{}`", f.name)),
            ExprVal::MacroCall(m) => Err(format!("macro `{}`", m.name)),
        }
    }

    /// An identifier used in an expression: none of its parts (`a.b`, `a[b]`) may name a
    /// carrying variable, nor the whole context.
    fn ident(&self, name: &str) -> Result<(), String> {
        let mut words = name.split(|c: char| !(c.is_alphanumeric() || c == '_'));
        if name.contains("__tera_context") || words.any(|w| self.carrying.contains(&w)) {
            Err(format!("`{name}` used in an expression"))
        } else {
            Ok(())
        }
    }
}

fn no_marker_chars(s: &str) -> Result<(), String> {
    if s.contains([OPEN, CLOSE]) {
        Err("template text holds marker characters".into())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Guard 2: where the markers land.

/// Check the body's Markdown rendered with markers. Every marker must be read as plain text in a
/// paragraph-like block (not a heading, table head, link, image, code or raw HTML), with no `<`
/// or `[` before it in its block (a value could complete a tag, an autolink or a reference link
/// label) and no `&` entity start right before it. Returns, per field, whether a value must not
/// start with an ASCII digit (the marker is followed by `.` or `)`: `1.` could start a list).
fn check_markdown(md: &str, fields: usize) -> Result<Vec<bool>, String> {
    let mut no_leading_digit = vec![false; fields];
    let mut total = 0;
    let mut from = 0;
    while let Some(at) = md[from..].find(OPEN).map(|p| p + from) {
        let after = &md[at + OPEN.len_utf8()..];
        let close = after.find(CLOSE).ok_or("broken marker in the Markdown")?;
        let index: usize = after[..close]
            .parse()
            .map_err(|_| "broken marker in the Markdown")?;
        if index >= fields {
            return Err("broken marker in the Markdown".into());
        }
        let block_start = md[..at].rfind("\n\n").map_or(0, |p| p + 2);
        if !inline_context_plain(&md[block_start..at]) {
            return Err("a field after `<`, `` ` ``, an open `[` or a `](` in its block".into());
        }
        if entity_before(&md[..at]) {
            return Err("a field inside an `&` entity".into());
        }
        if may_number_a_list(&md[..at], &after[close + CLOSE.len_utf8()..]) {
            no_leading_digit[index] = true;
        }
        total += 1;
        from = at + OPEN.len_utf8();
    }

    // Markers read as text outside the contexts where the text's value matters.
    let mut plain = 0;
    let mut special = 0usize;
    for event in Parser::new_ext(md, markdown::options()) {
        match event {
            Event::Start(
                Tag::Heading { .. }
                | Tag::Link { .. }
                | Tag::Image { .. }
                | Tag::CodeBlock(_)
                | Tag::TableHead
                | Tag::MetadataBlock(_),
            ) => special += 1,
            Event::End(
                TagEnd::Heading(_)
                | TagEnd::Link
                | TagEnd::Image
                | TagEnd::CodeBlock
                | TagEnd::TableHead
                | TagEnd::MetadataBlock(_),
            ) => special = special.saturating_sub(1),
            Event::Text(t) if special == 0 => plain += t.matches(OPEN).count(),
            _ => {}
        }
    }
    if plain != total {
        return Err("a field in a heading, table head, link, image, code or raw HTML".into());
    }
    Ok(no_leading_digit)
}

/// Whether text that follows `before` (the start of its block) is plain inline text whatever it
/// holds: no unescaped `<` (a tag, an autolink or an HTML block a value could complete), no
/// backtick (a code span, where backslashes are not escapes), no `[` left open (a link label or
/// a task marker) and no `](` (a link destination). Backslash parity is trusted only because
/// escapes are not literal anywhere else but in code spans and HTML, both refused here.
fn inline_context_plain(before: &str) -> bool {
    let mut open = 0usize;
    let mut escaped = false;
    let mut chars = before.chars().peekable();
    while let Some(c) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '<' | '`' => return false,
            '[' => open += 1,
            ']' => {
                open = open.saturating_sub(1);
                if chars.peek() == Some(&'(') {
                    return false;
                }
            }
            _ => {}
        }
    }
    open == 0
}

/// Whether a field between `before` and `after` with an all-digit value could make an ordered
/// list number (`12.` or `12)` at the start of a line, other digits and fields around it
/// included). Conservative: a number counts as at a line start when nothing but whitespace or a
/// container marker (`>`, `*`, `-`, `+`, `.`, `)`) comes before it.
fn may_number_a_list(before: &str, after: &str) -> bool {
    let mut tail = after;
    loop {
        let t = tail.trim_start_matches(|c: char| c.is_ascii_digit());
        match t
            .strip_prefix(OPEN)
            .and_then(|m| m.find(CLOSE).map(|p| &m[p + CLOSE.len_utf8()..]))
        {
            Some(rest) => tail = rest,
            None => {
                tail = t;
                break;
            }
        }
    }
    let mut head = before;
    loop {
        let h = head.trim_end_matches(|c: char| c.is_ascii_digit());
        match h
            .strip_suffix(CLOSE)
            .and_then(|m| m.rfind(OPEN).map(|p| &m[..p]))
        {
            Some(rest) => head = rest,
            None => {
                head = h;
                break;
            }
        }
    }
    tail.starts_with(['.', ')'])
        && head
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || matches!(c, '>' | '*' | '-' | '+' | '.' | ')'))
}

/// Whether `before` ends with the start of a character reference (`&`, `&#x2`, `&am`).
fn entity_before(before: &str) -> bool {
    let tail = before.trim_end_matches(|c: char| c.is_ascii_alphanumeric() || c == '#');
    tail.ends_with('&')
}

/// Check the final HTML: markers only in text (not in a tag, a comment, or the raw text of
/// `<style>`, `<script>` and the like) and not right after the start of an `&` entity.
fn check_html(html: &str) -> Result<(), String> {
    for piece in pieces(html, tag_end, raw_text_element)? {
        match piece {
            Piece::Text(r) => {
                for (at, _) in html[r.clone()].match_indices(OPEN) {
                    let before = &html[..r.start + at];
                    if entity_before(before) {
                        return Err("a field inside an `&` entity in the HTML".into());
                    }
                    // `<` + a letter would start a tag where `<` + a marker is text.
                    if before.ends_with('<') || before.ends_with("</") {
                        return Err("a field right after `<` in the HTML".into());
                    }
                }
            }
            Piece::Markup(r) => {
                if html[r].contains([OPEN, CLOSE]) {
                    return Err("a field in an HTML tag, comment, style or script".into());
                }
            }
        }
    }
    Ok(())
}

/// The end (exclusive) of the tag whose name starts at `from`, skipping quoted attribute values.
fn tag_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i + 1),
            b'"' | b'\'' => i = b[i + 1..].iter().position(|&c| c == b[i])? + i + 2,
            _ => i += 1,
        }
    }
    None
}

/// The element's name when `tag` opens an element whose content is not text (or is text a
/// field has no business in).
fn raw_text_element(tag: &str) -> Option<&'static str> {
    let name = element_name(tag);
    [
        "style",
        "script",
        "xmp",
        "iframe",
        "noembed",
        "noframes",
        "noscript",
        "plaintext",
        "textarea",
    ]
    .into_iter()
    .find(|n| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::Path;

    use chrono::{Duration, TimeZone};

    use crate::config::{Config, Overrides};
    use crate::contacts::Contact;
    use crate::notice::{contact_context, Notice};

    use crate::notice::CONTACT_FIELDS as FIELDS;

    const LAYOUT: &str = "<html><head><title>{{ subject }}</title>\
        <style>p { color: red } strong { color: blue }</style></head>\
        <body>{{ body | safe }}<p class=\"footer\">{{ team_name }}</p></body></html>";

    fn notices() -> Vec<Notice> {
        let tz = chrono_tz::America::Chicago;
        let start = tz.with_ymd_and_hms(2026, 12, 3, 17, 0, 0).unwrap();
        let end = start + Duration::hours(2);
        let release = crate::release::load(Path::new("releases/v3.12.0.md"), None).unwrap();
        let r = crate::notice::ReleaseRef {
            version: "v3.12.0".into(),
            name: "Goliad".into(),
            notes_url: Some("https://moped.austinmobility.io/releases/v3.12.0".into()),
        };
        let window = |change, sequence| Notice::MaintenanceScheduled {
            release: r.clone(),
            start,
            end,
            change,
            event: crate::notice::WindowEvent {
                uid: "moped-maintenance-v3-12-0@austintexas.gov".into(),
                sequence,
                stamp: start.with_timezone(&chrono::Utc),
            },
            previous: Some((start - Duration::days(1), end - Duration::days(1))),
            recipients_of: Vec::new(),
        };
        use crate::party_facts::WindowChange;
        vec![
            window(WindowChange::Scheduled, 0),
            window(WindowChange::Moved, 1),
            window(WindowChange::Cancelled, 2),
            Notice::MaintenanceStart {
                release: r.clone(),
                start,
                until: end,
            },
            Notice::MaintenanceEnd {
                release: r.clone(),
                at: end,
                started: Some(start),
            },
            Notice::ReleaseNotes { release },
        ]
    }

    fn config() -> Config {
        let none = Path::new("/nonexistent/notify.toml");
        Config::load(none, false, &BTreeMap::new(), &Overrides::default()).unwrap()
    }

    /// Each real notice: its templates and the shared context `Notice::context` gives it.
    fn real() -> Vec<(String, Templates, tera::Context)> {
        let cfg = config();
        notices()
            .into_iter()
            .map(|n| {
                let t = Templates::load(Path::new("templates"), n.template()).unwrap();
                (n.template().to_string(), t, n.context(&cfg))
            })
            .collect()
    }

    fn contact(first: &str, last: &str, email: &str, title: &str, group: &str, id: i64) -> Contact {
        Contact {
            user_id: id,
            first_name: first.into(),
            last_name: last.into(),
            email: email.into(),
            title: title.into(),
            workgroup: group.into(),
            roles: vec![],
            is_coa_staff: true,
            is_deleted: false,
            is_user_group_member: true,
            note: String::new(),
            date_added: String::new(),
            last_seen_date: String::new(),
        }
    }

    /// The values in the order of `FIELDS`, as Tera prints them.
    fn values(c: &Contact) -> Vec<String> {
        crate::notice::contact_values(c).to_vec()
    }

    fn splice(merge: &Merge, values: &[String]) -> Option<Rendered> {
        let v: Vec<&str> = values.iter().map(String::as_str).collect();
        merge.render(&v)
    }

    /// The splice without the value check, to show what the check prevents.
    fn splice_unchecked(merge: &Merge, values: &[&str]) -> Rendered {
        Rendered {
            subject: merge.subject.fill(values),
            text: merge.text.fill(values),
            html: merge.html.fill(values),
        }
    }

    /// Deterministic pseudo-random numbers (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len())]
        }
    }

    const LETTERS: &[&str] = &[
        "a", "n", "B", "z", "Q", "é", "ñ", "ü", "Ö", "ß", "中", "文", "ø", "Ł", "ä", "Ω", "я", "0",
        "3", "7",
    ];

    /// A value the splice must accept: letters and digits, allowed punctuation between them.
    fn plain_value(rng: &mut Rng) -> String {
        let mut s = String::from(rng.pick(LETTERS));
        for _ in 0..rng.below(12) {
            if rng.below(4) == 0 {
                s.push_str(rng.pick(&[" ", "-", ".", "'", "@", "+", "_"]));
            }
            s.push_str(rng.pick(LETTERS));
        }
        s
    }

    /// Anything, often something the splice must refuse.
    fn wild_value(rng: &mut Rng) -> String {
        const WILD: &[&str] = &[
            "", " ", "  ", "&", "<", ">", "*", "/", ":", "#", "[", "]", "`", "|", "\"", "~", "\\",
            "\n", "\u{a0}", "Ⓐ", "\u{E010}", "\u{E011}", "1.", "1)", "&amp;", "-", ".", "'", "_",
        ];
        let mut s = String::new();
        for _ in 0..rng.below(8) {
            if rng.below(2) == 0 {
                s.push_str(rng.pick(WILD));
            } else {
                s.push_str(rng.pick(LETTERS));
            }
        }
        s
    }

    fn random_contact(rng: &mut Rng, wild: bool) -> Contact {
        let v = |rng: &mut Rng| {
            if wild && rng.below(3) == 0 {
                wild_value(rng)
            } else {
                plain_value(rng)
            }
        };
        let (f, l, e, t, g) = (v(rng), v(rng), v(rng), v(rng), v(rng));
        let id = [0, 7, 42, 1916, i64::MAX - 9][rng.below(5)] + rng.below(3) as i64;
        contact(&f, &l, &e, &t, &g, id)
    }

    /// Splice `n` random recipients and compare each with a full render; returns how many were
    /// spliced. Plain recipients must all be spliced.
    fn compare_random(
        t: &Templates,
        shared: &tera::Context,
        merge: &Merge,
        seed: u64,
        n: usize,
    ) -> usize {
        let mut rng = Rng(seed);
        let mut spliced = 0;
        for i in 0..n {
            let wild = i % 3 == 2;
            let c = random_contact(&mut rng, wild);
            let vals = values(&c);
            let got = splice(merge, &vals);
            let digit_refused = vals
                .iter()
                .zip(&merge.no_leading_digit)
                .any(|(v, &no)| no && v.starts_with(|c: char| c.is_ascii_digit()));
            if !wild && !digit_refused {
                assert!(got.is_some(), "plain values refused: {vals:?}");
            }
            if let Some(got) = got {
                let full = t.render(&contact_context(shared, &c)).unwrap();
                assert_eq!(got, full, "values {vals:?}");
                spliced += 1;
            }
        }
        spliced
    }

    #[test]
    fn real_notices_splice_exactly_as_they_render() {
        for (i, (name, t, shared)) in real().into_iter().enumerate() {
            let merge = Merge::new(&t, &shared, &FIELDS).unwrap_or_else(|| panic!("{name}"));
            let spliced = compare_random(&t, &shared, &merge, 7 + i as u64, 240);
            assert!(spliced >= 160, "{name}: only {spliced} spliced");
        }
    }

    #[test]
    fn ordinary_names_are_spliced() {
        let people = [
            contact(
                "Ann",
                "Lee",
                "ann.lee@austintexas.gov",
                "Planner",
                "Mobility",
                1,
            ),
            contact(
                "José",
                "Núñez",
                "jose@example.org",
                "Engineer II",
                "ATD",
                20,
            ),
            contact(
                "Seán",
                "O'Brien",
                "sean.o'brien@x.example",
                "Sr. Analyst",
                "Data",
                300,
            ),
            contact(
                "Mary-Jane",
                "Van Der Berg",
                "mj+moped@x.example",
                "Lead",
                "A_B",
                4000,
            ),
            contact(
                "Zoë",
                "中村",
                "zoe_n@x.example",
                "PM",
                "Capital Delivery",
                51234,
            ),
        ];
        for (name, t, shared) in real() {
            let merge = Merge::new(&t, &shared, &FIELDS).unwrap();
            for c in &people {
                let got = splice(&merge, &values(c)).unwrap_or_else(|| panic!("{name}: {c:?}"));
                assert_eq!(
                    got,
                    t.render(&contact_context(&shared, c)).unwrap(),
                    "{name}"
                );
                assert!(got.text.contains(&c.first_name), "{}", got.text);
            }
        }
    }

    #[test]
    fn fields_the_templates_do_not_print_are_not_checked() {
        // The release notes print only the first name: a workgroup with `&` (a real one) and a
        // title with `<` cannot change the message and do not stop the splice.
        let c = contact(
            "Ann",
            "Lee",
            "ann.lee@austintexas.gov",
            "<Lead>",
            "Signs & Markings",
            7,
        );
        let (_, t, shared) = real()
            .into_iter()
            .find(|(name, _, _)| name.starts_with("release-notes"))
            .unwrap();
        let merge = Merge::new(&t, &shared, &FIELDS).unwrap();
        let got = splice(&merge, &values(&c)).expect("spliced");
        assert_eq!(got, t.render(&contact_context(&shared, &c)).unwrap());
        // A printed field still is checked.
        let odd = contact("<b>", "Lee", "ann@x.example", "PM", "Mobility", 7);
        assert!(splice(&merge, &values(&odd)).is_none());
    }

    /// Fields in every block and inline context the guards allow, each field in several.
    const STRESS_BODY: &str = "Hi {{ first_name }}, **{{ last_name }}** and _{{ email }}_ and \
~~{{ title }}~~ a*{{ workgroup }}*b.

{% if release_name %}Release {{ release_name }} for {{ full_name }}.{% endif %}
{% for n in names %}* {{ n }} meets {{ first_name }} ({{ user_id }})
{% endfor %}
1. {{ email }}
2. nested
   * {{ title }}

> {{ full_name }} said
> {{ workgroup }}

| who | id |
|-----|----|
| {{ full_name }} | {{ user_id }} |

{{ title }}. not a list yet

{{ first_name }}) nor this

Footnote[^1].

[^1]: For {{ last_name }}.

{{ team_name }}  
{{ first_name }}\\
{{ last_name }}
";

    fn stress() -> (Templates, tera::Context) {
        let t = Templates::from_texts(
            STRESS_BODY,
            "{{ first_name }} {{ last_name }}: {{ release_name }} ({{ user_id }})",
            "<html><head><title>{{ subject }}</title><style>p { color: red } \
             td:first-child { font-weight: bold } li > p { margin: 0 }</style></head>\
             <body><h1>{{ first_name }}</h1>{{ body | safe }}\
             <table><tr><td>{{ email }}</td><td>{{ user_id }}</td></tr></table>\
             <p>{{ team_name }} &amp; {{ full_name }}</p></body></html>",
        )
        .unwrap();
        let mut shared = tera::Context::new();
        shared.insert("release_name", "Goliad <b>*x*</b>");
        shared.insert("team_name", "Moped & Co");
        shared.insert("names", &["Bo", "Li"]);
        (t, shared)
    }

    #[test]
    fn guards_alone_make_the_splice_exact_in_every_allowed_context() {
        let (t, shared) = stress();
        // `prepare` skips the probe renders: the guards must be enough by themselves.
        let merge = Merge::prepare(&t, &shared, &FIELDS).unwrap();
        assert_eq!(
            merge.no_leading_digit,
            [true, true, true, false, true, false, false]
        );
        assert!(Merge::new(&t, &shared, &FIELDS).is_some());
        let spliced = compare_random(&t, &shared, &merge, 99, 300);
        assert!(spliced >= 80, "only {spliced} spliced");
        // `12. not a list yet` would be a list: digits first are refused where `.` or `)`
        // follows the field, and only there.
        let mut v = values(&contact("Ann", "Lee", "a@x", "T", "W", 1916));
        assert!(splice(&merge, &v).is_some());
        v[4] = "12".into();
        assert!(splice(&merge, &v).is_none());
        v[4] = "T".into();
        v[0] = "12".into();
        assert!(splice(&merge, &v).is_none());
        v[0] = "Ann".into();
        v[3] = "12".into();
        assert!(splice(&merge, &v).is_some());
    }

    #[test]
    fn every_allowed_character_splices_as_rendered() {
        let (st, sshared) = stress();
        let mut all = real();
        all.push(("stress".into(), st, sshared));
        for (name, t, shared) in all {
            let merge = Merge::prepare(&t, &shared, &FIELDS).unwrap();
            for &c in VALUE_PUNCTUATION {
                for (a, b) in [("a", "b"), ("É", "中"), ("Ab", "Cd"), ("x1", "2y")] {
                    // Every field holds the value, as a string (`user_id` included).
                    let v = format!("{a}{c}{b}");
                    let mut ctx = shared.clone();
                    for f in FIELDS {
                        ctx.insert(f, &v);
                    }
                    let got = merge
                        .render(&[v.as_str(); FIELDS.len()])
                        .unwrap_or_else(|| panic!("{name}: {v:?}"));
                    assert_eq!(got, t.render(&ctx).unwrap(), "{name}: {v:?}");
                    assert!(got.html.contains(&v) && got.text.contains(&v), "{v:?}");
                }
            }
        }
    }

    #[test]
    fn value_ends_read_as_letters_to_markdown() {
        let mut excluded = 0;
        for c in (0..=0x10FFFFu32).filter_map(char::from_u32) {
            if !alphanumeric(c) {
                assert!(!edge_ok(c));
                continue;
            }
            let strong =
                markdown::to_html(&format!("x**{c}**y"), &Default::default()).contains("<strong>");
            let em = markdown::to_html(&format!("x*{c}*y"), &Default::default()).contains("<em>");
            // Exactly the characters emphasis treats like the marker's private-use characters.
            assert_eq!(edge_ok(c), strong && em, "U+{:04X}", c as u32);
            excluded += usize::from(!edge_ok(c));
        }
        assert!(excluded > 0);
        assert!(!edge_ok('\u{E010}') && !alphanumeric('\u{F0000}'));
    }

    /// Subject, body and layout that show each refused value going wrong when spliced.
    fn probe_templates() -> (Templates, tera::Context) {
        let t = Templates::from_texts(
            "**{{ first_name }}** and x**{{ first_name }}**y\n",
            "Hi {{ first_name }}",
            LAYOUT,
        )
        .unwrap();
        let mut shared = tera::Context::new();
        shared.insert("team_name", "Moped");
        (t, shared)
    }

    #[test]
    fn values_it_cannot_prove_are_refused() {
        let (t, shared) = probe_templates();
        let merge = Merge::new(&t, &shared, &["first_name"]).unwrap();
        let long = "a".repeat(500);
        let render = |v: &str| {
            let mut ctx = shared.clone();
            ctx.insert("first_name", v);
            t.render(&ctx).unwrap()
        };
        // Refused, and the splice would have differed from the full render.
        for v in [
            "",
            " Ann",
            "Ann ",
            "A  B",
            "<b>",
            "Ann\nBcc: x",
            "a&b",
            "Ann.",
            "Ⓐnn",
        ] {
            assert_eq!(merge.render(&[v]), None, "{v:?}");
            assert_ne!(splice_unchecked(&merge, &[v]), render(v), "{v:?}");
        }
        // Refused as unproven (they may splice right here, not in every template).
        for v in [
            "*Ann*",
            "[x](y)",
            long.as_str(),
            "An\u{E010}0\u{E011}n",
            "a/b",
            "a:b",
        ] {
            assert_eq!(merge.render(&[v]), None, "{v:?}");
        }
        assert!(merge.render(&[&"a".repeat(MAX_VALUE_CHARS)]).is_some());
        assert!(merge.render(&[&"a".repeat(MAX_VALUE_CHARS + 1)]).is_none());
        assert!(merge.render(&["Ann", "Lee"]).is_none());
        assert_eq!(merge.render(&["Ann"]), Some(render("Ann")));
    }

    fn refusal(body: &str, subject: &str, layout: &str, shared: &tera::Context) -> String {
        let t = Templates::from_texts(body, subject, layout).unwrap();
        assert!(
            Merge::new(&t, shared, &FIELDS).is_none(),
            "{body} | {layout}"
        );
        Merge::prepare(&t, shared, &FIELDS).err().unwrap()
    }

    #[test]
    fn templates_that_use_fields_otherwise_are_refused() {
        let mut shared = tera::Context::new();
        shared.insert("team_name", "Moped");
        shared.insert("map", &BTreeMap::from([("Ann", "x")]));
        let subject = "Hello {{ first_name }}";
        let ast = [
            "{% if first_name %}Hi{% endif %}\n",
            "{% if release %}{% elif user_id > 3 %}x{% endif %}\n",
            "Hi {{ first_name | upper }}\n",
            "Hi {{ first_name ~ \"x\" }}\n",
            "{% for c in first_name %}{{ c }}{% endfor %}\n",
            "{% set n = first_name %}{{ n }}\n",
            "{% set first_name = \"Bo\" %}{{ first_name }}\n",
            "{% filter upper %}Hi {{ first_name }}{% endfilter %}\n",
            "{{ team_name | replace(from=\"M\", to=first_name) }}\n",
            "{{ map[first_name] }}\n",
            "{{ first_name.x }}\n",
            "{{ user_id + 1 }}\n",
            "{% if first_name is defined %}x{% endif %}\n",
            "{{ __tera_context }}\n",
            "{{ get_env(name=\"HOME\") }}\n",
            "{% macro m() %}x{% endmacro m %}{{ first_name }}\n",
        ];
        for body in ast {
            let e = refusal(body, subject, LAYOUT, &shared);
            assert!(!e.contains("HTML") && !e.contains("heading"), "{body}: {e}");
        }
        let e = refusal("Hi\n", "{% if email %}x{% endif %}", LAYOUT, &shared);
        assert!(e.contains("subject.txt"), "{e}");
        for layout in [
            "<body>{{ first_name | safe }}{{ body | safe }}</body>",
            "<title>{{ subject | upper }}</title>{{ body | safe }}",
            "{{ body }}",
            "{% if subject %}{{ body | safe }}{% endif %}",
        ] {
            let e = refusal("Hi {{ first_name }}\n", subject, layout, &shared);
            assert!(e.contains("layout"), "{layout}: {e}");
        }
        for (body, layout) in [
            ("[link](https://x/{{ first_name }})\n", LAYOUT),
            ("# Hi {{ first_name }}\n", LAYOUT),
            ("| {{ first_name }} |\n|---|\n| x |\n", LAYOUT),
            ("Hi `{{ first_name }}`\n", LAYOUT),
            ("```\n{{ first_name }}\n```\n", LAYOUT),
            ("![{{ first_name }}](x.png)\n", LAYOUT),
            ("Mail <{{ email }}@x.example>\n", LAYOUT),
            ("<span title=\">\" {{ first_name }}>\n", LAYOUT),
            ("[{{ first_name }}]\n\n[ann]: https://x.example\n", LAYOUT),
            ("- [{{ first_name }}] task\n", LAYOUT),
            ("&#x{{ user_id }};\n", LAYOUT),
            ("<!--\n\n{{ first_name }}\n\n-->\n", LAYOUT),
            (
                "Hi\n",
                "<a href=\"https://x/{{ first_name }}\">x</a>{{ body | safe }}",
            ),
            (
                "Hi\n",
                "<style>.{{ first_name }} { color: red }</style>{{ body | safe }}",
            ),
            ("Hi\n", "<p>&#x{{ user_id }};</p>{{ body | safe }}"),
            ("Hi\n", "<!-- {{ first_name }} -->{{ body | safe }}"),
            (
                "Hi\n",
                "<textarea>{{ first_name }}</textarea>{{ body | safe }}",
            ),
        ] {
            let e = refusal(body, subject, layout, &shared);
            assert!(
                e.contains("field") && !e.contains("bare"),
                "{body} | {layout}: {e}"
            );
        }
        let mut marked = shared.clone();
        marked.insert("team_name", "\u{E010}0\u{E011}");
        refusal("Hi {{ team_name }}\n", subject, LAYOUT, &marked);
        refusal("Hi \u{E010}0\u{E011}\n", subject, LAYOUT, &shared);
    }

    #[test]
    fn a_condition_on_a_shared_variable_is_fine() {
        let body =
            "Moped{% if release_name %} “{{ release_name }}”, for {{ first_name }}{% endif %}.\n\n\
                    {% if nope %}{{ last_name }}{% else %}Bye {{ last_name }}{% endif %}\n";
        for name in ["Goliad", ""] {
            let t = Templates::from_texts(body, "Hi {{ first_name }}", LAYOUT).unwrap();
            let mut shared = tera::Context::new();
            shared.insert("release_name", name);
            shared.insert("nope", &false);
            shared.insert("team_name", "Moped");
            let merge = Merge::prepare(&t, &shared, &FIELDS).unwrap();
            assert!(Merge::new(&t, &shared, &FIELDS).is_some());
            let spliced = compare_random(&t, &shared, &merge, 3, 60);
            assert!(spliced >= 30, "{spliced}");
        }
    }

    #[test]
    fn list_numbers_are_found_across_digits_and_fields() {
        let m = |i: usize| marker(i);
        let flagged = |before: &str, after: &str| may_number_a_list(before, after);
        assert!(flagged("", ". x"));
        assert!(flagged("a\n", ") x"));
        assert!(flagged("> * ", "3. x"));
        assert!(flagged(&format!("1{}2", m(1)), &format!("{}4.", m(0))));
        assert!(!flagged("Hi ", ", x"));
        assert!(!flagged("(", ")."));
        assert!(!flagged("a", "."));
        assert!(!flagged(&format!("x{}", m(1)), "."));
        assert!(!flagged("", "x."));
    }

    #[test]
    fn outputs_are_cut_only_at_whole_markers() {
        let cut = |s: &str| Output::cut(s, 2).map(|o| o.parts);
        assert_eq!(
            cut("a\u{E010}1\u{E011}b\u{E010}0\u{E011}"),
            Some(vec![
                Part::Literal("a".into()),
                Part::Field(1),
                Part::Literal("b".into()),
                Part::Field(0),
            ])
        );
        for broken in [
            "a\u{E010}1",
            "a\u{E011}",
            "\u{E010}2\u{E011}",
            "\u{E010}\u{E011}",
            "\u{E010}01\u{E011}",
            "\u{E010}x\u{E011}",
            "\u{E010}\u{E010}0\u{E011}",
        ] {
            assert_eq!(cut(broken), None, "{broken:?}");
        }
    }

    /// Random bodies and layouts built from the pieces Markdown and HTML react to, two fields
    /// among them: whenever `prepare` accepts one (no probe renders), every accepted splice must
    /// be the full render. Each guard, switched off alone, makes this fail.
    #[test]
    fn random_templates_splice_as_they_render() {
        const BODY: &[&str] = &[
            "**",
            "*",
            "_",
            "__",
            "~~",
            "~",
            " ",
            "\n",
            "\n\n",
            "1. ",
            "- ",
            "> ",
            "# ",
            "`",
            "[",
            "]",
            "(",
            ")",
            "<",
            ">",
            "&",
            "&#x",
            ";",
            "!",
            "|",
            "\\",
            "x",
            "é",
            "3",
            ".",
            ":",
            "'",
            "\"",
            "  \n",
            "{{ a }}",
            "{{ b }}",
            "{{ a }}",
            "---",
            "===",
            "\t",
            "    ",
            "[^1]",
            "[^1]: ",
            "https://",
            "@",
            "<https://x>",
            "www.",
            "a",
            "b",
            "[x]: /u\n",
            "\n| x | y |\n|---|---|\n| ",
            "2)",
            "![i](",
            "<span>",
            "</span>",
            "<div>\n",
            "```\n",
            "$",
            "^",
            "{",
            "}",
        ];
        const LAYOUT: &[&str] = &[
            "<a href=\"",
            "\">",
            "{{ a }}",
            "{{ b }}",
            "<style>",
            "</style>",
            "&#x",
            ";",
            "<!--",
            "-->",
            "<p>",
            "</p>",
            ".",
            "x",
            "'",
            "\"",
            "<",
            ">",
            "&",
            " ",
            "<textarea>",
            "<b title='",
            "'>",
            "<p class=\"",
            "<script>",
            "</script>",
            "<p>{{ a }}</p>",
            "p{color:red}",
            ".x27{color:red}",
        ];
        const VALUES: &[&str] = &[
            "Ann", "1", "12", "a", "Zoë", "O'B", "a_b", "x-y", "a.b", "a@b", "a+b", "A B", "9x",
            "x9", "中", "b", "div", "span", "amp", "x27", "1 2", "i", "u", "x",
        ];
        let mut rng = Rng(2026);
        let pieces = |rng: &mut Rng, from: &[&str], n: usize| -> String {
            (0..n).map(|_| rng.pick(from)).collect()
        };
        let (mut accepted, mut spliced) = (0, 0);
        for _ in 0..2000 {
            let n = 3 + rng.below(25);
            let body = pieces(&mut rng, BODY, n);
            let mut layout =
                String::from("<title>{{ subject }}</title><style>p{color:red}</style>");
            if rng.below(2) == 0 {
                let (n, m) = (2 + rng.below(12), rng.below(6));
                layout.push_str(&pieces(&mut rng, LAYOUT, n));
                layout.push_str("{{ body | safe }}");
                layout.push_str(&pieces(&mut rng, LAYOUT, m));
            } else {
                layout.push_str("{{ body | safe }}");
            }
            let Ok(t) = Templates::from_texts(&body, "S {{ a }}", &layout) else {
                continue;
            };
            let shared = tera::Context::new();
            let Ok(merge) = Merge::prepare(&t, &shared, &["a", "b"]) else {
                continue;
            };
            accepted += 1;
            for _ in 0..12 {
                let v = [rng.pick(VALUES), rng.pick(VALUES)];
                let Some(got) = merge.render(&v) else {
                    continue;
                };
                let mut ctx = shared.clone();
                ctx.insert("a", v[0]);
                ctx.insert("b", v[1]);
                assert_eq!(got, t.render(&ctx).unwrap(), "{body:?} {layout:?} {v:?}");
                spliced += 1;
            }
        }
        assert!(accepted > 500 && spliced > 5000, "{accepted} {spliced}");
    }
}
