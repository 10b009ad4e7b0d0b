//! Loading settings: the TOML file, then `HEALTHGATE_*` environment
//! variables, then command-line flags, each overriding the one before, parsed
//! once into the typed [`Settings`]. A value that does not parse, or settings
//! that do not fit together, are refused in one line naming the key, where it
//! came from (the file, the variable or the flag) and what is allowed. And
//! the logging set-up those settings ask for.

use std::path::Path;

use anyhow::Context;
use figment::error::Kind;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use healthgate_server::Settings;
use healthgate_server::config::{KEYS, LogFormat};

use crate::Failure;

/// Every setting, the one way `serve` and every other command read them.
/// Any problem refuses them all, each problem named on the one line.
pub fn load(
    file: Option<&Path>,
    database_url: Option<&str>,
    bind: Option<&str>,
    issuer: Option<&str>,
) -> anyhow::Result<Settings> {
    let report = check(file, database_url, bind, issuer)?;
    if report.problems.is_empty() {
        return Ok(report.settings);
    }
    let each: Vec<String> = report.problems.iter().map(Problem::to_string).collect();
    anyhow::bail!("invalid configuration: {}", each.join("; "))
}

/// What the configuration sources make: the settings (a refused value
/// replaced by its default), where each value came from, and every problem.
pub struct Report {
    pub settings: Settings,
    figment: Figment,
    /// Dotted keys whose value was refused, so the default stands in.
    refused: Vec<String>,
    pub problems: Vec<Problem>,
}

/// One setting refused: its key (empty for the whole of a source), where it
/// came from, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub key: String,
    pub from: Option<String>,
    pub problem: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key.is_empty(), &self.from) {
            (false, Some(from)) => write!(f, "{} from {from}: {}", self.key, self.problem),
            (false, None) => write!(f, "{}: {}", self.key, self.problem),
            (true, Some(from)) => write!(f, "from {from}: {}", self.problem),
            (true, None) => f.write_str(&self.problem),
        }
    }
}

/// Reads the file, the `HEALTHGATE_*` variables and the flags, and checks
/// what they make. Every value that does not parse is a problem (and its
/// default stands in, so the next is found too); once every value parses,
/// every way the settings do not fit together is one. Only a file that
/// cannot be read is an error.
pub fn check(
    file: Option<&Path>,
    database_url: Option<&str>,
    bind: Option<&str>,
    issuer: Option<&str>,
) -> anyhow::Result<Report> {
    let figment = sources(file, database_url, bind, issuer)?;
    let (settings, refused, mut problems) = parse(&figment);
    if problems.is_empty() {
        problems.extend(healthgate_server::problems(&settings).into_iter().map(|e| {
            let path: Vec<&str> = e.key.split('.').collect();
            Problem {
                from: Some(origin_of(&figment, &path)),
                key: e.key,
                problem: e.reason,
            }
        }));
    }
    Ok(Report {
        settings,
        figment,
        refused,
        problems,
    })
}

fn sources(
    file: Option<&Path>,
    database_url: Option<&str>,
    bind: Option<&str>,
    issuer: Option<&str>,
) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // Read it ourselves: figment would quietly skip a missing file.
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        figment = figment.merge(Named::file(Toml::string(&text), path));
    }
    figment = figment.merge(Named::variables(
        Env::prefixed("HEALTHGATE_")
            .split("__")
            // The filter sees the key as written (`BIND`); figment lowercases
            // it only afterwards, so compare without case.
            .filter(|k| is_setting(k.as_str())),
    ));
    for (key, value) in [
        ("database_url", database_url),
        ("bind", bind),
        ("issuer", issuer),
    ] {
        if let Some(v) = value {
            figment = figment.merge(Named::flag(Serialized::default(key, v)));
        }
    }
    Ok(figment)
}

/// Whether a `HEALTHGATE_*` variable's key (after the prefix) names a
/// setting; `HEALTHGATE_TEST_POSTGRES_URL` and the like do not.
fn is_setting(key: &str) -> bool {
    let top = key.split('.').next().unwrap_or("");
    KEYS.iter().any(|k| k.eq_ignore_ascii_case(top))
}

/// The `HEALTHGATE_*` variables that name no setting (a misspelt one is
/// otherwise silently ignored), besides `HEALTHGATE_CONFIG`, which names the
/// file.
pub fn ignored_variables() -> Vec<String> {
    let mut names: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            name.strip_prefix("HEALTHGATE_")
                .is_some_and(|key| key != "CONFIG" && !is_setting(&key.replace("__", ".")))
        })
        .collect();
    names.sort();
    names
}

/// The settings the sources make, the keys refused and why. A refused value
/// is taken out and the rest parsed again, so one bad value does not hide
/// the next; its default stands in.
fn parse(figment: &Figment) -> (Settings, Vec<String>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut refused = Vec::new();
    // A source that cannot be read at all (a file that is not TOML).
    let mut value = match figment.extract::<Value>() {
        Ok(value) => value,
        Err(e) => {
            problems.extend(e.into_iter().map(|e| refusal(figment, &e)));
            return (Settings::default(), refused, problems);
        }
    };
    loop {
        let e = match value.deserialize::<Settings>() {
            Ok(settings) => return (settings, refused, problems),
            Err(e) => e,
        };
        let mut taken_out = false;
        for e in e {
            let path = setting_path(&e);
            problems.push(refusal(figment, &e));
            if take_out(&mut value, &path) {
                refused.push(path.join("."));
                taken_out = true;
            }
        }
        // Nothing left to take out: the problem is the whole of a source.
        if !taken_out {
            return (Settings::default(), refused, problems);
        }
    }
}

/// The key an error is about: the setting's (`profile.token_paths`), not
/// an entry's in its list (`….0`), which the message shows by its value.
fn setting_path(e: &figment::Error) -> Vec<&str> {
    e.path
        .iter()
        .map(String::as_str)
        .take_while(|k| !k.bytes().all(|b| b.is_ascii_digit()))
        .collect()
}

/// Removes the value at `path` from the tree of dictionaries; whether there
/// was one.
fn take_out(value: &mut Value, path: &[&str]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut dict = value;
    for key in parents {
        match dict {
            Value::Dict(_, entries) => match entries.get_mut(*key) {
                Some(inner) => dict = inner,
                None => return false,
            },
            _ => return false,
        }
    }
    match dict {
        Value::Dict(_, entries) => entries.remove(*last).is_some(),
        _ => false,
    }
}

/// `healthgate config check`: the effective configuration, where each
/// value came from, the `HEALTHGATE_*` variables that name no setting, and
/// every problem; exit 1 on any problem.
pub fn check_command(
    file: Option<&Path>,
    database_url: Option<&str>,
    bind: Option<&str>,
    issuer: Option<&str>,
    as_json: bool,
) -> Result<(), Failure> {
    let report = check(file, database_url, bind, issuer)?;
    let entries = report.entries();
    let ignored = ignored_variables();
    let problems = &report.problems;
    if as_json {
        let out = serde_json::json!({
            "settings": entries,
            "ignored_variables": ignored,
            "problems": problems,
        });
        println!("{out}");
    } else {
        print!("{}", render(&entries));
        println!();
        for name in &ignored {
            println!("note: environment variable {name} is not a setting and is ignored");
        }
        match problems.len() {
            0 => println!("no problems"),
            1 => println!("1 problem:"),
            n => println!("{n} problems:"),
        }
        for problem in problems {
            println!("  {problem}");
        }
    }
    match problems.len() {
        0 => Ok(()),
        n => Err(Failure {
            code: 1,
            message: format!(
                "the configuration has {n} problem{}",
                if n == 1 { "" } else { "s" }
            ),
        }),
    }
}

/// One setting as the server will run with it: its dotted key, its value
/// (`null` when it is not set) and where the value came from.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    pub key: String,
    pub value: serde_json::Value,
    pub from: String,
}

impl Report {
    /// Every setting, one leaf of the tree at a time (`throttle.api_burst`,
    /// `roles.staff.scopes`), secrets masked.
    pub fn entries(&self) -> Vec<Entry> {
        // Settings serialize to plain JSON (secrets as a mask); it cannot fail.
        let tree = serde_json::to_value(&self.settings).unwrap_or_default();
        let mut entries = Vec::new();
        self.leaves(&tree, &mut Vec::new(), &mut entries);
        entries
    }

    fn leaves<'a>(
        &self,
        value: &'a serde_json::Value,
        path: &mut Vec<&'a str>,
        out: &mut Vec<Entry>,
    ) {
        if let serde_json::Value::Object(table) = value
            && !table.is_empty()
        {
            for (key, inner) in table {
                path.push(key);
                self.leaves(inner, path, out);
                path.pop();
            }
            return;
        }
        let dotted = path.join(".");
        let refused = self
            .refused
            .iter()
            .any(|r| dotted == *r || dotted.starts_with(&format!("{r}.")));
        out.push(Entry {
            key: path
                .iter()
                .map(|k| toml_key(k))
                .collect::<Vec<_>>()
                .join("."),
            value: value.clone(),
            from: if refused {
                "the defaults (the value given was refused)".to_owned()
            } else {
                origin_of(&self.figment, path)
            },
        });
    }
}

/// A key as TOML writes it: bare when it can be, quoted otherwise
/// (`scopes."patient/*.read"`).
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if bare {
        key.to_owned()
    } else {
        serde_json::Value::from(key).to_string()
    }
}

/// A value as TOML writes it. JSON's string escapes are TOML's, and
/// settings hold no `null` inside a list.
fn toml_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        other => other.to_string(),
    }
}

/// The effective configuration as TOML lines, each with where its value
/// came from; a setting that is not set is a comment.
pub fn render(entries: &[Entry]) -> String {
    let lines: Vec<(String, &str)> = entries
        .iter()
        .map(|e| {
            let line = match &e.value {
                serde_json::Value::Null => format!("# {} is not set", e.key),
                value => format!("{} = {}", e.key, toml_value(value)),
            };
            (line, e.from.as_str())
        })
        .collect();
    // Align the sources, but not past a very long value.
    let width = lines
        .iter()
        .map(|(line, _)| line.chars().count())
        .filter(|&n| n <= 48)
        .max()
        .unwrap_or(0);
    let mut text = String::new();
    for (line, from) in lines {
        let pad = width.saturating_sub(line.chars().count());
        text.push_str(&format!("{line}{:pad$}  # {from}\n", ""));
    }
    text
}

/// A provider under the name an operator knows its values by: "file" with
/// its path, "environment variable" with the variable's name for a key
/// (`HEALTHGATE_PROFILE__TOKEN_PATHS`), "flag" with the flag's
/// (`--database-url`).
struct Named<P> {
    provider: P,
    metadata: Metadata,
}

impl<P: Provider> Named<P> {
    fn file(provider: P, path: &Path) -> Self {
        Self {
            provider,
            metadata: Metadata::from("file", path),
        }
    }

    fn variables(provider: P) -> Self {
        let name = |_: &Profile, keys: &[&str]| {
            let keys: Vec<String> = keys.iter().map(|k| k.to_ascii_uppercase()).collect();
            format!("HEALTHGATE_{}", keys.join("__"))
        };
        Self {
            provider,
            metadata: Metadata::named("environment variable").interpolater(name),
        }
    }

    fn flag(provider: P) -> Self {
        let name = |_: &Profile, keys: &[&str]| format!("--{}", keys.join("-").replace('_', "-"));
        Self {
            provider,
            metadata: Metadata::named("flag").interpolater(name),
        }
    }
}

impl<P: Provider> Provider for Named<P> {
    fn metadata(&self) -> Metadata {
        self.metadata.clone()
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        self.provider.data()
    }
}

/// Where the value at `path` came from: `file healthgate.toml`,
/// `environment variable HEALTHGATE_BIND`, `flag --bind`.
fn source(metadata: &Metadata, path: &[&str]) -> String {
    match &metadata.source {
        Some(Source::File(file)) => format!("{} {}", metadata.name, file.display()),
        _ if path.is_empty() => metadata.name.to_string(),
        _ => format!(
            "{} {}",
            metadata.name,
            metadata.interpolate(&Profile::Default, path)
        ),
    }
}

/// Where the setting at `path` came from; a value no source sets is a
/// default. Figment finds keys by dotted path, so a key with a dot in it (a
/// scope such as `patient/*.read`) is found by the table that holds it.
fn origin_of(figment: &Figment, path: &[&str]) -> String {
    let findable = path
        .iter()
        .position(|k| k.contains('.'))
        .unwrap_or(path.len());
    let found = &path[..findable];
    match figment.find_metadata(&found.join(".")) {
        Some(metadata) if !found.is_empty() => source(metadata, found),
        _ => "the defaults".to_owned(),
    }
}

/// One value figment or serde refused: the key, where it came from, and
/// what is allowed.
fn refusal(figment: &Figment, e: &figment::Error) -> Problem {
    let path = setting_path(e);
    let problem = match &e.kind {
        Kind::UnknownField(_, known) => {
            format!("no such setting; expected one of {}", known.join(", "))
        }
        Kind::UnknownVariant(found, allowed) => {
            format!("expected {}, found {found:?}", one_of(allowed))
        }
        Kind::InvalidType(found, expected) | Kind::InvalidValue(found, expected) => {
            format!("expected {expected}, found {found}")
        }
        other => other.to_string(),
    };
    let from = match &e.metadata {
        Some(metadata) => Some(source(metadata, &path)),
        None if path.is_empty() => None,
        None => Some(origin_of(figment, &path)),
    };
    Problem {
        key: path.join("."),
        from,
        problem,
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(allowed: &[&str]) -> String {
    match allowed {
        [] => "nothing".to_owned(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// Logs to standard error as text or JSON; `RUST_LOG` overrides `log_level`.
pub fn init_logging(settings: &Settings) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| settings.log_level.filter());
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let result = match settings.log_format {
        // One object a line: the event's fields at the top level beside
        // `timestamp`, `level`, `target` and `message`, and the request's
        // span (`span.request_id`) when there is one.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused value names its key, its source and what is allowed; an
    /// entry of a list is named by its list.
    #[test]
    fn refusals_name_the_key_the_source_and_what_is_allowed() {
        let refused = |figment: Figment| -> String {
            let (_, _, problems) = parse(&figment);
            problems
                .iter()
                .map(Problem::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let file = |text: &str| Named::file(Toml::string(text), Path::new("conf/hg.toml"));
        assert_eq!(
            refused(Figment::new().merge(file("refresh_rotation = \"later\"\n"))),
            "refresh_rotation from file conf/hg.toml: expected immediate or on_first_use, found \"later\""
        );
        assert_eq!(
            refused(Figment::new().merge(file("[profile]\ntoken_paths = [\"/a\", \"b\"]\n"))),
            "profile.token_paths from file conf/hg.toml: \"b\" is not a plain absolute path: it starts with / and has no //, . or .. segments, spaces, non-ASCII or any of {}*?#%"
        );
        let line = refused(Figment::new().merge(file("[branding]\ncolour = 1\n")));
        assert!(
            line.starts_with("branding.colour from file conf/hg.toml: no such setting; expected one of logo_url, accent_color, support_url"),
            "{line}"
        );
        let flag = Named::flag(Serialized::default("database_max_connections", 0));
        assert_eq!(
            refused(Figment::new().merge(file("session_ttl = 60\n")).merge(flag)),
            "database_max_connections from flag --database-max-connections: expected a nonzero u32, found signed int `0`"
        );

        let figment = Figment::new().merge(file("[roles.staff]\nscopes = [\"x\"]\n"));
        assert_eq!(
            origin_of(&figment, &["roles", "staff", "scopes"]),
            "file conf/hg.toml"
        );
        assert_eq!(origin_of(&figment, &["scopes"]), "the defaults");
        assert_eq!(
            origin_of(&figment, &["roles", "staff", "except"]),
            "the defaults"
        );
        let figment = Figment::new().merge(file("[scopes]\n\"patient/*.read\" = \"x\"\n"));
        assert_eq!(
            origin_of(&figment, &["scopes", "patient/*.read"]),
            "file conf/hg.toml"
        );
        assert_eq!(one_of(&["a"]), "a");
        assert_eq!(one_of(&["a", "b", "c"]), "a, b or c");
    }

    /// The commented example lists every setting with its default.
    #[test]
    fn example_config_is_the_defaults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/config/healthgate.toml");
        let text = std::fs::read_to_string(&path).expect("example config");
        let from_file: Settings = Figment::new()
            .merge(Toml::string(&text))
            .extract()
            .expect("parses");
        assert_eq!(from_file, Settings::default());
        for key in KEYS {
            assert!(
                text.contains(&format!("{key} ="))
                    || text.contains(&format!("[{key}]"))
                    || text.contains(&format!("[{key}."))
                    || text.contains(&format!("[{key}]\n"))
                    || text.contains(&format!("# {key} =")),
                "{key} is not documented"
            );
        }
    }
}
