//! `--config paystate.toml`: every flag of `serve`, `ingress`, `project` and `catch-up` in one file.
//!
//! The flags stay the one definition (their names, units, defaults and doc comments are clap's): a key is a
//! flag's name with `_` for `-` (`admin_listen`, `kafka_timeout_ms`), a value its value (a string, a
//! number, a boolean for a switch, an array for a repeatable flag). Top-level keys apply to every command
//! that has the flag, so one file serves a whole deployment; a `[serve]`, `[ingress]` or `[project]` table
//! sets a command's own values over them. A key that no command has, or a table of another name, is refused
//! with its name. Precedence: flags, then the environment (`STRIPE_WEBHOOK_SECRET`, …), then the file, then
//! the defaults: the file's value of a flag is used only when neither the command line nor its variable
//! gives one. `paystate config check <command> --config FILE` prints the effective settings and where each
//! comes from, secrets redacted.

use anyhow::{bail, Context, Result};
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The commands a config file configures.
pub const COMMANDS: [&str; 4] = ["serve", "ingress", "project", "catch-up"];

/// Arguments that are not settings.
const NOT_SETTINGS: [&str; 3] = ["help", "version", "config"];

/// The setting's key of a flag: its long name with `_` for `-` (`--admin-listen`: `admin_listen`).
fn key_of(arg: &Arg) -> Option<String> {
    arg.get_long().map(|l| l.replace('-', "_")).filter(|k| !NOT_SETTINGS.contains(&k.as_str()))
}

/// The flag of `command` (or a global one) whose key is `key`.
fn find_arg<'c>(cli: &'c Command, command: &str, key: &str) -> Option<&'c Arg> {
    let sub = cli.find_subcommand(command).into_iter().flat_map(|c| c.get_arguments());
    sub.chain(cli.get_arguments()).find(|a| key_of(a).as_deref() == Some(key))
}

/// `argv` with the settings of the `--config` file (if one is given) inserted after the command's name,
/// and the ids of the flags the file set.
pub fn apply(cli: &Command, argv: Vec<OsString>) -> Result<(Vec<OsString>, BTreeSet<String>)> {
    let Some(path) = config_path(&argv) else { return Ok((argv, BTreeSet::new())) };
    // Lenient: flags the file supplies may be missing from the command line yet.
    let matches = cli.clone().ignore_errors(true).try_get_matches_from(&argv).context("parsing the command line")?;
    let Some(name) = matches.subcommand_name() else { return Ok((argv, BTreeSet::new())) };
    if name == "config" {
        return Ok((argv, BTreeSet::new())); // `config check` applies it to the command it checks
    }
    if !COMMANDS.contains(&name) {
        bail!("--config is read by `paystate serve`, `ingress`, `project` and `catch-up`, not by `paystate {name}`");
    }
    let doc = load(&path)?;
    let settings = settings_for(cli, &doc, name).with_context(|| format!("in {}", path.display()))?;
    let mut tokens = Vec::new();
    let mut set = BTreeSet::new();
    for (key, value) in settings {
        let Some(arg) = find_arg(cli, name, &key) else { continue };
        let id = arg.get_id().as_str();
        if given(&argv, arg) || arg.get_env().is_some_and(|v| std::env::var_os(v).is_some()) {
            continue; // the command line and the environment win
        }
        let long = arg.get_long().with_context(|| format!("`{key}` has no flag"))?;
        let flag = OsString::from(format!("--{long}"));
        let values = values_of(&key, &value, arg.get_action())?;
        match arg.get_action() {
            ArgAction::SetTrue => {
                if values == ["true"] {
                    tokens.push(flag);
                }
            }
            _ => {
                for v in values {
                    tokens.push(flag.clone());
                    tokens.push(OsString::from(v));
                }
            }
        }
        set.insert(id.to_owned());
    }
    let at = argv.iter().position(|a| a == name).context("the command's name")? + 1;
    let mut out = argv;
    out.splice(at..at, tokens);
    Ok((out, set))
}

/// Whether `argv` gives flag `arg` (`--long`, `--long=…`, `-s`).
fn given(argv: &[OsString], arg: &Arg) -> bool {
    let long = arg.get_long().map(|l| format!("--{l}"));
    let short = arg.get_short().map(|c| format!("-{c}"));
    argv.iter().skip(1).take_while(|a| *a != "--").any(|a| {
        let a = a.to_string_lossy();
        long.as_deref().is_some_and(|l| a == l || a.starts_with(&format!("{l}="))) || short.as_deref() == Some(&*a)
    })
}

/// Where the value of `id` in `m` comes from, when `m` knows `id`.
fn source_of(m: &ArgMatches, id: &str) -> Option<ValueSource> {
    m.try_contains_id(id).ok()?;
    m.value_source(id)
}

/// The path of `--config PATH` or `--config=PATH` in `argv`.
pub(crate) fn config_path(argv: &[OsString]) -> Option<PathBuf> {
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            return None;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    None
}

fn load(path: &Path) -> Result<toml_edit::DocumentMut> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the config file {}", path.display()))?;
    text.parse::<toml_edit::DocumentMut>()
        .with_context(|| format!("the config file {} is not valid TOML", path.display()))
}

/// The settings of `doc` for command `name`: the top-level keys that command has, then its own table's.
/// Refuses keys no command has and tables of other names.
fn settings_for(cli: &Command, doc: &toml_edit::DocumentMut, name: &str) -> Result<Vec<(String, toml_edit::Value)>> {
    let has = |command: &str, key: &str| find_arg(cli, command, key).is_some();
    let mut top = Vec::new();
    let mut own = Vec::new();
    for (key, item) in doc.iter() {
        match item {
            toml_edit::Item::Table(table) => {
                if !COMMANDS.contains(&key) {
                    bail!("unknown table [{key}]: the tables are [serve], [ingress], [project] and [catch-up]");
                }
                for (k, v) in table.iter() {
                    let value = v.as_value().with_context(|| format!("[{key}] {k}: a value, not a table"))?;
                    if !has(key, k) {
                        bail!("unknown key `{k}` in [{key}]: not a flag of `paystate {key}` ({})", flags_of(cli, key));
                    }
                    if key == name {
                        own.push((k.to_owned(), value.clone()));
                    }
                }
            }
            toml_edit::Item::Value(value) => {
                if !COMMANDS.iter().any(|c| has(c, key)) {
                    bail!("unknown key `{key}`: not a flag of `paystate serve`, `ingress`, `project` or `catch-up`");
                }
                if has(name, key) {
                    top.push((key.to_owned(), value.clone()));
                }
            }
            _ => bail!("`{key}`: an array of tables is not a setting"),
        }
    }
    // A command's own table over the top level.
    top.retain(|(k, _)| !own.iter().any(|(o, _)| o == k));
    top.extend(own);
    Ok(top)
}

/// The settings' names of `command`, for error messages.
fn flags_of(cli: &Command, command: &str) -> String {
    let mut names: Vec<String> = cli
        .find_subcommand(command)
        .into_iter()
        .flat_map(|c| c.get_arguments())
        .chain(cli.get_arguments())
        .filter_map(key_of)
        .collect();
    names.sort_unstable();
    names.dedup();
    format!("its keys are {}", names.join(", "))
}

/// A TOML value as the flag's values.
fn values_of(key: &str, value: &toml_edit::Value, action: &ArgAction) -> Result<Vec<String>> {
    use toml_edit::Value as V;
    let one = |v: &V| -> Result<String> {
        Ok(match v {
            V::String(s) => s.value().clone(),
            V::Integer(i) => i.value().to_string(),
            V::Float(f) => f.value().to_string(),
            V::Boolean(b) => b.value().to_string(),
            V::Datetime(d) => d.value().to_string(),
            V::Array(_) | V::InlineTable(_) => bail!("`{key}`: one value expected"),
        })
    };
    match (action, value) {
        (ArgAction::SetTrue, V::Boolean(b)) => Ok(vec![b.value().to_string()]),
        (ArgAction::SetTrue, _) => bail!("`{key}` is a switch: true or false"),
        (ArgAction::Append, V::Array(items)) => items.iter().map(one).collect(),
        (_, V::Array(_)) => bail!("`{key}` takes one value, not an array"),
        (_, v) => Ok(vec![one(v)?]),
    }
}

/// Whether the value of setting `id` is a secret to redact.
fn is_secret(id: &str) -> bool {
    let id = id.to_ascii_lowercase();
    (id.contains("secret") || id.contains("password") || id.contains("api_key") || id.ends_with("token"))
        && !id.ends_with("_file")
}

/// A librdkafka property `k=v` with its value redacted when `k` names a credential.
fn redact_property(p: &str) -> String {
    match p.split_once('=') {
        Some((k, _)) if ["password", "secret", "jaas", "key"].iter().any(|s| k.to_ascii_lowercase().contains(s)) => {
            format!("{k}=<redacted>")
        }
        _ => p.to_owned(),
    }
}

/// `paystate config check`: the effective settings of the command in `matches` (parsed from the
/// arguments [`apply`] returned), each with where it comes from, secrets redacted, as TOML.
pub fn render(cli: &Command, matches: &ArgMatches, from_file: &BTreeSet<String>) -> Result<String> {
    let (name, sub_matches) = matches.subcommand().context("a command")?;
    let sub = cli.find_subcommand(name).context("the command")?;
    let mut out = format!(
        "# the effective settings of `paystate {name}`: flags over the environment over the config file over \
         the defaults\n"
    );
    for arg in cli.get_arguments().chain(sub.get_arguments()) {
        let id = arg.get_id().as_str();
        let Some(key) = key_of(arg) else { continue };
        let m = if sub.get_arguments().any(|a| a.get_id() == id) { sub_matches } else { matches };
        let source = match source_of(m, id) {
            _ if from_file.contains(id) => "config file",
            Some(ValueSource::CommandLine) => "flag",
            Some(ValueSource::EnvVariable) => "environment",
            Some(ValueSource::DefaultValue) => "default",
            _ => "unset",
        };
        let raw: Vec<String> =
            m.try_get_raw(id).ok().flatten().into_iter().flatten().map(|v| v.to_string_lossy().into_owned()).collect();
        let shown: Vec<String> = raw
            .iter()
            .map(|v| match () {
                _ if is_secret(&key) => "<redacted>".to_owned(),
                _ if key.contains("kafka_config") => redact_property(v),
                _ => v.clone(),
            })
            .collect();
        let value = match (arg.get_action(), shown.as_slice()) {
            (ArgAction::SetTrue, _) => m.try_get_one::<bool>(id).ok().flatten().copied().unwrap_or(false).to_string(),
            (_, []) => continue,
            (ArgAction::Append, vs) => {
                format!(
                    "[{}]",
                    vs.iter().map(|v| toml_edit::Value::from(v.as_str()).to_string()).collect::<Vec<_>>().join(", ")
                )
            }
            (_, [v, ..]) => toml_edit::Value::from(v.as_str()).to_string(),
        };
        out.push_str(&format!("{key} = {} # {source}\n", value.trim()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_named_by_their_flags() {
        for id in ["webhook_secret", "api_key", "sasl_password", "admin_token"] {
            assert!(is_secret(id), "{id}");
        }
        for id in ["admin_token_file", "api_key_file", "listen", "kafka_brokers"] {
            assert!(!is_secret(id), "{id}");
        }
        assert_eq!(redact_property("sasl.password=hunter2"), "sasl.password=<redacted>");
        assert_eq!(redact_property("sasl.jaas.config=x y"), "sasl.jaas.config=<redacted>");
        assert_eq!(redact_property("security.protocol=SASL_SSL"), "security.protocol=SASL_SSL");
    }
}
