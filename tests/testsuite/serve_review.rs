//! `notify serve`'s bounce review, through its routes (`tower::ServiceExt::oneshot` on the real
//! router, on a database filled by the real CLI: a notice sent to the outbox, bounces imported
//! from a Maildir with Message-ID attribution): refused without the admin token or with a wrong
//! one, usable with a bearer token or the login form's session cookie, every POST of a session
//! checked for its CSRF token, a resolved contact gone from the review, hostile text escaped,
//! the chart drawn.

use std::path::Path;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use tower::ServiceExt as _;

use crate::both;
use crate::harness::{outbox_message_id, Backend, Env, REPO};

const TOKEN: &str = "t0ken";
const HOSTILE: &str = "hostile.name@example.org";
const PLAIN: &str = "plain.person@example.org";
const UNVERIFIED: &str = "only.address@example.org";

fn contacts() -> String {
    let header = "user_id,first_name,last_name,email,title,workgroup,roles,is_coa_staff,is_deleted,is_user_group_member,note,date_added,last_seen_date\n";
    format!(
        "{header}\
1,<script>alert(1)</script>,\"O'Neil \"\"x\"\"\",{HOSTILE},Planner,Signs & <b>Markings</b>,\"[\"\"moped-editor\"\"]\",false,false,true,,,\n\
2,Plain,Person,{PLAIN},Planner,Parking,\"[\"\"moped-editor\"\"]\",false,false,true,,,\n\
3,Only,Address,{UNVERIFIED},Planner,Parking,\"[\"\"moped-editor\"\"]\",false,false,true,,,\n"
    )
}

/// A Postfix-shaped DSN reporting `rcpt` failed, with the original's Message-ID if given.
fn dsn(
    rcpt: &str,
    status: &str,
    diag: &str,
    original_message_id: Option<&str>,
    n: usize,
) -> String {
    let original = original_message_id
        .map(|m| format!("Message-ID: {m}\r\n"))
        .unwrap_or_default();
    format!(
        "Return-Path: <>\r\nFrom: MAILER-DAEMON@mx.example.org (Mail Delivery System)\r\n\
To: moped-bounces@austintexas.gov\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: Thu, 03 Dec 2026 17:20:00 -0600\r\n\
Message-ID: <{n}.bounce@mx.example.org>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\r\n\r\n\
--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n\
Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\nRemote-MTA: dns; mbx.example.org\r\n\
Diagnostic-Code: smtp; {diag}\r\n\r\n--B\r\nContent-Type: text/rfc822-headers\r\n\r\n\
From: Moped Team <moped@austintexas.gov>\r\nTo: {rcpt}\r\nSubject: Moped release notes\r\n{original}\r\n--B--\r\n",
    )
}

/// Send the release notes to the outbox, then import bounces: the hostile contact and the plain
/// one flagged (returned Message-IDs, verified), a third with an unverified bounce.
async fn flagged_env(b: Backend) -> Env {
    let env = Env::with_contacts(b, &contacts()).await;
    env.run(&["release-notes", "v3.12.0"]).await.ok();
    let outbox = env.outbox();
    let md = env.path().join("Maildir");
    for sub in ["new", "cur", "tmp"] {
        std::fs::create_dir_all(md.join(sub)).unwrap();
    }
    let messages = [
        dsn(
            HOSTILE,
            "5.1.1",
            "550 5.1.1 <img src=x onerror=alert(2)> User unknown",
            Some(&outbox_message_id(&outbox, HOSTILE)),
            1,
        ),
        dsn(
            PLAIN,
            "5.1.1",
            "550 5.1.1 User unknown",
            Some(&outbox_message_id(&outbox, PLAIN)),
            2,
        ),
        dsn(UNVERIFIED, "5.1.1", "550 5.1.1 User unknown", None, 3),
    ];
    for (i, m) in messages.iter().enumerate() {
        std::fs::write(md.join("new").join(format!("17000000{i}.M1P1.test")), m).unwrap();
    }
    let run = env.import_bounces(&[md.to_str().unwrap()]).await;
    run.ok();
    let s = run.summary();
    assert_eq!(s["flagged"].as_array().map(Vec::len), Some(2), "{s}");
    assert_eq!(s["unverified"], 1, "{s}");
    env
}

async fn state(env: &Env, token: Option<&str>) -> notify::serve::AppState {
    let cfg = notify::config::Config::load(
        &Path::new(REPO).join("notify.toml"),
        true,
        &Default::default(),
        &notify::config::Overrides {
            database_url: Some(env.database_url.clone()),
            ..Default::default()
        },
    )
    .expect("config");
    notify::serve::AppState::new(cfg, env.store().await, token.map(str::to_string)).expect("state")
}

struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: header::HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn cookies(&self) -> Vec<&str> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }

    /// The value of the first `name="csrf" value="..."` of the page.
    fn csrf(&self) -> String {
        let at = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.body));
        let rest = &self.body[at + "name=\"csrf\" value=\"".len()..];
        rest[..rest.find('"').unwrap()].to_string()
    }
}

async fn call(state: &notify::serve::AppState, req: Request<Body>) -> Answer {
    let res: Response<Body> = notify::serve::router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .expect("body");
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn get(uri: &str) -> axum::http::request::Builder {
    Request::get(uri)
}

fn form(uri: &str) -> axum::http::request::Builder {
    Request::post(uri).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// The `name=value` of a `Set-Cookie`.
fn cookie_pair(set_cookie: &str) -> &str {
    set_cookie.split(';').next().unwrap().trim()
}

/// Sign in with the login form; the session's `Cookie` header value.
async fn sign_in(state: &notify::serve::AppState) -> String {
    let login = call(state, get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(login.status, StatusCode::OK);
    let nonce_cookie = cookie_pair(login.cookies()[0]).to_string();
    let body = format!("token={TOKEN}&csrf={}", login.csrf());
    let done = call(
        state,
        form("/login")
            .header(header::COOKIE, &nonce_cookie)
            .body(Body::from(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    let session = done
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("notify_session="))
        .expect("a session cookie")
        .to_string();
    cookie_pair(&session).to_string()
}

async fn review_refused_without_the_token_usable_with_it(b: Backend) {
    let env = flagged_env(b).await;
    let st = state(&env, Some(TOKEN)).await;

    // No credentials: a browser is sent to the login form, anything else is answered 401; the
    // review's data never shows.
    for uri in [
        "/bounces",
        "/bounces/contact/1",
        "/bounces?workgroup=Parking",
    ] {
        let browser = call(
            &st,
            get(uri)
                .header(header::ACCEPT, "text/html,application/xhtml+xml")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(browser.status, StatusCode::SEE_OTHER, "{uri}");
        assert_eq!(browser.header(header::LOCATION), Some("/login"));
        let other = call(&st, get(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(other.status, StatusCode::UNAUTHORIZED, "{uri}");
        for a in [&browser, &other] {
            assert!(!a.body.contains(PLAIN) && !a.body.contains(HOSTILE));
        }
    }
    let post = call(
        &st,
        form("/bounces/resolve")
            .body(Body::from(format!("email={}&note=x&csrf=", enc(PLAIN))))
            .unwrap(),
    )
    .await;
    assert_eq!(post.status, StatusCode::UNAUTHORIZED);

    // A wrong bearer token, another scheme, a made-up session cookie: refused.
    for auth in ["Bearer wrong", "Bearer t0ken2", "Bearer ", "Basic dDBrZW4="] {
        let a = call(
            &st,
            get("/bounces")
                .header(header::AUTHORIZATION, auth)
                .header(header::ACCEPT, "text/html")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{auth}");
        assert!(!a.body.contains(PLAIN));
    }
    let forged = call(
        &st,
        get("/bounces")
            .header(
                header::COOKIE,
                format!("notify_session=9999999999.00.{}", "ab".repeat(32)),
            )
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(forged.status, StatusCode::UNAUTHORIZED);
    let token_as_cookie = call(
        &st,
        get("/bounces")
            .header(header::COOKIE, format!("notify_session={TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(token_as_cookie.status, StatusCode::UNAUTHORIZED);

    // A complaint (a signed SES message would record it so): shown in its own section.
    let store = env.store().await;
    let complaint = notify::intake::sns::Complaint {
        recipients: vec!["<i>complainer</i>@example.org".into()],
        feedback_type: Some("abuse<u>".into()),
        original_message_id: None,
        occurred_at: None,
    };
    notify::ledger::record_complaint(&store, "sns:test-1", "sns:test-1", b"{}", &complaint)
        .await
        .expect("record a complaint");
    store.close().await;

    // The bearer token: the review, escaped, with the chart and the history.
    let page = call(
        &st,
        get("/bounces")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.header(header::CACHE_CONTROL), Some("no-store"));
    assert!(page
        .header(header::CONTENT_SECURITY_POLICY)
        .is_some_and(|c| c.contains("frame-ancestors 'none'")));
    let html = &page.body;
    assert!(html.contains("<meta name=\"viewport\""));
    assert!(html.contains("2 accounts to update"), "{html}");
    for e in [PLAIN, HOSTILE, UNVERIFIED] {
        assert!(html.contains(e), "{e}");
    }
    assert!(!html.contains("<script") && !html.contains("<img") && !html.contains("<b>"));
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"),
        "{html}"
    );
    assert!(html.contains("Signs &amp; &lt;b&gt;Markings&lt;&#x2F;b&gt;"));
    assert!(html.contains("&lt;img src=x onerror=alert(2)&gt; User unknown"));
    assert!(html.contains("<svg") && html.contains("<rect"), "the chart");
    assert!(
        html.contains("release-notes&#x2F;v3.12.0"),
        "the notice's bar label"
    );
    assert!(html.contains("<details><summary>History and diagnostics</summary>"));
    assert!(html.contains("Reporting-MTA") || html.contains("matched by message-id"));
    let unverified_at = html.find("Unverified bounces").expect("own section");
    assert!(html[unverified_at..].contains(UNVERIFIED));
    assert!(!html[..unverified_at].contains(UNVERIFIED));
    let complaints_at = html
        .find("Complaints (reported as spam")
        .expect("complaints");
    assert!(html[complaints_at..].contains("&lt;i&gt;complainer&lt;&#x2F;i&gt;@example.org"));
    assert!(html[complaints_at..].contains("abuse&lt;u&gt;"));
    assert!(!html.contains("<i>") && !html.contains("<u>"));

    // Filters.
    let filtered = |q: &'static str| {
        let st = st.clone();
        async move {
            call(
                &st,
                get(&format!("/bounces?{q}"))
                    .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
        }
    };
    let parking = filtered("workgroup=Parking").await;
    assert_eq!(parking.status, StatusCode::OK);
    assert!(parking.body.contains(PLAIN) && !parking.body.contains(HOSTILE));
    assert!(
        parking.body.contains("1 account to update (of 2 flagged)"),
        "{}",
        parking.body
    );
    // The reason filter lists today's names, each with its action, and no earlier name.
    assert!(
        html.contains("<option value=\"userunknown\">userunknown (deactivate in Moped)</option>"),
        "{html}"
    );
    assert!(html
        .contains("<option value=\"filtered\">filtered (ask IT to let our mail through)</option>"));
    assert!(
        html.contains("<option value=\"hasmoved\">hasmoved (fix the address in Moped)</option>")
    );
    assert!(!html.contains("value=\"user-unknown\"") && !html.contains("value=\"mailbox-full\""));
    // Each flagged account shows its reason's action, and the page says what the four mean.
    assert!(
        html.contains("<dt>Action</dt><dd><strong>deactivate in Moped</strong>"),
        "{html}"
    );
    assert!(html.contains("<summary>What the actions mean</summary>"));
    // Today's names and the earlier ones (old links) filter alike.
    for q in [
        "reason=mailboxfull",
        "reason=mailbox-full",
        "reason=MailboxFull",
    ] {
        let full = filtered(q).await;
        assert_eq!(full.status, StatusCode::OK, "{q}");
        assert!(
            !full.body.contains(PLAIN) && !full.body.contains(HOSTILE),
            "{q}"
        );
        assert!(
            full.body
                .contains("<option value=\"mailboxfull\" selected>"),
            "{q}"
        );
    }
    let full = filtered("reason=mailbox-full").await;
    assert!(full
        .body
        .contains("No verified bounces of a notice match the filters"));
    assert!(
        !full.body.contains("Complaints (reported as spam"),
        "complaints have no reason of their own"
    );
    let later = filtered("since=2099-01-01").await;
    assert!(later.body.contains("No accounts need an update"));
    assert!(!later.body.contains(PLAIN));
    for q in [
        "since=2000-01-01&reason=user-unknown&workgroup=",
        "since=2000-01-01&reason=userunknown&workgroup=",
    ] {
        let earlier = filtered(q).await;
        assert!(
            earlier.body.contains(PLAIN) && earlier.body.contains(HOSTILE),
            "{q}"
        );
        assert!(earlier
            .body
            .contains("<option value=\"userunknown\" selected>"));
    }
    for bad in ["since=yesterday", "reason=%3Cscript%3E"] {
        let a = filtered(bad).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}");
        // Plain text that no browser renders as HTML.
        assert_eq!(
            a.header(header::CONTENT_TYPE),
            Some("text/plain; charset=utf-8")
        );
        assert_eq!(a.header(header::X_CONTENT_TYPE_OPTIONS), Some("nosniff"));
    }

    // A contact's page: its history with the raw source of the bounce.
    let at = html.find("/bounces/contact/").unwrap() + "/bounces/contact/".len();
    let id: String = html[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    let contact = call(
        &st,
        get(&format!("/bounces/contact/{id}"))
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(contact.status, StatusCode::OK);
    assert!(contact.body.contains("Reporting-MTA: dns; mx.example.org"));
    assert!(contact.body.contains("flagged"));
    assert!(
        contact.body.contains(
            "<strong>needs an update</strong>: <strong>deactivate in Moped</strong> (userunknown, hard, 5.1.1)"
        ),
        "{}",
        contact.body
    );
    assert!(contact
        .body
        .contains("<strong>hard userunknown</strong> (5.1.1), permanent"));
    let none = call(
        &st,
        get("/bounces/contact/999999")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);

    env.cleanup().await;
}
both!(review_refused_without_the_token_usable_with_it);

async fn login_session_csrf_and_resolve(b: Backend) {
    let env = flagged_env(b).await;
    let st = state(&env, Some(TOKEN)).await;

    // The login form sets its nonce cookie; a POST without it, or with a wrong token, fails.
    let login = call(&st, get("/login").body(Body::empty()).unwrap()).await;
    assert_eq!(login.status, StatusCode::OK);
    assert!(login.body.contains("type=\"password\""));
    let nonce_cookie = login.cookies()[0].to_string();
    assert!(nonce_cookie.starts_with("notify_login=") && nonce_cookie.contains("HttpOnly"));
    let nonce = login.csrf();
    let no_nonce = call(
        &st,
        form("/login")
            .body(Body::from(format!("token={TOKEN}&csrf={nonce}")))
            .unwrap(),
    )
    .await;
    assert_eq!(no_nonce.status, StatusCode::FORBIDDEN);
    assert!(no_nonce
        .cookies()
        .iter()
        .all(|c| !c.starts_with("notify_session")));
    let wrong = call(
        &st,
        form("/login")
            .header(header::COOKIE, cookie_pair(&nonce_cookie))
            .body(Body::from(format!("token=wrong&csrf={nonce}")))
            .unwrap(),
    )
    .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert!(wrong.body.contains("That is not the admin token."));
    assert!(wrong
        .cookies()
        .iter()
        .all(|c| !c.starts_with("notify_session")));

    // The right token: a session cookie that is HttpOnly, SameSite=Strict, for the whole site,
    // and not the token; Secure when the request came over HTTPS.
    let ok = call(
        &st,
        form("/login")
            .header(header::COOKIE, cookie_pair(&nonce_cookie))
            .body(Body::from(format!("token={TOKEN}&csrf={nonce}")))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.status, StatusCode::SEE_OTHER);
    assert_eq!(ok.header(header::LOCATION), Some("/bounces"));
    let set = ok
        .cookies()
        .into_iter()
        .find(|c| c.starts_with("notify_session="))
        .expect("session cookie")
        .to_string();
    for part in ["HttpOnly", "SameSite=Strict", "Path=/;"] {
        assert!(set.contains(part), "{part} in {set}");
    }
    assert!(!set.contains("Secure"), "plain HTTP: {set}");
    assert!(!set.contains(TOKEN), "{set}");
    let secure = call(
        &st,
        form("/login")
            .header(header::COOKIE, cookie_pair(&nonce_cookie))
            .header("x-forwarded-proto", "https")
            .body(Body::from(format!("token={TOKEN}&csrf={nonce}")))
            .unwrap(),
    )
    .await;
    assert!(secure
        .cookies()
        .iter()
        .any(|c| c.starts_with("notify_session=") && c.contains("; Secure")));

    let session = sign_in(&st).await;
    let page = call(
        &st,
        get("/bounces")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains(PLAIN));
    let csrf = page.csrf();
    assert!(!csrf.is_empty());

    // POSTs of a session without their CSRF token, or with another one: 403, nothing changes.
    for body in [
        format!("email={}&note=done", enc(PLAIN)),
        format!("email={}&note=done&csrf=", enc(PLAIN)),
        format!("email={}&note=done&csrf={}", enc(PLAIN), "0".repeat(64)),
    ] {
        let a = call(
            &st,
            form("/bounces/resolve")
                .header(header::COOKIE, &session)
                .body(Body::from(body.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{body}");
    }
    let other_session = sign_in(&st).await;
    let crossed = call(
        &st,
        form("/bounces/resolve")
            .header(header::COOKIE, &other_session)
            .body(Body::from(format!(
                "email={}&note=x&csrf={csrf}",
                enc(PLAIN)
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(
        crossed.status,
        StatusCode::FORBIDDEN,
        "a CSRF token belongs to one session"
    );
    let store = env.store().await;
    assert!(
        store
            .contact_by_email(PLAIN)
            .await
            .unwrap()
            .unwrap()
            .needs_update
    );

    // With it: 303 back to the review, and the contact has left it.
    let note = "Deactivated in Moped <b>& noted</b>";
    let done = call(
        &st,
        form("/bounces/resolve")
            .header(header::COOKIE, &session)
            .body(Body::from(format!(
                "email={}&note={}&csrf={csrf}",
                enc(PLAIN),
                enc(note)
            )))
            .unwrap(),
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(done.header(header::LOCATION), Some("/bounces"));
    assert!(
        !store
            .contact_by_email(PLAIN)
            .await
            .unwrap()
            .unwrap()
            .needs_update
    );
    let after = call(
        &st,
        get("/bounces")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(after.body.contains("1 account to update"), "{}", after.body);
    assert!(!after.body.contains(PLAIN));
    assert!(after.body.contains(HOSTILE));
    let history = notify::ledger::history(&store, PLAIN).await.unwrap();
    assert_eq!(history.events.last().unwrap().note, note);
    let id = history.contact.unwrap().id;
    let contact = call(
        &st,
        get(&format!("/bounces/contact/{id}"))
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert!(contact
        .body
        .contains("Deactivated in Moped &lt;b&gt;&amp; noted&lt;&#x2F;b&gt;"));

    // A bearer request needs no CSRF token (a browser never sends that header by itself);
    // an unknown address is 404.
    let unknown = call(
        &st,
        form("/bounces/resolve")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .body(Body::from("email=nobody%40example.org&note=x"))
            .unwrap(),
    )
    .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);

    // Sign out: needs the CSRF token too, and clears the cookie.
    let out = call(
        &st,
        form("/logout")
            .header(header::COOKIE, &session)
            .body(Body::from(format!("csrf={csrf}")))
            .unwrap(),
    )
    .await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    assert!(out
        .cookies()
        .iter()
        .any(|c| c.starts_with("notify_session=;") && c.contains("Max-Age=0")));

    // Another server with another token does not accept this session.
    let other = state(&env, Some("another")).await;
    let refused = call(
        &other,
        get("/bounces")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    // A second replica with the same token does.
    let replica = state(&env, Some(TOKEN)).await;
    let shared = call(
        &replica,
        get("/bounces")
            .header(header::COOKIE, &session)
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(shared.status, StatusCode::OK);
    store.close().await;
    env.cleanup().await;
}
both!(login_session_csrf_and_resolve);

/// Without an admin token nobody gets in: not by bearer, not through the login form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_the_review_is_closed() {
    let env = flagged_env(Backend::Sqlite).await;
    let st = state(&env, None).await;
    for auth in ["Bearer t0ken", "Bearer ", "Bearer x"] {
        let a = call(
            &st,
            get("/bounces")
                .header(header::AUTHORIZATION, auth)
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
        assert!(!a.body.contains(PLAIN));
    }
    let login = call(&st, get("/login").body(Body::empty()).unwrap()).await;
    let nonce_cookie = cookie_pair(login.cookies()[0]).to_string();
    let csrf = login.csrf();
    for token in ["", "t0ken", "anything"] {
        let a = call(
            &st,
            form("/login")
                .header(header::COOKIE, &nonce_cookie)
                .body(Body::from(format!("token={token}&csrf={csrf}")))
                .unwrap(),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(a.cookies().iter().all(|c| !c.starts_with("notify_session")));
    }
    // A session cookie made with some token is worth nothing here.
    let made = notify::serve::review::Keys::from_token("t0ken")
        .new_session(chrono::Utc::now().timestamp(), [0; 16]);
    let a = call(
        &st,
        get("/bounces")
            .header(header::COOKIE, format!("notify_session={made}"))
            .header(header::ACCEPT, "text/html")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::SEE_OTHER);
    assert_eq!(a.header(header::LOCATION), Some("/login"));
    env.cleanup().await;
}
