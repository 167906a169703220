//! `notify contacts import|list` and the sync before every notice: sync semantics (added,
//! updated, marked inactive, nothing deleted), mass removals refused, dry runs that change no row,
//! a hand import that the next notice run does not undo, over-long fields, and inert output.

use std::path::Path;

use sqlx::Connection;

use crate::both;
use crate::harness::{audience_of, generated_contacts, Backend, Env};

const HEADER: &str = "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n";

async fn import_syncs_and_never_deletes(b: Backend) {
    let env = Env::new(b).await;
    let file = env.path().join("export.csv");
    std::fs::write(&file, format!("{HEADER}1,Ann,Lee,ann@austintexas.gov,,Signs & Markings,\"[\"\"moped-editor\"\"]\",true,false,true,,,\n2,Bo,Ng,bo@austintexas.gov,,,[],true,false,false,,,\n")).unwrap();
    let run = env
        .run(&[
            "contacts",
            "import",
            file.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    run.ok();
    assert_eq!(
        run.summary(),
        serde_json::json!({"added": 2, "updated": 0, "unchanged": 0, "removed": 0, "reactivated": 0})
    );

    // Ann changes workgroup, Bo leaves the export (one of two: allowed by hand), Cy arrives.
    std::fs::write(&file, format!("{HEADER}1,Ann,Lee,ann@austintexas.gov,,Arterial Management,\"[\"\"moped-editor\"\"]\",true,false,true,,,\n3,Cy,Oz,CY@austintexas.gov,,,[],true,false,true,,,\n")).unwrap();
    let run = env
        .run(&[
            "contacts",
            "import",
            file.to_str().unwrap(),
            "--format",
            "json",
            "--allow-removals",
        ])
        .await;
    run.ok();
    assert_eq!(
        run.summary(),
        serde_json::json!({"added": 1, "updated": 1, "unchanged": 0, "removed": 1, "reactivated": 0})
    );

    let list = env
        .run(&["contacts", "list", "--format", "json", "--include-removed"])
        .await;
    list.ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let arr = v.as_array().expect("JSON array");
    assert_eq!(arr.len(), 3, "nothing deleted");
    let bo = arr
        .iter()
        .find(|c| c["email"] == "bo@austintexas.gov")
        .unwrap();
    assert_eq!(bo["in_export"], false);
    let ann = arr
        .iter()
        .find(|c| c["email"] == "ann@austintexas.gov")
        .unwrap();
    assert_eq!(ann["workgroup"], "Arterial Management");
    assert!(
        arr.iter().any(|c| c["email"] == "cy@austintexas.gov"),
        "addresses are lower-cased"
    );

    let list = env.run(&["contacts", "list", "--format", "csv"]).await;
    list.ok();
    let mut rdr = csv::Reader::from_reader(list.stdout.as_bytes());
    assert_eq!(
        rdr.records().count(),
        2,
        "removed contacts hidden by default"
    );
    let table = env.run(&["contacts", "list"]).await;
    table.ok();
    assert!(
        table.stdout.contains("Ann Lee") && table.stdout.contains("2 contacts"),
        "{}",
        table.stdout
    );
    env.cleanup().await;
}
both!(import_syncs_and_never_deletes);

/// Every row of every table, as text, to show that a command changed nothing.
async fn snapshot(env: &Env, b: Backend) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match b {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&env.database_url)
                .await
                .expect("open sqlite");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for t in tables {
                let cols: Vec<String> = sqlx::query_scalar(&format!(
                    "SELECT name FROM pragma_table_info('{t}') ORDER BY cid"
                ))
                .fetch_all(&mut conn)
                .await
                .unwrap();
                let row = cols
                    .iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT {row} FROM \"{t}\" ORDER BY 1"))
                        .fetch_all(&mut conn)
                        .await
                        .unwrap();
                out.push((t, rows.join("\n")));
            }
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .expect("open postgres");
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for t in tables {
                let rows: Option<String> = sqlx::query_scalar(&format!(
                    "SELECT string_agg(r::text, E'\\n' ORDER BY r::text) FROM \"{t}\" r"
                ))
                .fetch_one(&mut conn)
                .await
                .unwrap();
                out.push((t, rows.unwrap_or_default()));
            }
            // Sequences too: a rolled-back insert would still move them on.
            let seqs: Vec<(String, i64)> = sqlx::query_as(
                "SELECT sequencename::text, COALESCE(last_value, 0) FROM pg_sequences ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            for (name, v) in seqs {
                out.push((format!("sequence {name}"), v.to_string()));
            }
            conn.close().await.unwrap();
        }
    }
    assert!(
        out.iter()
            .any(|(t, rows)| t == "contacts" && !rows.is_empty()),
        "the snapshot sees the contacts: {out:?}"
    );
    out
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_str().unwrap().to_string()
}

/// The in-export contacts' addresses, sorted.
async fn listed(env: &Env) -> Vec<String> {
    let list = env.run(&["contacts", "list", "--format", "json"]).await;
    list.ok();
    let v: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    let mut emails: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["email"].as_str().unwrap().to_string())
        .collect();
    emails.sort();
    emails
}

/// `n` MUG members who are not in the sample (user_id 101 on).
fn newcomers(n: usize) -> String {
    let mut csv = HEADER.to_string();
    for i in 1..=n {
        csv.push_str(&format!(
            "{},New{i},Person,new{i}@example.org,,,[],false,false,true,,,\n",
            100 + i
        ));
    }
    csv
}

/// The first `n` data rows of a CSV, with its header.
fn first_rows(csv: &str, n: usize) -> String {
    csv.lines().take(n + 1).map(|l| format!("{l}\n")).collect()
}

async fn an_empty_or_truncated_export_is_refused_and_deactivates_nobody(b: Backend) {
    let env = Env::new(b).await;
    let sample = std::fs::read_to_string(env.path().join("contacts.csv")).unwrap();
    let contacts_csv = env.path().join("contacts.csv");
    env.run(&["contacts", "import", contacts_csv.to_str().unwrap()])
        .await
        .ok();
    let before = listed(&env).await;
    assert_eq!(before.len(), 32);

    // Header only: refused, even with a high max_removal_percent, and nobody deactivated.
    let empty = write(env.path(), "empty.csv", HEADER);
    for extra in [&[][..], &["--dry-run"][..]] {
        let mut args = vec!["contacts", "import", &empty];
        args.extend_from_slice(extra);
        let run = env.run(&args).await;
        run.code(2);
        assert!(
            run.stderr.contains("empty.csv has no contacts")
                && run.stderr.contains("all 32 active contacts")
                && run.stderr.contains("--allow-removals"),
            "{}",
            run.stderr
        );
    }
    // An empty file (not even a header).
    let nothing = write(env.path(), "nothing.csv", "");
    let run = env.run(&["contacts", "import", &nothing]).await;
    run.code(2);
    assert!(
        run.stderr.contains("nothing.csv:1: the file is empty"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await, before);

    // A truncated export: a row cut in the middle of a quoted cell, or cut between fields.
    let cut_in_quotes = &sample[..sample.find("Active Transportation").unwrap() - 1];
    let line_of_cut = cut_in_quotes.lines().count();
    let cut = write(env.path(), "cut.csv", cut_in_quotes);
    let run = env.run(&["contacts", "import", &cut]).await;
    run.code(2);
    assert!(
        run.stderr.contains(&format!("cut.csv:{line_of_cut}:"))
            && run.stderr.contains("nothing was imported"),
        "{}",
        run.stderr
    );
    let cut_between = first_rows(&sample, 10) + "11,Kim,Lo,kim.lo@austintexas.gov,Planner";
    let cut = write(env.path(), "cut2.csv", &cut_between);
    let run = env.run(&["contacts", "import", &cut]).await;
    run.code(2);
    assert!(
        run.stderr.contains("cut2.csv:12:") && run.stderr.contains("expected 13 fields"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await, before);

    // A notice run still reaches everybody.
    let run = env
        .run(&["release-notes", "v3.12.0", "--format", "json"])
        .await;
    run.ok();
    let mug = audience_of(&sample, notify::contacts::Audience::Mug);
    assert_eq!(run.summary()["written"], mug.len() as i64, "{}", run.stderr);

    // The configured file emptied: the notice is refused before anything is written.
    env.set_contacts(HEADER);
    let run = env.run(&["maintenance-end", "--format", "json"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("contacts.csv has no contacts"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await, before);
    let outbox: Vec<_> = std::fs::read_dir(env.outbox())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(outbox, vec!["release-notes_v3.12.0".to_string()]);
    env.cleanup().await;
}
both!(an_empty_or_truncated_export_is_refused_and_deactivates_nobody);

async fn mass_removals_are_refused_unless_allowed(b: Backend) {
    let all = generated_contacts(10);
    let mut env = Env::with_contacts(b, &all).await;
    let configured = env.path().join("contacts.csv");
    env.run(&["contacts", "import", configured.to_str().unwrap()])
        .await
        .ok();

    // Three of ten missing (30%): refused by an import and by a notice run; nothing changes.
    let seven = first_rows(&all, 7);
    let seven_file = write(env.path(), "seven.csv", &seven);
    let run = env.run(&["contacts", "import", &seven_file]).await;
    run.code(2);
    assert!(
        run.stderr
            .contains("would mark 3 of the 10 active contacts inactive (30%")
            && run.stderr.contains("max_removal_percent = 20%")
            && run.stderr.contains("--allow-removals"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await.len(), 10);
    env.set_contacts(&seven);
    let run = env
        .run(&["release-notes", "v3.12.0", "--format", "json"])
        .await;
    run.code(2);
    assert!(
        run.stderr.contains("contacts.csv would mark 3 of the 10"),
        "{}",
        run.stderr
    );
    assert!(!env.outbox().exists(), "nothing written");
    assert_eq!(listed(&env).await.len(), 10);

    // --allow-removals applies it, and the run says what its sync changed.
    let run = env
        .run(&[
            "release-notes",
            "v3.12.0",
            "--format",
            "json",
            "--allow-removals",
        ])
        .await;
    run.ok();
    assert_eq!(run.summary()["recipients"], 7);
    assert_eq!(run.summary()["written"], 7);
    assert!(
        run.stderr.contains(
            "contacts: 0 added, 0 updated, 0 reactivated, 3 marked inactive, 7 unchanged (from "
        ) && run.stderr.contains("contacts.csv)"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout.lines().count(), 1, "stdout is one JSON object");
    assert_eq!(listed(&env).await.len(), 7);

    // Two of seven (29%): refused at the default, taken with a higher max_removal_percent;
    // one of seven would not have been refused, and a percent above 100 is not a setting.
    env.set_contacts(&first_rows(&all, 5));
    let run = env.run(&["maintenance-end"]).await;
    run.code(2);
    assert!(run.stderr.contains("2 of the 7"), "{}", run.stderr);
    env.env("NOTIFY_MAX_REMOVAL_PERCENT", "101");
    let run = env.run(&["maintenance-end"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("max_removal_percent") && run.stderr.contains("101"),
        "{}",
        run.stderr
    );
    env.env("NOTIFY_MAX_REMOVAL_PERCENT", "30");
    let run = env.run(&["maintenance-end"]).await;
    run.ok();
    assert!(
        run.stdout.lines().next().unwrap_or("").starts_with(
            "contacts: 0 added, 0 updated, 0 reactivated, 2 marked inactive, 5 unchanged"
        ),
        "{}",
        run.stdout
    );
    assert_eq!(listed(&env).await.len(), 5);

    // Back: the five return with two of the removed, reported as reactivated.
    env.set_contacts(&first_rows(&all, 7));
    let run = env.run(&["maintenance-end"]).await;
    run.ok();
    assert!(
        run.stdout.starts_with(
            "contacts: 0 added, 0 updated, 2 reactivated, 0 marked inactive, 5 unchanged"
        ),
        "{}",
        run.stdout
    );
    env.cleanup().await;
}
both!(mass_removals_are_refused_unless_allowed);

async fn dry_runs_change_no_row(b: Backend) {
    let env = Env::new(b).await;
    let sample = std::fs::read_to_string(env.path().join("contacts.csv")).unwrap();
    // A real run first: contacts, a campaign and its sends in the database.
    env.run(&["release-notes", "v3.12.0"]).await.ok();

    // The export changes: one person edited, one gone, one new (a MUG member).
    let mut lines: Vec<String> = sample.lines().map(str::to_string).collect();
    lines[1] = lines[1].replace("Business Process Consultant", "Division Manager");
    lines.remove(2);
    lines.push(
        "900,Nia,Park,nia.park@austintexas.gov,Planner,Signs & Markings,\"[\"\"moped-editor\"\"]\",true,false,true,,,"
            .to_string(),
    );
    let changed = lines.join("\n") + "\n";
    env.set_contacts(&changed);
    let line = "contacts (dry run, nothing written): 1 added, 1 updated, 0 reactivated, 1 marked inactive, 30 unchanged";
    let mug = audience_of(&changed, notify::contacts::Audience::Mug);

    let before = snapshot(&env, b).await;
    let run = env.run(&["release-notes", "v3.12.0", "--dry-run"]).await;
    run.ok();
    assert!(run.stdout.starts_with(line), "{}", run.stdout);
    assert!(
        run.stdout.contains(&format!("{} would send", mug.len())),
        "the would-send count follows the export as synced: {}",
        run.stdout
    );
    assert_eq!(snapshot(&env, b).await, before);

    let preview = env.path().join("preview");
    let run = env
        .run(&[
            "maintenance-end",
            "--dry-run",
            "--preview",
            preview.to_str().unwrap(),
            "--format",
            "json",
        ])
        .await;
    run.ok();
    assert_eq!(run.stdout.lines().count(), 1, "{}", run.stdout);
    let users = audience_of(&changed, notify::contacts::Audience::Users);
    assert_eq!(run.summary()["pending"], users.len() as i64);
    assert!(run.stderr.contains(line), "{}", run.stderr);
    assert_eq!(
        std::fs::read_dir(&preview).unwrap().count(),
        2 * users.len(),
        "an .eml and an .html per recipient"
    );
    assert_eq!(snapshot(&env, b).await, before);

    // A hand import as a dry run: counts, and nothing recorded (not even the new source).
    let other = write(env.path(), "other.csv", &changed);
    let run = env
        .run(&[
            "contacts",
            "import",
            &other,
            "--dry-run",
            "--format",
            "json",
        ])
        .await;
    run.ok();
    assert_eq!(
        run.summary(),
        serde_json::json!({"added": 1, "updated": 1, "unchanged": 30, "removed": 1, "reactivated": 0, "dry_run": true})
    );
    let run = env.run(&["contacts", "import", &other, "--dry-run"]).await;
    run.ok();
    assert!(
        run.stdout.starts_with("dry run, nothing changed: "),
        "{}",
        run.stdout
    );
    assert_eq!(snapshot(&env, b).await, before);

    // The real run then does what the dry run said.
    let run = env.run(&["release-notes", "v3.12.0"]).await;
    run.ok();
    assert!(
        run.stdout.starts_with(
            "contacts: 1 added, 1 updated, 0 reactivated, 1 marked inactive, 30 unchanged"
        ),
        "{}",
        run.stdout
    );
    assert_ne!(snapshot(&env, b).await, before);
    env.cleanup().await;
}
both!(dry_runs_change_no_row);

async fn a_hand_import_is_not_undone_by_the_next_notice(b: Backend) {
    let env = Env::new(b).await;
    let sample = std::fs::read_to_string(env.path().join("contacts.csv")).unwrap();
    let other_csv = newcomers(3);
    let other = write(env.path(), "other.csv", &other_csv);
    let run = env.run(&["contacts", "import", &other]).await;
    run.ok();
    assert!(
        run.stdout
            .contains("notice runs now take their contacts from this file until the configured"),
        "{}",
        run.stdout
    );

    // The notice goes to the imported people, and says where they came from.
    let run = env
        .run(&["release-notes", "v3.12.0", "--format", "json"])
        .await;
    run.ok();
    assert_eq!(run.summary()["recipients"], 3, "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!(
            "(from {}",
            std::fs::canonicalize(&other).unwrap().display()
        )) && run.stderr.contains("imported by hand at")
            && run.stderr.contains("has not changed since"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await.len(), 3);

    // The imported file is the source: an edit to it is picked up.
    std::fs::write(&other, newcomers(4)).unwrap();
    let run = env.run(&["maintenance-end"]).await;
    run.ok();
    assert!(
        run.stdout.starts_with("contacts: 1 added, 0 updated"),
        "{}",
        run.stdout
    );
    assert_eq!(listed(&env).await.len(), 4);

    // The imported file gone: the run says so and stops; nothing is taken from elsewhere.
    std::fs::rename(&other, env.path().join("moved.csv")).unwrap();
    let run = env.run(&["maintenance-end"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("imported by hand at")
            && run.stderr.contains("cannot read contacts file")
            && run.stderr.contains("other.csv"),
        "{}",
        run.stderr
    );
    assert_eq!(listed(&env).await.len(), 4);
    std::fs::rename(env.path().join("moved.csv"), &other).unwrap();

    // The configured file changes: it is the source again (here replacing everybody, which
    // needs --allow-removals), and the hand import is forgotten.
    let touched = sample.replacen("Maria,Gonzalez", "Maria,González", 1);
    env.set_contacts(&touched);
    let run = env.run(&["maintenance-end"]).await;
    run.code(2);
    assert!(
        run.stderr
            .contains("contacts.csv would mark 4 of the 4 active contacts inactive"),
        "{}",
        run.stderr
    );
    let run = env.run(&["maintenance-end", "--allow-removals"]).await;
    run.ok();
    assert!(
        run.stdout.contains("it changed after")
            && run
                .stdout
                .contains("was imported by hand, so it is the source again"),
        "{}",
        run.stdout
    );
    let run = env.run(&["maintenance-end"]).await;
    run.ok();
    assert!(
        run.stdout.starts_with(
            "contacts: 0 added, 0 updated, 0 reactivated, 0 marked inactive, 32 unchanged (from "
        ) && !run.stdout.contains("imported by hand"),
        "{}",
        run.stdout
    );
    let mut everybody: Vec<String> = notify::contacts::parse(touched.as_bytes())
        .unwrap()
        .into_iter()
        .map(|c| c.email)
        .collect();
    everybody.sort();
    assert_eq!(listed(&env).await, everybody);

    // Importing the configured file by hand is no override: the next run reads it as configured.
    let run = env
        .run(&[
            "contacts",
            "import",
            env.path().join("contacts.csv").to_str().unwrap(),
        ])
        .await;
    run.ok();
    assert!(
        !run.stdout.contains("notice runs now take"),
        "{}",
        run.stdout
    );
    env.cleanup().await;
}
both!(a_hand_import_is_not_undone_by_the_next_notice);

async fn over_long_fields_are_refused_with_their_line(b: Backend) {
    let env = Env::new(b).await;
    let huge = "A".repeat(1 << 20);
    let local65 = "x".repeat(65);
    let long_domain = format!("a@{}.gov", "d".repeat(250));
    let body = format!(
        "{HEADER}1,Ann,Lee,ann@austintexas.gov,,,[],true,false,true,,,\n\
         2,{huge},Ng,bo@austintexas.gov,,,[],true,false,true,,,\n\
         3,Cy,Oz,{local65}@austintexas.gov,,,[],true,false,true,,,\n\
         4,Di,Ma,{long_domain},,,[],true,false,true,,,\n\
         5,Ed,Fu,ed@austintexas.gov,{huge},,[],true,false,true,,,\n"
    );
    let file = write(env.path(), "long.csv", &body);
    let run = env.run(&["contacts", "import", &file]).await;
    run.code(2);
    for expected in [
        "long.csv:3: first_name is 1048576 characters long; at most 200 are allowed",
        "long.csv:4: email",
        "local part (before the @) of 65 characters; at most 64",
        "long.csv:5: email is 256 characters long; an address has at most 254",
        "long.csv:6: title is 1048576 characters long; at most 200",
    ] {
        assert!(
            run.stderr.contains(expected),
            "{expected}\n{}",
            &run.stderr[..run.stderr.len().min(4000)]
        );
    }
    assert!(
        run.stderr.len() < 4000,
        "the long values are not echoed back"
    );
    if b == Backend::Sqlite {
        // Every row is checked before the database is opened: not even an empty one is made.
        assert!(!env.path().join("notify.db").exists());
    }
    assert!(listed(&env).await.is_empty(), "nothing imported");

    // The same as the configured file: a notice stops before anything is written.
    env.set_contacts(&body);
    let run = env.run(&["release-notes", "v3.12.0"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("contacts.csv:3: first_name is 1048576"),
        "{}",
        &run.stderr[..run.stderr.len().min(4000)]
    );
    assert!(!env.outbox().exists());
    env.cleanup().await;
}
both!(over_long_fields_are_refused_with_their_line);

async fn list_output_is_inert(b: Backend) {
    let env = Env::new(b).await;
    let body = format!(
        "{HEADER}1,\"=HYPERLINK(\"\"http://evil.example\"\",\"\"click\"\")\",Lee,ann@austintexas.gov,,@SUM(A1),[],true,false,true,-2+3,,\n\
         2,Bo\u{202e}gnp.exe,Ng,bo@austintexas.gov,,Signs & Markings,[],true,false,true,,,\n"
    );
    let file = write(env.path(), "hostile.csv", &body);
    env.run(&["contacts", "import", &file]).await.ok();

    let run = env.run(&["contacts", "list", "--format", "csv"]).await;
    run.ok();
    let mut rdr = csv::Reader::from_reader(run.stdout.as_bytes());
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(
        &rows[0][1],
        "'=HYPERLINK(\"http://evil.example\",\"click\")"
    );
    assert_eq!(&rows[0][5], "'@SUM(A1)");
    assert_eq!(&rows[0][10], "'-2+3");
    assert_eq!(&rows[0][3], "ann@austintexas.gov");
    assert_eq!(&rows[1][5], "Signs & Markings");

    let run = env.run(&["contacts", "list"]).await;
    run.ok();
    assert!(!run.stdout.contains('\u{202e}'), "{}", run.stdout);
    assert!(run.stdout.contains("Bo\\u{202e}gnp.exe"), "{}", run.stdout);

    // JSON is data, not display: the values as they are.
    let run = env.run(&["contacts", "list", "--format", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        v[0]["first_name"],
        "=HYPERLINK(\"http://evil.example\",\"click\")"
    );
    env.cleanup().await;
}
both!(list_output_is_inert);

/// Run one statement against the environment's database.
async fn execute(env: &Env, b: Backend, sql: &str) {
    match b {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&env.database_url)
                .await
                .expect("open sqlite");
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .expect("open postgres");
            sqlx::query(sql).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
}

/// A notice run whose export has the same bytes as the last one synced does not read it
/// against the stored contacts (issue 15: a cheap rerun): every row is unchanged and nothing
/// is written, which a row changed behind notify's back shows. Different bytes sync as usual.
async fn an_export_identical_to_the_last_one_synced_changes_nothing(b: Backend) {
    use sha2::Digest as _;
    let env = Env::new(b).await;
    let csv = std::fs::read(env.path().join("contacts.csv")).unwrap();
    let rows = String::from_utf8_lossy(&csv).lines().count() - 1;
    let first = env.run(&["maintenance-end"]).await;
    first.ok();
    let digest = hex::encode(sha2::Sha256::digest(&csv));
    let store = env.store().await;
    assert_eq!(
        store.setting("contacts_export_sha256").await.unwrap(),
        Some(format!("{digest} {rows}")),
        "the digest and the number of contacts"
    );
    store.close().await;

    execute(
        &env,
        b,
        "UPDATE contacts SET first_name = 'Changed' WHERE user_id = 1",
    )
    .await;
    let again = env.run(&["maintenance-end"]).await;
    again.ok();
    let said = format!("{}{}", again.stdout, again.stderr);
    assert!(
        said.contains(&format!(
            "0 added, 0 updated, 0 reactivated, 0 marked inactive, {rows} unchanged"
        )),
        "{said}"
    );
    let names = snapshot(&env, b).await;
    let contacts = &names.iter().find(|(t, _)| t == "contacts").unwrap().1;
    assert!(contacts.contains("Changed"), "{contacts}");

    // Other bytes: a real sync, which also puts the changed row back.
    let edited = String::from_utf8(csv).unwrap().replace(
        "maria.gonzalez@austintexas.gov",
        "maria.gonzalez2@austintexas.gov",
    );
    env.set_contacts(&edited);
    let synced = env.run(&["maintenance-end"]).await;
    synced.ok();
    let said = format!("{}{}", synced.stdout, synced.stderr);
    assert!(said.contains("0 added, 1 updated"), "{said}");
    let names = snapshot(&env, b).await;
    let contacts = &names.iter().find(|(t, _)| t == "contacts").unwrap().1;
    assert!(!contacts.contains("Changed"), "{contacts}");
    let store = env.store().await;
    assert_eq!(
        store.setting("contacts_export_sha256").await.unwrap(),
        Some(format!(
            "{} {rows}",
            hex::encode(sha2::Sha256::digest(edited.as_bytes()))
        ))
    );
    store.close().await;
    env.cleanup().await;
}
both!(an_export_identical_to_the_last_one_synced_changes_nothing);

/// The export streams into the database and its rows are checked there (issue 15): a row
/// that repeats an address or a user_id is reported with the line it repeats, in line order
/// with the rows that are wrong on their own, and nothing is imported. A file wrong throughout
/// lists its first 1,000 problems and counts the rest.
async fn duplicates_are_found_in_the_database_with_their_lines(b: Backend) {
    let env = Env::new(b).await;
    env.run(&[
        "contacts",
        "import",
        env.path().join("contacts.csv").to_str().unwrap(),
    ])
    .await
    .ok();
    let before = snapshot(&env, b).await;
    let body = format!(
        "{HEADER}\
         1,Ann,Lee,ann@austintexas.gov,,,[],true,false,true,,,\n\
         2,Bo,Ng,ANN@austintexas.gov,,,[],true,false,true,,,\n\
         3,Cy,Oz,not-an-address,,,[],true,false,true,,,\n\
         1,Di,Ro,di@austintexas.gov,,,[],true,false,true,,,\n\
         5,Ed,Su,ed@austintexas.gov,,,[],true,false,true,,,\n\
         6,Flo,Ty,ed@austintexas.gov,,,[],true,false,true,,,\n"
    );
    // `contacts import` checks each row before it opens the database: the row that is wrong
    // on its own is reported, and the import stops there.
    let bad = write(env.path(), "bad.csv", &body);
    let run = env.run(&["contacts", "import", &bad]).await;
    run.code(2);
    assert!(
        run.stderr.contains("has 1 problem; nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(":4: email `not-an-address`"),
        "{}",
        run.stderr
    );
    assert_eq!(snapshot(&env, b).await, before, "nothing imported");

    // A notice run's sync reports every problem at once, the duplicates among them.
    let original = std::fs::read_to_string(env.path().join("contacts.csv")).unwrap();
    env.set_contacts(&body);
    let bad = env
        .path()
        .join("contacts.csv")
        .to_str()
        .unwrap()
        .to_string();
    let run = env.run(&["maintenance-end"]).await;
    run.code(2);
    let listed: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.trim_start().starts_with(&bad))
        .collect();
    assert_eq!(listed.len(), 4, "{}", run.stderr);
    assert!(
        run.stderr.contains("has 4 problems; nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(
        listed[0].ends_with(":3: duplicate address ann@austintexas.gov (already on line 2)"),
        "{listed:?}"
    );
    assert!(
        listed[1].contains(":4: email `not-an-address`"),
        "{listed:?}"
    );
    assert!(
        listed[2].ends_with(":5: duplicate user_id 1 (already on line 2)"),
        "{listed:?}"
    );
    assert!(
        listed[3].ends_with(":7: duplicate address ed@austintexas.gov (already on line 6)"),
        "{listed:?}"
    );
    assert_eq!(snapshot(&env, b).await, before, "nothing imported");
    env.set_contacts(&original);

    // Wrong throughout: the first 1,000 problems listed, the others counted.
    let mut csv = HEADER.to_string();
    for i in 1..=1500 {
        csv.push_str(&format!(
            "{i},A,B,same@austintexas.gov,,,[],true,false,true,,,\n"
        ));
    }
    let many = write(env.path(), "many.csv", &csv);
    let run = env.run(&["contacts", "import", &many]).await;
    run.code(2);
    assert!(
        run.stderr
            .contains("has 1499 problems; nothing was imported"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("... and 499 more, not listed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr
            .lines()
            .filter(|l| l.contains("duplicate address"))
            .count(),
        1000
    );
    assert_eq!(snapshot(&env, b).await, before, "nothing imported");
    env.cleanup().await;
}
both!(duplicates_are_found_in_the_database_with_their_lines);

/// A file that changes between the notice run's first read (its digest, its first contact)
/// and the sync is refused: what was checked is what is imported, or nothing is.
async fn an_export_that_changes_while_it_is_read_is_refused(b: Backend) {
    let env = Env::new(b).await;
    let file = env.path().join("contacts.csv");
    let digest = notify::contacts::digest_file(&file).unwrap();
    std::fs::write(&file, newcomers(3)).unwrap();
    let store = env.store().await;
    let result = notify::sync::SyncRequest {
        path: &file,
        digest: Some(&digest),
        dry_run: false,
        allow_removals: true,
        max_percent: 100,
        keep_contacts: false,
        settings: Vec::new(),
    }
    .run(&store)
    .await;
    let e = result.expect_err("refused").to_string();
    assert!(e.contains("changed while notify was reading it"), "{e}");
    assert!(
        store.contacts(true).await.unwrap().is_empty(),
        "nothing imported"
    );
    assert_eq!(store.setting("contacts_export_sha256").await.unwrap(), None);

    // Read again, the same file syncs.
    let digest = notify::contacts::digest_file(&file).unwrap();
    let (report, _) = notify::sync::SyncRequest {
        path: &file,
        digest: Some(&digest),
        dry_run: false,
        allow_removals: false,
        max_percent: 100,
        keep_contacts: false,
        settings: Vec::new(),
    }
    .run(&store)
    .await
    .unwrap();
    assert_eq!(report.added, 3);
    store.close().await;
    env.cleanup().await;
}
both!(an_export_that_changes_while_it_is_read_is_refused);
