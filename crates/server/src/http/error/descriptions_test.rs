//! Walks every `error_description` the server can produce, as written in
//! the source: each string literal given to a constructor of an OAuth or
//! partner-API error, and each `#[error(…)]` message of the error types
//! whose text becomes a description. [`Description::new`] makes any text
//! safe at run time; this test keeps the words themselves inside RFC 6749's
//! alphabet (`%x20-21 / %x23-5B / %x5D-7E`), so nothing is rewritten behind
//! a developer's back, and rejects `{…:?}`, whose quotes would be.

use std::path::{Path, PathBuf};

use healthgate_core::error::allowed_in_description;

/// Calls whose arguments become an `error_description`.
const CONSTRUCTORS: &[&str] = &[
    "OAuthError::new(",
    "invalid_request(",
    "invalid_client(",
    "invalid_grant(",
    "invalid_scope(",
    "unauthorized_client(",
    "invalid_token(",
    "invalid_key(",
    "Self::new(ErrorCode::",
    "ApiError::forbidden(",
    "ApiError::conflict(",
    "ApiError::not_found(",
    "ApiError::Status(",
    "#[error(",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("source folder") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The string literals in `src` from `start` to the parenthesis that closes
/// the call opened just before `start`, decoded (escapes resolved).
fn literals_of_call(src: &str, start: usize) -> Vec<String> {
    let bytes = src.as_bytes();
    let mut depth = 1;
    let mut i = start;
    let mut found = Vec::new();
    while i < bytes.len() && depth > 0 {
        match bytes[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b'\'' if bytes.get(i + 2) == Some(&b'\'') => i += 2,
            b'r' if matches!(bytes.get(i + 1), Some(b'"' | b'#'))
                && !bytes[i - 1].is_ascii_alphanumeric() =>
            {
                let hashes = bytes[i + 1..].iter().take_while(|b| **b == b'#').count();
                let open = i + 1 + hashes + 1;
                let close = format!("\"{}", "#".repeat(hashes));
                let end = open + src[open..].find(&close).expect("raw string ends");
                found.push(src[open..end].to_owned());
                i = end + close.len();
                continue;
            }
            b'"' => {
                let mut text = String::new();
                let mut chars = src[i + 1..].char_indices();
                let end = loop {
                    let (at, c) = chars.next().expect("string ends");
                    match c {
                        '"' => break i + 1 + at,
                        '\\' => match chars.next().expect("escape").1 {
                            'n' => text.push('\n'),
                            't' => text.push('\t'),
                            '\n' => {
                                // A line continuation skips the next line's indent.
                                let rest = &src[i + 1 + at + 2..];
                                let skip = rest.len() - rest.trim_start().len();
                                for _ in 0..rest[..skip].chars().count() {
                                    chars.next();
                                }
                            }
                            'u' => text.push('\u{fffd}'),
                            other => text.push(other),
                        },
                        c => text.push(c),
                    }
                };
                found.push(text);
                i = end + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

#[test]
fn every_description_in_the_source_is_inside_the_rfc_alphabet() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for krate in ["core", "store", "server"] {
        rust_files(&crates.join(krate).join("src"), &mut files);
    }
    let mut checked = 0;
    let mut wrong = Vec::new();
    for file in &files {
        if file.ends_with("descriptions_test.rs") {
            continue;
        }
        let src = std::fs::read_to_string(file).expect("readable source");
        // Only core's error types become descriptions (by `to_string`);
        // the store's are logged and the server's are shown on pages.
        let in_core = file.components().any(|c| c.as_os_str() == "core");
        for constructor in CONSTRUCTORS {
            if *constructor == "#[error(" && !in_core {
                continue;
            }
            for (at, _) in src.match_indices(constructor) {
                for text in literals_of_call(&src, at + constructor.len()) {
                    checked += 1;
                    let outside: Vec<char> = text
                        .chars()
                        .filter(|c| !allowed_in_description(*c))
                        .collect();
                    if !outside.is_empty() || text.contains(":?}") {
                        wrong.push(format!("{}: {text:?}", file.display()));
                    }
                }
            }
        }
    }
    assert!(
        checked > 100,
        "only {checked} descriptions found: is the walk still finding the constructors?"
    );
    assert!(
        wrong.is_empty(),
        "descriptions outside RFC 6749's alphabet (%x20-21 / %x23-5B / %x5D-7E; no {{:?}}):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_walk_reads_literals_as_rust_does() {
    let src = r##"f("a \"b\" c", g("d"), r#"e"f"#, 'x', "line \
        next") tail("no")"##;
    assert_eq!(
        literals_of_call(src, 2),
        ["a \"b\" c", "d", "e\"f", "line next"]
    );
}
