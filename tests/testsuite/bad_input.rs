//! Bad input: a clear message naming what and where, exit code 2, and nothing changed.

use std::path::Path;

use crate::both;
use crate::harness::{Backend, Env, SmtpSink, REPO};

const HEADER: &str = "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n";

async fn bad_csv_names_the_line_and_imports_nothing(b: Backend) {
    let env = Env::new(b).await;
    let bad = format!(
        "{HEADER}1,Ann,Lee,ann@austintexas.gov,,,[],true,false,true,,,\n2,Bo,Ng,bo@@austintexas.gov,,,[],true,false,true,,,\n3,Cy,Oz,cy@austintexas.gov,,,[],yes please,false,true,,,\n"
    );
    let file = env.path().join("bad.csv");
    std::fs::write(&file, &bad).unwrap();
    let run = env
        .run(&["contacts", "import", file.to_str().unwrap()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("bad.csv:3:") && run.stderr.contains("bo@@austintexas.gov"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("bad.csv:4:") && run.stderr.contains("yes please"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    let list = env.run(&["contacts", "list", "--format", "json"]).await;
    list.ok();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );

    // The same file as the configured contacts: a send stops before anything is sent.
    env.set_contacts(&bad);
    let sink = SmtpSink::start();
    let run = env
        .run(&["release-notes", "v3.12.0", "--smtp-url", &sink.url()])
        .await;
    run.code(2);
    assert!(run.stderr.contains("contacts.csv:3:"), "{}", run.stderr);
    assert!(sink.messages().is_empty());

    // Missing column and broken quoting.
    std::fs::write(&file, "user_id,first_name,email\n1,A,a@austintexas.gov\n").unwrap();
    let run = env
        .run(&["contacts", "import", file.to_str().unwrap()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("bad.csv:1:") && run.stderr.contains("missing columns last_name"),
        "{}",
        run.stderr
    );
    std::fs::write(&file, format!("{HEADER}1,A,B,a@austintexas.gov,,\"Signs & Markings,[],true,false,true,,,\n2,C,D,c@austintexas.gov,,,[],true,false,true,,,\n")).unwrap();
    let run = env
        .run(&["contacts", "import", file.to_str().unwrap()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("bad.csv:2:") && run.stderr.contains("quote"),
        "{}",
        run.stderr
    );
    let list = env.run(&["contacts", "list", "--format", "json"]).await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&list.stdout).unwrap(),
        serde_json::json!([])
    );
    env.cleanup().await;
}
both!(bad_csv_names_the_line_and_imports_nothing);

#[tokio::test]
async fn unknown_version_lists_the_known_ones() {
    let env = Env::new(Backend::Sqlite).await;
    let run = env.run(&["release-notes", "v9.1.0"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("no release notes for v9.1.0"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("v2.45.0, v3.0.0, v3.10.0, v3.11.0, v3.12.0"),
        "{}",
        run.stderr
    );
    let run = env.run(&["release-notes", "latest"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("`latest` is not a version"),
        "{}",
        run.stderr
    );
    assert!(!env.outbox().exists());
}

/// Copy the shipped templates into the scratch folder, then break one.
fn broken_templates(env: &Env, file: &str, from: &str, to: &str) -> std::path::PathBuf {
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
    assert!(text.contains(from));
    std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    dir
}

async fn broken_template_names_the_file_and_sends_nothing(b: Backend) {
    let mut env = Env::new(b).await;
    let dir = broken_templates(
        &env,
        "release-notes.md",
        "{{ first_name }}",
        "{{ frist_name }}",
    );
    env.env("NOTIFY_TEMPLATES", dir.to_str().unwrap());
    let sink = SmtpSink::start();
    let run = env
        .run(&["release-notes", "v3.12.0", "--smtp-url", &sink.url()])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("release-notes.md:4:") && run.stderr.contains("frist_name"),
        "{}",
        run.stderr
    );
    assert!(sink.messages().is_empty());
    if b == Backend::Sqlite {
        // Checked before the database is opened: not even an empty one is created.
        assert!(!env.path().join("notify.db").exists());
    }

    let dir = broken_templates(
        &env,
        "maintenance-end.md",
        "{{ window_end }}",
        "{% if window_end %}{{ window_end }}",
    );
    let _ = dir;
    let run = env
        .run(&["maintenance-end", "--smtp-url", &sink.url()])
        .await;
    run.code(2);
    assert!(run.stderr.contains("maintenance-end.md:"), "{}", run.stderr);
    assert!(sink.messages().is_empty());
    let store = env.store().await;
    assert!(store
        .find_campaign("release-notes/v3.12.0")
        .await
        .unwrap()
        .is_none());
    store.close().await;
    env.cleanup().await;
}
both!(broken_template_names_the_file_and_sends_nothing);

#[tokio::test]
async fn bad_times_and_config_values_are_refused() {
    let mut env = Env::new(Backend::Sqlite).await;
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--start",
            "tomorrowish",
            "--end",
            "2026-12-03 19:00",
        ])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("--start") && run.stderr.contains("tomorrowish"),
        "{}",
        run.stderr
    );
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--start",
            "2026-12-03 19:00",
            "--end",
            "2026-12-03 17:00",
            "--allow-past",
        ])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("--end must be after --start"),
        "{}",
        run.stderr
    );
    let run = env
        .run(&[
            "release-notes",
            "v3.12.0",
            "--smtp-url",
            "smtp://u:hunter2@127.0.0.1:1?tls=sometimes",
        ])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("smtp_url") && !run.stderr.contains("hunter2"),
        "{}",
        run.stderr
    );
    env.env("NOTIFY_TIMEZONE", "Central");
    let run = env.run(&["release-notes", "v3.12.0"]).await;
    run.code(2);
    assert!(run.stderr.contains("NOTIFY_TIMEZONE"), "{}", run.stderr);
    assert!(!env.outbox().exists());
}
