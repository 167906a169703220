//! `notify contacts import|list`: sync semantics (added, updated, marked inactive, nothing
//! deleted) and the output formats.

use crate::both;
use crate::harness::{Backend, Env};

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
        serde_json::json!({"added": 2, "updated": 0, "unchanged": 0, "removed": 0})
    );

    // Ann changes workgroup, Bo leaves the export, Cy arrives.
    std::fs::write(&file, format!("{HEADER}1,Ann,Lee,ann@austintexas.gov,,Arterial Management,\"[\"\"moped-editor\"\"]\",true,false,true,,,\n3,Cy,Oz,CY@austintexas.gov,,,[],true,false,true,,,\n")).unwrap();
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
        serde_json::json!({"added": 1, "updated": 1, "unchanged": 0, "removed": 1})
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
