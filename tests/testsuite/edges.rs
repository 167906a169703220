//! The edges of issue 9 item 7, each on both databases with the real binary: campaign keys that
//! try to leave the outbox, files and databases that are not notify's, first runs at the same
//! moment, windows in the past, rates near zero. A refusal is exit 2 with a message naming what
//! was wrong, and leaves no file and no table behind.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sqlx::Connection;

use crate::both;
use crate::harness::{audience_of, Backend, Env, REPO};

/// Every file under `dir`, relative to it (folders too).
fn tree(dir: &Path) -> BTreeSet<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            out.insert(p.strip_prefix(root).unwrap().to_path_buf());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The tables in the environment's database; none when the SQLite file does not exist.
async fn tables(env: &Env, b: Backend) -> Vec<String> {
    tables_at(&env.database_url, b).await
}

async fn tables_at(url: &str, b: Backend) -> Vec<String> {
    match b {
        Backend::Sqlite => {
            let path = url
                .trim_start_matches("sqlite://")
                .split('?')
                .next()
                .unwrap()
                .to_string();
            if !Path::new(&path).exists() {
                return vec![];
            }
            let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{path}?mode=ro"))
                .await
                .expect("open the SQLite file read-only");
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
                 AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
            )
            .fetch_all(&mut conn)
            .await
            .unwrap();
            rows.into_iter().map(|r| r.0).collect()
        }
    }
}

/// The run was refused before anything was written: the scratch folder holds what it held and
/// the database has no tables (SQLite: no file at all).
async fn nothing_written(env: &Env, b: Backend, before: &BTreeSet<PathBuf>, what: &str) {
    assert_eq!(&tree(env.path()), before, "{what}: files appeared");
    assert_eq!(
        tables(env, b).await,
        Vec::<String>::new(),
        "{what}: tables appeared"
    );
}

async fn campaign_keys_are_checked_and_stay_in_the_outbox(b: Backend) {
    let env = Env::new(b).await;
    let before = tree(env.path());
    for (key, why) in [
        ("..", "`..` segment"),
        (".", "`.` segment"),
        ("a/../..", "`..` segment"),
        ("../escape", "`..` segment"),
        ("/tmp/notify-escape", "begins with `/`"),
        ("release-notes\\v3.12.0", "backslash"),
        ("..\\..\\x", "backslash"),
        ("release-notes//v3.12.0", "empty segment"),
        ("release\u{1b}[31m-notes", "U+001B"),
        ("release\nnotes", "U+000A"),
        ("", "empty"),
    ] {
        let run = env
            .run(&["release-notes", "v3.12.0", "--campaign", key])
            .await;
        run.code(2);
        assert!(
            run.stderr.contains("--campaign") && run.stderr.contains(why),
            "{key:?}: {}",
            run.stderr
        );
        assert!(
            !run.stderr.contains('\u{1b}'),
            "the key is shown inert: {:?}",
            run.stderr
        );
        nothing_written(&env, b, &before, key).await;
    }
    // `..` used to name the scratch folder itself (the outbox's parent): the tree above shows
    // nothing landed there; nor at an absolute path.
    assert!(!Path::new("/tmp/notify-escape").exists());

    // The notice's own key and valid odd ones write into folders inside the outbox.
    let users = audience_of(
        &std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap(),
        notify::contacts::Audience::Mug,
    );
    for (key, folder) in [
        (None, "release-notes_v3.12.0"),
        (
            Some("release-notes/v3.12.0-corrected"),
            "release-notes_v3.12.0-corrected",
        ),
        (Some("..."), "_.."),
        (Some(".hidden/x"), "_hidden_x"),
    ] {
        let mut args = vec!["release-notes", "v3.12.0", "--format", "json"];
        if let Some(k) = key {
            args.extend(["--campaign", k]);
        }
        let run = env.run(&args).await;
        run.ok();
        assert_eq!(run.summary()["written"], users.len(), "{key:?}");
        let dir = env.outbox().join(folder);
        let emls = std::fs::read_dir(&dir)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .count()
            })
            .unwrap_or(0);
        assert_eq!(emls, users.len(), "{key:?}: {}", dir.display());
    }
    // Every file the runs made is in the outbox or is the database.
    for p in tree(env.path()).difference(&before) {
        assert!(
            p.starts_with("outbox") || p.to_string_lossy().starts_with("notify.db"),
            "{} written outside the outbox",
            p.display()
        );
    }
    let status = env.run(&["status", "a/../.."]).await;
    status.code(2);
    assert!(status.stderr.contains("`..` segment"), "{}", status.stderr);
    env.run(&["status", "release-notes/v3.12.0-corrected"])
        .await
        .ok();
    env.cleanup().await;
}
both!(campaign_keys_are_checked_and_stay_in_the_outbox);

/// `notify --database-url URL contacts list`, timed.
async fn list_with(env: &Env, url: &str) -> (crate::harness::Run, Duration) {
    let t = Instant::now();
    let run = env
        .run(&[
            "--database-url",
            url,
            "contacts",
            "list",
            "--format",
            "json",
        ])
        .await;
    (run, t.elapsed())
}

/// A file that is not a database (SQLite) or a database that is not there (PostgreSQL) is
/// reported at once, naming it, and left as it was.
async fn a_file_that_is_not_a_database_is_refused_at_once(b: Backend) {
    let env = Env::new(b).await;
    match b {
        Backend::Sqlite => {
            // A real notify database, to cut short.
            env.run(&[
                "contacts",
                "import",
                env.path().join("contacts.csv").to_str().unwrap(),
            ])
            .await
            .ok();
            let good = std::fs::read(env.path().join("notify.db")).unwrap();
            assert!(good.len() > 8192);
            let mut damaged = good.clone();
            damaged[100..4096].fill(0x07);
            let random: Vec<u8> = (0..5000).map(|_| rand::random::<u8>()).collect();
            let cases: Vec<(&str, Vec<u8>, &str)> = vec![
                (
                    "README.md",
                    std::fs::read(Path::new(REPO).join("README.md")).unwrap(),
                    "not a SQLite database",
                ),
                ("random.bin", random, "not a SQLite database"),
                ("header-only.db", good[..60].to_vec(), "damaged"),
                ("truncated.db", good[..good.len() / 2].to_vec(), "truncated"),
                ("damaged.db", damaged, "not a usable SQLite database"),
            ];
            for (name, bytes, why) in cases {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join(name);
                std::fs::write(&path, &bytes).unwrap();
                let (run, took) = list_with(&env, &format!("sqlite://{}", path.display())).await;
                run.code(2);
                assert!(took < Duration::from_secs(5), "{name}: took {took:?}");
                assert!(
                    run.stderr.contains(&path.display().to_string()) && run.stderr.contains(why),
                    "{name}: {}",
                    run.stderr
                );
                assert!(
                    !run.stderr.contains("\u{1b}["),
                    "no coloured log lines: {}",
                    run.stderr
                );
                assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name} was changed");
                let beside: Vec<_> = tree(dir.path()).into_iter().collect();
                assert_eq!(
                    beside,
                    vec![PathBuf::from(name)],
                    "{name}: files left beside it"
                );
            }
            // An empty file is a new database.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("empty.db");
            std::fs::write(&path, b"").unwrap();
            let url = format!("sqlite://{}", path.display());
            let (run, _) = list_with(&env, &url).await;
            run.ok();
            assert!(tables_at(&url, b).await.contains(&"contacts".to_string()));
        }
        Backend::Postgres => {
            let admin = crate::harness::postgres_admin_url();
            let base = &admin[..admin.rfind('/').unwrap()];
            let missing = format!("{base}/notify_no_such_database_{}", std::process::id());
            let (run, took) = list_with(&env, &missing).await;
            run.code(2);
            assert!(took < Duration::from_secs(5), "took {took:?}");
            assert!(
                run.stderr.contains("notify_no_such_database")
                    && run.stderr.contains("does not exist"),
                "{}",
                run.stderr
            );
            // A server that is not there: a run that could not finish (exit 1), said at once.
            let down = format!(
                "postgres://postgres@127.0.0.1:{}/notify",
                crate::harness::free_port()
            );
            let (run, took) = list_with(&env, &down).await;
            run.code(1);
            assert!(took < Duration::from_secs(5), "took {took:?}");
            assert!(
                run.stderr.contains("cannot reach the database"),
                "{}",
                run.stderr
            );
            assert!(!run.stderr.contains("\u{1b}["), "{}", run.stderr);
        }
    }
    if b == Backend::Postgres {
        // The configured database was not touched by any of it.
        assert_eq!(tables(&env, b).await, Vec::<String>::new());
    }
    env.cleanup().await;
}
both!(a_file_that_is_not_a_database_is_refused_at_once);

/// Another application's database (tables notify does not know, no record of notify's
/// migrations) is never migrated into; notify's own database with an extra table still opens.
async fn a_foreign_database_is_never_migrated_into(b: Backend) {
    let env = Env::new(b).await;
    let create = "CREATE TABLE orders (id INTEGER PRIMARY KEY, total INTEGER)";
    match b {
        Backend::Sqlite => {
            let path = env.path().join("notify.db");
            let mut conn =
                sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", path.display()))
                    .await
                    .unwrap();
            sqlx::query(create).execute(&mut conn).await.unwrap();
            sqlx::query("INSERT INTO orders VALUES (1, 42)")
                .execute(&mut conn)
                .await
                .unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query(create).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    let file_before = std::fs::read(env.path().join("notify.db")).ok();
    let files_before = tree(env.path());
    for args in [
        vec!["contacts", "list"],
        vec!["contacts", "import", "contacts.csv"],
        vec!["release-notes", "v3.12.0"],
    ] {
        let t = Instant::now();
        let run = env.run(&args).await;
        run.code(2);
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(
            run.stderr.contains("another application") && run.stderr.contains("orders"),
            "{args:?}: {}",
            run.stderr
        );
        assert_eq!(
            tables(&env, b).await,
            vec!["orders".to_string()],
            "{args:?}"
        );
        assert_eq!(tree(env.path()), files_before, "{args:?}");
        assert_eq!(
            std::fs::read(env.path().join("notify.db")).ok(),
            file_before,
            "{args:?}"
        );
    }
    env.cleanup().await;

    // notify's own database with a table someone added beside notify's is still notify's.
    let env = Env::new(b).await;
    env.run(&["contacts", "import", "contacts.csv"]).await.ok();
    match b {
        Backend::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query(create).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
        Backend::Postgres => {
            let mut conn = sqlx::PgConnection::connect(&env.database_url)
                .await
                .unwrap();
            sqlx::query(create).execute(&mut conn).await.unwrap();
            conn.close().await.unwrap();
        }
    }
    env.run(&["contacts", "list"]).await.ok();
    env.cleanup().await;
}
both!(a_foreign_database_is_never_migrated_into);

/// Four runs started at once on a brand-new database all succeed: they take turns at the
/// migrations and at the contacts sync. Repeated, since a race does not show every time.
async fn first_runs_at_the_same_moment_all_succeed(b: Backend) {
    let sample = std::fs::read_to_string(Path::new(REPO).join("contacts/moped_users.csv")).unwrap();
    let expected = notify::contacts::parse(sample.as_bytes()).unwrap().len();
    for round in 0..4 {
        let env = Env::new(b).await;
        let children: Vec<_> = (0..4)
            .map(|_| env.spawn(&["contacts", "import", "contacts.csv", "--format", "json"]))
            .collect();
        for (i, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().await.unwrap();
            assert!(
                out.status.success(),
                "round {round}, run {i}: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let list = env.run(&["contacts", "list", "--format", "json"]).await;
        list.ok();
        let rows: Vec<serde_json::Value> = serde_json::from_str(&list.stdout).unwrap();
        assert_eq!(rows.len(), expected, "round {round}");
        env.cleanup().await;
    }
}
both!(first_runs_at_the_same_moment_all_succeed);

/// A time `minutes` from now, as RFC 3339 UTC (which notify reads in any zone).
fn from_now(minutes: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::minutes(minutes))
        .format("%Y-%m-%dT%H:%M:00Z")
        .to_string()
}

async fn windows_in_the_past_need_allow_past(b: Backend) {
    let env = Env::new(b).await;
    let before = tree(env.path());
    let (ago3h, ago2h, ago1h) = (from_now(-180), from_now(-120), from_now(-60));
    let (in1d, in1d2h) = (from_now(24 * 60), from_now(26 * 60));
    let refused: [(Vec<&str>, &str); 5] = [
        (
            vec!["maintenance-scheduled", "--start", &ago3h, "--end", &ago2h],
            "--end",
        ),
        (
            vec!["maintenance-scheduled", "--start", &ago1h, "--end", &in1d],
            "--start",
        ),
        (
            vec!["maintenance-start", "--start", &ago3h, "--until", &ago1h],
            "--until",
        ),
        (vec!["maintenance-start", "--until", &ago1h], "--until"),
        (
            // No --until: the end is --start + maintenance_minutes (60), two hours ago.
            vec!["maintenance-start", "--start", &ago3h],
            "maintenance_minutes",
        ),
    ];
    for (args, flag) in &refused {
        let run = env.run(args).await;
        run.code(2);
        assert!(
            run.stderr.contains(flag)
                && run.stderr.contains("already passed")
                && run.stderr.contains("America/Chicago")
                && run.stderr.contains("--allow-past"),
            "{args:?}: {}",
            run.stderr
        );
        nothing_written(&env, b, &before, &format!("{args:?}")).await;
    }
    // The time is shown as read in the configured zone.
    let run = env
        .run(&[
            "maintenance-scheduled",
            "--start",
            "2020-07-01 17:00",
            "--end",
            "2020-07-01 19:00",
        ])
        .await;
    run.code(2);
    assert!(
        run.stderr
            .contains("Wednesday, July 1, 2020 at 7:00 PM CDT (America/Chicago)"),
        "{}",
        run.stderr
    );

    // A window ahead is sent as ever; with --allow-past a past one is sent too.
    env.run(&["maintenance-scheduled", "--start", &in1d, "--end", &in1d2h])
        .await
        .ok();
    // Once a window is scheduled, a start without --until expects Moped back when the window
    // ends (a day from now), not at --start + maintenance_minutes: nothing has passed.
    let run = env.run(&["maintenance-start", "--start", &ago3h]).await;
    run.ok();
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
    for (args, _) in &refused[..3] {
        let mut args = args.clone();
        args.push("--allow-past");
        env.run(&args).await.ok();
    }
    let status = env.run(&["status", "--format", "json"]).await;
    status.ok();
    let all: Vec<serde_json::Value> = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(all.len(), 4, "{}", status.stdout);
    env.cleanup().await;
}
both!(windows_in_the_past_need_allow_past);

async fn rates_below_one_an_hour_are_refused(b: Backend) {
    let mut env = Env::new(b).await;
    let before = tree(env.path());
    for (args, origin) in [
        (
            vec!["--rate", "0.0001", "release-notes", "v3.12.0"],
            "flag --rate",
        ),
        (vec!["--rate=-1", "release-notes", "v3.12.0"], "flag --rate"),
        (vec!["--rate", "NaN", "contacts", "list"], "flag --rate"),
        (vec!["--rate", "inf", "contacts", "list"], "flag --rate"),
    ] {
        let run = env.run(&args).await;
        run.code(2);
        assert!(
            run.stderr.contains("`rate`") && run.stderr.contains(origin),
            "{args:?}: {}",
            run.stderr
        );
        nothing_written(&env, b, &before, &format!("{args:?}")).await;
    }
    let run = env.run(&["--rate", "0.0001", "contacts", "list"]).await;
    assert!(
        run.stderr.contains("less than one an hour"),
        "{}",
        run.stderr
    );

    env.env("NOTIFY_RATE", "1e-9");
    let run = env.run(&["contacts", "list"]).await;
    run.code(2);
    assert!(
        run.stderr.contains("NOTIFY_RATE") && run.stderr.contains("one an hour"),
        "{}",
        run.stderr
    );
    nothing_written(&env, b, &before, "NOTIFY_RATE").await;

    // 0 is no limit, and one an hour is allowed.
    env.run(&["--rate", "0", "contacts", "list"]).await.ok();
    env.run(&["--rate", "0.0003", "contacts", "list"])
        .await
        .ok();
    env.cleanup().await;
}
both!(rates_below_one_an_hour_are_refused);
