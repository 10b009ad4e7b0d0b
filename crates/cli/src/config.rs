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
use figment::value::{Dict, Map};
use figment::{Figment, Metadata, Profile, Provider, Source};
use healthgate_server::Settings;
use healthgate_server::config::{KEYS, LogFormat};

pub fn load(
    file: Option<&Path>,
    database_url: Option<&str>,
    bind: Option<&str>,
    issuer: Option<&str>,
) -> anyhow::Result<Settings> {
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
            .filter(|k| {
                let top = k.as_str().split('.').next().unwrap_or("");
                KEYS.iter().any(|key| key.eq_ignore_ascii_case(top))
            }),
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
    let settings: Settings = figment.extract().map_err(|e| {
        let each: Vec<String> = e.into_iter().map(|e| refusal(&e)).collect();
        anyhow::anyhow!("invalid configuration: {}", each.join("; "))
    })?;
    healthgate_server::validate(&settings).map_err(|e| {
        let from = origin_of(&figment, &e.key);
        anyhow::anyhow!("invalid configuration: {} from {from}: {}", e.key, e.reason)
    })?;
    Ok(settings)
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

/// Where the setting `key` (dotted) came from, for settings that parse but
/// do not fit together. A key figment cannot find (a scope named with a
/// dot) is looked up by its parent; a value nobody set is a default.
fn origin_of(figment: &Figment, key: &str) -> String {
    let path: Vec<&str> = key.split('.').collect();
    (1..=path.len())
        .rev()
        .find_map(|n| {
            let found = &path[..n];
            let metadata = figment.find_metadata(&found.join("."))?;
            Some(source(metadata, found))
        })
        .unwrap_or_else(|| "the defaults".to_owned())
}

/// One value figment or serde refused: the key, where it came from, and
/// what is allowed. The key is the setting's (`profile.token_paths`), not
/// an entry's in its list (`….0`), which the message shows by its value.
fn refusal(e: &figment::Error) -> String {
    let path: Vec<&str> = e
        .path
        .iter()
        .map(String::as_str)
        .filter(|k| !k.bytes().all(|b| b.is_ascii_digit()))
        .collect();
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
    let key = path.join(".");
    let from = e.metadata.as_ref().map(|m| source(m, &path));
    match (key.is_empty(), from) {
        (false, Some(from)) => format!("{key} from {from}: {problem}"),
        (false, None) => format!("{key}: {problem}"),
        (true, Some(from)) => format!("from {from}: {problem}"),
        (true, None) => problem,
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
        LogFormat::Json => builder.json().try_init(),
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
            let e = figment.extract::<Settings>().unwrap_err();
            e.into_iter()
                .map(|e| refusal(&e))
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
            origin_of(&figment, "roles.staff.scopes"),
            "file conf/hg.toml"
        );
        assert_eq!(origin_of(&figment, "scopes"), "the defaults");
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
