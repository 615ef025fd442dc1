//! Picking each setting from its layers: a flag or environment variable (what clap read, when
//! it was given explicitly) wins over `config.toml`, which wins over the default (what clap
//! holds when nothing was given). File values are checked here so an error names the file key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use super::file::{RawClientKey, RawDuration, RawSize};
use super::unit::{format_duration, parse_duration, parse_size};
use super::{invalid, ConfigError};

/// The command line's matches (for one command level) and the config file's folder.
pub(super) struct Layers<'a> {
    pub matches: &'a ArgMatches,
    pub base_dir: &'a Path,
}

impl<'a> Layers<'a> {
    /// The same layers for the subcommand's own arguments.
    pub fn sub(&self) -> Layers<'a> {
        Layers {
            matches: self
                .matches
                .subcommand()
                .map(|(_, m)| m)
                .unwrap_or(self.matches),
            base_dir: self.base_dir,
        }
    }

    /// Whether `id` was given by a flag or an environment variable (not left to its default).
    pub fn explicit(&self, id: &str) -> bool {
        match self.matches.try_get_raw(id) {
            Ok(Some(_)) => matches!(
                self.matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ),
            _ => false,
        }
    }

    /// The command line's value if explicit, else the file's, else the command line's default.
    pub fn pick<T>(&self, id: &str, cli: T, file: Option<T>) -> T {
        if self.explicit(id) {
            cli
        } else {
            file.unwrap_or(cli)
        }
    }

    /// A duration of at least `min`; in the file it must carry a unit (`"15s"`).
    pub fn duration(
        &self,
        id: &str,
        key: &str,
        cli: Duration,
        file: Option<&RawDuration>,
        min: Duration,
    ) -> Result<Duration, ConfigError> {
        let file = match file {
            None => None,
            Some(RawDuration::Text(s)) => {
                Some(parse_duration(s, false).map_err(|e| invalid(key, e))?)
            }
            Some(RawDuration::Number(n)) => {
                return Err(invalid(
                    key,
                    format!("write durations as a string with a unit, e.g. \"{n}s\""),
                ))
            }
        };
        let d = self.pick(id, cli, file);
        if d < min {
            return Err(invalid(
                key,
                format!("must be at least {}", format_duration(min)),
            ));
        }
        Ok(d)
    }

    /// A size of at least one byte: `"1MiB"`, or a number of bytes.
    pub fn size(
        &self,
        id: &str,
        key: &str,
        cli: usize,
        file: Option<&RawSize>,
    ) -> Result<usize, ConfigError> {
        let file = match file {
            None => None,
            Some(RawSize::Text(t)) => Some(parse_size(t).map_err(|e| invalid(key, e))?),
            Some(RawSize::Number(n)) => {
                Some(usize::try_from(*n).map_err(|_| invalid(key, "too large"))?)
            }
        };
        let n = self.pick(id, cli, file);
        if n == 0 {
            return Err(invalid(key, "must be more than 0"));
        }
        Ok(n)
    }

    /// A whole number of at least one.
    pub fn count<T: Copy + PartialEq + Default>(
        &self,
        id: &str,
        key: &str,
        cli: T,
        file: Option<T>,
    ) -> Result<T, ConfigError> {
        let n = self.pick(id, cli, file);
        if n == T::default() {
            return Err(invalid(key, "must be more than 0"));
        }
        Ok(n)
    }

    /// A file path; relative paths in the file are relative to the file's folder.
    pub fn path(&self, id: &str, cli: &Option<PathBuf>, file: &Option<String>) -> Option<PathBuf> {
        if self.explicit(id) {
            cli.clone()
        } else {
            file.as_ref().map(|f| self.base_dir.join(f))
        }
    }

    /// A list: the command line's replaces the file's, empty items dropped, items trimmed.
    pub fn list(&self, id: &str, cli: &[String], file: Option<&Vec<String>>) -> Vec<String> {
        let items = if self.explicit(id) {
            Some(cli)
        } else {
            file.map(Vec::as_slice)
        };
        items
            .unwrap_or_default()
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// Client keys: `key@environment` items on the command line (all projects), or the file's
    /// `[[...client_keys]]` tables.
    pub fn client_keys(
        &self,
        cli: &[String],
        file: Option<Vec<RawClientKey>>,
    ) -> Result<Vec<RawClientKey>, ConfigError> {
        if !self.explicit("client_keys") {
            return Ok(file.unwrap_or_default());
        }
        self.list("client_keys", cli, None)
            .iter()
            .enumerate()
            .map(|(i, text)| match text.rsplit_once('@') {
                Some((key, env)) if !key.is_empty() && !env.is_empty() => Ok(RawClientKey {
                    key: key.to_string(),
                    environment: env.to_string(),
                    projects: vec!["*".to_string()],
                }),
                _ => Err(invalid(
                    format!("client key #{} (--client-keys / CLIENT_KEYS)", i + 1),
                    "write each client key as `key@environment`",
                )),
            })
            .collect()
    }
}
