//! Failures an operator can cause: unreadable or invalid configuration, an
//! unusable database, bad arguments. Each ends the process with a non-zero
//! code and one clear line, never a panic or a stack of repeated causes.

use crate::support::{DATA_DIR, Sandbox};

#[test]
fn unreadable_config_is_one_clear_line_and_nonzero_exit() {
    let sandbox = Sandbox::new();
    let missing = "/does/not/exist.toml";
    let out = sandbox.run(&["--config", missing, "serve"]);
    let line = out.one_line_failure(1);
    assert!(line.contains(missing), "{line}");
    assert!(out.stdout.is_empty(), "{out:#?}");

    let cases = [
        ("invalid.toml", "bind = [\n", "TOML"),
        ("unknown.toml", "bindd = \"127.0.0.1:1\"\n", "bindd"),
        ("zero.toml", "access_token_ttl = 0\n", "access_token_ttl"),
        ("badbind.toml", "bind = \"not an address\"\n", "bind"),
    ];
    for (name, contents, mentions) in cases {
        let path = sandbox.write(name, contents);
        let out = sandbox.run(&["--config", path.to_str().unwrap(), "serve"]);
        let line = out.one_line_failure(1);
        assert!(line.contains(mentions), "{name}: {line}");
        assert!(line.contains(name), "{name}: {line}");
        assert!(out.stdout.is_empty(), "{out:#?}");
    }

    // The same file named by HEALTHGATE_CONFIG, for an admin command.
    let mut cmd = sandbox.command(&["client", "list"]);
    cmd.env("HEALTHGATE_CONFIG", sandbox.path().join("unknown.toml"));
    let line = crate::support::output(cmd).one_line_failure(1).to_owned();
    assert!(line.contains("unknown.toml"), "{line}");

    // Nothing got as far as creating a database.
    assert!(!sandbox.path().join(DATA_DIR).exists());
}

#[test]
fn unusable_database_is_one_clear_line() {
    let sandbox = Sandbox::new();
    sandbox.write("f", "a regular file, not a directory");
    for url in ["sqlite://f/x.db", "sqlite:///proc/healthgate-nope/x.db"] {
        for args in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["client", "list"][..],
            &["migrate"][..],
        ] {
            let mut all = vec!["--database-url", url];
            all.extend_from_slice(args);
            let out = sandbox.run(&all);
            let line = out.one_line_failure(1);
            assert!(line.contains("database"), "{url} {args:?}: {line}");
            let dir = url
                .trim_start_matches("sqlite://")
                .trim_end_matches("/x.db");
            assert!(line.contains(dir), "{url} {args:?}: {line}");
            // Each cause once, not repeated down the error chain.
            assert_eq!(line.matches(dir).count(), 1, "{line}");
        }
    }

    let out = sandbox.run(&[
        "--database-url",
        "mysql://x",
        "serve",
        "--bind",
        "127.0.0.1:0",
    ]);
    let line = out.one_line_failure(1);
    assert!(
        line.ends_with("database_url from flag --database-url: expected sqlite://PATH or postgres://…, found a \"mysql\" URL"),
        "say what is supported, and the scheme given (not the rest, which may hold a password): {line}"
    );

    assert!(!sandbox.path().join(DATA_DIR).exists());
}

#[test]
fn bad_arguments_exit_2() {
    let sandbox = Sandbox::new();
    let ok_uri = "https://app.example.com/cb";
    let create = |extra: &[&str]| {
        let mut args = vec![
            "client",
            "create",
            "--name",
            "App",
            "--scope",
            "profile_read",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args)
    };

    // Rejected by the argument parser: clap's own "error:" message.
    let out = create(&["--redirect-uri", ok_uri, "--user-types", "robot"]);
    assert_eq!(out.code, Some(2), "{out:#?}");
    assert!(out.stderr.starts_with("error:"), "{out:#?}");
    assert!(!out.stderr.contains("panicked"), "{out:#?}");
    assert!(out.stderr.contains("robot"), "{out:#?}");
    // No redirect URI: only a backend service (with keys) may have none.
    let out = create(&[]);
    assert!(
        out.one_line_failure(2)
            .contains("at least one redirect URI"),
        "{out:#?}"
    );

    // Rejected by the registration rules.
    let out = create(&["--redirect-uri", "http://evil.example/cb"]);
    let line = out.one_line_failure(2);
    assert!(line.contains("http://evil.example/cb"), "{line}");
    let out = sandbox.run(&[
        "client",
        "create",
        "--name",
        "App",
        "--scope",
        "admin",
        "--redirect-uri",
        ok_uri,
    ]);
    let line = out.one_line_failure(2);
    assert!(line.contains("admin"), "{line}");
    assert!(
        line.contains("profile_read"),
        "list the known scopes: {line}"
    );

    let out = sandbox.run(&["user", "create", "--username", "bob", "--password", "abc"]);
    let line = out.one_line_failure(2);
    assert!(line.contains("password"), "{line}");

    let good = [
        "user",
        "create",
        "--username",
        "bob",
        "--password",
        "correct horse",
    ];
    assert_eq!(sandbox.run(&good).code, Some(0));
    let out = sandbox.run(&good);
    let line = out.one_line_failure(2);
    assert!(line.contains("bob"), "{line}");

    // None of the refused requests registered anything.
    let clients = sandbox.run(&["client", "list", "--json"]).json();
    assert_eq!(clients, serde_json::json!([]));
}

/// `user create` refuses a common password (in any case) with one line
/// that says why, exit code 2, and creates nothing; a passphrase of words
/// and spaces, taken as typed, is accepted.
#[test]
fn user_create_refuses_a_common_password_in_one_line() {
    let sandbox = Sandbox::new();
    for common in ["password123", "QwertyUIOP"] {
        let out = sandbox.run(&["user", "create", "--username", "bob", "--password", common]);
        let line = out.one_line_failure(2);
        assert_eq!(
            line,
            "healthgate: password is one of the most common passwords and easy to guess, so choose another one",
            "{common}"
        );
        assert!(!out.stderr.contains(common) && !out.stdout.contains(common));
    }
    let users = sandbox.run(&["user", "list", "--json"]).json();
    assert_eq!(users, serde_json::json!([]));
    let phrase = " the bob of all bobs ";
    let out = sandbox.run(&["user", "create", "--username", "bob", "--password", phrase]);
    assert_eq!(out.code, Some(0), "{out:#?}");
}

/// A profile path on one of healthgate's own paths, or over or under one,
/// is refused at start-up with one line naming it (the router could not
/// hold both: axum would panic), before anything is opened.
#[test]
fn a_profile_path_on_healthgates_own_is_one_clear_line() {
    let sandbox = Sandbox::new();
    let cases = [
        ("authorize_paths", "/admin", "/admin"),
        ("token_paths", "/developers/apps/x/token", "/developers"),
        ("revoke_paths", "/playground", "/playground"),
        ("user_paths", "/apps/x", "/apps/{id}/photo"),
        ("token_paths", "/oauth/token", "/oauth/token"),
        ("authorize_paths", "/oauth/authorize/", "/oauth/authorize"),
        (
            "token_paths",
            "/.well-known/openid-configuration",
            "/.well-known/openid-configuration",
        ),
    ];
    for (n, (key, path, route)) in cases.into_iter().enumerate() {
        let name = format!("clash-{n}.toml");
        let file = sandbox.write(&name, &format!("[profile]\n{key} = [\"{path}\"]\n"));
        for args in [
            &["serve", "--bind", "127.0.0.1:0"][..],
            &["client", "list"][..],
        ] {
            let mut all = vec!["--config", file.to_str().unwrap()];
            all.extend_from_slice(args);
            let out = sandbox.run(&all);
            let line = out.one_line_failure(1);
            assert!(line.contains("profile"), "{line}");
            assert!(line.contains(&format!("\"{path}\"")), "{line}");
            assert!(line.contains(&format!("own path {route};")), "{line}");
            assert!(out.stdout.is_empty(), "{out:#?}");
        }
    }

    // The same from the environment.
    let mut cmd = sandbox.command(&["serve", "--bind", "127.0.0.1:0"]);
    cmd.env("HEALTHGATE_PROFILE__TOKEN_PATHS", "[\"/admin/token\"]");
    let out = crate::support::output(cmd);
    let line = out.one_line_failure(1);
    assert!(line.contains("\"/admin/token\""), "{line}");
    assert!(
        line.contains("from environment variable HEALTHGATE_PROFILE__TOKEN_PATHS:"),
        "{line}"
    );

    assert!(!sandbox.path().join(DATA_DIR).exists());
}

/// A value that does not parse, or settings that do not fit together, stop
/// every command with one line that names the setting, where its value came
/// from (the file, the environment variable, the flag) and what is allowed;
/// nothing is opened. A secret is never echoed.
#[test]
fn a_bad_setting_is_one_line_naming_the_key_its_source_and_what_is_allowed() {
    let sandbox = Sandbox::new();
    let file = |name: &str, contents: &str| {
        let path = sandbox.write(name, contents);
        path.to_str().unwrap().to_owned()
    };
    let good = file(
        "good.toml",
        "access_token_ttl = 60\nrefresh_rotation = \"immediate\"\n",
    );
    let secret = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeX";
    struct Case<'a> {
        args: Vec<String>,
        env: Option<(&'a str, &'a str)>,
        /// The setting, and where it came from.
        names: String,
        /// What is allowed.
        allowed: &'a str,
    }
    let in_file = |name: &str, contents: &str, key: &str, allowed: &'static str| Case {
        args: vec!["--config".into(), file(name, contents), "migrate".into()],
        env: None,
        names: format!("{key} from file "),
        allowed,
    };
    let in_env = |var: &'static str, value: &'static str, key: &str, allowed: &'static str| Case {
        // Over a file whose values are good: the variable is named, not it.
        args: vec![
            "--config".into(),
            good.clone(),
            "client".into(),
            "list".into(),
        ],
        env: Some((var, value)),
        names: format!("{key} from environment variable {var}: "),
        allowed,
    };
    let by_flag = |flag: &str, value: &str, key: &str, allowed: &'static str| Case {
        args: vec!["serve".into(), flag.into(), value.into()],
        env: None,
        names: format!("{key} from flag {flag}: "),
        allowed,
    };
    let cases = [
        in_file(
            "rotation.toml",
            "refresh_rotation = \"sometimes\"\n",
            "refresh_rotation",
            "immediate or on_first_use",
        ),
        in_file(
            "format.toml",
            "log_format = \"xml\"\n",
            "log_format",
            "text or json",
        ),
        in_file(
            "ttl.toml",
            "session_ttl = -5\n",
            "session_ttl",
            "a positive whole number of seconds",
        ),
        in_file(
            "color.toml",
            "[branding]\naccent_color = \"green\"\n",
            "branding.accent_color",
            "#rrggbb",
        ),
        in_file(
            "tokentype.toml",
            "[profile]\ntoken_type = \"mac\"\n",
            "profile.token_type",
            "Bearer or bearer",
        ),
        in_file(
            "path.toml",
            "[profile]\ntoken_paths = [\"/o/token/\", \"o/token\"]\n",
            "profile.token_paths",
            "plain absolute path",
        ),
        in_file(
            "role.toml",
            "[roles.admin]\nscopes = [\"*\"]\nresource_owner_type = \"Staff\"\n[roles.staff]\nscopes = [\"profile\", \"payroll\"]\nresource_owner_type = \"Staff\"\n",
            "roles.staff.scopes",
            "not in the scope vocabulary",
        ),
        in_env(
            "HEALTHGATE_REFRESH_ROTATION",
            "sometimes",
            "refresh_rotation",
            "immediate or on_first_use",
        ),
        in_env(
            "HEALTHGATE_ACCESS_TOKEN_TTL",
            "2h",
            "access_token_ttl",
            "a positive whole number of seconds",
        ),
        in_env(
            "HEALTHGATE_REFRESH_TOKEN_TTL",
            "-1",
            "refresh_token_ttl",
            "0 or a positive whole number of seconds",
        ),
        in_env(
            "HEALTHGATE_LOG_LEVEL",
            "healthgate=loud",
            "log_level",
            "error, warn, info, debug, trace, off",
        ),
        in_env(
            "HEALTHGATE_SECRET_KEY",
            secret,
            "secret_key",
            "64 hexadecimal digits",
        ),
        in_env(
            "HEALTHGATE_BRANDING__LOGO_URL",
            "http://logo.example/x.png",
            "branding.logo_url",
            "https URL nor a path on this server",
        ),
        in_env(
            "HEALTHGATE_PROFILE__PROVISIONING_SCOPE",
            "member_public",
            "profile.provisioning_scope",
            "not in the scope vocabulary",
        ),
        by_flag("--issuer", "ftp://auth.example", "issuer", "http(s) URL"),
        by_flag(
            "--issuer",
            "https://auth.example/?x=1",
            "issuer",
            "without query",
        ),
        by_flag(
            "--bind",
            "localhost",
            "bind",
            "an address and port such as 127.0.0.1:8080",
        ),
    ];
    for case in cases {
        let args: Vec<&str> = case.args.iter().map(String::as_str).collect();
        let mut cmd = sandbox.command(&args);
        if let Some((var, value)) = case.env {
            cmd.env(var, value);
        }
        let out = crate::support::output(cmd);
        let line = out.one_line_failure(1);
        assert!(
            line.starts_with("healthgate: invalid configuration: "),
            "{line}"
        );
        assert!(line.contains(&case.names), "want {:?}: {line}", case.names);
        assert!(
            line.contains(case.allowed),
            "want {:?}: {line}",
            case.allowed
        );
        assert!(
            !line.contains(&secret[..16]),
            "the secret is not echoed: {line}"
        );
        if case.names.contains(" from file ") {
            let named = case.args[1].rsplit('/').next().unwrap();
            assert!(line.contains(named), "{line}");
        }
        assert!(out.stdout.is_empty(), "{out:#?}");
    }

    // Nothing got as far as creating a database; the good file alone is good.
    assert!(!sandbox.path().join(DATA_DIR).exists());
    let out = sandbox.run(&["--config", &good, "client", "list", "--json"]);
    assert_eq!(out.code, Some(0), "{out:#?}");
}
