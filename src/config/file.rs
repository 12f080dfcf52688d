//! The configuration file as written: which keys of the key table it sets, each with its
//! value and where it was written, so every message can name the line. The key table is
//! the schema: an unknown key or table is refused while parsing (as serde's
//! `deny_unknown_fields` would), naming the keys that fit. [`render`] goes the other way
//! and writes a configuration in the same layout.

use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use toml::Spanned;

use super::keys::{Key, KEYS};
use super::{Config, ConfigError};

/// The keys a file sets, with their values as written.
pub(super) struct Written(Vec<(&'static Key, Spanned<toml::Value>)>);

impl Written {
    /// Parse TOML `text`, accepting only the keys of the table.
    pub fn parse(text: &str) -> Result<Written, toml::de::Error> {
        let mut keys = Vec::new();
        Table {
            name: "",
            out: &mut keys,
        }
        .deserialize(toml::Deserializer::new(text))?;
        Ok(Written(keys))
    }

    /// The value written for `key`, if any.
    pub fn get(&self, key: &Key) -> Option<&Spanned<toml::Value>> {
        self.0
            .iter()
            .find(|(k, _)| k.name == key.name)
            .map(|(_, v)| v)
    }
}

/// One table of the file (`name` is `""` for the top level): its keys are stored in
/// `out`, its sub-tables are read in turn.
struct Table<'a> {
    name: &'static str,
    out: &'a mut Vec<(&'static Key, Spanned<toml::Value>)>,
}

impl<'de> DeserializeSeed<'de> for Table<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Table<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.is_empty() {
            f.write_str("a table of configuration keys")
        } else {
            write!(f, "a table of {}", expected(self.name))
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        while let Some(item) = map.next_key_seed(Name { table: self.name })? {
            match item {
                Item::Key(key) => {
                    let value = map.next_value()?;
                    out.push((key, value));
                }
                Item::Table(name) => map.next_value_seed(Table {
                    name,
                    out: &mut *out,
                })?,
            }
        }
        Ok(())
    }
}

/// What a name in a table refers to.
enum Item {
    Key(&'static Key),
    Table(&'static str),
}

/// A name in `table`, looked up in the key table. An unknown name is an error raised
/// while the name itself is read, so that it carries the name's position.
struct Name {
    table: &'static str,
}

impl<'de> DeserializeSeed<'de> for Name {
    type Value = Item;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Item, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Name {
    type Value = Item;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a configuration key")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Item, E> {
        // How the toml crate hands over a date-time where a table was expected.
        if name == "$__toml_private_datetime" {
            return Err(E::custom(format!(
                "expected a table of {}, got a date-time",
                expected(self.table)
            )));
        }
        let found = KEYS
            .iter()
            .find(|k| k.table() == self.table && k.leaf() == name);
        if let Some(key) = found {
            return Ok(Item::Key(key));
        }
        if self.table.is_empty() {
            if let Some(key) = KEYS.iter().find(|k| k.table() == name) {
                return Ok(Item::Table(key.table()));
            }
        }
        Err(E::custom(format!(
            "unknown key `{name}`, expected one of {}",
            expected(self.table)
        )))
    }
}

/// The names that fit in `table`, for messages: "`connect`, `first_byte`, …".
fn expected(table: &str) -> String {
    let mut names: Vec<&str> = Vec::new();
    for key in KEYS {
        let name = if key.table() == table {
            key.leaf()
        } else if table.is_empty() {
            key.table()
        } else {
            continue;
        };
        if !names.contains(&name) {
            names.push(name);
        }
    }
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

/// `file:line` for a position in the file.
pub(super) fn origin(file_name: &str, text: &str, offset: usize) -> String {
    let line = text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1;
    format!("{file_name}:{line}")
}

/// Turn a TOML syntax or shape error into a [`ConfigError`] naming line and key.
pub(super) fn error(file_name: &str, text: &str, e: &toml::de::Error) -> ConfigError {
    let message = e.message().trim().to_string();
    let (origin, key) = match e.span() {
        Some(span) => (
            origin(file_name, text, span.start),
            key_at(text, span.start),
        ),
        None => (file_name.to_string(), String::new()),
    };
    ConfigError {
        origin,
        key,
        message,
    }
}

/// The dotted key written at `offset`: the enclosing `[table]` plus the key on that line.
fn key_at(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[line_start..line_end].trim();
    if line.starts_with('[') {
        return table_name(line).to_string();
    }
    let key = line
        .split('=')
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches('"');
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .map(|l| table_name(l).to_string());
    match table {
        Some(t) if !key.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    }
}

/// The name in a `[table]` header line, without a trailing comment.
fn table_name(line: &str) -> &str {
    line.trim_start_matches('[')
        .split(']')
        .next()
        .unwrap_or("")
        .trim()
}

/// `config` as a configuration file: every key of the table, top-level keys first, then
/// one `[table]` each; an optional key that is not set is a comment.
pub(super) fn render(config: &Config) -> String {
    let mut out = String::new();
    let mut table = "";
    for key in KEYS {
        if key.table() != table {
            table = key.table();
            let _ = write!(out, "\n[{table}]\n");
        }
        let _ = match (key.get)(config) {
            Some(value) => writeln!(out, "{} = {value}", key.leaf()),
            None => writeln!(out, "# {} is not set", key.leaf()),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::key_at;

    #[test]
    fn the_key_of_an_error_ignores_comments_after_a_table_header() {
        let text = "[timeouts]   # milliseconds\ndrain_delay = \"x\"\n";
        let at = text.find("\"x\"").unwrap();
        assert_eq!(key_at(text, at), "timeouts.drain_delay");
        assert_eq!(key_at(text, 2), "timeouts");
    }
}
