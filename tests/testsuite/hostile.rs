//! Hostile text in notices: links that are not http(s) or mailto and images a template does not
//! allow, in release notes and in templates; header lines built from long data.

use std::path::{Path, PathBuf};

use crate::both;
use crate::harness::{Backend, Env, SmtpSink, REPO};
use crate::mime;

const HEADER: &str = "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n";

/// A release-notes file in the scratch folder; `body` starts at line 5.
fn notes(env: &Env, file: &str, body: &str) -> PathBuf {
    let p = env.path().join(file);
    std::fs::write(
        &p,
        format!("---\nname: Hays\ndate: 2026-12-03\n---\n{body}"),
    )
    .unwrap();
    p
}

/// The shipped templates copied into the scratch folder, `edit` applied to one of them.
fn templates(env: &Env, file: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let dir = env.path().join("templates");
    std::fs::create_dir_all(&dir).unwrap();
    // The notice templates (the folder also holds the server's page templates, in subfolders).
    for e in std::fs::read_dir(Path::new(REPO).join("templates"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
    {
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let p = dir.join(file);
    let text = std::fs::read_to_string(&p).unwrap();
    let edited = edit(&text);
    assert_ne!(edited, text, "the edit changed nothing");
    std::fs::write(&p, edited).unwrap();
    dir
}

async fn no_campaign(env: &Env, key: &str) {
    let store = env.store().await;
    assert!(
        store.find_campaign(key).await.unwrap().is_none(),
        "{key} was recorded"
    );
    store.close().await;
}

async fn notes_with_a_script_link_are_refused_with_file_and_line(b: Backend) {
    let env = Env::new(b).await;
    let sink = SmtpSink::start();
    let hostile = [
        "[Open the map](javascript:alert(document.cookie))",
        "<JavaScript:alert(1)>",
        "[map][m]\n\n[m]: &#106;avascript:alert(1)",
        "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
        "[x](vbscript:msgbox(1))",
        "[x](file:///C:/Windows/System32/calc.exe)",
        "![pixel](data:image/gif;base64,R0lGODlhAQABAAAAACw=)",
    ];
    for (i, link) in hostile.iter().enumerate() {
        // The link is on line 9 of the file: 4 lines of front matter, then 4 of notes.
        let file = format!("hostile{i}.md");
        let p = notes(
            &env,
            &file,
            &format!("## What’s changed\n\n### Bug fixes\n\n* Fix the map {link}\n"),
        );
        let run = env
            .run(&[
                "release-notes",
                "v3.99.0",
                "--notes",
                p.to_str().unwrap(),
                "--smtp-url",
                &sink.url(),
            ])
            .await;
        run.code(2);
        assert!(
            run.stderr.contains(&format!("{file}:9: ")),
            "{link}: {}",
            run.stderr
        );
        assert!(
            run.stderr.contains("only http, https and mailto links")
                || run.stderr.contains("only http(s) images"),
            "{link}: {}",
            run.stderr
        );
    }
    assert!(sink.messages().is_empty());
    assert!(!env.outbox().exists());
    no_campaign(&env, "release-notes/v3.99.0").await;
    env.cleanup().await;
}
both!(notes_with_a_script_link_are_refused_with_file_and_line);

async fn links_and_images_in_a_delivered_notice(b: Backend) {
    let mut env = Env::with_contacts(
        b,
        &format!("{HEADER}1,Ann,Lee,ann.lee@austintexas.gov,,,[],true,false,true,,,\n"),
    )
    .await;
    let sink = SmtpSink::start();
    let body = concat!(
        "## What’s changed\n\n",
        "* New map ([#1916](https://github.com/cityofaustin/atd-moped/pull/1916))\n",
        "* Questions: [the team](mailto:moped@austintexas.gov) or <transportation.data@austintexas.gov>\n",
        "* ![new map](https://moped.austinmobility.io/img/map.png)\n",
        "* <a href=\"javascript:alert(1)\">raw HTML</a>\n",
    );
    let pixel = "* ![tracking pixel](https://tracker.example/pixel.gif?u=1)\n";
    let p = notes(&env, "v3.98.0.md", &format!("{body}{pixel}"));
    let args = ["release-notes", "v3.98.0", "--notes", p.to_str().unwrap()];

    // The shipped templates allow no image: the notes are refused before anything is sent,
    // naming the template line that inserts them and the image.
    let run = env.send_json(&args, &sink.url()).await;
    run.code(2);
    for says in [
        "release-notes.md:8: `notes`",
        "line 5: image `https://moped.austinmobility.io/img/map.png`",
        "this template allows no images",
    ] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    // A template that lists the app's images still refuses the pixel.
    let dir = templates(&env, "release-notes.md", |t| {
        t.replacen(
            "---\n",
            "---\nimages: https://moped.austinmobility.io/img/\n",
            1,
        )
    });
    env.env("NOTIFY_TEMPLATES", dir.to_str().unwrap());
    let run = env.send_json(&args, &sink.url()).await;
    run.code(2);
    for says in [
        "release-notes.md:9: `notes`",
        "line 7: image `https://tracker.example/pixel.gif?u=1`",
        "only from https://moped.austinmobility.io/img/",
    ] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    assert!(sink.messages().is_empty());
    no_campaign(&env, "release-notes/v3.98.0").await;

    // Without the pixel the notice goes, with its image and its links.
    std::fs::write(
        &p,
        format!("---\nname: Hays\ndate: 2026-12-03\n---\n{body}"),
    )
    .unwrap();
    env.send_json(&args, &sink.url()).await.ok();
    let sent = sink.messages();
    assert_eq!(sent.len(), 1);
    let m = mime::check(&sent[0].raw);
    for href in [
        "href=\"https://github.com/cityofaustin/atd-moped/pull/1916\"",
        "href=\"mailto:moped@austintexas.gov\"",
        "href=\"mailto:transportation.data@austintexas.gov\"",
    ] {
        assert!(m.html.contains(href), "{href} missing:\n{}", m.html);
    }
    assert!(
        m.text
            .contains("#1916 <https://github.com/cityofaustin/atd-moped/pull/1916>"),
        "{}",
        m.text
    );
    assert!(
        m.text.contains("the team <mailto:moped@austintexas.gov>"),
        "{}",
        m.text
    );
    assert!(
        m.html
            .contains("<img src=\"https://moped.austinmobility.io/img/map.png\" alt=\"new map\""),
        "{}",
        m.html
    );
    assert!(
        m.text
            .contains("new map <https://moped.austinmobility.io/img/map.png>"),
        "{}",
        m.text
    );
    // Raw HTML is text.
    assert!(!m.html.contains("<a href=\"javascript"), "{}", m.html);
    assert!(m.html.contains("&lt;a href="), "{}", m.html);
    env.cleanup().await;
}

/// An image from a value that is not trusted Markdown: its alt text, whatever the notice.
async fn an_image_a_value_brings_in_is_its_alt_text(b: Backend) {
    let mut env = Env::with_contacts(
        b,
        &format!("{HEADER}1,Ann,Lee,ann.lee@austintexas.gov,,,[],true,false,true,,,\n"),
    )
    .await;
    let sink = SmtpSink::start();
    let dir = templates(&env, "maintenance-end.md", |t| {
        t.replacen(
            "{{ team_name }}",
            "![Moped logo]({{ app_url }}/logo.png) {{ team_name }}",
            1,
        )
    });
    env.env("NOTIFY_TEMPLATES", dir.to_str().unwrap());
    env.send_json(&["maintenance-end"], &sink.url()).await.ok();
    let sent = sink.messages();
    assert_eq!(sent.len(), 1);
    let m = mime::check(&sent[0].raw);
    for part in [&m.html, &m.text] {
        assert!(
            !part.contains("<img") && !part.contains("logo.png"),
            "{part}"
        );
        assert!(part.contains("Moped logo"), "{part}");
    }
    env.cleanup().await;
}
both!(an_image_a_value_brings_in_is_its_alt_text);

both!(links_and_images_in_a_delivered_notice);

/// A change made to a template file.
type Edit = fn(&str) -> String;

async fn a_template_with_a_refused_link_or_image_stops_before_anything(b: Backend) {
    let mut env = Env::new(b).await;
    let sink = SmtpSink::start();
    let cases: [(&str, Edit, &str, &str); 4] = [
        (
            "maintenance-end.md",
            |t| {
                t.replacen(
                    "If anything looks wrong",
                    "[Check](javascript:alert(1)) if anything looks wrong",
                    1,
                )
            },
            "maintenance-end.md:11: ",
            "only http, https and mailto",
        ),
        (
            "maintenance-end.md",
            |t| {
                t.replacen(
                    "Hi {{ first_name }},",
                    "![](https://tracker.example/p.gif) Hi {{ first_name }},",
                    1,
                )
            },
            "maintenance-end.md:4: ",
            "this template allows no images",
        ),
        (
            "maintenance-end.md",
            |t| {
                t.replacen(
                    "---\n",
                    "---\nimages: https://moped.austinmobility.io/\n",
                    1,
                )
                .replacen(
                    "Hi {{ first_name }},",
                    "![](https://tracker.example/p.gif) Hi",
                    1,
                )
            },
            "maintenance-end.md:5: ",
            "only from https://moped.austinmobility.io/",
        ),
        (
            "maintenance-end.md",
            |t| t.replacen("---\n", "---\nimages: moped.austinmobility.io\n", 1),
            "maintenance-end.md:2: ",
            "not an http(s) URL prefix",
        ),
    ];
    for (file, edit, at, says) in cases {
        let dir = templates(&env, file, edit);
        env.env("NOTIFY_TEMPLATES", dir.to_str().unwrap());
        let run = env
            .run(&["maintenance-end", "--smtp-url", &sink.url()])
            .await;
        run.code(2);
        assert!(
            run.stderr.contains(at) && run.stderr.contains(says),
            "{at} {says}: {}",
            run.stderr
        );
    }
    assert!(sink.messages().is_empty());
    env.cleanup().await;
}
both!(a_template_with_a_refused_link_or_image_stops_before_anything);

async fn contact_values_never_become_links(b: Backend) {
    let env = Env::with_contacts(
        b,
        &format!(
            "{HEADER}1,\"[x](javascript:alert(1)) <javascript:alert(2)>\",\"![p](https://tracker.example/p.gif)\",ann@austintexas.gov,\"<https://evil.example>\",\"<a href=\"\"https://evil.example\"\">w</a>\",[],true,false,true,,,\n"
        ),
    )
    .await;
    let sink = SmtpSink::start();
    env.send_json(&["release-notes", "v3.12.0"], &sink.url())
        .await
        .ok();
    let sent = sink.messages();
    assert_eq!(sent.len(), 1);
    let m = mime::check(&sent[0].raw);
    assert!(!m.html.contains("javascript:alert(1)\""), "{}", m.html);
    assert!(!m.html.contains("href=\"javascript"), "{}", m.html);
    assert!(!m.html.contains("<img"), "{}", m.html);
    assert!(!m.html.contains("href=\"https://evil"), "{}", m.html);
    assert!(
        m.html
            .contains("[x](javascript:alert(1)) &lt;javascript:alert(2)&gt;"),
        "{}",
        m.html
    );
    assert!(
        m.text
            .contains("Hi [x](javascript:alert(1)) <javascript:alert(2)>,"),
        "{}",
        m.text
    );
    env.cleanup().await;
}
both!(contact_values_never_become_links);

async fn long_names_and_subjects_fold(b: Backend) {
    // A first name at the import limit without a space, a non-ASCII last name, and a release
    // name that makes a 330-character subject.
    let first = format!("Ann{}", "n".repeat(190));
    let last = format!("O’Brien-{}", "é".repeat(150));
    let env = Env::with_contacts(
        b,
        &format!("{HEADER}1,{first},{last},ann@austintexas.gov,,,[],true,false,true,,,\n"),
    )
    .await;
    let sink = SmtpSink::start();
    let name = format!("Goliad{}", "x".repeat(300));
    let p = env.path().join("v3.97.0.md");
    std::fs::write(&p, format!("---\nname: {name}\n---\n* a fix\n")).unwrap();
    env.send_json(
        &["release-notes", "v3.97.0", "--notes", p.to_str().unwrap()],
        &sink.url(),
    )
    .await
    .ok();
    let sent = sink.messages();
    assert_eq!(sent.len(), 1);
    // The message's own header block (smtp-sink puts its X-Mail-Args lines before it).
    let raw = String::from_utf8(sent[0].raw.clone()).unwrap();
    let start = raw.find("From: ").unwrap();
    let lines = raw[start..]
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>();
    assert!(lines.len() > 10, "{lines:?}");
    for line in lines {
        assert!(line.len() <= 78, "{} characters: {line}", line.len());
    }
    let m = mime::check(&sent[0].raw);
    assert_eq!(m.subject, format!("Moped v3.97.0 {name}: release notes"));
    let msg = mail_parser::MessageParser::default()
        .parse(&sent[0].raw)
        .unwrap();
    let to = msg.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some(format!("{first} {last}").as_str()));
    assert_eq!(to.address(), Some("ann@austintexas.gov"));
    env.cleanup().await;
}
both!(long_names_and_subjects_fold);
