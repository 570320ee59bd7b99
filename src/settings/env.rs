//! The environment layer: `BANKGATE__SECTION__KEY` variables, taken from a map so that tests
//! never touch the process environment, as a figment provider; and figment's errors folded
//! into the one line `main` prints.

use std::collections::HashMap;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::ENV_PREFIX;

/// Folds figment's error (which may hold several) into one line.
pub(super) fn one_line(error: figment::Error) -> String {
    let count = error.count();
    let first = error
        .into_iter()
        .next()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let first = first.replace('\n', " ");
    if count > 1 {
        format!("{first} (and {} more)", count - 1)
    } else {
        first
    }
}

/// A figment provider over `BANKGATE__…` variables taken from a map.
pub(super) struct EnvMap {
    vars: Vec<(String, String)>,
}

impl EnvMap {
    pub(super) fn new(env: &HashMap<String, String>) -> EnvMap {
        let mut vars: Vec<_> = env
            .iter()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?;
                Some((key.to_ascii_lowercase().replace("__", "."), v.clone()))
            })
            .collect();
        vars.sort();
        EnvMap { vars }
    }
}

impl Provider for EnvMap {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_: &Profile, keys: &[&str]| {
            format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut dict = Dict::new();
        for (key, raw) in &self.vars {
            let value: Value = raw.parse().expect("figment value parsing is infallible");
            insert_path(&mut dict, &key.split('.').collect::<Vec<_>>(), value);
        }
        Ok(Profile::Default.collect(dict))
    }
}

/// Inserts `value` at the path `keys` (`["http", "client_addr"]`), creating dictionaries.
fn insert_path(dict: &mut Dict, keys: &[&str], value: Value) {
    match keys {
        [] => {}
        [last] => {
            dict.insert((*last).to_owned(), value);
        }
        [first, rest @ ..] => {
            let entry = dict
                .entry((*first).to_owned())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            if let Value::Dict(_, child) = entry {
                insert_path(child, rest, value);
            }
        }
    }
}
