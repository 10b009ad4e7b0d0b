//! Loading settings: the TOML file, then `HEALTHGATE_*` environment
//! variables, then command-line flags, each overriding the one before. And
//! the logging set-up those settings ask for.

use std::path::Path;

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
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
        figment = figment.merge(Toml::string(&text));
    }
    figment = figment.merge(
        Env::prefixed("HEALTHGATE_")
            .split("__")
            // The filter sees the key as written (`BIND`); figment lowercases
            // it only afterwards, so compare without case.
            .filter(|k| {
                let top = k.as_str().split('.').next().unwrap_or("");
                KEYS.iter().any(|key| key.eq_ignore_ascii_case(top))
            }),
    );
    for (key, value) in [
        ("database_url", database_url),
        ("bind", bind),
        ("issuer", issuer),
    ] {
        if let Some(v) = value {
            figment = figment.merge(Serialized::default(key, v));
        }
    }
    let settings: Settings = figment.extract().map_err(|e| {
        let source = file
            .map(|p| format!(" in {}", p.display()))
            .unwrap_or_default();
        // We hand figment the file's text, so it would say "in TOML source
        // string"; the file's name is given instead.
        let e = e.to_string().replace(" in TOML source string", "");
        anyhow::anyhow!("invalid configuration{source}: {e}")
    })?;
    healthgate_server::validate(&settings)
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    Ok(settings)
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
