//! The binary's commands, run as an operator would.

use std::process::Command;

use crate::helpers::*;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_redmine-authz"))
}

#[tokio::test]
async fn check_explains_allows_and_denies_with_exit_codes() {
    let database = fresh_database().await;
    let allow = bin()
        .args([
            "check",
            "--database-url",
            &database,
            "GET",
            "/users/current.json",
            "-H",
            &format!("X-Redmine-API-Key: {}", demo_key("alice")),
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&allow.stdout);
    assert_eq!(allow.status.code(), Some(0), "{out}");
    assert!(
        out.contains("ALLOW")
            && out.contains("user alice")
            && out.contains("x-auth-user-login: alice"),
        "{out}"
    );
    assert!(!out.contains(demo_key("alice")), "the key is never printed");

    let deny = bin()
        .args([
            "check",
            "GET",
            "/users/current.json",
            "-H",
            &format!("Authorization: {}", basic("tina", demo_password("tina"))),
        ])
        .env("DATABASE_URL", &database)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&deny.stdout);
    assert_eq!(deny.status.code(), Some(1), "{out}");
    assert!(out.contains("DENY 401 (twofa_basic_not_allowed)"), "{out}");
}

#[tokio::test]
async fn check_usage_errors_exit_64() {
    let output = bin()
        .args([
            "check",
            "--database-url",
            "postgres://x@127.0.0.1/x",
            "GET",
            "no-slash",
            "-H",
            "bad header",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{err}");
    assert!(
        err.contains("must start with '/'") && err.contains("Name: value"),
        "{err}"
    );
}

#[test]
fn serve_reports_every_configuration_error_at_once() {
    let output = bin()
        .args([
            "serve",
            "--listen",
            "nowhere",
            "--redmine-timezone",
            "Mars/Base",
            "--database-url",
            "postgres://user:s3cret@[broken",
        ])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{err}");
    assert_eq!(err.matches("configuration error:").count(), 3, "{err}");
    assert!(!err.contains("s3cret"), "{err}");
    let missing = bin()
        .args(["serve"])
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--database-url"));
}

/// Runs `serve` for a moment, stops it with SIGTERM, and returns what it wrote to stderr.
async fn serve_briefly(args: &[&str], env: &[(&str, &str)]) -> String {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_redmine-authz"))
        .arg("serve")
        .args(args)
        .env_remove("AUTHZ_REDMINE_TIMEZONE")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let output = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait_with_output())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{err}");
    err
}

#[tokio::test]
async fn serve_prints_its_configuration_without_secrets_and_stops_on_sigterm() {
    let database = fresh_database().await;
    let with_password = database.replacen("postgres@", "postgres:pw-not-to-print@", 1);
    let err = serve_briefly(
        &["--listen", "127.0.0.1:0", "--database-url", &with_password],
        &[],
    )
    .await;
    assert!(
        err.contains("starting") && err.contains("listen=127.0.0.1:0"),
        "{err}"
    );
    assert!(err.contains("shutting down"), "{err}");
    assert!(!err.contains("pw-not-to-print"), "{err}");
}

/// A zone left at its default is a silent nine-hour window for revoked tokens of a Redmine
/// that runs in Tokyo time: say so at start-up, unless the operator chose one.
#[tokio::test]
async fn serve_warns_when_redmines_time_zone_was_not_given() {
    let database = fresh_database().await;
    let args = ["--listen", "127.0.0.1:0", "--database-url", &database];
    let unset = serve_briefly(&args, &[]).await;
    assert!(
        unset.contains("WARN") && unset.contains("--redmine-timezone"),
        "{unset}"
    );
    for given in [
        serve_briefly(&[&args[..], &["--redmine-timezone", "UTC"]].concat(), &[]).await,
        serve_briefly(&args, &[("AUTHZ_REDMINE_TIMEZONE", "Asia/Tokyo")]).await,
    ] {
        assert!(
            given.contains("starting") && !given.contains("--redmine-timezone"),
            "{given}"
        );
    }
}

/// Runs `serve` under a shell's `ulimit` until its start-up line; returns the process's open
/// file limits (soft, hard) then, and what it had logged.
async fn serve_under_ulimit(ulimit: &str, database: &str) -> ((u64, u64), String) {
    use tokio::io::AsyncBufReadExt as _;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_redmine-authz"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            database,
        ])
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    while !log.contains("starting") {
        let line = tokio::time::timeout(std::time::Duration::from_secs(10), lines.next_line())
            .await
            .expect("serve starts")
            .unwrap()
            .unwrap_or_else(|| panic!("serve exited: {log}"));
        log.push_str(&line);
        log.push('\n');
    }
    let pid = child.id().unwrap().to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let open_files: Vec<u64> = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect();
    child.kill().await.unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push_str(&line);
        log.push('\n');
    }
    ((open_files[0], open_files[1]), log)
}

/// Issue 19: a soft limit of 1024 let a connection flood take every descriptor.
#[tokio::test]
async fn serve_raises_the_open_file_limit_and_keeps_the_caps_under_it() {
    let database = fresh_database().await;
    let ((soft, hard), log) = serve_under_ulimit("-Sn 256", &database).await;
    assert!(hard > 256 && soft == hard, "soft {soft}, hard {hard}");
    assert!(log.contains("open file limit soft_before=256"), "{log}");
    assert!(!log.contains("lowered"), "{log}");
    assert!(log.contains("max_connections=4096"), "{log}");

    // A hard limit too low for the default caps: they are lowered below it, and it says so.
    let ((soft, hard), log) = serve_under_ulimit("-n 1024", &database).await;
    assert_eq!((soft, hard), (1024, 1024));
    assert!(log.contains("connection caps lowered"), "{log}");
    // 1024 less 128 kept and 16 for the database pool: a sixteenth of that for the admin
    // port, the rest for gRPC.
    assert!(
        log.contains("admin_listen=off max_connections=825 admin_max_connections=55 "),
        "{log}"
    );
}

/// The binary's own audit writer (buffered, in a thread): a decision's line must reach stdout
/// while the gate runs, not when a buffer fills or the process exits.
#[tokio::test]
async fn serve_writes_each_audit_line_while_running() {
    use tokio::io::AsyncBufReadExt as _;
    let database = fresh_database().await;
    let (port, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_redmine-authz"))
        .args(["serve", "--database-url", &database])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..400 {
        if http_status(admin, "/readyz").await == Some(200) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let key = demo_key("alice");
    let answer = client_for(port)
        .check(
            get("/users/current.json")
                .header("x-redmine-api-key", key)
                .build(),
        )
        .await
        .expect("check RPC succeeds")
        .into_inner();
    assert!(Verdict(answer).is_allowed());
    let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next_line())
        .await
        .expect("the audit line is written while the gate runs")
        .unwrap()
        .expect("a line");
    let audit: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(audit["outcome"], "allow", "{line}");
    assert_eq!(audit["login"], "alice", "{line}");
    assert!(!line.contains(key), "the key leaked: {line}");
    let pid = child.id().unwrap().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::time::timeout(std::time::Duration::from_secs(15), child.wait())
        .await
        .expect("stops after SIGTERM")
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn demo_db_refuses_a_real_redmine_without_force() {
    let database = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    sqlx::query("DROP TABLE _sqlx_migrations")
        .execute(&pool)
        .await
        .unwrap();
    let refused = bin()
        .args(["demo-db", "--database-url", &database])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--force"));
    let forced = bin()
        .args(["demo-db", "--force", "--database-url", &database])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&forced.stdout);
    assert!(forced.status.success(), "{out}");
    assert!(out.contains("user alice exists, left alone"), "{out}");
}

#[tokio::test]
async fn healthcheck_reports_serving_and_unreachable() {
    let app = spawn_app(&[]).await;
    let addr = format!("127.0.0.1:{}", app.port);
    let ok = tokio::process::Command::new(env!("CARGO_BIN_EXE_redmine-authz"))
        .args(["healthcheck", "--addr", &addr])
        .output()
        .await
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "SERVING");
    let down = app_without_database().await;
    let not_serving = tokio::process::Command::new(env!("CARGO_BIN_EXE_redmine-authz"))
        .args(["healthcheck", "--addr", &format!("127.0.0.1:{}", down.port)])
        .output()
        .await
        .unwrap();
    assert_eq!(not_serving.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&not_serving.stdout).trim(),
        "NOT_SERVING"
    );
    let nothing = bin()
        .args([
            "healthcheck",
            "--addr",
            "127.0.0.1:1",
            "--timeout-ms",
            "500",
        ])
        .output()
        .unwrap();
    assert_eq!(nothing.status.code(), Some(2));
}

async fn app_without_database() -> TestApp {
    spawn_app_without_ready_wait("postgres://postgres@127.0.0.1:1/none").await
}

#[tokio::test]
async fn install_and_uninstall_triggers() {
    let database = fresh_database().await;
    let pool = sqlx::PgPool::connect(&database).await.unwrap();
    let count = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'redmine_authz%'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    let removed = bin()
        .args(["uninstall-triggers", "--database-url", &database])
        .output()
        .unwrap();
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    assert_eq!(count().await, 0);
    let installed = bin()
        .args(["install-triggers", "--database-url", &database])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&installed.stdout);
    assert!(
        installed.status.success(),
        "{}",
        String::from_utf8_lossy(&installed.stderr)
    );
    assert!(
        out.contains("users, tokens, settings, oauth_access_tokens"),
        "{out}"
    );
    assert_eq!(count().await, 7);
    // Idempotent.
    assert!(bin()
        .args(["install-triggers", "--database-url", &database])
        .status()
        .unwrap()
        .success());
    assert_eq!(count().await, 7);
}
