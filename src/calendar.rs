//! Maintenance windows as iTIP/iMIP calendar events (RFC 5545, RFC 6047).
//!
//! Owns the text of one `VCALENDAR` holding one `VEVENT` for a maintenance window (a `REQUEST`
//! that adds or moves it, a `CANCEL` that removes it) and the window's stable UID. Pure: no I/O
//! and no clock (the caller passes `DTSTAMP`); it builds no MIME (`mail::message` wraps the text
//! in its `text/calendar` part) and decides nothing about who gets what.
//!
//! The text is written here rather than with the `icalendar` crate (0.17.17). That crate writes
//! the structure well, but checked against the rules below it gets three things wrong, each
//! shown by building an event with it:
//! - a parameter value is copied as it is: a CN of `Evil\r\nATTENDEE:mailto:x@y` writes a second
//!   `ATTENDEE` line, and a `"` inside a quoted CN ends the quoting early;
//! - a TEXT value's CR is not escaped or removed, so a `\r\n` in a summary leaves a bare CR;
//! - URI and CAL-ADDRESS values (`URL`, `mailto:`) go out unchecked, CR/LF included.
//!
//! Cleaning every value before handing it over would leave the crate only the folding, whose
//! rule we want different anyway (see [`fold`]); the whole writer is a few dozen lines.
//!
//! The rules: CRLF line endings; every content line folded to at most 75 octets, never inside a
//! UTF-8 character; TEXT values escaped (`\` `;` `,` and a line break as `\n`); parameter values
//! with `:` `;` `,` in double quotes, a `"` (which no parameter value can hold, RFC 5545 §3.2)
//! turned into `'`, line breaks and other control characters gone. Names and the summary come
//! from contacts, configuration and release notes and are treated as hostile: nothing in them
//! can start a line of its own.

use chrono::{DateTime, Utc};

use crate::render::one_line;

/// The iTIP method (RFC 5546): what the event does to the recipient's calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Add the event, or update it when the UID is known and the SEQUENCE higher.
    Request,
    /// Remove the event (Outlook removes an event only this way).
    Cancel,
}

impl Method {
    /// The value of `METHOD:` and of the MIME part's `method=` parameter.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Request => "REQUEST",
            Method::Cancel => "CANCEL",
        }
    }
}

/// One maintenance window sent to one person.
#[derive(Debug, Clone)]
pub struct Invitation<'a> {
    pub method: Method,
    /// Stable for the window across updates and the cancel (see [`window_uid`]).
    pub uid: &'a str,
    /// Rises with every update and the cancel.
    pub sequence: u32,
    /// `DTSTAMP`: when this version of the event was made.
    pub stamp: DateTime<Utc>,
    /// `DTSTART`, written in UTC (`…Z`).
    pub start: DateTime<Utc>,
    /// `DTEND`, written in UTC.
    pub end: DateTime<Utc>,
    pub summary: &'a str,
    /// May hold line breaks.
    pub description: &'a str,
    /// The app's URL; empty writes no `URL` or `LOCATION`.
    pub url: &'a str,
    pub organizer_name: &'a str,
    pub organizer_email: &'a str,
    pub attendee_name: &'a str,
    pub attendee_email: &'a str,
}

/// Longest content line in octets, without its CRLF (RFC 5545 §3.1).
const MAX_LINE: usize = 75;

/// The `VCALENDAR` text of `inv`: CRLF line endings, every line folded at 75 octets (never
/// inside a UTF-8 character), TEXT values escaped.
///
/// One `VEVENT` with UID, DTSTAMP, SEQUENCE, DTSTART, DTEND (UTC), SUMMARY, DESCRIPTION (the URL
/// as its last line), LOCATION and URL (when there is a URL), ORGANIZER, the recipient as
/// ATTENDEE with `RSVP=FALSE`, `TRANSP:TRANSPARENT` and `X-MICROSOFT-CDO-BUSYSTATUS:FREE` (a
/// downtime marks no one busy), `CLASS:PUBLIC`, and `STATUS:CONFIRMED` or, for a cancel,
/// `STATUS:CANCELLED`. No alarm.
pub fn ics(inv: &Invitation<'_>) -> String {
    let url = uri(inv.url);
    let mut description = inv.description.to_string();
    if !url.is_empty() && !description.contains(url.as_str()) {
        let kept = description.trim_end().len();
        description.truncate(kept);
        if !description.is_empty() {
            description.push_str("\n\n");
        }
        description.push_str(&url);
    }
    let status = match inv.method {
        Method::Request => "CONFIRMED",
        Method::Cancel => "CANCELLED",
    };

    let mut lines: Vec<String> = vec![
        "BEGIN:VCALENDAR".into(),
        "VERSION:2.0".into(),
        "PRODID:-//City of Austin//notify//EN".into(),
        format!("METHOD:{}", inv.method.as_str()),
        "CALSCALE:GREGORIAN".into(),
        "BEGIN:VEVENT".into(),
        format!("UID:{}", text(&one_line(inv.uid))),
        format!("DTSTAMP:{}", utc(inv.stamp)),
        format!("SEQUENCE:{}", inv.sequence),
        format!("DTSTART:{}", utc(inv.start)),
        format!("DTEND:{}", utc(inv.end)),
        format!("SUMMARY:{}", text(&one_line(inv.summary))),
        format!("DESCRIPTION:{}", text(&description)),
    ];
    if !url.is_empty() {
        lines.push(format!("LOCATION:{}", text(&url)));
        lines.push(format!("URL:{url}"));
    }
    lines.push(format!(
        "ORGANIZER{}:mailto:{}",
        cn(inv.organizer_name),
        uri(inv.organizer_email)
    ));
    lines.push(format!(
        "ATTENDEE{};ROLE=REQ-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:mailto:{}",
        cn(inv.attendee_name),
        uri(inv.attendee_email)
    ));
    lines.extend(
        [
            "TRANSP:TRANSPARENT",
            "X-MICROSOFT-CDO-BUSYSTATUS:FREE",
            "CLASS:PUBLIC",
        ]
        .map(String::from),
    );
    lines.push(format!("STATUS:{status}"));
    lines.push("END:VEVENT".into());
    lines.push("END:VCALENDAR".into());

    let mut out = String::with_capacity(lines.iter().map(|l| l.len() + 8).sum());
    for line in &lines {
        fold(line, &mut out);
    }
    out
}

/// The UID of a release's maintenance window, the same every time it is asked for:
/// `moped-maintenance-v3-12-0@austintexas.gov`. The version is read as `release::Version` reads
/// it (`3.12`, `v3.12.0` give the same UID); the domain is the organizer address's, or
/// `notify.invalid` when it has none.
pub fn window_uid(version: &str, organizer_email: &str) -> String {
    let version = match crate::release::Version::parse(version) {
        Some(v) => v.to_string(),
        None => version.trim().to_ascii_lowercase(),
    };
    let token = slug(&version, |c| c.is_ascii_alphanumeric());
    let domain = organizer_email
        .rsplit_once('@')
        .map(|(_, d)| d.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let domain = slug(&domain, |c| c.is_ascii_alphanumeric() || c == '.');
    let domain = domain.trim_matches('.');
    let domain = if domain.is_empty() {
        "notify.invalid"
    } else {
        domain
    };
    if token.is_empty() {
        format!("moped-maintenance@{domain}")
    } else {
        format!("moped-maintenance-{token}@{domain}")
    }
}

/// `s` with each run of characters that `keep` refuses written as one `-`, none at either end.
fn slug(s: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if keep(c) {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// A DATE-TIME in UTC: `20261203T170000Z`.
fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A TEXT value (RFC 5545 §3.3.11): `\` `;` `,` escaped, every line break (CRLF, CR or LF) as
/// `\n`, a tab as a space, other control characters dropped.
fn text(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {
                chars.next_if_eq(&'\n');
                out.push_str("\\n");
            }
            '\t' => out.push(' '),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A URI or CAL-ADDRESS value: one line, no control characters, no spaces at the ends.
fn uri(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .to_string()
}

/// `;CN=…` for a display name, or nothing when the name is empty. The name is made one line
/// (control characters become spaces), a `"` becomes `'`, and a value with `:` `;` `,` is
/// quoted (RFC 5545 §3.2).
fn cn(name: &str) -> String {
    let name = one_line(name).replace('"', "'");
    if name.is_empty() {
        String::new()
    } else if name.contains([':', ';', ',']) {
        format!(";CN=\"{name}\"")
    } else {
        format!(";CN={name}")
    }
}

/// Write `line` folded (RFC 5545 §3.1) to lines of at most 75 octets, each continuation started
/// with one space, every line ended with CRLF. A fold never splits a UTF-8 character, and is
/// moved back a few characters when that keeps a space off both sides of it: unfolding removes
/// only the CRLF and the one space, but some readers also trim what is left at the end or the
/// start of a physical line, and would lose a space of the text there.
fn fold(line: &str, out: &mut String) {
    /// How far back (in octets) a fold may move to keep spaces away from it.
    const LOOK_BACK: usize = 16;
    let is_space = |c: Option<char>| c.is_some_and(|c| c == ' ' || c == '\t');
    let mut rest = line;
    let mut room = MAX_LINE;
    while rest.len() > room {
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let longest = cut;
        let clear = |at: usize| {
            !is_space(rest[..at].chars().next_back()) && !is_space(rest[at..].chars().next())
        };
        while cut > 0 && longest - cut < LOOK_BACK && !clear(cut) {
            cut -= 1;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
        }
        if cut == 0 || !clear(cut) {
            cut = longest;
        }
        out.push_str(&rest[..cut]);
        out.push_str("\r\n ");
        rest = &rest[cut..];
        room = MAX_LINE - 1;
    }
    out.push_str(rest);
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use ical::parser::ical::component::{IcalCalendar, IcalEvent};
    use ical::property::Property;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn invitation<'a>(method: Method, summary: &'a str, description: &'a str) -> Invitation<'a> {
        Invitation {
            method,
            uid: "moped-maintenance-v3-12-0@austintexas.gov",
            sequence: 0,
            stamp: at(2026, 11, 20, 15, 4),
            start: at(2026, 12, 3, 23, 0),
            end: at(2026, 12, 4, 1, 0),
            summary,
            description,
            url: "https://moped.austinmobility.io",
            organizer_name: "Moped Team",
            organizer_email: "moped@austintexas.gov",
            attendee_name: "Zoë Ng",
            attendee_email: "zoe.ng@austintexas.gov",
        }
    }

    /// Parsed by `ical` (not by anything in this crate): the one calendar in `text`.
    fn parse(text: &str) -> IcalCalendar {
        let mut parser = ical::IcalParser::new(text.as_bytes());
        let cal = parser.next().expect("one calendar").expect("it parses");
        assert!(parser.next().is_none(), "more than one calendar");
        cal
    }

    fn props<'a>(list: &'a [Property], name: &str) -> Vec<&'a Property> {
        list.iter().filter(|p| p.name == name).collect()
    }

    fn value<'a>(list: &'a [Property], name: &str) -> &'a str {
        let found = props(list, name);
        assert_eq!(found.len(), 1, "{name}: {list:?}");
        found[0].value.as_deref().unwrap_or("")
    }

    fn param<'a>(p: &'a Property, name: &str) -> Option<&'a [String]> {
        p.params
            .as_ref()?
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_slice())
    }

    /// RFC 5545 §3.3.11 unescaping of a TEXT value as `ical` leaves it (it unfolds only).
    fn unescape(s: &str) -> String {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n' | 'N') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    fn event(cal: &IcalCalendar) -> &IcalEvent {
        assert_eq!(cal.events.len(), 1);
        &cal.events[0]
    }

    /// Every line ends in CRLF, none passes 75 octets, no CR or LF stands alone.
    fn assert_well_formed(text: &str) {
        assert!(text.ends_with("\r\n"), "{text:?}");
        let body = &text[..text.len() - 2];
        for line in body.split("\r\n") {
            assert!(line.len() <= MAX_LINE, "{} octets: {line:?}", line.len());
            assert!(!line.contains(['\r', '\n']), "bare CR or LF in {line:?}");
        }
    }

    #[test]
    fn a_request_reads_back_with_its_window_and_attendee() {
        let text = ics(&invitation(
            Method::Request,
            "Moped maintenance: v3.12.0 Goliad",
            "Moped will be unavailable while we upgrade it.",
        ));
        assert_well_formed(&text);
        assert!(!text.contains("VALARM"));
        let cal = parse(&text);
        assert_eq!(value(&cal.properties, "METHOD"), "REQUEST");
        assert_eq!(value(&cal.properties, "VERSION"), "2.0");
        assert_eq!(value(&cal.properties, "CALSCALE"), "GREGORIAN");
        let ev = &event(&cal).properties;
        assert_eq!(
            value(ev, "UID"),
            "moped-maintenance-v3-12-0@austintexas.gov"
        );
        assert_eq!(value(ev, "SEQUENCE"), "0");
        assert_eq!(value(ev, "DTSTAMP"), "20261120T150400Z");
        assert_eq!(value(ev, "DTSTART"), "20261203T230000Z");
        assert_eq!(value(ev, "DTEND"), "20261204T010000Z");
        assert_eq!(
            value(ev, "SUMMARY"),
            "Moped maintenance: v3.12.0 Goliad",
            "a colon in TEXT needs no escape"
        );
        assert_eq!(
            unescape(value(ev, "DESCRIPTION")),
            "Moped will be unavailable while we upgrade it.\n\nhttps://moped.austinmobility.io"
        );
        assert_eq!(value(ev, "URL"), "https://moped.austinmobility.io");
        assert_eq!(value(ev, "LOCATION"), "https://moped.austinmobility.io");
        assert_eq!(value(ev, "TRANSP"), "TRANSPARENT");
        assert_eq!(value(ev, "X-MICROSOFT-CDO-BUSYSTATUS"), "FREE");
        assert_eq!(value(ev, "CLASS"), "PUBLIC");
        assert_eq!(value(ev, "STATUS"), "CONFIRMED");

        let organizer = props(ev, "ORGANIZER");
        assert_eq!(organizer.len(), 1);
        assert_eq!(
            organizer[0].value.as_deref(),
            Some("mailto:moped@austintexas.gov")
        );
        assert_eq!(
            param(organizer[0], "CN"),
            Some(&["Moped Team".to_string()][..])
        );

        let attendees = props(ev, "ATTENDEE");
        assert_eq!(attendees.len(), 1);
        let a = attendees[0];
        assert_eq!(a.value.as_deref(), Some("mailto:zoe.ng@austintexas.gov"));
        assert_eq!(param(a, "CN"), Some(&["Zoë Ng".to_string()][..]));
        assert_eq!(param(a, "RSVP"), Some(&["FALSE".to_string()][..]));
        assert_eq!(param(a, "ROLE"), Some(&["REQ-PARTICIPANT".to_string()][..]));
        assert_eq!(
            param(a, "PARTSTAT"),
            Some(&["NEEDS-ACTION".to_string()][..])
        );
    }

    #[test]
    fn a_cancel_keeps_the_uid_and_window_and_says_cancelled() {
        let mut inv = invitation(Method::Cancel, "Moped maintenance", "Cancelled.");
        inv.sequence = 2;
        let text = ics(&inv);
        assert_well_formed(&text);
        let cal = parse(&text);
        assert_eq!(value(&cal.properties, "METHOD"), "CANCEL");
        let ev = &event(&cal).properties;
        assert_eq!(
            value(ev, "UID"),
            "moped-maintenance-v3-12-0@austintexas.gov"
        );
        assert_eq!(value(ev, "SEQUENCE"), "2");
        assert_eq!(value(ev, "STATUS"), "CANCELLED");
        assert_eq!(value(ev, "DTSTART"), "20261203T230000Z");
        assert_eq!(value(ev, "DTEND"), "20261204T010000Z");
        assert_eq!(props(ev, "ATTENDEE").len(), 1);
        assert_eq!(Method::Cancel.as_str(), "CANCEL");
        assert_eq!(Method::Request.as_str(), "REQUEST");
    }

    #[test]
    fn text_escapes_round_trip_through_the_parser() {
        let description = "Commas, semicolons; back\\slashes \\n (not a newline)\r\n\
                           Windows line\rold Mac line\nUnix line\n\n\ttabbed \"quoted\" a:b";
        let mut inv = invitation(Method::Request, "a, b; c\\d", description);
        inv.url = "";
        let text = ics(&inv);
        assert_well_formed(&text);
        assert!(text.contains("SUMMARY:a\\, b\\; c\\\\d\r\n"), "{text}");
        let cal = parse(&text);
        let ev = &event(&cal).properties;
        assert_eq!(unescape(value(ev, "SUMMARY")), "a, b; c\\d");
        assert_eq!(
            unescape(value(ev, "DESCRIPTION")),
            "Commas, semicolons; back\\slashes \\n (not a newline)\n\
             Windows line\nold Mac line\nUnix line\n\n tabbed \"quoted\" a:b"
        );
        assert!(props(ev, "URL").is_empty() && props(ev, "LOCATION").is_empty());
    }

    #[test]
    fn hostile_names_add_no_property_and_keep_their_quoting() {
        let mut inv = invitation(Method::Request, "s\r\nATTENDEE:mailto:s@y", "d\r\nX:y");
        inv.attendee_name = "Evil\r\nATTENDEE:mailto:x@y";
        inv.organizer_name = "Ann \"Q\" O'Brien, Jr.; team\u{7}";
        inv.attendee_email = "zoe@austintexas.gov\r\nATTENDEE:mailto:z@y";
        inv.url = "https://moped.example/\r\nURL:https://evil.example";
        let text = ics(&inv);
        assert_well_formed(&text);
        let cal = parse(&text);
        let ev = &event(&cal).properties;
        let names: Vec<&str> = ev.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "UID",
                "DTSTAMP",
                "SEQUENCE",
                "DTSTART",
                "DTEND",
                "SUMMARY",
                "DESCRIPTION",
                "LOCATION",
                "URL",
                "ORGANIZER",
                "ATTENDEE",
                "TRANSP",
                "X-MICROSOFT-CDO-BUSYSTATUS",
                "CLASS",
                "STATUS"
            ]
        );
        let attendee = props(ev, "ATTENDEE")[0];
        assert_eq!(
            param(attendee, "CN"),
            Some(&["Evil ATTENDEE:mailto:x@y".to_string()][..])
        );
        assert_eq!(param(attendee, "RSVP"), Some(&["FALSE".to_string()][..]));
        let organizer = props(ev, "ORGANIZER")[0];
        assert_eq!(
            param(organizer, "CN"),
            Some(&["Ann 'Q' O'Brien, Jr.; team".to_string()][..])
        );
        assert_eq!(unescape(value(ev, "SUMMARY")), "s ATTENDEE:mailto:s@y");
        assert_eq!(unescape(value(ev, "DESCRIPTION")).lines().next(), Some("d"));
        // An empty name writes no CN at all.
        inv.attendee_name = " \r\n ";
        let text = ics(&inv);
        assert!(
            text.contains("\r\nATTENDEE;ROLE=REQ-PARTICIPANT;"),
            "{text}"
        );
    }

    #[test]
    fn long_non_ascii_text_folds_between_characters() {
        let summary: String = "Ωé中😀 ".chars().cycle().take(300).collect();
        let description = format!("{}\n{}", "ab  cd ".repeat(60), "x".repeat(500));
        let text = ics(&invitation(Method::Request, &summary, &description));
        assert_well_formed(&text);
        // Every physical line is UTF-8 on its own: no fold fell inside a character.
        for line in text.as_bytes().split(|&b| b == b'\n') {
            assert!(std::str::from_utf8(line).is_ok(), "{line:?}");
        }
        let cal = parse(&text);
        let ev = &event(&cal).properties;
        assert_eq!(unescape(value(ev, "SUMMARY")), one_line(&summary));
        assert_eq!(
            unescape(value(ev, "DESCRIPTION")),
            format!(
                "{}\n\nhttps://moped.austinmobility.io",
                description.trim_end()
            )
        );
    }

    #[test]
    fn folding_keeps_lines_within_75_octets_and_unfolds_to_the_line() {
        let lines = [
            String::new(),
            "x".repeat(75),
            "x".repeat(76),
            " ".repeat(300),
            "é".repeat(200),
            format!("{}😀{}", "a".repeat(73), "b".repeat(100)),
            "a b".repeat(100),
        ];
        for line in &lines {
            let mut out = String::new();
            fold(line, &mut out);
            assert_well_formed(&out);
            assert_eq!(out.trim_end_matches("\r\n").replace("\r\n ", ""), *line);
        }
    }

    #[test]
    fn the_window_uid_is_stable_for_a_release() {
        let uid = window_uid("v3.12.0", "moped@austintexas.gov");
        assert_eq!(uid, "moped-maintenance-v3-12-0@austintexas.gov");
        assert_eq!(window_uid("3.12", "Moped@AustinTexas.gov"), uid);
        assert_eq!(window_uid(" V3.12.0 ", "moped@austintexas.gov"), uid);
        assert_eq!(
            window_uid("next; big\r\n", "nobody"),
            "moped-maintenance-next-big@notify.invalid"
        );
        assert_eq!(
            window_uid("", "a@b\r\nc.example"),
            "moped-maintenance@b-c.example"
        );
    }
}
