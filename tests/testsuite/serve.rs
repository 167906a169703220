//! `notify serve` as a process: it answers `/healthz` while the database does, logs a line per
//! request, and stops cleanly on SIGTERM; then the pages in a real browser (headless chromium
//! through chromedriver): the archive, its feed link, the review behind the admin token, a
//! contact resolved from the page.

use crate::both;
use crate::harness::{outbox_message_id, returned_dsn, Backend, Env};
use crate::support::webdriver::Browser;

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(notify::net::client_config(None).expect("tls"))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

async fn serve_answers_healthz_and_stops_cleanly_on_sigterm(b: Backend) {
    let env = Env::new(b).await;
    let mut served = env.serve().await;
    let r = http()
        .get(format!("{}/healthz", served.base))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok\n");
    let nothing = http()
        .get(format!("{}/no/such/page", served.base))
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 404);
    // SIGTERM: the server finishes and exits 0.
    let pid = served.child.id().expect("pid");
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(std::time::Duration::from_secs(20), served.child.wait())
        .await
        .expect("notify serve stops within 20 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "{status:?}");
    env.cleanup().await;
}
both!(serve_answers_healthz_and_stops_cleanly_on_sigterm);

/// The admin in a real browser: the review is behind the login form; with the token it shows
/// the flagged contact; resolving it from the page takes it off the review. Screenshots of each
/// step go to target/browser/.
async fn the_admin_signs_in_and_resolves_a_contact_in_a_browser(b: Backend) {
    let mut env = Env::new(b).await;
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let gone = "james.obrien@austintexas.gov";
    let bounce = env.path().join("bounce.eml");
    std::fs::write(
        &bounce,
        returned_dsn(gone, &outbox_message_id(&env.outbox(), gone)),
    )
    .unwrap();
    env.import_bounces(&[bounce.to_str().unwrap()]).await.ok();
    let token = "browser-test-t0ken";
    env.env("NOTIFY_ADMIN_TOKEN", token);
    let served = env.serve().await;
    let browser = Browser::start().await;

    // Without signing in, the review sends the browser to the login form.
    browser.go(&format!("{}/bounces", served.base)).await;
    assert!(
        browser.url().await.ends_with("/login"),
        "{}",
        browser.url().await
    );
    assert!(!browser.source().await.contains(gone));
    assert!(browser.screenshot(&format!("{b:?}-1-login")).await > 1000);
    // A wrong token is refused.
    browser.type_into("#token", "not-the-token").await;
    browser.click("form[action=\"/login\"] button").await;
    assert!(!browser.source().await.contains(gone));
    // The right one opens the review, with the flagged contact.
    browser.go(&format!("{}/login", served.base)).await;
    browser.type_into("#token", token).await;
    browser.click("form[action=\"/login\"] button").await;
    let page = browser.source_when(|p| p.contains(gone)).await;
    assert!(page.contains(gone), "{page}");
    assert!(page.contains("<svg"), "the chart is drawn");
    assert!(browser.screenshot(&format!("{b:?}-2-review")).await > 1000);
    // Resolve it from the page: it leaves the review.
    browser
        .type_into("form.resolve input[name=note]", "deactivated in Moped")
        .await;
    browser.click("form.resolve button").await;
    let resolved = format!("value=\"{gone}\"");
    let page = browser.source_when(|p| !p.contains(&resolved)).await;
    assert!(
        browser.url().await.contains("/bounces"),
        "{}",
        browser.url().await
    );
    assert!(!page.contains(&resolved), "{page}");
    assert!(browser.screenshot(&format!("{b:?}-3-resolved")).await > 1000);
    let report = env.run(&["bounces", "report", "--format", "json"]).await;
    assert!(!report.stdout.contains(gone), "{}", report.stdout);
    browser.quit().await;
    drop(served);
    env.cleanup().await;
}
both!(the_admin_signs_in_and_resolves_a_contact_in_a_browser);

/// A reader in a real browser: the archive lists the releases, a release opens its notes, and the
/// feed link leads to a valid Atom feed with one entry per release.
#[tokio::test]
async fn a_reader_opens_the_archive_a_release_and_its_feed_in_a_browser() {
    let env = Env::new(Backend::Sqlite).await;
    let served = env.serve().await;
    let browser = Browser::start().await;
    browser.go(&format!("{}/releases", served.base)).await;
    let index = browser.source().await;
    for v in ["v3.12.0", "v3.11.0", "v3.10.0", "v3.0.0", "v2.45.0"] {
        assert!(index.contains(v), "{v} not listed:\n{index}");
    }
    assert!(
        index.find("v3.12.0") < index.find("v3.11.0"),
        "newest first:\n{index}"
    );
    assert!(browser.screenshot("archive-1-index").await > 1000);
    // Open the newest release from its link.
    browser.click("li a").await;
    assert!(
        browser.url().await.contains("v3.12.0"),
        "{}",
        browser.url().await
    );
    let page = browser.source().await;
    assert!(page.contains("Goliad"), "{page}");
    assert!(!page.contains("Hi "), "no greeting on the page:\n{page}");
    assert!(browser.screenshot("archive-2-release").await > 1000);
    // Follow the feed link in the footer.
    let feed_href = browser
        .attribute("footer a", "href")
        .await
        .expect("the feed link");
    let feed_url = if feed_href.starts_with("http") {
        feed_href
    } else {
        format!("{}{}", served.base, feed_href)
    };
    let feed = http().get(&feed_url).send().await.expect("GET the feed");
    assert_eq!(feed.status(), 200);
    assert!(feed.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/atom+xml"));
    let xml = feed.text().await.unwrap();
    assert!(
        xml.starts_with("<?xml") && xml.contains("<feed xmlns=\"http://www.w3.org/2005/Atom\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<entry>").count(), 5, "{xml}");
    browser.quit().await;
    drop(served);
    env.cleanup().await;
}
