//! `healthgate config check`: the effective configuration with where each
//! value came from, secrets masked, and every problem, before anything runs.

use crate::support::{DATA_DIR, Sandbox};

const SECRET_KEY: &str = "6f1c0a55e0d94b7fbd2a4e8e3c71b9a05d6e2f4a8c3b1d7e9f0a2b4c6d8e0f12";
const SMTP_PASSWORD: &str = "smtp-password-e7c1";
const DATABASE_PASSWORD: &str = "database-password-93ab";

/// The line of `key` in the text report: `key = value  # source`.
fn line_of<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| {
            l.starts_with(&format!("{key} = ")) || l.starts_with(&format!("# {key} is not set"))
        })
        .unwrap_or_else(|| panic!("no line for {key}:\n{stdout}"))
}

#[test]
fn config_check_prints_each_value_with_its_source_and_masks_secrets() {
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "hg.toml",
        &format!(
            r#"
secret_key = "{SECRET_KEY}"
refresh_rotation = "on_first_use"

[smtp]
host = "mail.example.com"
from = "no-reply@example.com"
username = "mailer"
password = "{SMTP_PASSWORD}"

[scopes]
"patient/*.read" = "Read your records"
openid = "Sign you in"
"#
        ),
    );
    let file = file.to_str().unwrap();
    let database_url = format!("postgres://app:{DATABASE_PASSWORD}@db.internal:5432/hg");
    let args = [
        "--config",
        file,
        "--database-url",
        &database_url,
        "config",
        "check",
        "--bind",
        "0.0.0.0:9000",
    ];
    let mut cmd = sandbox.command(&args);
    cmd.env("HEALTHGATE_ACCESS_TOKEN_TTL", "900")
        .env("HEALTHGATE_THROTTLE__API_BURST", "50")
        .env("HEALTHGATE_ACCES_TOKEN_TTL", "60");
    let out = crate::support::output(cmd);
    assert_eq!(out.code, Some(0), "{out:#?}");
    let stdout = &out.stdout;

    for (key, value, from) in [
        ("bind", "\"0.0.0.0:9000\"", "flag --bind".to_owned()),
        (
            "database_url",
            "\"postgres://app:(masked)@db.internal:5432/hg\"",
            "flag --database-url".to_owned(),
        ),
        (
            "access_token_ttl",
            "900",
            "environment variable HEALTHGATE_ACCESS_TOKEN_TTL".to_owned(),
        ),
        (
            "throttle.api_burst",
            "50",
            "environment variable HEALTHGATE_THROTTLE__API_BURST".to_owned(),
        ),
        ("secret_key", "\"(masked)\"", format!("file {file}")),
        ("smtp.password", "\"(masked)\"", format!("file {file}")),
        (
            "refresh_rotation",
            "\"on_first_use\"",
            format!("file {file}"),
        ),
        (
            "scopes.\"patient/*.read\"",
            "\"Read your records\"",
            format!("file {file}"),
        ),
        ("authorization_code_ttl", "600", "the defaults".to_owned()),
        ("roles.staff.except", "[\"pay\"]", "the defaults".to_owned()),
    ] {
        let line = line_of(stdout, key);
        assert!(line.starts_with(&format!("{key} = {value} ")), "{line}");
        assert!(line.ends_with(&format!("# {from}")), "{line}");
    }
    assert!(
        line_of(stdout, "issuer").ends_with("# the defaults"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "note: environment variable HEALTHGATE_ACCES_TOKEN_TTL is not a setting and is ignored"
        ),
        "{stdout}"
    );
    assert!(stdout.ends_with("no problems\n"), "{stdout}");
    for secret in [SECRET_KEY, SMTP_PASSWORD, DATABASE_PASSWORD] {
        assert!(
            !stdout.contains(secret) && !out.stderr.contains(secret),
            "{out:#?}"
        );
    }

    // The same as JSON, one entry a setting.
    let mut cmd = sandbox.command(&[&["--json"][..], &args[..]].concat());
    cmd.env("HEALTHGATE_ACCESS_TOKEN_TTL", "900");
    let out = crate::support::output(cmd);
    let report = out.json();
    let entry = |key: &str| {
        report["settings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {report}"))
            .clone()
    };
    assert_eq!(entry("access_token_ttl")["value"], 900);
    assert_eq!(
        entry("access_token_ttl")["from"],
        "environment variable HEALTHGATE_ACCESS_TOKEN_TTL"
    );
    assert_eq!(entry("secret_key")["value"], "(masked)");
    assert_eq!(entry("issuer")["value"], serde_json::Value::Null);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert!(!out.stdout.contains(SECRET_KEY), "{}", out.stdout);

    // Checking opened no database.
    assert!(!sandbox.path().join(DATA_DIR).exists());
}

#[test]
fn config_check_lists_every_problem_and_exits_1() {
    let sandbox = Sandbox::new();
    // Three values that do not parse, in the file and a variable.
    let file = sandbox.write(
        "bad.toml",
        r##"
refresh_rotation = "later"
session_ttl = 0

[branding]
colour = "#ffffff"
"##,
    );
    let file = file.to_str().unwrap();
    let mut cmd = sandbox.command(&["--config", file, "config", "check"]);
    cmd.env("HEALTHGATE_LOG_LEVEL", "healthgate=loud");
    let out = crate::support::output(cmd);
    let line = out.one_line_failure(1);
    assert_eq!(
        line, "healthgate: the configuration has 4 problems",
        "{out:#?}"
    );
    let stdout = &out.stdout;
    assert!(stdout.contains("\n4 problems:\n"), "{stdout}");
    for problem in [
        format!(
            "  refresh_rotation from file {file}: expected immediate or on_first_use, found \"later\""
        ),
        format!("  session_ttl from file {file}: expected a positive whole number of seconds"),
        format!("  branding.colour from file {file}: no such setting"),
        "  log_level from environment variable HEALTHGATE_LOG_LEVEL: ".to_owned(),
    ] {
        assert!(stdout.contains(&problem), "want {problem:?} in\n{stdout}");
    }
    // The rest is still shown; a refused value is replaced by its default.
    assert!(
        line_of(stdout, "refresh_rotation")
            .ends_with("# the defaults (the value given was refused)"),
        "{stdout}"
    );
    assert!(
        line_of(stdout, "platform_name").ends_with("# the defaults"),
        "{stdout}"
    );

    // Values that parse but do not fit together: every one is named.
    let file = sandbox.write(
        "clash.toml",
        r#"
[par]
lifetime = 30

[roles.admin]
scopes = ["*"]
resource_owner_type = "Staff"

[roles.staff]
scopes = ["profile_read", "nonsense"]
resource_owner_type = "Staff"

[profile]
token_paths = ["/oauth/token"]
"#,
    );
    let file = file.to_str().unwrap();
    let out = sandbox.run(&["--config", file, "--json", "config", "check"]);
    assert_eq!(
        out.one_line_failure(1),
        "healthgate: the configuration has 3 problems"
    );
    let report: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let keys: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["roles.staff.scopes", "par.lifetime", "profile.token_paths"],
        "{report}"
    );
    for problem in report["problems"].as_array().unwrap() {
        assert_eq!(problem["from"], format!("file {file}"), "{problem}");
    }

    // `serve` refuses the same file, naming every problem on its one line.
    let out = sandbox.run(&["--config", file, "serve"]);
    let line = out.one_line_failure(1);
    for key in ["roles.staff.scopes", "par.lifetime", "profile.token_paths"] {
        assert!(line.contains(key), "{line}");
    }
    assert!(!sandbox.path().join(DATA_DIR).exists());
}
