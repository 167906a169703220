//! `notify serve`'s release-notes archive: the routes through the real router (no socket), with
//! the shipped release notes copied into a scratch folder so hostile files can sit beside them;
//! the traversal attempts a request can make; and `notify archive build DIR` run as the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use notify::config::{Config, Overrides};
use notify::serve::{router, AppState};
use tower::ServiceExt;

use crate::harness::{Backend, Env, REPO};

const ATOM: &str = "http://www.w3.org/2005/Atom";

/// A scratch folder with a copy of the shipped releases, a file outside them that a symlink in
/// them points at, and the database.
struct Site {
    tmp: tempfile::TempDir,
    cfg: Config,
}

impl Site {
    fn new() -> Site {
        let tmp = tempfile::tempdir().expect("tempdir");
        let releases = tmp.path().join("releases");
        std::fs::create_dir_all(&releases).unwrap();
        for (_, path) in notify::release::known_versions(&Path::new(REPO).join("releases")) {
            std::fs::copy(&path, releases.join(path.file_name().unwrap())).unwrap();
        }
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(
            outside.join("secret.md"),
            "---\nname: Secret\ndate: 2030-01-01\n---\nTOP-SECRET-NOTES\n",
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.join("secret.md"), releases.join("v9.0.0.md")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", releases.join("v9.1.0.md")).unwrap();
        let mut cfg = Config::load(
            &Path::new(REPO).join("notify.toml"),
            true,
            &BTreeMap::new(),
            &Overrides::default(),
        )
        .unwrap();
        cfg.releases = releases;
        cfg.archive_url = String::new();
        cfg.database_url = format!("sqlite://{}/n.db?mode=rwc", tmp.path().display());
        Site { tmp, cfg }
    }

    async fn router(&self) -> axum::Router {
        let store = notify::store::Store::open(&self.cfg.database_url)
            .await
            .expect("open store");
        router(AppState::new(self.cfg.clone(), store, None).unwrap())
    }
}

struct Answer {
    status: StatusCode,
    content_type: String,
    csp: Option<String>,
    body: String,
}

async fn get(app: &axum::Router, uri: &str, host: Option<&str>) -> Answer {
    let mut req = Request::builder().uri(uri);
    if let Some(h) = host {
        req = req.header(header::HOST, h);
    }
    let res = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let header = |name| {
        res.headers()
            .get(name)
            .map(|v: &header::HeaderValue| v.to_str().unwrap().to_string())
    };
    let content_type = header(header::CONTENT_TYPE).unwrap_or_default();
    let csp = header(header::CONTENT_SECURITY_POLICY);
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    Answer {
        status,
        content_type,
        csp,
        body: String::from_utf8(bytes.to_vec()).unwrap(),
    }
}

fn shipped_versions() -> Vec<String> {
    notify::release::known_versions(&Path::new(REPO).join("releases"))
        .into_iter()
        .rev()
        .map(|(v, _)| v.to_string())
        .collect()
}

#[tokio::test]
async fn the_index_lists_every_release_newest_first_and_links_the_feed() {
    let site = Site::new();
    let app = site.router().await;
    let a = get(&app, "/releases", Some("127.0.0.1:8025")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.content_type, "text/html; charset=utf-8");
    let csp = a.csp.unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert!(!a.body.contains("<script"), "no JavaScript: {}", a.body);
    assert!(a.body.contains("<meta name=\"viewport\""), "{}", a.body);
    assert!(
        a.body.contains(
            "<link rel=\"alternate\" type=\"application/atom+xml\" title=\"Moped release notes\" \
             href=\"http://127.0.0.1:8025/releases/feed.atom\">"
        ),
        "{}",
        a.body
    );
    let mut last = 0;
    for v in shipped_versions() {
        let at = a
            .body
            .find(&format!("href=\"http://127.0.0.1:8025/releases/{v}\""))
            .unwrap_or_else(|| panic!("{v} is not linked: {}", a.body));
        assert!(at > last, "{v} is out of order");
        last = at;
    }
    assert!(a.body.contains("Goliad") && a.body.contains("Thursday, August 6, 2026"));
    // The symlinks that lead out of the releases folder are not releases.
    assert!(
        !a.body.contains("v9.0.0") && !a.body.contains("Secret"),
        "{}",
        a.body
    );
    assert!(!a.body.contains("v9.1.0"), "{}", a.body);
    // Same with a trailing slash.
    assert_eq!(
        get(&app, "/releases/", Some("127.0.0.1:8025")).await.body,
        a.body
    );
}

#[tokio::test]
async fn a_release_page_answers_to_every_spelling_of_its_version() {
    let site = Site::new();
    let app = site.router().await;
    let first = get(&app, "/releases/v3.12.0", None).await;
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.content_type, "text/html; charset=utf-8");
    assert!(
        first.body.contains("<h1>Moped v3.12.0 “Goliad”</h1>"),
        "{}",
        first.body
    );
    // The notes as the email renders them, without the greeting.
    assert!(
        first
            .body
            .contains("<li>Bump <code>graphql-engine</code> endpoint version to 2.50.0 for local &amp; staging (#1916)</li>"),
        "{}",
        first.body
    );
    assert!(!first.body.contains("Hi "), "{}", first.body);
    // Without a usable Host, links stay on this server.
    assert!(
        first.body.contains("href=\"/releases/feed.atom\""),
        "{}",
        first.body
    );
    for spelling in [
        "/releases/3.12.0",
        "/releases/v3.12",
        "/releases/V3.12.0",
        "/releases/v.3.12.0",
    ] {
        let a = get(&app, spelling, None).await;
        assert_eq!(a.status, StatusCode::OK, "{spelling}");
        assert_eq!(a.body, first.body, "{spelling}");
    }
    for unknown in [
        "/releases/v9.9.9",
        "/releases/v3.12.0-rc1",
        "/releases/latest",
        "/releases/4",
    ] {
        assert_eq!(
            get(&app, unknown, None).await.status,
            StatusCode::NOT_FOUND,
            "{unknown}"
        );
    }
}

#[tokio::test]
async fn no_request_reaches_a_file_outside_the_known_releases() {
    let site = Site::new();
    let app = site.router().await;
    std::fs::write(
        site.tmp.path().join("notes.md"),
        "---\nname: Beside\n---\nBESIDE\n",
    )
    .unwrap();
    for uri in [
        "/releases/..%2F..%2F..%2Fetc%2Fpasswd",
        "/releases/..%2Fnotify.toml",
        "/releases/..%2foutside%2fsecret.md",
        "/releases/%2e%2e",
        "/releases/%2E%2E%2F%2E%2E%2Fnotes.md",
        "/releases/%2Fetc%2Fpasswd",
        "/releases/%2fetc%2fpasswd",
        "/releases/..",
        "/releases/../notes.md",
        "/releases/../../etc/passwd",
        "/releases//etc/passwd",
        "/releases/v3.12.0.md",
        "/releases/v3.12.0%2F..%2F..%2Fnotes.md",
        "/releases/v3.12.0%00",
        "/releases/%ff%fe",
        "/releases/%252e%252e%252fnotes.md",
        "/releases/feed.atom/../../notes.md",
        "/releases/v9.0.0",
        "/releases/9.0.0",
        "/releases/v9.1.0",
    ] {
        let a = get(&app, uri, None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{uri}: {}", a.body);
        for leaked in ["root:", "TOP-SECRET", "BESIDE", "database_url"] {
            assert!(!a.body.contains(leaked), "{uri} leaked {leaked}");
        }
    }
    let feed = get(&app, "/releases/feed.atom", None).await;
    assert!(!feed.body.contains("TOP-SECRET") && !feed.body.contains("root:"));
}

#[tokio::test]
async fn the_feed_is_atom_with_absolute_links() {
    let mut site = Site::new();
    let app = site.router().await;
    let a = get(&app, "/releases/feed.atom", Some("notes.example:8025")).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.content_type.starts_with("application/atom+xml"),
        "{}",
        a.content_type
    );
    let doc = roxmltree::Document::parse(&a.body).unwrap_or_else(|e| panic!("{e}: {}", a.body));
    let feed = doc.root_element();
    assert!(feed.has_tag_name((ATOM, "feed")));
    let links = |n: roxmltree::Node| -> Vec<(String, String)> {
        n.children()
            .filter(|c| c.has_tag_name((ATOM, "link")))
            .map(|l| {
                (
                    l.attribute("rel").unwrap_or_default().to_string(),
                    l.attribute("href").unwrap_or_default().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(
        links(feed),
        [
            (
                "self".to_string(),
                "http://notes.example:8025/releases/feed.atom".to_string()
            ),
            (
                "alternate".to_string(),
                "http://notes.example:8025/releases".to_string()
            ),
        ]
    );
    let entries: Vec<_> = feed
        .children()
        .filter(|c| c.has_tag_name((ATOM, "entry")))
        .collect();
    assert_eq!(entries.len(), shipped_versions().len());
    let title = |n: roxmltree::Node| {
        n.children()
            .find(|c| c.has_tag_name((ATOM, "title")))
            .and_then(|t| t.text())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(title(entries[0]), "v3.12.0 Goliad");
    assert_eq!(
        links(entries[0]),
        [(
            "alternate".to_string(),
            "http://notes.example:8025/releases/v3.12.0".to_string()
        )]
    );

    // With archive_url, every absolute link is under it, whatever the Host says.
    site.cfg.archive_url = "https://moped.austinmobility.io/releases".into();
    let app = site.router().await;
    let a = get(&app, "/releases/feed.atom", Some("evil.example")).await;
    assert!(!a.body.contains("evil.example"), "{}", a.body);
    assert!(
        a.body
            .contains("<link rel=\"self\" type=\"application/atom+xml\" href=\"https://moped.austinmobility.io/releases/feed.atom\"/>"),
        "{}",
        a.body
    );
    let page = get(&app, "/releases/v3.12", Some("evil.example")).await;
    assert!(
        page.body
            .contains("href=\"https://moped.austinmobility.io/releases/feed.atom\""),
        "{}",
        page.body
    );
}

/// Every `href="…"` in `html`.
fn hrefs(html: &str) -> Vec<String> {
    html.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn archive_build_writes_pages_that_work_from_files_and_a_valid_feed() {
    let env = Env::new(Backend::Sqlite).await;
    let run = env.run(&["archive", "build", "site/archive"]).await;
    run.ok();
    let out: PathBuf = env.path().join("site/archive");
    let versions = shipped_versions();
    assert!(
        run.stdout
            .contains(&format!("wrote {} file(s)", versions.len() + 2)),
        "{}",
        run.stdout
    );
    let index = std::fs::read_to_string(out.join("index.html")).unwrap();
    let mut pages = vec![out.join("index.html")];
    for v in &versions {
        pages.push(out.join(v).join("index.html"));
        assert!(
            index.contains(&format!("href=\"{v}/index.html\"")),
            "{index}"
        );
    }
    // Every link between the files leads to a file that is there.
    for page in &pages {
        let html = std::fs::read_to_string(page).unwrap();
        assert!(!html.contains("<script"), "{}", page.display());
        let local: Vec<String> = hrefs(&html)
            .into_iter()
            .filter(|h| !h.starts_with("http") && !h.starts_with("mailto:"))
            .collect();
        assert!(!local.is_empty(), "{}", page.display());
        for href in local {
            let target = page.parent().unwrap().join(&href);
            assert!(target.is_file(), "{}: {href} leads nowhere", page.display());
        }
    }
    let feed = std::fs::read_to_string(out.join("feed.atom")).unwrap();
    let doc = roxmltree::Document::parse(&feed).unwrap();
    let entries = doc
        .root_element()
        .children()
        .filter(|c| c.has_tag_name((ATOM, "entry")))
        .count();
    assert_eq!(entries, versions.len());
    let goliad = std::fs::read_to_string(out.join("v3.12.0/index.html")).unwrap();
    assert!(
        goliad.contains("<h1>Moped v3.12.0 “Goliad”</h1>"),
        "{goliad}"
    );

    // A folder that cannot be created is named, and the run fails.
    std::fs::write(env.path().join("taken"), "a file").unwrap();
    let run = env.run(&["archive", "build", "taken/archive"]).await;
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("taken/archive"), "{}", run.stderr);
    env.cleanup().await;
}

#[tokio::test]
async fn archive_build_links_the_feed_under_archive_url() {
    let mut env = Env::new(Backend::Sqlite).await;
    env.env(
        "NOTIFY_ARCHIVE_URL",
        "https://moped.austinmobility.io/releases/",
    );
    env.run(&["archive", "build", "out"]).await.ok();
    let feed = std::fs::read_to_string(env.path().join("out/feed.atom")).unwrap();
    assert!(
        feed.contains("href=\"https://moped.austinmobility.io/releases/v3.12.0\""),
        "{feed}"
    );
    let index = std::fs::read_to_string(env.path().join("out/index.html")).unwrap();
    assert!(index.contains("href=\"v3.12.0/index.html\""), "{index}");
    env.cleanup().await;
}
