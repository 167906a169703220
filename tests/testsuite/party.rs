//! The release party end to end, on both databases: a window scheduled with a calendar event,
//! moved (an update with the same UID and a higher SEQUENCE, only to who was warned), started
//! (ending when the window says), ended (saying how long it took), the release notes, a bounce;
//! then the timeline (`release status`) and the checklist. A cancel is METHOD:CANCEL to who was
//! warned. The calendar parts are read with the `ical` crate, not with the code that wrote them.

use std::io::BufReader;
use std::path::Path;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use chrono_tz::America::Chicago;
use mail_parser::{MessageParser, MimeHeaders, PartType};
use notify::contacts::Audience;

use crate::both;
use crate::harness::{audience_of, returned_dsn, Backend, Dumped, Env, SmtpSink, REPO};

fn sample_csv() -> String {
    std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap()
}

/// A day three days ahead, in the configured zone (America/Chicago), as typed.
fn ahead(days: i64, clock: &str) -> String {
    let d = (Utc::now() + Duration::days(days)).with_timezone(&Chicago);
    format!("{} {clock}", d.format("%Y-%m-%d"))
}

/// The UTC moment of a local time typed as `ahead` writes it.
fn utc(typed: &str) -> DateTime<Utc> {
    let naive = NaiveDateTime::parse_from_str(typed, "%Y-%m-%d %H:%M").unwrap();
    Chicago
        .from_local_datetime(&naive)
        .single()
        .unwrap()
        .with_timezone(&Utc)
}

/// One property: name, parameters (name and values), value.
type Prop = (String, Vec<(String, Vec<String>)>, String);

/// One VEVENT's properties by name (value and parameters), and the calendar's METHOD.
struct Event {
    method: String,
    content_method: String,
    props: Vec<Prop>,
    subject: String,
    to: String,
}

impl Event {
    fn get(&self, name: &str) -> &str {
        self.props
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.props))
    }
    fn param(&self, name: &str, param: &str) -> String {
        let (_, params, _) = self.props.iter().find(|(n, _, _)| n == name).unwrap();
        params
            .iter()
            .find(|(p, _)| p == param)
            .map(|(_, v)| v.join(","))
            .unwrap_or_default()
    }
}

/// The message's text/calendar part read by the `ical` parser; also the HTML part must exist and
/// the calendar must not be the body shown.
fn calendar(m: &Dumped) -> Event {
    let msg = MessageParser::default().parse(&m.raw).expect("a message");
    let subject = msg.subject().unwrap_or_default().to_string();
    let to = m.rcpt_to.join(",");
    let root = msg.parts[0].content_type().expect("content type");
    assert_eq!(
        (root.ctype(), root.subtype()),
        ("multipart", Some("alternative"))
    );
    let mut cal = None;
    let mut types = Vec::new();
    for part in &msg.parts[1..] {
        let ct = part.content_type().expect("part type");
        types.push(format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")));
        if ct.ctype() == "text" && ct.subtype() == Some("calendar") {
            let method = ct.attribute("method").unwrap_or_default().to_string();
            let text = match &part.body {
                PartType::Text(t) => t.to_string(),
                other => panic!("calendar part is {other:?}"),
            };
            cal = Some((method, text));
        }
    }
    // text, then html, then the calendar: clients show the HTML and the event.
    assert_eq!(
        types,
        ["text/plain", "text/html", "text/calendar"],
        "{subject}"
    );
    assert!(msg
        .body_html(0)
        .is_some_and(|h| !h.contains("BEGIN:VCALENDAR")));
    let (content_method, text) = cal.expect("a calendar part");
    // (smtp-sink stores lines with LF; the calendar's own unit tests check CRLF.)
    assert!(
        text.lines().all(|l| l.trim_end_matches('\r').len() <= 75),
        "{text}"
    );
    let mut parser = ical::IcalParser::new(BufReader::new(text.as_bytes()));
    let cal = parser.next().expect("one calendar").expect("parses");
    let method = cal
        .properties
        .iter()
        .find(|p| p.name == "METHOD")
        .and_then(|p| p.value.clone())
        .unwrap_or_default();
    assert_eq!(cal.events.len(), 1);
    let props = cal.events[0]
        .properties
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.params.clone().unwrap_or_default(),
                p.value.clone().unwrap_or_default(),
            )
        })
        .collect();
    Event {
        method,
        content_method,
        props,
        subject,
        to,
    }
}

fn ics_time(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// The messages smtp-sink received for campaign `key` (its dump files are not in arrival order).
fn of_notice(sink: &SmtpSink, key: &str) -> Vec<Dumped> {
    let tag = format!("X-Moped-Notice: {key}\r");
    let tag_lf = format!("X-Moped-Notice: {key}\n");
    sink.messages()
        .into_iter()
        .filter(|m| {
            let text = String::from_utf8_lossy(&m.raw);
            text.contains(&tag) || text.contains(&tag_lf)
        })
        .collect()
}

fn header<'a>(raw: &'a str, name: &str) -> &'a str {
    raw.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name}"))
        .trim()
}

async fn a_release_party_from_warning_to_checklist(b: Backend) {
    let env = Env::new(b).await;
    let sink = SmtpSink::start();
    let url = sink.url();
    let users = audience_of(&sample_csv(), Audience::Users);
    let mug = audience_of(&sample_csv(), Audience::Mug);

    // 1. The warning, with the window as a calendar event.
    let (start, end) = (ahead(3, "17:00"), ahead(3, "19:00"));
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--release",
            "3.12",
            "--start",
            &start,
            "--end",
            &end,
            "--smtp-url",
            &url,
        ])
        .await;
    run.ok();
    assert!(
        run.stderr.contains("release v3.12.0 Goliad (as given)"),
        "{}",
        run.stderr
    );
    let warned = sink.messages();
    assert_eq!(warned.len(), users.len());
    let first: Vec<Event> = warned.iter().map(calendar).collect();
    let uid = first[0].get("UID").to_string();
    for e in &first {
        assert_eq!(
            (e.method.as_str(), e.content_method.as_str()),
            ("REQUEST", "REQUEST")
        );
        assert_eq!(e.get("UID"), uid);
        assert_eq!(e.get("SEQUENCE"), "0");
        assert_eq!(e.get("DTSTART"), ics_time(utc(&start)));
        assert_eq!(e.get("DTEND"), ics_time(utc(&end)));
        assert_eq!(e.get("TRANSP"), "TRANSPARENT");
        assert_eq!(e.get("STATUS"), "CONFIRMED");
        assert!(e
            .get("ORGANIZER")
            .eq_ignore_ascii_case("mailto:moped@austintexas.gov"));
        assert!(e
            .get("ATTENDEE")
            .eq_ignore_ascii_case(&format!("mailto:{}", e.to)));
        assert_eq!(e.param("ATTENDEE", "RSVP"), "FALSE");
        assert!(e.subject.contains("v3.12.0 Goliad"), "{}", e.subject);
    }

    // The same command again is a rerun: nobody gets it twice.
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.12.0",
        "--start",
        &start,
        "--end",
        &end,
        "--smtp-url",
        &url,
    ])
    .await
    .ok();
    assert_eq!(sink.messages().len(), users.len());

    // 2. The window moves: everyone warned gets the update, same UID, higher SEQUENCE. A person
    // added to the export since was never warned and gets nothing about it.
    let mut csv = sample_csv();
    csv.push_str("9001,Nadia,Newhire,nadia.newhire@austintexas.gov,Planner,Signs & Markings,\"[\"\"moped-editor\"\"]\",true,false,true,,2026-11-29 10:00:00+00,\n");
    env.set_contacts(&csv);
    let (start2, end2) = (ahead(4, "17:00"), ahead(4, "19:30"));
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--start",
            &start2,
            "--end",
            &end2,
            "--smtp-url",
            &url,
        ])
        .await;
    run.ok();
    assert!(
        run.stderr.contains("the upcoming release"),
        "{}",
        run.stderr
    );
    let moved: Vec<Event> = of_notice(&sink, "maintenance-moved/v3.12.0/1")
        .iter()
        .map(calendar)
        .collect();
    assert_eq!(moved.len(), users.len());
    assert!(moved
        .iter()
        .all(|e| e.to != "nadia.newhire@austintexas.gov"));
    for e in &moved {
        assert_eq!(e.get("UID"), uid);
        assert_eq!(e.get("SEQUENCE"), "1");
        assert_eq!(e.get("DTSTART"), ics_time(utc(&start2)));
        assert_eq!(e.get("DTEND"), ics_time(utc(&end2)));
        assert!(
            e.subject.starts_with("Moped maintenance moved"),
            "{}",
            e.subject
        );
    }
    let told = sink.messages().len();

    // 3. Maintenance starts (a few minutes late): expected back when the window ends.
    let started = ahead(4, "17:05");
    let run = env
        .run(&["maintenance-start", "--start", &started, "--smtp-url", &url])
        .await;
    run.ok();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    let day = utc(&started)
        .with_timezone(&Chicago)
        .format("%Y-%m-%d")
        .to_string();
    let starts = of_notice(&sink, &format!("maintenance-start/v3.12.0/{day}"));
    let start_msg = String::from_utf8_lossy(&starts[0].raw).to_string();
    assert!(start_msg.contains("7:30 PM"), "{start_msg}");
    assert_eq!(
        starts.len(),
        users.len() + 1,
        "the new user is told it started"
    );
    assert_eq!(sink.messages().len(), told + users.len() + 1);

    // 4. It ends: the notice says how long it took and names the release.
    let run = env
        .run(&[
            "maintenance-end",
            "--at",
            &ahead(4, "19:10"),
            "--smtp-url",
            &url,
        ])
        .await;
    run.ok();
    let ends = of_notice(&sink, &format!("maintenance-end/v3.12.0/{day}"));
    let end_msg = String::from_utf8_lossy(&ends[0].raw).to_string();
    let end_msg = end_msg.replace("=\r\n", "");
    assert!(end_msg.contains("after 2 hours 5 minutes"), "{end_msg}");
    assert!(end_msg.contains("v3.12.0 Goliad"), "{end_msg}");

    // 5. The release notes to the MUG, and a bounce of one of them.
    env.run(&["release-notes", "v3.12", "--smtp-url", &url])
        .await
        .ok();
    let notes = of_notice(&sink, "release-notes/v3.12.0");
    assert_eq!(notes.len(), mug.len() + 1);
    let gone = &notes[0].rcpt_to[0];
    let mid = header(&String::from_utf8_lossy(&notes[0].raw), "Message-ID:").to_string();
    let bounce = env.path().join("bounce.eml");
    std::fs::write(&bounce, returned_dsn(gone, &mid)).unwrap();
    env.import_bounces(&[bounce.to_str().unwrap()]).await.ok();

    // 6. The timeline.
    let run = env
        .run(&["release", "status", "v3.12.0", "--format", "json"])
        .await;
    run.ok();
    let t: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON timeline");
    assert_eq!(t["version"], "v3.12.0");
    assert_eq!(t["name"], "Goliad");
    let history = t["window"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{t}");
    assert_eq!(t["window"]["current"]["sequence"], 1);
    assert_eq!(
        t["window"]["current"]["start"],
        utc(&start2).format("%Y-%m-%dT%H:%M:%SZ").to_string()
    );
    let notices: Vec<&str> = t["notices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["notice"].as_str().unwrap())
        .collect();
    assert_eq!(
        notices,
        [
            "maintenance-scheduled",
            "maintenance-moved",
            "maintenance-start",
            "maintenance-end",
            "release-notes"
        ]
    );
    let rn = &t["notices"][4];
    assert_eq!(rn["sent"], mug.len() as i64 + 1);
    assert_eq!(rn["bounces"], 1);
    assert_eq!(t["notices"][0]["sent"], users.len() as i64);
    assert_eq!(t["maintenance"]["minutes"], 125);
    let text = env.run(&["release", "status", "v3.12"]).await;
    text.ok();
    assert!(text.stdout.contains("v3.12.0 Goliad"), "{}", text.stdout);

    // 7. The checklist ticks what happened and lists the account to update.
    let run = env.run(&["checklist", "v3.12.0"]).await;
    run.ok();
    let items: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            l.starts_with("- [ ] ") || l.starts_with("- [x] ")
        })
        .collect();
    assert!(items.len() >= 18, "{}", run.stdout);
    let ticked: Vec<&str> = items
        .iter()
        .filter(|l| l.trim_start().starts_with("- [x] "))
        .copied()
        .collect();
    let ticked_text = ticked.join("\n").to_lowercase();
    for step in [
        "downtime",
        "maintenance is starting",
        "maintenance is over",
        "release notes",
    ] {
        assert!(
            ticked_text.contains(step),
            "{step} not ticked:\n{}",
            run.stdout
        );
    }
    assert_eq!(
        ticked.len(),
        4,
        "only what notify did is ticked:\n{}",
        run.stdout
    );
    assert!(run.stdout.contains(gone.as_str()), "{}", run.stdout);
    env.cleanup().await;
}
both!(a_release_party_from_warning_to_checklist);

async fn a_cancel_reaches_who_was_warned_and_ends_the_event(b: Backend) {
    let env = Env::new(b).await;
    let sink = SmtpSink::start();
    let url = sink.url();
    let users = audience_of(&sample_csv(), Audience::Users);

    // Nothing scheduled: nothing to cancel (bad input, nothing sent).
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--release",
            "v3.13",
            "--cancel",
            "--smtp-url",
            &url,
        ])
        .await;
    run.code(2);
    assert!(run.stderr.contains("nothing to cancel"), "{}", run.stderr);
    // --start without --end, or times with --cancel: refused before anything happens.
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.13",
        "--start",
        &ahead(2, "17:00"),
    ])
    .await
    .code(2);
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.13",
        "--cancel",
        "--start",
        &ahead(2, "17:00"),
        "--end",
        &ahead(2, "18:00"),
    ])
    .await
    .code(2);
    assert!(sink.messages().is_empty());

    let (start, end) = (ahead(2, "17:00"), ahead(2, "18:00"));
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.13",
        "--start",
        &start,
        "--end",
        &end,
        "--smtp-url",
        &url,
    ])
    .await
    .ok();
    let uid = calendar(&of_notice(&sink, "maintenance-scheduled/v3.13.0")[0])
        .get("UID")
        .to_string();
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--release",
            "v3.13.0",
            "--cancel",
            "--smtp-url",
            &url,
        ])
        .await;
    run.ok();
    assert!(run.stderr.contains("cancelling"), "{}", run.stderr);
    let cancels: Vec<Event> = of_notice(&sink, "maintenance-cancelled/v3.13.0/1")
        .iter()
        .map(calendar)
        .collect();
    assert_eq!(cancels.len(), users.len());
    for e in &cancels {
        assert_eq!(
            (e.method.as_str(), e.content_method.as_str()),
            ("CANCEL", "CANCEL")
        );
        assert_eq!(e.get("STATUS"), "CANCELLED");
        assert_eq!(e.get("UID"), uid);
        assert_eq!(e.get("SEQUENCE"), "1");
        assert_eq!(e.get("DTSTART"), ics_time(utc(&start)));
        assert!(e.subject.contains("cancelled"), "{}", e.subject);
    }
    // Again: the cancel is finished, not sent twice.
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.13",
        "--cancel",
        "--smtp-url",
        &url,
    ])
    .await
    .ok();
    assert_eq!(sink.messages().len(), 2 * users.len());

    // The checklist keeps the warning ticked, with the cancel noted.
    let run = env.run(&["checklist", "v3.13"]).await;
    run.ok();
    let downtime = run
        .stdout
        .lines()
        .find(|l| l.to_lowercase().contains("downtime"))
        .unwrap();
    assert!(downtime.trim_start().starts_with("- [x]"), "{downtime}");
    assert!(downtime.to_lowercase().contains("cancel"), "{downtime}");
    let t: serde_json::Value = serde_json::from_str(
        &env.run(&["release", "status", "v3.13", "--format", "json"])
            .await
            .stdout,
    )
    .unwrap();
    assert_eq!(t["window"]["current"]["status"], "cancelled", "{t}");

    // With the window cancelled, a start works but warns; so does an end without a start.
    let run = env
        .send_json(&["maintenance-start", "--release", "v3.13"], &url)
        .await;
    run.ok();
    assert!(
        run.stderr
            .contains("warning: no maintenance window is scheduled for v3.13.0"),
        "{}",
        run.stderr
    );
    assert_eq!(run.summary()["release"], "v3.13.0");
    let mut other = env
        .run(&["maintenance-end", "--release", "v3.14", "--smtp-url", &url])
        .await;
    other.ok();
    assert!(
        other
            .stderr
            .contains("no maintenance-start notice was sent for v3.14.0"),
        "{}",
        other.stderr
    );
    other = env
        .run(&["maintenance-end", "--release", "v3.13", "--smtp-url", &url])
        .await;
    other.ok();
    assert!(!other.stderr.contains("warning"), "{}", other.stderr);
    env.cleanup().await;
}
both!(a_cancel_reaches_who_was_warned_and_ends_the_event);

/// Debian's chromium, headless: the DOM after the page loaded, or a screenshot. Required: a
/// missing browser fails the test.
fn chromium(args: &[&str]) -> String {
    let bin = ["chromium", "chromium-browser", "chromium-headless-shell"]
        .into_iter()
        .find(|b| {
            std::process::Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Debian's chromium is required for this test (apt-get install chromium)");
    let out = std::process::Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-dev-shm-usage",
        ])
        .args(args)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a mail client shows of the warning: a client picks the HTML alternative (the calendar is
/// an alternative it shows as an event, or not at all), never the calendar text. The page, loaded
/// in a real browser, reads as the notice: the greeting, the release, both times, no iCalendar.
#[tokio::test]
async fn the_warning_reads_as_a_notice_in_a_browser_and_never_shows_the_calendar_text() {
    let env = Env::new(Backend::Sqlite).await;
    let (start, end) = (ahead(3, "17:00"), ahead(3, "19:00"));
    env.run(&[
        "maintenance-scheduled",
        "--release",
        "v3.12",
        "--start",
        &start,
        "--end",
        &end,
    ])
    .await
    .ok();
    let folder = env.outbox().join("maintenance-scheduled_v3.12.0");
    let eml = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("james.obrien"))
        .expect("James's message");
    let raw = std::fs::read(&eml).unwrap();
    // The file is the message as sent: CRLF throughout, the calendar among the alternatives.
    let text = String::from_utf8_lossy(&raw);
    assert!(
        !text.replace("\r\n", "").contains('\n'),
        "bare LF in {text}"
    );
    let msg = MessageParser::default().parse(&raw).unwrap();
    // What a client picks to show: the text and HTML bodies are the text and HTML parts, and
    // the calendar is neither.
    for (i, want) in [(msg.text_body[0], "plain"), (msg.html_body[0], "html")] {
        let part = msg.part(i).unwrap();
        assert_eq!(part.content_type().unwrap().subtype(), Some(want));
    }
    let html = msg.body_html(0).unwrap().into_owned();
    let text_body = msg.body_text(0).unwrap().into_owned();
    for shown in [&html, &text_body] {
        assert!(!shown.contains("VCALENDAR") && !shown.contains("DTSTART"));
    }
    let page = env.path().join("warning.html");
    std::fs::write(&page, &html).unwrap();
    let url = format!("file://{}", page.display());
    let dom = chromium(&["--dump-dom", &url]);
    let when = |typed: &str| {
        utc(typed)
            .with_timezone(&Chicago)
            .format("%A, %B %-d, %Y at %-I:%M %p")
            .to_string()
    };
    for expected in [
        "Hi James,",
        "v3.12.0 Goliad",
        &when(&start),
        &when(&end),
        "calendar event",
    ] {
        assert!(dom.contains(expected), "{expected} not shown:\n{dom}");
    }
    assert!(
        !dom.contains("VCALENDAR") && !dom.contains("BEGIN:"),
        "{dom}"
    );
    // A screenshot for people to look at (target/party-warning.png); it must render.
    let shot = Path::new(REPO).join("target/party-warning.png");
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=800,700",
        &url,
    ]);
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000);
    env.cleanup().await;
}
